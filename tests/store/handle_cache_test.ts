/**
 * The cache of open read handles: reuse, the bound, leases that outlive an
 * eviction, and forgetting a snapshot's handles.
 */

import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { HandleCache } from "../../src/store/mod.ts";

async function filesystem(...names: string[]): Promise<MemoryFileSystem> {
  const fs = new MemoryFileSystem();
  await fs.mkdir("/d");
  for (const name of names) {
    const handle = await fs.open(`/d/${name}`, { write: true, create: true });
    await handle.writeAt(new TextEncoder().encode(name), 0);
    handle.close();
  }
  return fs;
}

function text(handle: { readAtSync(b: Uint8Array, o: number): number }): string {
  const buffer = new Uint8Array(16);
  return new TextDecoder().decode(buffer.subarray(0, handle.readAtSync(buffer, 0)));
}

Deno.test("HandleCache.acquire() opens a file once and lends the same handle again", async () => {
  const fs = await filesystem("a");
  const opens = fs.counters.opens;
  const cache = new HandleCache();
  const [one, two] = await Promise.all([
    cache.acquire("a", "g", () => fs.open("/d/a")),
    cache.acquire("a", "g", () => fs.open("/d/a")),
  ]);
  one.release();
  two.release();
  const three = await cache.acquire("a", "g", () => fs.open("/d/a"));
  assertEquals(text(three.handle), "a");
  assert(one.handle === three.handle && two.handle === three.handle);
  three.release();
  three.release(); // a second release does nothing
  // Without waiting: the open handle, or null when none is open.
  assertEquals(cache.lease("missing"), null);
  const now = cache.lease("a")!;
  assert(now.handle === one.handle);
  now.release();
  assertEquals([fs.counters.opens - opens, fs.openHandles, cache.opened, cache.size], [1, 1, 1, 1]);
});

Deno.test("HandleCache keeps at most max handles, closing the least recently used", async () => {
  const fs = await filesystem("a", "b", "c");
  const cache = new HandleCache({ max: 2 });
  for (const name of ["a", "b", "a", "c"]) {
    (await cache.acquire(name, "g", () => fs.open(`/d/${name}`))).release();
  }
  assertEquals([cache.size, fs.openHandles], [2, 2]);
  // "b" was the least recently used: it is the one reopened.
  const opens = fs.counters.opens;
  (await cache.acquire("a", "g", () => fs.open("/d/a"))).release();
  (await cache.acquire("b", "g", () => fs.open("/d/b"))).release();
  assertEquals(fs.counters.opens - opens, 1);
});

Deno.test("HandleCache closes an evicted handle only once its lease is back", async () => {
  const fs = await filesystem("a", "b");
  const cache = new HandleCache({ max: 1 });
  const lease = await cache.acquire("a", "g", () => fs.open("/d/a"));
  (await cache.acquire("b", "g", () => fs.open("/d/b"))).release();
  assertEquals([cache.size, fs.openHandles], [1, 2], "a is out of the cache but still open");
  assertEquals(text(lease.handle), "a");
  lease.release();
  assertEquals(fs.openHandles, 1);
});

Deno.test("HandleCache.forget() closes a group's handles, leased ones when released", async () => {
  const fs = await filesystem("a", "b", "c");
  const cache = new HandleCache();
  const leased = await cache.acquire("a", "snap-1", () => fs.open("/d/a"));
  (await cache.acquire("b", "snap-1", () => fs.open("/d/b"))).release();
  (await cache.acquire("c", "snap-2", () => fs.open("/d/c"))).release();
  // Removed from its directory, the leased file stays readable.
  await fs.remove("/d/a");
  cache.forget("snap-1");
  assertEquals([cache.size, fs.openHandles], [1, 2]);
  assertEquals(text(leased.handle), "a");
  leased.release();
  assertEquals(fs.openHandles, 1);
  // Forgotten keys are opened afresh.
  const opens = fs.counters.opens;
  (await cache.acquire("b", "snap-1", () => fs.open("/d/b"))).release();
  assertEquals(fs.counters.opens - opens, 1);
});

Deno.test("HandleCache: a failed open is not cached; a handle forgotten while opening closes after use", async () => {
  const fs = await filesystem("a");
  const cache = new HandleCache();
  await assertRejects(() => cache.acquire("x", "g", () => fs.open("/d/missing")));
  assertEquals(cache.size, 0);
  const pending = cache.acquire("a", "g", () => fs.open("/d/a"));
  cache.forget("g");
  const lease = await pending;
  assertEquals([text(lease.handle), cache.size], ["a", 0]);
  lease.release();
  assertEquals(fs.openHandles, 0);
});

Deno.test("HandleCache.close() closes idle handles and caches nothing afterwards", async () => {
  const fs = await filesystem("a");
  const cache = new HandleCache();
  (await cache.acquire("a", "g", () => fs.open("/d/a"))).release();
  cache.close();
  assertEquals(fs.openHandles, 0);
  const lease = await cache.acquire("a", "g", () => fs.open("/d/a"));
  assertEquals(cache.size, 0);
  lease.release();
  assertEquals(fs.openHandles, 0);
});
