/**
 * PullJob with in-memory sources through the real data plane (SourcesIO):
 * which source serves what, what happens to bad bytes, slow holders, and
 * how a pull that cannot finish ends. Timing runs on a virtual clock.
 */

import { createHash } from "node:crypto";
import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import {
  type ChunkRequest,
  type ChunkSource,
  PullJob,
  type SourceKind,
  SourcesIO,
} from "../../src/fetch/mod.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { ZERO_CHUNK } from "../../src/manifest/mod.ts";
import { SnapmeshError } from "../../src/errors.ts";
import { VirtualClock } from "../../src/util/clock.ts";
import { seededRandom } from "../../src/util/random.ts";
import { randomBytes } from "../helpers/temp.ts";

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

interface FakeOptions {
  id: string;
  kind?: SourceKind;
  bytes: Uint8Array;
  /** Flip a byte of every chunk it sends. */
  lies?: boolean;
  /** Virtual delay per read. */
  delayMs?: number;
  /** Never answers (its reads wait until aborted). */
  hangs?: boolean;
}

/** A source backed by bytes in memory; counts what it served. */
class FakeSource implements ChunkSource {
  readonly id: string;
  readonly kind: SourceKind;
  served: number[] = [];
  readonly #o: FakeOptions;
  readonly #clock: VirtualClock;
  constructor(options: FakeOptions, clock: VirtualClock) {
    this.#o = options;
    this.#clock = clock;
    this.id = options.id;
    this.kind = options.kind ?? "peer";
  }
  async read(request: ChunkRequest, options: { signal: AbortSignal }): Promise<Uint8Array> {
    const { signal } = options;
    if (this.#o.hangs) {
      await new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }
    if (this.#o.delayMs) await this.#clock.sleep(this.#o.delayMs, { signal });
    signal.throwIfAborted();
    for (let i = request.index; i < request.index + request.count; i++) this.served.push(i);
    const out = this.#o.bytes.slice(request.start, request.end + 1);
    if (this.#o.lies) { for (let at = 7; at < out.length; at += CHUNK) out[at]! ^= 0x01; }
    return out;
  }
}

/** Bitmap of the chunks `holds` selects. */
function bits(count: number, holds: (i: number) => boolean): Uint8Array {
  const out = new Uint8Array(Math.ceil(count / 8));
  for (let i = 0; i < count; i++) if (holds(i)) out[i >> 3]! |= 1 << (i & 7);
  return out;
}

interface Setup {
  clock: VirtualClock;
  fs: MemoryFileSystem;
  io: SourcesIO;
  pull: PullJob;
}

async function setup(
  digests: string[],
  options: { stallMs?: number; failures?: string[] } = {},
): Promise<Setup> {
  const clock = new VirtualClock();
  const fs = new MemoryFileSystem({ now: clock.now });
  await fs.mkdir("/p");
  const size = digests.length * CHUNK;
  const f = await fs.open("/p/mem", { write: true, create: true });
  await f.truncate(size);
  f.close();
  const files = [{ name: "mem", size, chunks: digests }];
  const io = new SourcesIO({
    files,
    chunkSize: CHUNK,
    openFile: () => fs.open("/p/mem", { write: true }),
  });
  const pull = new PullJob({
    name: "fn",
    files,
    chunkSize: CHUNK,
    io,
    log: silentLogger,
    clock,
    random: seededRandom(1),
    ...(options.stallMs ? { stallMs: options.stallMs } : {}),
    onVerifyFailure: (source) => options.failures?.push(source),
  });
  return { clock, fs, io, pull };
}

function add(
  s: Setup,
  source: FakeSource,
  have: Uint8Array | "all" = "all",
  extra: { maxInFlight?: number; zone?: string | null } = {},
): void {
  s.io.add(source);
  s.pull.addSource({
    id: source.id,
    kind: source.kind,
    maxInFlight: extra.maxInFlight ?? 4,
    zone: extra.zone ?? null,
  }, source.kind === "origin" ? "all" : have);
}

/** Runs the pull on the virtual clock to its end. */
async function run(s: Setup): Promise<void> {
  const running = s.pull.run();
  let done = false;
  running.then(() => (done = true), () => (done = true));
  await s.clock.runUntil(() => done, { maxMs: 600_000 });
  await running;
}

Deno.test("PullJob fetches every non-zero chunk once, verified, and never a zero chunk", async () => {
  const { bytes, digests } = makeFile(32, 1);
  const s = await setup(digests);
  const origin = new FakeSource({ id: "origin", kind: "origin", bytes }, s.clock);
  add(s, origin);
  await run(s);
  assertEquals(await s.fs.readFile("/p/mem"), bytes);
  assertEquals(s.pull.progress.state, "done");
  const served = [...origin.served].sort((a, b) => a - b);
  assertEquals(served, digests.flatMap((d, i) => (d === ZERO_CHUNK ? [] : [i])));
  assertEquals(s.fs.openHandles, 0, "the partial file is closed at the end");
});

Deno.test("PullJob prefers holders over the origin and takes from the origin only what nobody holds", async () => {
  const { bytes, digests } = makeFile(40, 2, () => false);
  const s = await setup(digests);
  const peer = new FakeSource({ id: "peer:a", bytes }, s.clock);
  const origin = new FakeSource({ id: "origin", kind: "origin", bytes }, s.clock);
  add(s, peer, bits(40, (i) => i < 30));
  add(s, origin);
  await run(s);
  assertEquals(s.pull.progress.bySource.peer, 30 * CHUNK);
  assertEquals(s.pull.progress.bySource.origin, 10 * CHUNK);
  assert(origin.served.every((i) => i >= 30));
});

Deno.test("PullJob takes the rarest chunks first", async () => {
  const { bytes, digests } = makeFile(20, 3, () => false);
  const s = await setup(digests);
  // Everyone holds chunks 0..9; only c holds 10..19.
  const a = new FakeSource({ id: "peer:a", bytes, delayMs: 10 }, s.clock);
  const b = new FakeSource({ id: "peer:b", bytes, delayMs: 10 }, s.clock);
  const c = new FakeSource({ id: "peer:c", bytes, delayMs: 10 }, s.clock);
  add(s, a, bits(20, (i) => i < 10), { maxInFlight: 1 });
  add(s, b, bits(20, (i) => i < 10), { maxInFlight: 1 });
  add(s, c, "all", { maxInFlight: 1 });
  await run(s);
  // c was asked for its rare chunks, not for what everyone holds.
  assertEquals(c.served.filter((i) => i < 10), []);
  assertEquals(c.served.length, 10);
});

Deno.test("PullJob drops a source whose bytes fail verification, tells it, and refetches elsewhere", async () => {
  const { bytes, digests } = makeFile(24, 4);
  const failures: string[] = [];
  const s = await setup(digests, { failures });
  const suspected: number[] = [];
  const liar = new FakeSource({ id: "peer:liar", bytes, lies: true }, s.clock);
  (liar as ChunkSource).suspect = (_file: string, index: number) => suspected.push(index);
  const origin = new FakeSource({ id: "origin", kind: "origin", bytes }, s.clock);
  add(s, liar);
  const dropped: string[] = [];
  s.pull.onSourceDropped((id) => dropped.push(id));
  // The origin only after the liar is gone (it would not be used while a peer holds the chunks).
  s.pull.onSourceDropped(() => add(s, origin));
  await run(s);
  assertEquals(await s.fs.readFile("/p/mem"), bytes);
  assertEquals(s.pull.progress.bySource.peer, 0);
  assert(failures.length >= 1 && failures.every((f) => f === "peer:liar"));
  assertEquals(dropped.slice(0, 1), ["peer:liar"]);
  assert(suspected.length >= 1, "the liar was told which chunk it sent bad");
});

Deno.test("PullJob fails once no chunk can have a source and the swarm can bring none", async () => {
  const { bytes, digests } = makeFile(16, 5, () => false);
  const s = await setup(digests);
  add(s, new FakeSource({ id: "peer:a", bytes }, s.clock), bits(16, (i) => i !== 9));
  s.pull.setMoreMayCome(false);
  const started = s.clock.now();
  const err = await assertRejects(() => run(s));
  assertEquals((err as { code?: string }).code, "upstream_failed");
  assert(/none is fetching/.test((err as Error).message), (err as Error).message);
  assert(s.clock.now() - started < 5000);
  assertEquals(s.pull.progress.chunksDone, 15);
});

Deno.test("PullJob waits while the swarm may bring sources, then gives up after stallMs", async () => {
  const { bytes, digests } = makeFile(8, 6, () => false);
  const s = await setup(digests, { stallMs: 800 });
  add(s, new FakeSource({ id: "peer:a", bytes }, s.clock), bits(8, (i) => i < 4));
  const started = s.clock.now();
  const err = await assertRejects(() => run(s));
  assert(/no chunk arrived/.test((err as Error).message), (err as Error).message);
  assert(s.clock.now() - started >= 800);
  assertEquals(s.pull.progress.chunksDone, 4);
});

Deno.test("PullJob: the stall time counts from when nothing was in flight, not from the last chunk", async () => {
  const { bytes, digests } = makeFile(8, 6, () => false);
  const s = await setup(digests, { stallMs: 800 });
  add(s, new FakeSource({ id: "peer:a", bytes }, s.clock), bits(8, (i) => i < 4));
  // b answers after 700 ms with bad bytes (and is dropped): waiting on it was not a stall.
  add(
    s,
    new FakeSource({ id: "peer:b", bytes, delayMs: 700, lies: true }, s.clock),
    bits(8, (i) => i >= 4),
  );
  const started = s.clock.now();
  const err = await assertRejects(() => run(s));
  assert(/no chunk arrived/.test((err as Error).message), (err as Error).message);
  assert(s.clock.now() - started >= 700 + 800, `failed after ${s.clock.now() - started} ms`);
});

Deno.test("PullJob: no chunk for four times the stall time fails the pull, even with a request out", async () => {
  const { bytes, digests } = makeFile(8, 6, () => false);
  const s = await setup(digests, { stallMs: 800 });
  add(s, new FakeSource({ id: "peer:a", bytes }, s.clock), bits(8, (i) => i < 4));
  add(s, new FakeSource({ id: "peer:b", bytes, hangs: true }, s.clock), bits(8, (i) => i >= 4));
  const started = s.clock.now();
  const err = await assertRejects(() => run(s));
  assert(/no chunk arrived for 3 s/.test((err as Error).message), (err as Error).message);
  const took = s.clock.now() - started;
  assert(took >= 3200 && took < 4000, `failed after ${took} ms`);
});

Deno.test("PullJob: a slow holder loses its chunks to a faster one, and the losers are cancelled", async () => {
  const { bytes, digests } = makeFile(12, 7, () => false);
  const s = await setup(digests);
  const slow = new FakeSource({ id: "peer:slow", bytes, hangs: true }, s.clock);
  const fast = new FakeSource({ id: "peer:fast", bytes, delayMs: 20 }, s.clock);
  add(s, slow, "all", { maxInFlight: 2 });
  add(s, fast, "all", { maxInFlight: 2 });
  const started = s.clock.now();
  await run(s);
  assertEquals(await s.fs.readFile("/p/mem"), bytes);
  assertEquals(slow.served, [], "the hanging holder delivered nothing");
  assert(s.clock.now() - started < 10_000, `took ${s.clock.now() - started} virtual ms`);
});

Deno.test("PullJob waitChunk() moves a chunk a reader needs to the front", async () => {
  const { bytes, digests } = makeFile(64, 8, () => false);
  const s = await setup(digests);
  const origin = new FakeSource({ id: "origin", kind: "origin", bytes, delayMs: 5 }, s.clock);
  add(s, origin);
  const waited = s.pull.waitChunk(0, 50);
  await run(s);
  await waited;
  assert(origin.served.indexOf(50) < 12, `chunk 50 came ${origin.served.indexOf(50)}th`);
});

Deno.test("PullJob abort() ends the pull and rejects waiters", async () => {
  const { bytes, digests } = makeFile(8, 9, () => false);
  const s = await setup(digests);
  add(s, new FakeSource({ id: "peer:h", bytes, hangs: true }, s.clock));
  const waiter = s.pull.waitChunk(0, 3);
  waiter.catch(() => {});
  const running = s.pull.run();
  running.catch(() => {});
  await s.clock.advance(100);
  s.pull.abort(new SnapmeshError("shutting_down", "test over"));
  await assertRejects(() => running);
  await assertRejects(() => waiter);
});
