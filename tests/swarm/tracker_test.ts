/**
 * The tracker: bounded random handouts, most from the asker's zone, the
 * tracker's own node always first, participants forgotten after the TTL.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { type SwarmPeer, Tracker } from "../../src/swarm/tracker.ts";
import { seededRandom } from "../../src/util/random.ts";

const D = "d".repeat(64);

function node(i: number, zone = "a"): SwarmPeer {
  return { id: `n${i}`, url: `http://n${i}:7070`, zone, complete: false };
}

Deno.test("tracker: each answer is a bounded random set of other participants, the asker's zone first", () => {
  const t = new Tracker({ random: seededRandom("tracker"), handout: 8, crossZone: 2 });
  for (let i = 0; i < 100; i++) t.announce({ digest: D, peer: node(i, i % 2 ? "b" : "a"), now: 0 });
  const answer = t.announce({ digest: D, peer: node(0, "a"), now: 1 });
  assertEquals(answer.length, 8);
  assert(!answer.some((p) => p.id === "n0"), "never the asker itself");
  assertEquals(answer.filter((p) => p.zone === "b").length, 2, "two from the other zone");
  const other = t.announce({ digest: D, peer: node(2, "a"), now: 1 });
  assert(
    other.map((p) => p.id).join() !== answer.map((p) => p.id).join(),
    "askers get different sets",
  );
});

Deno.test("tracker: its own node, when it takes part, is in every answer, first", () => {
  const t = new Tracker({ random: seededRandom("tracker-self"), handout: 4 });
  const self = { ...node(999), complete: true };
  for (let i = 0; i < 500; i++) {
    const answer = t.announce({ digest: D, peer: node(i), now: 0, self });
    assertEquals(answer[0]?.id, "n999", `answer ${i}`);
    assert(answer.length <= 4);
    assertEquals(answer.filter((p) => p.id === "n999").length, 1);
  }
  // Not to itself.
  const own = t.announce({ digest: D, peer: self, now: 0, self });
  assert(!own.some((p) => p.id === "n999"));
});

Deno.test("tracker: a participant that stops announcing is forgotten after the TTL", () => {
  const t = new Tracker({ random: seededRandom("tracker-ttl"), ttlMs: 1000 });
  t.announce({ digest: D, peer: node(1), now: 0 });
  t.announce({ digest: D, peer: node(2), now: 900 });
  assertEquals(t.announce({ digest: D, peer: node(3), now: 1500 }).map((p) => p.id), ["n2"]);
  t.sweep(10_000);
  assertEquals(t.participants(D), []);
});

Deno.test("tracker: rack mates fill part of an answer, the rest comes from the zone's other racks and one other zone", () => {
  const t = new Tracker({
    random: seededRandom("tracker-rack"),
    handout: 16,
    crossZone: 2,
    sameRack: 8,
  });
  const at = (i: number): SwarmPeer => ({
    ...node(i, i % 2 ? "b" : "a"),
    rack: `r${i % 10}`,
  });
  for (let i = 0; i < 400; i++) t.announce({ digest: D, peer: at(i), now: 0 });
  const asker = at(0); // zone a, rack r0
  const answer = t.announce({ digest: D, peer: asker, now: 1 });
  assertEquals(answer.length, 16);
  assertEquals(answer.filter((p) => p.rack === "r0").length, 8, "eight rack mates");
  assertEquals(answer.filter((p) => p.zone === "a" && p.rack !== "r0").length, 6);
  assertEquals(answer.filter((p) => p.zone === "b").length, 2);
  // Without a rack, the answer is as before: the zone, two from the other zone.
  const plain = t.announce({ digest: D, peer: node(1000, "a"), now: 1 });
  assertEquals(plain.filter((p) => p.zone === "b").length, 2);
});

Deno.test("tracker: the union of what participants announce they hold, and 'all' once one holds everything", () => {
  const t = new Tracker({ random: seededRandom("tracker-held") });
  assertEquals(t.held(D), null);
  t.announce({ digest: D, peer: node(1), now: 0, have: Uint8Array.of(0b0000_0101) });
  t.announce({ digest: D, peer: node(2), now: 0, have: Uint8Array.of(0b0000_0010, 0b1) });
  assertEquals(t.held(D), Uint8Array.of(0b0000_0111, 0b1));
  t.announce({ digest: D, peer: { ...node(3), complete: true }, now: 0 });
  assertEquals(t.held(D), "all");
  t.sweep(1_000_000);
  assertEquals(t.held(D), null, "forgotten with the swarm");
});
