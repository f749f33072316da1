/**
 * First copies: a chunk the owner is sending to one peer is declined to
 * others while it is on its way and for the window after it arrived, and
 * goes out again after that (or when the first copy takes too long).
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { FirstCopies } from "../../src/swarm/first_copies.ts";
import { VirtualClock } from "../../src/util/clock.ts";

Deno.test("first copies: one peer gets a new chunk, others are declined until the window after it arrived", async () => {
  const clock = new VirtualClock();
  const copies = new FirstCopies({ clock, windowMs: 1000, transitMs: 5000 });
  assert(copies.admit(["d/mem/3"], "a"), "the first asker gets it");
  assert(!copies.admit(["d/mem/3"], "b"), "another asker is declined");
  assert(copies.admit(["d/mem/3"], "a"), "the same asker again (a retry) is served");
  assert(copies.admit(["d/mem/4"], "b"), "other chunks are not affected");
  await clock.advance(3000);
  assert(!copies.admit(["d/mem/3"], "c"), "still on its way to a");
  copies.arrived(["d/mem/3"], "a");
  await clock.advance(999);
  assert(!copies.admit(["d/mem/3"], "c"), "within the window after it arrived");
  await clock.advance(1);
  assert(copies.admit(["d/mem/3"], "c"), "after the window the chunk goes out again");
  assertEquals(copies.stats, { sent: 4, declined: 3 });
});

Deno.test("first copies: a first copy that takes too long no longer holds the chunk back", async () => {
  const clock = new VirtualClock();
  const copies = new FirstCopies({ clock, windowMs: 1000, transitMs: 5000 });
  assert(copies.admit(["k/0"], "slow"));
  await clock.advance(4999);
  assert(!copies.admit(["k/0"], "b"));
  await clock.advance(1);
  assert(copies.admit(["k/0"], "b"), "the slow first copy is given up on");
  copies.arrived(["k/0"], "slow");
  assert(copies.admit(["k/0"], "b"), "a late arrival of the old copy does not take the chunk back");
});

Deno.test("first copies: a range is declined when any of its chunks is held back, and unnamed askers always pass", () => {
  const clock = new VirtualClock();
  const copies = new FirstCopies({ clock });
  assert(copies.admit(["k/1"], "a"));
  assert(!copies.admit(["k/0", "k/1", "k/2"], "b"));
  assert(copies.admit(["k/0", "k/2"], "b"), "a declined range recorded nothing");
  assert(copies.admit(["k/1"], null), "an asker without a node id is served");
  assertEquals(copies.size, 3);
});

Deno.test("first copies: entries expire, so memory stays bounded by the sends of one deadline", async () => {
  const clock = new VirtualClock();
  const copies = new FirstCopies({ clock, windowMs: 100, transitMs: 100 });
  for (let i = 0; i < 1000; i++) {
    copies.admit([`k/${i}`], "a");
    await clock.advance(1);
  }
  copies.admit(["k/next"], "a");
  assert(copies.size <= 101, `${copies.size} entries held`);
});
