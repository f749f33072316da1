import { assert, assertEquals } from "../helpers/assert.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { FakeUffdSys } from "../../src/restore/fake_sys.ts";
import type { RegionMapping } from "../../src/restore/mappings.ts";
import {
  type ChunkState,
  type FaultSource,
  type MemoryImage,
  RestoreSession,
  type RestoreSessionOptions,
} from "../../src/restore/session.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const PAGE = 4096;
const CHUNK = 16 * PAGE;
const CHUNKS = 8;
const SIZE = CHUNK * CHUNKS;
/** Two regions with a gap, as Firecracker maps guest memory above 3 GiB. */
const BASE1 = 0x10000000;
const BASE2 = 0x40000000;
const REGIONS: RegionMapping[] = [
  { base: BASE1, size: SIZE / 2, offset: 0, pageSize: PAGE },
  { base: BASE2, size: SIZE / 2, offset: SIZE / 2, pageSize: PAGE },
];

/** Byte `i` of the memory file (chunks 2 and 5 are zero chunks). */
function byteAt(i: number): number {
  const chunk = Math.floor(i / CHUNK);
  if (chunk === 2 || chunk === 5) return 0;
  return (i * 7 + chunk + 1) % 251 || 1;
}

function addressOf(offset: number): number {
  return offset < SIZE / 2 ? BASE1 + offset : BASE2 + offset - SIZE / 2;
}

interface Deferred {
  resolve(source: FaultSource): void;
  reject(err: Error): void;
}

/** A memory file whose missing chunks arrive when the test says. */
class FakeMemory implements MemoryImage {
  readonly size = SIZE;
  readonly chunkSize = CHUNK;
  readonly chunks = CHUNKS;
  readonly states: ChunkState[];
  readonly pending = new Map<number, Deferred[]>();
  readonly fetched: number[] = [];
  closed = false;
  /** Called when a fetch is asked for (before it resolves). */
  onFetch: ((index: number) => void) | null = null;

  constructor(missing: number[] = []) {
    this.states = Array.from(
      { length: CHUNKS },
      (_, c) => c === 2 || c === 5 ? "zero" : missing.includes(c) ? "missing" : "ready",
    );
  }

  state(index: number): ChunkState {
    return this.states[index]!;
  }

  fetch(index: number): Promise<FaultSource> {
    if (this.states[index] !== "missing") return Promise.resolve("local");
    this.fetched.push(index);
    this.onFetch?.(index);
    return new Promise((resolve, reject) => {
      const list = this.pending.get(index) ?? [];
      list.push({ resolve, reject });
      this.pending.set(index, list);
    });
  }

  /** The chunk arrives (verified). */
  arrive(index: number, source: FaultSource = "peer"): void {
    this.states[index] = "ready";
    for (const d of this.pending.get(index) ?? []) d.resolve(source);
    this.pending.delete(index);
  }

  failFetch(index: number, err: Error): void {
    for (const d of this.pending.get(index) ?? []) d.reject(err);
    this.pending.delete(index);
  }

  read(buffer: Uint8Array, offset: number): void {
    for (let i = 0; i < buffer.length; i++) {
      const at = offset + i;
      const chunk = Math.floor(at / CHUNK);
      if (at >= SIZE) buffer[i] = 0;
      else if (this.states[chunk] === "missing") throw new Error(`read of missing chunk ${chunk}`);
      else buffer[i] = byteAt(at);
    }
  }

  close(): void {
    this.closed = true;
  }
}

function setup(options: Partial<RestoreSessionOptions> & { missing?: number[] } = {}) {
  const clock = new VirtualClock();
  const sys = new FakeUffdSys({
    regions: REGIONS.map((r) => ({ start: r.base, size: r.size })),
  });
  const memory = new FakeMemory(options.missing ?? []);
  const observed: { source: FaultSource; seconds: number }[] = [];
  const session = new RestoreSession({
    id: "r1",
    sys,
    uffd: sys.uffd,
    pidfd: sys.pidfd,
    regions: REGIONS,
    memory,
    workingSet: null,
    clock,
    log: silentLogger,
    faultTimeoutMs: 5000,
    observer: { fault: (source, seconds) => observed.push({ source, seconds }) },
    ...options,
  });
  return { clock, sys, memory, session, observed };
}

function expectedPage(offset: number): Uint8Array {
  return Uint8Array.from({ length: PAGE }, (_, i) => byteAt(offset + i));
}

