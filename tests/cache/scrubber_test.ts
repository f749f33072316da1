/**
 * The background scrub under a virtual clock: a pass trusts what verifies,
 * rot is reported once and ends that snapshot's pass, stop() ends a paused
 * scrub, and the rate limit paces the reads.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import {
  chunkedBytes,
  memoryNode,
  type MemoryServices,
  memoryServices,
  preparedSnapshot,
} from "../helpers/memory_node.ts";
import { Scrubber, type ScrubTarget } from "../../src/cache/mod.ts";
import type { MemoryFileSystem } from "../../src/fs/memory.ts";
import { silentLogger } from "../../src/log/mod.ts";
import type { ManifestWithDigest } from "../../src/manifest/mod.ts";
import { ChunkTrust } from "../../src/store/mod.ts";
import { RateLimiter } from "../../src/util/rate.ts";

const CHUNK = 64 * 1024;

/** Flips one byte of chunk `index` of a stored file, in place. */
async function rot(fs: MemoryFileSystem, path: string, index: number): Promise<void> {
  const handle = await fs.open(path, { write: true });
  try {
    const one = new Uint8Array(1);
    await handle.readAt(one, index * CHUNK + 10);
    one[0]! ^= 0xff;
    await handle.writeAt(one, index * CHUNK + 10);
  } finally {
    handle.close();
  }
}

async function publish(
  s: MemoryServices,
  name: string,
  files: Record<string, Uint8Array>,
): Promise<ScrubTarget> {
  const request = await preparedSnapshot(s, name, files);
  assert(await s.catalog.publish(request));
  return target(s, name, request.manifest);
}

function target(s: MemoryServices, name: string, manifest: ManifestWithDigest): ScrubTarget {
  return { name, manifest, open: (file) => s.store.openFile(name, file) };
}

interface Harness {
  scrubber: Scrubber;
  trust: ChunkTrust;
  corrupt: { name: string; why: string }[];
}

function scrubberOf(
  s: MemoryServices,
  targets: () => ScrubTarget[],
  options: { bytesPerSecond?: number; pauseMs?: number } = {},
): Harness {
  // A trust of its own: nothing verified yet, as after a restart.
  const trust = new ChunkTrust();
  const corrupt: { name: string; why: string }[] = [];
  const scrubber = new Scrubber({
    targets: () => Promise.resolve(targets()),
    trust,
    rate: new RateLimiter(options.bytesPerSecond ?? 0, { clock: s.clock }),
    clock: s.clock,
    onCorrupt: (t, why) => {
      corrupt.push({ name: t.name, why });
      return Promise.resolve();
    },
    log: silentLogger,
    ...(options.pauseMs === undefined ? {} : { pauseMs: options.pauseMs }),
  });
  return { scrubber, trust, corrupt };
}

Deno.test("Scrubber.pass() verifies and trusts every non-zero chunk", async () => {
  await using s = await memoryServices();
  const mem = chunkedBytes(4, 1, { zero: [2] });
  const a = await publish(s, "a", { mem, info: chunkedBytes(1, 2, { tail: CHUNK - 100 }) });
  const { scrubber, trust, corrupt } = scrubberOf(s, () => [a]);
  await s.run(scrubber.pass());
  const mine = trust.file(a.manifest.digest, "mem", 4);
  assertEquals([0, 1, 2, 3].map((i) => mine.has(i)), [true, true, false, true]);
  assert(trust.file(a.manifest.digest, "info", 1).has(0));
  assertEquals(scrubber.stats, { passes: 1, chunks: 4, bytes: 3 * CHUNK + 100, corrupt: 0 });
  assertEquals(corrupt, []);
});

