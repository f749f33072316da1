/**
 * The cache budget: reservations, LRU eviction of whole unpinned snapshots
 * (never pinned ones, kept ones, or ones still waiting for their upload),
 * and insufficient_storage when nothing can go.
 */

import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import {
  chunkedBytes,
  type MemoryServices,
  memoryServices,
  preparedSnapshot,
} from "../helpers/memory_node.ts";
import { hasCode } from "../../src/errors.ts";

const KiB = 1024;

/** Publishes a two-chunk (128 KiB) snapshot; `push` queues it for the origin. */
async function add(s: MemoryServices, name: string, seed: number, push = false): Promise<number> {
  const request = await preparedSnapshot(s, name, { mem: chunkedBytes(2, seed) }, { push });
  assert(await s.catalog.publish(request));
  await s.clock.advance(1); // distinct access times
  return request.bytes;
}

function names(s: MemoryServices): string[] {
  return s.catalog.entries().map((e) => e.name);
}

Deno.test("CacheBudget.reserve() within the budget evicts nothing", async () => {
  await using s = await memoryServices({ flags: { "cache-size": "1MiB" } });
  const bytes = await add(s, "a", 1);
  await s.budget.reserve(512 * KiB);
  assertEquals(s.budget.reserved, 512 * KiB);
  assertEquals(s.budget.used, bytes + 512 * KiB);
  assertEquals(names(s), ["a"]);
  assert(s.budget.fits(1024 * KiB - bytes - 512 * KiB));
  assert(!s.budget.fits(1024 * KiB - bytes - 512 * KiB + 1));
});

Deno.test("CacheBudget.reserve() evicts least recently used snapshots, never pinned, kept or queued for push", async () => {
  await using s = await memoryServices({ flags: { "cache-size": "1MiB" } });
  const sizes = new Map<string, number>();
  const snapshots: [string, number, boolean][] = [
    ["pinned", 1, false],
    ["queued", 2, true],
    ["kept", 3, false],
    ["old", 4, false],
    ["new", 5, false],
  ];
  for (const [name, seed, push] of snapshots) sizes.set(name, await add(s, name, seed, push));
  await s.catalog.setPinned("pinned", true);
  s.catalog.touch("old"); // "old" is now more recent than "new"
  await s.clock.advance(1000);
  assertEquals(names(s), ["pinned", "queued", "kept", "new", "old"]);
  const total = [...sizes.values()].reduce((a, b) => a + b, 0);
  const free = 1024 * KiB - total;
  // Room for one more 128 KiB snapshot takes only the least recent evictable one.
  await s.budget.reserve(free + 1, new Set(["kept"]));
  assertEquals(names(s), ["pinned", "queued", "kept", "old"]);
  assertEquals(s.catalog.counters.evictions, 1);
  assert(!s.fs.exists(`${s.dir}/snapshots/new`));
  assertEquals(s.budget.reserved, free + 1);
  assert(s.budget.used <= s.budget.capacity);
  // More: the next one goes too; pinned, queued and kept stay whatever it costs.
  await s.budget.reserve(sizes.get("old")!, new Set(["kept"]));
  assertEquals(names(s), ["pinned", "queued", "kept"]);
  assert(s.budget.used <= s.budget.capacity);
});

Deno.test("CacheBudget.reserve() answers insufficient_storage when nothing can go, and evicts nothing", async () => {
  await using s = await memoryServices({ flags: { "cache-size": "512KiB" } });
  await add(s, "pinned", 1);
  await add(s, "kept", 2);
  await add(s, "queued", 3, true);
  await s.catalog.setPinned("pinned", true);
  const before = s.budget.used;
  const err = await assertRejects(() => s.budget.reserve(300 * KiB, new Set(["kept"])));
  assert(hasCode(err, "insufficient_storage"), String(err));
  assert(/everything left is pinned or in use/.test((err as Error).message));
  assertEquals(
    (err as { details?: unknown }).details ?? null,
    { capacityBytes: 512 * KiB, usedBytes: before },
  );
  assertEquals(names(s), ["pinned", "kept", "queued"]);
  assertEquals(s.budget.reserved, 0);
  assertEquals(s.budget.used, before);
});

Deno.test("CacheBudget.enforce() evicts until the cache fits again, never what it keeps", async () => {
  await using s = await memoryServices({ flags: { "cache-size": "300KiB" } });
  // Publishing does not check the budget (a commit or a pull reserved beforehand).
  await add(s, "a", 1);
  await add(s, "b", 2);
  await add(s, "c", 3);
  assert(!s.budget.fits(0));
  await s.budget.enforce(new Set(["a"]));
  assertEquals(names(s), ["a", "c"]);
  assert(s.budget.fits(0));
  await s.budget.enforce(); // fits: nothing to do
  assertEquals(names(s), ["a", "c"]);
  await s.budget.reserve(0);
  s.budget.hold(200 * KiB); // what recovery finds on disk
  const err = await assertRejects(() => s.budget.enforce(new Set(["a", "c"])));
  assert(hasCode(err, "insufficient_storage"), String(err));
  assertEquals(names(s), ["a", "c"]);
});

Deno.test("CacheBudget.release() never goes below 0", async () => {
  await using s = await memoryServices({ flags: { "cache-size": "1MiB" } });
  s.budget.hold(10);
  s.budget.release(4);
  assertEquals(s.budget.reserved, 6);
  s.budget.release(100);
  assertEquals(s.budget.reserved, 0);
  assertEquals(s.budget.used, 0);
});
