/**
 * PullJob with in-memory sources: which source serves what, what happens to
 * bad bytes, and how a pull that cannot finish ends.
 */

import { createHash } from "node:crypto";
import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import {
  type ChunkRequest,
  type ChunkSource,
  PullJob,
  type SourceKind,
} from "../../src/fetch/mod.ts";
import type { FileHandle } from "../../src/fs/mod.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { ZERO_CHUNK } from "../../src/manifest/mod.ts";
import { randomBytes } from "../helpers/temp.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const CHUNK = 64 * 1024;

/** A file of `chunks` chunks; chunk i is zero when `zero(i)`. */
function makeFile(chunks: number, seed: number, zero = (i: number) => i % 4 === 0) {
  const bytes = new Uint8Array(chunks * CHUNK);
  for (let i = 0; i < chunks; i++) {
    if (!zero(i)) bytes.set(randomBytes(CHUNK, seed * 100 + i), i * CHUNK);
  }
  const digests = Array.from({ length: chunks }, (_, i) => {
    const chunk = bytes.subarray(i * CHUNK, (i + 1) * CHUNK);
    return chunk.every((b) => b === 0)
      ? ZERO_CHUNK
      : createHash("sha256").update(chunk).digest("hex");
  });
  return { bytes, digests };
}

/** An in-memory partial file. */
class MemoryHandle implements FileHandle {
  bytes: Uint8Array;
  closed = false;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
  }
  readAt(buffer: Uint8Array, offset: number): Promise<number> {
    const part = this.bytes.subarray(offset, offset + buffer.length);
    buffer.set(part);
    return Promise.resolve(part.length);
  }
  writeAt(data: Uint8Array, offset: number): Promise<void> {
    this.bytes.set(data, offset);
    return Promise.resolve();
  }
  truncate(): Promise<void> {
    return Promise.resolve();
  }
  sync(): Promise<void> {
    return Promise.resolve();
  }
  size(): Promise<number> {
    return Promise.resolve(this.bytes.length);
  }
  stat(): Promise<never> {
    throw new Error("not used");
  }
  close(): void {
    this.closed = true;
  }
}

interface FakeOptions {
  id: string;
  kind?: SourceKind;
  bytes: Uint8Array;
  /** Chunks it holds (default all). */
  holds?: (index: number) => boolean;
  /** Flip a byte of every chunk it sends. */
  lies?: boolean;
  /** Delay per read. */
  delayMs?: number;
  /** Pulling the same snapshot (a participant). */
  participant?: boolean;
  /** Never answers (its reads wait until aborted). */
  hangs?: boolean;
}