Deno.test("Scrubber.pass() reports a rotted chunk once and stops scrubbing that snapshot", async () => {
  await using s = await memoryServices();
  const a = await publish(s, "a", { mem: chunkedBytes(4, 3), zfile: chunkedBytes(1, 4) });
  const b = await publish(s, "b", { mem: chunkedBytes(2, 5) });
  await rot(s.fs, s.store.filePath("a", "mem"), 1);
  const { scrubber, trust, corrupt } = scrubberOf(s, () => [a, b]);
  await s.run(scrubber.pass());
  assertEquals(corrupt.length, 1);
  assertEquals(corrupt[0]!.name, "a");
  assert(/^scrub: Chunk 1 of "mem" does not match the manifest$/.test(corrupt[0]!.why));
  const aMem = trust.file(a.manifest.digest, "mem", 4);
  assertEquals([0, 1, 2, 3].map((i) => aMem.has(i)), [true, false, false, false]);
  assert(!trust.file(a.manifest.digest, "zfile", 1).has(0), "the rest of a was not read");
  const bMem = trust.file(b.manifest.digest, "mem", 2);
  assert(bMem.has(0) && bMem.has(1), "the next snapshot is scrubbed");
  assertEquals(scrubber.stats.corrupt, 1);
  assertEquals(scrubber.stats.passes, 1);
});

Deno.test("Scrubber skips a snapshot evicted meanwhile", async () => {
  await using s = await memoryServices();
  const a = await publish(s, "a", { mem: chunkedBytes(2, 6) });
  const entry = s.catalog.get("a")!;
  await s.catalog.lock.run(() => s.catalog.removeLocked(entry, "evict"));
  const { scrubber, corrupt } = scrubberOf(s, () => [a]);
  await s.run(scrubber.pass());
  assertEquals(corrupt, []);
  assertEquals(scrubber.stats, { passes: 1, chunks: 0, bytes: 0, corrupt: 0 });
});

Deno.test("Scrubber.stop() ends a scrub paused between passes without waiting for the pause", async () => {
  await using s = await memoryServices();
  const a = await publish(s, "a", { mem: chunkedBytes(2, 7) });
  const { scrubber } = scrubberOf(s, () => [a], { pauseMs: 60_000 });
  scrubber.start();
  await s.clock.advance(1);
  assertEquals(scrubber.stats.passes, 1);
  await s.clock.advance(59_000);
  assertEquals(scrubber.stats.passes, 1, "still pausing");
  const before = s.clock.now();
  let stopped = false;
  scrubber.stop().then(() => (stopped = true));
  await s.clock.settle();
  assert(stopped, "stop() resolved with no timer fired");
  assertEquals(s.clock.now(), before);
  await s.clock.advance(120_000);
  assertEquals(scrubber.stats.passes, 1, "no pass after stop()");
});

Deno.test("Scrubber paces its reads with the rate limit (virtual time)", async () => {
  await using s = await memoryServices();
  const a = await publish(s, "a", { mem: chunkedBytes(16, 8) });
  // 256 KiB/s with a 256 KiB burst: four chunks at once, then one every 250 ms.
  const { scrubber } = scrubberOf(s, () => [a], { bytesPerSecond: 256 * 1024 });
  const started = s.clock.monotonic();
  let done = false;
  scrubber.pass().then(() => (done = true));
  await s.clock.advance(0);
  assertEquals(scrubber.stats.chunks, 4);
  await s.clock.advance(1000);
  assertEquals(scrubber.stats.chunks, 8);
  assert(!done);
  await s.clock.runUntil(() => done, { maxMs: 10_000 });
  assertEquals(s.clock.monotonic() - started, 3000);
  assertEquals(scrubber.stats.chunks, 16);
});

Deno.test("the agent's scrub quarantines a snapshot that rotted on disk, with nobody reading it", async () => {
  const first = await memoryNode({ flags: { "chunk-size": "64KiB" } });
  await first.publish("rots", { mem: chunkedBytes(4, 9) });
  await first.publish("fine", { mem: chunkedBytes(2, 10) });
  await first.close();
  await rot(first.fs, `${first.dir}/snapshots/rots/files/mem`, 3);
  await using node = await first.reopen({ flags: { "chunk-size": "64KiB", "scrub-rate": "1MiB" } });
  await node.clock.runUntil(() => node.agent.cacheStatus().scrubCorrupt === 1, { maxMs: 60_000 });
  await node.clock.advance(0);
  assertEquals((await node.agent.listDetailed()).map((e) => e.name), ["fine"]);
  const moved = await node.fs.readDir(`${node.dir}/quarantine`);
  assert(moved.length === 1 && moved[0]!.startsWith("rots."), String(moved));
});