Deno.test("RestoreSession serves faults on local chunks with copies of the right bytes", async () => {
  const { clock, sys, session, memory } = setup();
  session.start();
  for (const offset of [0, 5 * PAGE, SIZE / 2 + 3 * PAGE, SIZE - PAGE]) {
    const touched = sys.touch(addressOf(offset) + 123);
    await clock.settle();
    assertEquals(await touched, expectedPage(offset));
  }
  assertEquals(session.stats.faults, { local: 4, peer: 0, origin: 0, zero: 0 });
  sys.exit();
  await session.ended;
  assertEquals(session.outcome, "vm_exited");
  assertEquals(sys.calls.kill, 0);
  assert(sys.closed.has(sys.uffd) && sys.closed.has(sys.pidfd), "descriptors closed");
  assert(memory.closed, "memory file closed");
});

Deno.test("RestoreSession answers zero chunks with zero pages", async () => {
  const { clock, sys, session } = setup();
  session.start();
  const touched = sys.touch(addressOf(2 * CHUNK + PAGE));
  await clock.settle();
  assertEquals(await touched, new Uint8Array(PAGE));
  assertEquals(sys.calls.zeroPage, 1);
  assertEquals(sys.calls.copy, 0);
  assertEquals(session.stats.faults.zero, 1);
  await session.end("ended", "test");
});

Deno.test("RestoreSession fetches a missing chunk and installs the page once it arrives", async () => {
  const { clock, sys, session, memory, observed } = setup({ missing: [3] });
  session.start();
  const offset = 3 * CHUNK + 2 * PAGE;
  let done = false;
  const first = sys.touch(addressOf(offset)).then((b) => (done = true, b));
  // A second thread faults the same page while it is on its way.
  const second = sys.touch(addressOf(offset) + 8);
  await clock.settle();
  assertEquals(memory.fetched, [3]);
  assert(!done, "not served before the chunk arrived");
  await clock.advance(120);
  memory.arrive(3, "origin");
  await clock.settle();
  assertEquals(await first, expectedPage(offset));
  assertEquals(await second, expectedPage(offset));
  assertEquals(sys.calls.copy, 1);
  assertEquals(session.stats.faults.origin, 1);
  assertEquals(session.stats.faultEvents, 2);
  assertEquals(observed.map((o) => o.source), ["origin"]);
  assertEquals(observed[0]!.seconds, 0.12);
  await session.end("ended", "test");
});

Deno.test("RestoreSession treats EEXIST as normal: a duplicate fault only wakes", async () => {
  const { clock, sys, session } = setup();
  session.start();
  const touched = sys.touch(addressOf(PAGE));
  await clock.settle();
  await touched;
  // The kernel may still deliver a fault for a page that is there now
  // (two threads raced): the session wakes, and nothing fails.
  sys.pages.delete(addressOf(PAGE));
  sys.pages.set(addressOf(PAGE), expectedPage(PAGE));
  const again = sys.touch(addressOf(PAGE));
  assertEquals(await again, expectedPage(PAGE));
  await clock.settle();
  assertEquals(session.outcome, null);
  await session.end("ended", "test");
});

Deno.test("RestoreSession gives zero pages after a balloon remove, also to a fault in flight", async () => {
  const { clock, sys, session, memory } = setup({ missing: [6] });
  session.start();
  const offset = PAGE * 4;
  const first = sys.touch(addressOf(offset));
  await clock.settle();
  assertEquals(await first, expectedPage(offset));
  sys.remove(addressOf(0), addressOf(8 * PAGE));
  await clock.settle();
  const refault = sys.touch(addressOf(offset));
  await clock.settle();
  assertEquals(await refault, new Uint8Array(PAGE));
  // A fault waiting for its chunk when the range is removed gets zeros too.
  const inFlight = sys.touch(addressOf(6 * CHUNK));
  await clock.settle();
  sys.remove(addressOf(6 * CHUNK), addressOf(6 * CHUNK + PAGE));
  await clock.settle();
  memory.arrive(6);
  await clock.settle();
  assertEquals(await inFlight, new Uint8Array(PAGE));
  assertEquals(session.stats.removedPages, 9);
  await session.end("ended", "test");
});

Deno.test("RestoreSession retries a fill that a pending event held back (EAGAIN)", async () => {
  const { clock, sys, session, memory } = setup({ missing: [1] });
  session.start();
  // The remove event arrives while the chunk is being fetched: the install
  // answers "again" until the session reads it.
  const touched = sys.touch(addressOf(CHUNK));
  await clock.settle();
  memory.arrive(1);
  sys.remove(addressOf(7 * CHUNK), addressOf(7 * CHUNK + PAGE));
  await clock.settle();
  assertEquals(await touched, expectedPage(CHUNK));
  assert(sys.calls.again >= 1, "a fill was held back");
  assertEquals(session.stats.removedPages, 1);
  await session.end("ended", "test");
});