/** A source backed by bytes in memory; counts what it served. */
class FakeSource implements ChunkSource {
  readonly id: string;
  readonly kind: SourceKind;
  readonly strikes = 1;
  readonly participantId: string;
  served: number[] = [];
  readonly #o: FakeOptions;
  constructor(options: FakeOptions) {
    this.#o = options;
    this.id = options.id;
    this.kind = options.kind ?? "peer";
    this.participantId = options.id;
  }
  has(request: ChunkRequest): boolean {
    for (let i = request.index; i < request.index + request.count; i++) {
      if (this.#o.holds && !this.#o.holds(i)) return false;
    }
    return true;
  }
  participant(): boolean {
    return this.#o.participant ?? false;
  }
  async read(request: ChunkRequest, signal: AbortSignal): Promise<Uint8Array> {
    if (this.#o.hangs) {
      await new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }
    if (this.#o.delayMs) await new Promise((r) => setTimeout(r, this.#o.delayMs));
    for (let i = request.index; i < request.index + request.count; i++) this.served.push(i);
    const out = this.#o.bytes.slice(request.start, request.end + 1);
    if (this.#o.lies) { for (let at = 7; at < out.length; at += CHUNK) out[at]! ^= 0x01; }
    return out;
  }
}

function job(
  digests: string[],
  sources: ChunkSource[],
  extra: {
    stallMs?: number;
    handles?: MemoryHandle[];
    opens?: { n: number };
    /** Time for the job (its ticks and stall rules); opening is then immediate. */
    clock?: VirtualClock;
  } = {},
) {
  const handle = new MemoryHandle(digests.length * CHUNK);
  extra.handles?.push(handle);
  return new PullJob({
    name: "fn",
    files: [{ name: "mem", size: digests.length * CHUNK, chunks: digests }],
    chunkSize: CHUNK,
    sources,
    openFile: async () => {
      if (extra.opens) extra.opens.n++;
      // Opening takes a moment (no real timer under a virtual clock).
      if (!extra.clock) await new Promise((r) => setTimeout(r, 5));
      return handle;
    },
    log: silentLogger,
    stallMs: extra.stallMs,
    ...(extra.clock ? { clock: extra.clock } : {}),
  });
}

Deno.test("PullJob fetches every non-zero chunk once, verified, and never a zero chunk", async () => {
  const { bytes, digests } = makeFile(32, 1);
  const origin = new FakeSource({ id: "origin", kind: "origin", bytes });
  const handles: MemoryHandle[] = [];
  const opens = { n: 0 };
  const pull = job(digests, [origin], { handles, opens });
  await pull.run();
  assertEquals(handles[0]!.bytes, bytes);
  assertEquals(pull.progress.state, "done");
  const served = [...origin.served].sort((a, b) => a - b);
  assertEquals(served, digests.flatMap((d, i) => (d === ZERO_CHUNK ? [] : [i])));
  // Eight workers, one partial file: opened once, closed at the end.
  assertEquals(opens.n, 1);
  assert(handles[0]!.closed);
});

Deno.test("PullJob prefers holders over the origin and takes from the origin only what nobody holds", async () => {
  const { bytes, digests } = makeFile(40, 2, () => false);
  const peer = new FakeSource({ id: "peer:a", bytes, holds: (i) => i < 30 });
  const origin = new FakeSource({ id: "origin", kind: "origin", bytes });
  const pull = job(digests, [peer, origin]);
  await pull.run();
  assertEquals(pull.progress.bySource.peer, 30 * CHUNK);
  assertEquals(pull.progress.bySource.origin, 10 * CHUNK);
  assert(origin.served.every((i) => i >= 30));
});

Deno.test("PullJob avoids a source whose bytes fail verification, and refetches elsewhere", async () => {
  const { bytes, digests } = makeFile(24, 3);
  const liar = new FakeSource({ id: "peer:liar", bytes, lies: true });
  const origin = new FakeSource({ id: "origin", kind: "origin", bytes });
  const failures: string[] = [];
  const handle = new MemoryHandle(bytes.length);
  const pull = new PullJob({
    name: "fn",
    files: [{ name: "mem", size: bytes.length, chunks: digests }],
    chunkSize: CHUNK,
    sources: [liar, origin],
    openFile: () => Promise.resolve(handle),
    log: silentLogger,
    onVerifyFailure: (s) => failures.push(s.id),
  });
  await pull.run();
  assertEquals(handle.bytes, bytes);
  assertEquals(pull.progress.bySource.peer, 0);
  assert(failures.length >= 1 && failures.every((f) => f === "peer:liar"));
  assert(pull.isBad("peer:liar"));
});

Deno.test("PullJob fails at once when a chunk has no source and none can come to hold it", async () => {
  const { bytes, digests } = makeFile(16, 4, () => false);
  const peer = new FakeSource({ id: "peer:a", bytes, holds: (i) => i !== 9 });
  const clock = new VirtualClock();
  const pull = job(digests, [peer], { clock });
  let outcome: unknown = null;
  const running = pull.run().then(() => (outcome = "done"), (err) => (outcome = err));
  await clock.runUntil(() => outcome !== null, { maxMs: 60_000 });
  await running;
  const err = outcome as unknown as Error & { code?: string };
  assertEquals(err.code, "upstream_failed");
  assert(/none is fetching/.test(err.message), err.message);
  // Long before any stall timeout (15 s by default).
  assert(clock.monotonic() < 5000, `failed after ${clock.monotonic()} virtual ms`);
  assertEquals(pull.progress.chunksDone, 15);
});

Deno.test("PullJob waits for a peer still pulling, then gives up after stallMs without progress", async () => {
  const { bytes, digests } = makeFile(8, 5, () => false);
  // A participant that holds half and never gets the rest.
  const peer = new FakeSource({ id: "peer:a", bytes, holds: (i) => i < 4, participant: true });
  const clock = new VirtualClock();
  const pull = job(digests, [peer], { stallMs: 800, clock });
  let outcome: unknown = null;
  const running = pull.run().then(() => (outcome = "done"), (err) => (outcome = err));
  await clock.advance(750);
  assertEquals(outcome, null, "still waiting before stallMs");
  await clock.runUntil(() => outcome !== null, { maxMs: 10_000 });
  await running;
  const err = outcome as unknown as { code?: string; message?: string };
  assertEquals(err.code, "upstream_failed");
  assert(/no chunk arrived/.test(err.message ?? ""), err.message);
  assert(clock.monotonic() >= 800, `gave up after ${clock.monotonic()} virtual ms`);
  assertEquals(pull.progress.chunksDone, 4);
});

Deno.test("PullJob: a source that hangs is not a stall of the pull while the read is in flight", async () => {
  const { bytes, digests } = makeFile(4, 6, () => false);
  const hanging = new FakeSource({ id: "peer:slow", bytes, hangs: true });
  const clock = new VirtualClock();
  const pull = job(digests, [hanging], { stallMs: 300, clock });
  const running = pull.run();
  running.catch(() => {});
  // Far beyond stallMs, with the job's ticks firing all along.
  await clock.advance(10_000);
  assertEquals(
    pull.progress.state,
    "running",
    "reads in flight are the source's watchdog's business",
  );
  pull.abort(
    new (await import("../../src/errors.ts")).SnapmeshError("upstream_failed", "test over"),
  );
  await assertRejects(() => running);
});

Deno.test("PullJob waitChunk() moves a chunk a reader needs to the front", async () => {
  const { bytes, digests } = makeFile(64, 7, () => false);
  const origin = new FakeSource({ id: "origin", kind: "origin", bytes, delayMs: 5 });
  const handle = new MemoryHandle(bytes.length);
  const pull = new PullJob({
    name: "fn",
    files: [{ name: "mem", size: bytes.length, chunks: digests }],
    chunkSize: CHUNK,
    sources: [origin],
    openFile: () => Promise.resolve(handle),
    concurrency: 1,
    maxRequestBytes: CHUNK,
    log: silentLogger,
  });
  const waited = pull.waitChunk(0, 50);
  const running = pull.run();
  await waited;
  assert(origin.served.indexOf(50) < 4, `chunk 50 came ${origin.served.indexOf(50)}th`);
  await running;
});