Deno.test("RestoreSession installs the working set first, without faults, then wakes", async () => {
  const { clock, sys, session, memory } = setup({ missing: [4], workingSet: [4, 0, 5] });
  session.start();
  await clock.settle();
  assertEquals(memory.fetched, [4]);
  memory.arrive(4);
  await clock.settle();
  assertEquals(session.stats.prefetchedPages, 48);
  // Every page of the working set is there: touching them faults nothing.
  for (const offset of [0, CHUNK - PAGE, 4 * CHUNK + 3 * PAGE, 5 * CHUNK]) {
    const bytes = await sys.touch(addressOf(offset));
    assertEquals(bytes, offset >= 5 * CHUNK ? new Uint8Array(PAGE) : expectedPage(offset));
  }
  assertEquals(session.stats.faultEvents, 0);
  // A fault outside the working set is counted as such.
  await Promise.all([sys.touch(addressOf(CHUNK)), clock.settle()]);
  assertEquals(session.stats.outsideWorkingSet, 1);
  await session.end("ended", "test");
});

Deno.test("RestoreSession fails a fault not served in time: the VM is killed, descriptors closed", async () => {
  const { clock, sys, session, memory } = setup({ missing: [7] });
  session.start();
  sys.touch(addressOf(7 * CHUNK));
  await clock.advance(4999);
  assertEquals(session.outcome, null);
  await clock.advance(1);
  await session.ended;
  assertEquals(session.outcome, "failed");
  assert(/not served within 5000 ms/.test(session.reason), session.reason);
  assertEquals(sys.calls.kill, 1);
  assert(!sys.alive, "VM killed");
  assert(sys.closed.has(sys.uffd) && sys.closed.has(sys.pidfd), "descriptors closed");
  assert(memory.closed, "memory closed");
});

Deno.test("RestoreSession fails when no source can deliver a chunk", async () => {
  const { clock, sys, session, memory } = setup({ missing: [0] });
  session.start();
  sys.touch(addressOf(0));
  await clock.settle();
  memory.failFetch(0, new Error("upstream_failed: no source"));
  await session.ended;
  assertEquals(session.outcome, "failed");
  assert(/no source/.test(session.reason), session.reason);
  assertEquals(sys.calls.kill, 1);
});

Deno.test("RestoreSession records the order in which chunks first fault, once per window", async () => {
  const recorded: number[][] = [];
  const { clock, sys, session } = setup({
    recordWindowMs: 1000,
    onRecorded: (chunks) => recorded.push(chunks),
  });
  session.start();
  for (const offset of [6 * CHUNK, 0, 6 * CHUNK + PAGE, 3 * CHUNK]) {
    await Promise.all([sys.touch(addressOf(offset)), clock.settle()]);
  }
  await clock.advance(1000);
  await Promise.all([sys.touch(addressOf(CHUNK)), clock.settle()]);
  assertEquals(recorded, [[6, 0, 3]]);
  await session.end("ended", "test");
  assertEquals(recorded.length, 1);
});

Deno.test("RestoreSession follows remap, ignores unmapped ranges, closes fork descriptors", async () => {
  const { clock, sys, session } = setup();
  session.start();
  const moved = 0x70000000;
  sys.remap(BASE2, moved, SIZE / 2);
  await clock.settle();
  const offset = SIZE / 2 + PAGE;
  assertEquals(
    await Promise.all([sys.touch(moved + PAGE), clock.settle()]).then(([b]) => b),
    expectedPage(offset),
  );
  const fd = sys.fork();
  await clock.settle();
  assert(sys.closed.has(fd), "fork descriptor closed");
  sys.unmap(BASE1, BASE1 + CHUNK);
  await clock.settle();
  assertEquals(
    await Promise.all([sys.touch(BASE1 + CHUNK), clock.settle()]).then(([b]) => b),
    expectedPage(CHUNK),
  );
  assertEquals(session.outcome, null);
  await session.end("ended", "test");
});

Deno.test("RestoreSession.installAll() fills every page so the VM can run on alone", async () => {
  const { clock, sys, session } = setup();
  session.start();
  sys.remove(addressOf(0), addressOf(PAGE));
  await clock.settle();
  assert(await session.installAll(), "everything installed");
  assertEquals(sys.pages.size, SIZE / PAGE);
  assertEquals(sys.pages.get(addressOf(0)), new Uint8Array(PAGE));
  await session.end("detached", "shutdown");
  assertEquals(sys.calls.kill, 0);
  assert(sys.alive, "VM left running");
});

Deno.test("RestoreSession.installAll() refuses when a chunk is not local", async () => {
  const { session } = setup({ missing: [3] });
  session.start();
  assertEquals(await session.installAll(), false);
  await session.end("shutdown", "not local");
});
