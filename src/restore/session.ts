/**
 * One restore session: serves the page faults of one VM's guest memory from
 * its memory file (a {@linkcode MemoryImage}: local verified chunks, zero
 * chunks, chunks a pull fetches at top priority), through the syscall layer
 * ({@linkcode UffdSys}).
 *
 * - Events are read in order from the userfaultfd whenever it is readable
 *   (a poll on a worker thread, together with the VM's pidfd and a wake-up
 *   descriptor): page faults, and the non-cooperative events.
 * - A fault on a page whose chunks are local is answered at once
 *   (`UFFDIO_COPY`, or `UFFDIO_ZEROPAGE` for zero chunks); otherwise the
 *   chunks are fetched and the page installed when they are verified, within
 *   `faultTimeoutMs`, or the session fails: the VM is killed (it would hang
 *   on that page forever), never handed a wrong page.
 * - Pages are tracked by their place in the memory file: `remove` (the
 *   balloon) marks them removed, and a later fault there gets a zero page;
 *   `remap` moves regions; `unmap` drops them; `fork` descriptors are closed.
 * - `EEXIST` (another thread faulted the same page) is normal: the page is
 *   there, its waiters are woken. `EAGAIN` means an event is pending: events
 *   are read, then the fill is retried.
 * - The working set (chunk indexes in fault order) is installed first, with
 *   copies that do not wake, then one wake per run of pages.
 * - The order in which chunks first fault is recorded during a window.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import type { Clock, Timer } from "../util/clock.ts";
import type { RegionMapping } from "./mappings.ts";
import type { FillResult, UffdEvent, UffdSys } from "./uffd_sys.ts";

/** Where a faulting page came from. */
export type FaultSource = "local" | "peer" | "origin" | "zero";

/** What a chunk of the memory file is, right now. */
export type ChunkState = "zero" | "ready" | "missing";

/** The memory file as a session reads it. */
export interface MemoryImage {
  readonly size: number;
  readonly chunkSize: number;
  /** Chunks in the file. */
  readonly chunks: number;
  /**
   * `zero` (a hole), `ready` (local and verified: {@linkcode MemoryImage.read}
   * may read it), or `missing`. May verify a local chunk first.
   */
  state(index: number): ChunkState;
  /** Makes chunk `index` ready (fetching it at top priority); resolves with where it came from. */
  fetch(index: number): Promise<FaultSource>;
  /** Fills `buffer` from `offset`; every chunk it covers is ready or zero. Past the end: zeros. */
  read(buffer: Uint8Array, offset: number): void;
  close(): void;
}

/** How a session ended. */
export type SessionOutcome =
  /** The VM process exited. */
  | "vm_exited"
  /** Ended on request (`DELETE /v1/restores/{id}`); the VM is killed unless detached. */
  | "ended"
  /** A fault could not be served: the VM was killed. */
  | "failed"
  /** The agent shut down and the VM could not go on without it: killed. */
  | "shutdown"
  /** Every page was installed: the VM runs on without the agent. */
  | "detached";

/** Counters of one session. */
export interface SessionStats {
  faults: Record<FaultSource, number>;
  /** Fault messages read (duplicates of a page already on its way included). */
  faultEvents: number;
  /** Faults on chunks outside the working set (when there is one). */
  outsideWorkingSet: number;
  prefetchedPages: number;
  removedPages: number;
}

/** Hooks for metrics. */
export interface SessionObserver {
  fault?(source: FaultSource, seconds: number, outsideWorkingSet: boolean): void;
  prefetched?(pages: number): void;
}

/** Options for {@linkcode RestoreSession}. */
export interface RestoreSessionOptions {
  id: string;
  sys: UffdSys;
  /** The guest memory's userfaultfd (the session closes it). */
  uffd: number;
  /** A pidfd of the VM process (the session closes it), or null when it had exited already. */
  pidfd: number | null;
  regions: RegionMapping[];
  memory: MemoryImage;
  /** Chunk indexes to install first, in order (the working set), or null. */
  workingSet: number[] | null;
  clock: Clock;
  log: Logger;
  /** A fault not served within this long fails the session. @default 30000 */
  faultTimeoutMs?: number;
  /** Record the fault order for this long, or null not to record. @default null */
  recordWindowMs?: number | null;
  /** Receives the recorded fault order (chunk indexes) once the window ends. */
  onRecorded?: (chunks: number[]) => void;
  /** Chunks fetched at once while prefetching. @default 16 */
  prefetchConcurrency?: number;
  observer?: SessionObserver;
}

/** Where a page is: its address now, and its place in the memory file. */
interface PageAt {
  address: number;
  fileOffset: number;
  /** fileOffset / pageSize */
  page: number;
}

/** Fault service times kept per source, for percentiles. */
const LATENCY_SAMPLES = 8192;

/** Fill attempts in a row that may answer "again" before the session gives up. */
const MAX_AGAIN = 1000;

/** Serves the faults of one VM. Call {@linkcode RestoreSession.start} once. */
export class RestoreSession {
  readonly id: string;
  readonly stats: SessionStats = {
    faults: { local: 0, peer: 0, origin: 0, zero: 0 },
    faultEvents: 0,
    outsideWorkingSet: 0,
    prefetchedPages: 0,
    removedPages: 0,
  };
  readonly #o: RestoreSessionOptions;
  readonly #latency: Record<FaultSource, { samples: Float64Array; next: number }> = {
    local: { samples: new Float64Array(LATENCY_SAMPLES), next: 0 },
    peer: { samples: new Float64Array(LATENCY_SAMPLES), next: 0 },
    origin: { samples: new Float64Array(LATENCY_SAMPLES), next: 0 },
    zero: { samples: new Float64Array(LATENCY_SAMPLES), next: 0 },
  };
  readonly #sys: UffdSys;
  readonly #uffd: number;
  readonly #pageSize: number;
  readonly #regions: RegionMapping[];
  /** Pages installed, by file page. */
  readonly #installed: Uint8Array;
  /** Pages the balloon removed (zero from now on), by file page. */
  readonly #removed: Uint8Array;
  /** Pages with an install on its way (a fault waiting for its chunk). */
  readonly #pending = new Set<number>();
  #workingSet: Set<number> | null;
  readonly #recorded: number[] = [];
  readonly #recordedSet = new Set<number>();
  #recording: boolean;
  #recordTimer: Timer | null = null;
  readonly #wakeFd: number;
  readonly #pageBuffer: Uint8Array;
  #chunkBuffer: Uint8Array | null = null;
  /** Page faults read while an event was being handled, served next. */
  readonly #backlog: UffdEvent[] = [];
  #outcome: SessionOutcome | null = null;
  #reason = "";
  #loop: Promise<void> | null = null;
  #prefetch: Promise<void> = Promise.resolve();
  #endResolve!: () => void;
  /** Resolves once the session has ended and its descriptors are closed. */
  readonly ended: Promise<void>;

  constructor(options: RestoreSessionOptions) {
    this.#o = options;
    this.id = options.id;
    this.#sys = options.sys;
    this.#uffd = options.uffd;
    this.#regions = options.regions.map((r) => ({ ...r }));
    this.#pageSize = this.#regions[0]!.pageSize;
    const pages = Math.ceil(
      Math.max(...this.#regions.map((r) => r.offset + r.size)) / this.#pageSize,
    );
    this.#installed = new Uint8Array(Math.ceil(pages / 8));
    this.#removed = new Uint8Array(Math.ceil(pages / 8));
    this.#workingSet = options.workingSet ? new Set(options.workingSet) : null;
    this.#recording = (options.recordWindowMs ?? null) !== null;
    this.#wakeFd = this.#sys.eventFd();
    this.#pageBuffer = new Uint8Array(this.#pageSize);
    this.ended = new Promise((resolve) => (this.#endResolve = resolve));
  }

  /** How it ended, or null while it runs. */
  get outcome(): SessionOutcome | null {
    return this.#outcome;
  }

  /** Why it ended (empty while it runs). */
  get reason(): string {
    return this.#reason;
  }

  get pageSize(): number {
    return this.#pageSize;
  }

  /** Starts serving: the event loop, the working set, the recording window. */
  start(): void {
    if (this.#loop) return;
    if (this.#o.pidfd === null) {
      this.#loop = Promise.resolve();
      this.end("vm_exited", "the VM process had exited before its memory was served");
      return;
    }
    if (this.#recording) {
      this.#recordTimer = this.#o.clock.setTimeout(
        () => this.#finishRecording(),
        this.#o.recordWindowMs!,
      );
    }
    this.#loop = this.#run();
    if (this.#o.workingSet && this.#o.workingSet.length > 0) {
      this.#prefetch = this.#prefetchChunks(this.#o.workingSet);
    }
  }

  /**
   * Ends the session: with `kill` (the default for every outcome but
   * `vm_exited` and `detached`) the VM process is killed first, since it
   * could not go on. Resolves once every descriptor is closed.
   */
  end(outcome: SessionOutcome, reason: string, kill?: boolean): Promise<void> {
    if (this.#outcome !== null) return this.ended;
    this.#outcome = outcome;
    this.#reason = reason;
    const killing = kill ?? (outcome !== "vm_exited" && outcome !== "detached");
    if (killing && this.#o.pidfd !== null) {
      try {
        this.#sys.kill(this.#o.pidfd);
      } catch (err) {
        this.#o.log.error("restore: could not kill the VM process", { id: this.id, error: err });
      }
    }
    this.#recordTimer?.cancel();
    this.#finishRecording();
    this.#sys.notify(this.#wakeFd);
    (async () => {
      await this.#loop;
      await this.#prefetch.catch(() => {});
      this.#sys.close(this.#uffd);
      if (this.#o.pidfd !== null) this.#sys.close(this.#o.pidfd);
      this.#sys.close(this.#wakeFd);
      this.#o.memory.close();
      this.#endResolve();
    })();
    return this.ended;
  }

  /**
   * Installs every page not installed yet (for a shutdown): resolves true
   * when the whole memory is in the VM (the session can then end as
   * `detached`), false when some chunk is not local.
   */
  async installAll(): Promise<boolean> {
    const { memory } = this.#o;
    for (let c = 0; c < memory.chunks; c++) {
      if (this.#outcome !== null) return false;
      if (memory.state(c) === "missing") return false;
    }
    await this.#prefetch.catch(() => {});
    for (let c = 0; c < memory.chunks; c++) {
      if (this.#outcome !== null) return false;
      this.#installChunk(c, false);
    }
    return this.#pending.size === 0;
  }

  /**
   * Installs `order` (chunk indexes) first, as the working set, when it
   * becomes known after the start; `recorded`: it is a recorded one, so
   * this session records none.
   */
  useWorkingSet(order: number[], options: { recorded: boolean }): void {
    if (this.#outcome !== null || order.length === 0) return;
    this.#workingSet = new Set(order);
    if (options.recorded && this.#recording) {
      this.#recording = false;
      this.#recordTimer?.cancel();
    }
    const before = this.#prefetch;
    this.#prefetch = before.then(() => this.#prefetchChunks(order));
  }

  /** The chunks recorded so far, in first-fault order. */
  get recorded(): readonly number[] {
    return this.#recorded;
  }

  // --- the event loop -----------------------------------------------------------

  async #run(): Promise<void> {
    const { pidfd } = this.#o;
    const fds = [this.#uffd, pidfd!, this.#wakeFd];
    while (this.#outcome === null) {
      const [uffd, vm] = await this.#sys.poll(fds, -1);
      if (this.#outcome !== null) break;
      if (vm! !== 0) {
        this.end("vm_exited", "the VM process exited");
        break;
      }
      if (uffd! !== 0) {
        try {
          this.#serve(this.#sys.readEvents(this.#uffd, 256));
        } catch (err) {
          this.#fail(`reading or answering the userfaultfd failed: ${(err as Error).message}`);
        }
      }
    }
  }

  #serve(events: UffdEvent[]): void {
    for (const event of events) {
      if (this.#outcome !== null) return;
      this.#handle(event);
      while (this.#backlog.length > 0 && this.#outcome === null) {
        this.#handle(this.#backlog.shift()!);
      }
    }
  }

  #handle(event: UffdEvent): void {
    switch (event.kind) {
      case "pagefault":
        return this.#fault(event.address);
      case "remove":
        return this.#remove(event.start, event.end);
      case "unmap":
        return this.#unmap(event.start, event.end);
      case "remap":
        return this.#remap(event.from, event.to, event.length);
      case "fork":
        // snapmesh serves the VM process, not its children: the child's
        // descriptor is closed, and its memory faults in as ordinary memory.
        this.#sys.close(event.fd);
        this.#o.log.warn("restore: the VM process forked; not serving the child", { id: this.id });
        return;
      default:
        this.#o.log.warn("restore: unknown userfaultfd event ignored", {
          id: this.id,
          event: event.event,
        });
    }
  }

  /** Non-fault events read while filling, handled at once; faults wait in the backlog. */
  #readPending(): void {
    for (const event of this.#sys.readEvents(this.#uffd, 256)) {
      if (event.kind === "pagefault") this.#backlog.push(event);
      else this.#handle(event);
    }
  }

  // --- faults -------------------------------------------------------------------

  #fault(address: number): void {
    this.stats.faultEvents++;
    const at = this.#locate(address);
    if (at === null) {
      this.#o.log.warn("restore: fault outside every region", { id: this.id, address });
      return;
    }
    const chunks = this.#chunksOf(at.fileOffset);
    if (this.#recording) {
      for (const c of chunks) {
        if (!this.#recordedSet.has(c)) {
          this.#recordedSet.add(c);
          this.#recorded.push(c);
        }
      }
    }
    if (this.#pending.has(at.page)) return; // its install wakes every waiter
    if (hasBit(this.#installed, at.page)) {
      // Another thread faulted it and was served first: only wake.
      this.#sys.wake(this.#uffd, at.address, this.#pageSize);
      return;
    }
    const outside = this.#workingSet !== null && !chunks.some((c) => this.#workingSet!.has(c));
    if (outside) this.stats.outsideWorkingSet++;
    const started = this.#o.clock.monotonic();
    if (hasBit(this.#removed, at.page)) {
      this.#installPage(at, true);
      return this.#served("zero", started, outside);
    }
    let zero = true;
    let missing = false;
    for (const c of chunks) {
      const state = this.#o.memory.state(c);
      if (state !== "zero") zero = false;
      if (state === "missing") missing = true;
    }
    if (!missing) {
      this.#installPage(at, true);
      return this.#served(zero ? "zero" : "local", started, outside);
    }
    this.#waitAndInstall(at, chunks, started, outside);
  }

  #served(source: FaultSource, started: number, outside: boolean): void {
    this.stats.faults[source]++;
    const seconds = (this.#o.clock.monotonic() - started) / 1000;
    const ring = this.#latency[source];
    ring.samples[ring.next++ % ring.samples.length] = seconds;
    this.#o.observer?.fault?.(source, seconds, outside);
  }

  /** Fault service time by source (the last {@linkcode LATENCY_SAMPLES} faults), in µs. */
  latencyUs(): Partial<Record<FaultSource, { p50: number; p99: number; samples: number }>> {
    const out: Partial<Record<FaultSource, { p50: number; p99: number; samples: number }>> = {};
    for (const [source, ring] of Object.entries(this.#latency)) {
      const n = Math.min(ring.next, ring.samples.length);
      if (n === 0) continue;
      const sorted = ring.samples.slice(0, n).sort();
      const at = (p: number) => Math.round(sorted[Math.min(n - 1, Math.floor(p * n))]! * 1e7) / 10;
      out[source as FaultSource] = { p50: at(0.5), p99: at(0.99), samples: n };
    }
    return out;
  }

  /** A fault on a page whose chunks are not local: fetch them, then install it. */
  #waitAndInstall(at: PageAt, chunks: number[], started: number, outside: boolean): void {
    const timeoutMs = this.#o.faultTimeoutMs ?? 30_000;
    this.#pending.add(at.page);
    const timer = this.#o.clock.setTimeout(() => {
      this.#fail(
        `a fault at file offset ${at.fileOffset} (chunk ${chunks.join(", ")}) was not ` +
          `served within ${timeoutMs} ms: no source delivered a verified chunk in time`,
      );
    }, timeoutMs);
    (async () => {
      let source: FaultSource = "local";
      for (const c of chunks) {
        if (this.#o.memory.state(c) !== "missing") continue;
        source = await this.#o.memory.fetch(c);
      }
      timer.cancel();
      this.#pending.delete(at.page);
      if (this.#outcome !== null) return;
      // The page may have moved (remap) or been removed (balloon) meanwhile.
      const now = this.#addressOfPage(at.page);
      if (now === null) return; // unmapped
      const removed = hasBit(this.#removed, at.page);
      this.#installPage({ ...at, address: now }, true);
      this.#served(removed ? "zero" : source, started, outside);
    })().catch((err) => {
      timer.cancel();
      this.#pending.delete(at.page);
      this.#fail(
        `a fault at file offset ${at.fileOffset} (chunk ${chunks.join(", ")}) cannot be ` +
          `served: ${(err as Error).message}`,
      );
    });
  }

  #fail(reason: string): void {
    if (this.#outcome !== null) return;
    this.#o.log.error("restore: session failed; stopping the VM", { id: this.id, reason });
    this.end("failed", reason);
  }

  // --- installing pages ---------------------------------------------------------

  /** Installs one page: zeros when removed or in zero chunks, else its bytes. */
  #installPage(at: PageAt, wake: boolean): void {
    const zero = hasBit(this.#removed, at.page) ||
      this.#chunksOf(at.fileOffset).every((c) => this.#o.memory.state(c) === "zero");
    if (zero) {
      this.#fill(at.address, this.#pageSize, null, wake);
    } else {
      this.#o.memory.read(this.#pageBuffer, at.fileOffset);
      this.#fill(at.address, this.#pageSize, this.#pageBuffer, wake);
    }
    clearBit(this.#removed, at.page);
    setBit(this.#installed, at.page);
  }

  /**
   * Fills `length` bytes at `address` (copying `src`, or zero pages when
   * null), page by page past pages already there. Returns the pages filled.
   */
  #fill(address: number, length: number, src: Uint8Array | null, wake: boolean): number {
    let at = 0;
    let filled = 0;
    let again = 0;
    while (at < length && this.#outcome === null) {
      const result: FillResult = src === null
        ? this.#sys.zeroPage(this.#uffd, address + at, length - at, wake)
        : this.#sys.copy(this.#uffd, address + at, src.subarray(at, length), wake);
      at += result.done;
      filled += result.done / this.#pageSize;
      if (result.stop === null || result.done > 0) {
        again = 0;
        continue;
      }
      if (result.stop === "exists") {
        // Someone else's fault filled this page first: it is there; wake
        // whoever waits on it (that fill may not have woken anyone).
        this.#sys.wake(this.#uffd, address + at, this.#pageSize);
        at += this.#pageSize;
      } else if (result.stop === "gone") {
        break; // the VM exited or unmapped it; the pidfd or an event says which
      } else if (++again > MAX_AGAIN) {
        throw new Error(`the VM's memory layout kept changing during a fill at ${address + at}`);
      } else {
        this.#readPending(); // a pending event holds the fill back: read it
        // A page the event removed gets zeros from now on; a later fault asks for it again.
      }
    }
    return filled;
  }

  // --- the working set ----------------------------------------------------------

  async #prefetchChunks(order: number[]): Promise<void> {
    const { memory } = this.#o;
    const queue = [
      ...new Set(order.filter((c) => Number.isSafeInteger(c) && c >= 0 && c < memory.chunks)),
    ];
    let next = 0;
    const worker = async () => {
      while (next < queue.length && this.#outcome === null) {
        const chunk = queue[next++]!;
        try {
          if (memory.state(chunk) === "missing") await memory.fetch(chunk);
        } catch (err) {
          // A fault on it will try again (and fail the session if it must).
          this.#o.log.debug("restore: prefetch of a chunk failed", {
            id: this.id,
            chunk,
            error: err,
          });
          continue;
        }
        if (this.#outcome !== null) return;
        try {
          const pages = this.#installChunk(chunk, true);
          this.stats.prefetchedPages += pages;
          this.#o.observer?.prefetched?.(pages);
        } catch (err) {
          this.#fail(`installing the working set failed: ${(err as Error).message}`);
        }
      }
    };
    const workers = Math.max(1, this.#o.prefetchConcurrency ?? 16);
    await Promise.all(Array.from({ length: workers }, worker));
  }

  /**
   * Installs the pages of `chunk` that are in some region and not there yet
   * (nor removed, nor on their way), without waking, then wakes each run.
   * Every chunk the pages cover must be ready or zero. Returns pages filled.
   */
  #installChunk(chunk: number, skipRemoved: boolean): number {
    const { memory } = this.#o;
    const ps = this.#pageSize;
    const start = chunk * memory.chunkSize;
    const end = Math.min(start + memory.chunkSize, memory.size);
    const firstPage = Math.floor(start / ps);
    const lastPage = Math.ceil(end / ps) - 1;
    // Pages beyond this chunk (huge pages over several chunks) need those chunks too.
    const spanStart = firstPage * ps;
    const spanEnd = (lastPage + 1) * ps;
    for (let c = Math.floor(spanStart / memory.chunkSize); c * memory.chunkSize < spanEnd; c++) {
      if (c < memory.chunks && memory.state(c) === "missing") return 0;
    }
    let filled = 0;
    let runStart = -1;
    let runAddress = 0;
    let runZero = false;
    for (let p = firstPage; p <= lastPage + 1; p++) {
      const address = p <= lastPage ? this.#addressOfPage(p) : null;
      const removed = hasBit(this.#removed, p);
      const eligible = address !== null && !hasBit(this.#installed, p) &&
        !this.#pending.has(p) && !(skipRemoved && removed);
      if (
        runStart >= 0 &&
        (!eligible || address !== runAddress + (p - runStart) * ps || removed !== runZero)
      ) {
        filled += this.#installRun(runStart, p, runZero);
        runStart = -1;
      }
      if (eligible && runStart < 0) {
        runStart = p;
        runAddress = address;
        runZero = removed;
      }
    }
    return filled;
  }

  /**
   * Installs file pages `first..end-1` (contiguous in the VM; zeros when
   * `removed`) and wakes them.
   */
  #installRun(first: number, end: number, removed: boolean): number {
    const { memory } = this.#o;
    const ps = this.#pageSize;
    const address = this.#addressOfPage(first)!;
    const length = (end - first) * ps;
    const fileOffset = first * ps;
    let zero = true;
    for (
      let c = Math.floor(fileOffset / memory.chunkSize);
      c * memory.chunkSize < fileOffset + length && c < memory.chunks;
      c++
    ) {
      if (!removed && memory.state(c) !== "zero") zero = false;
    }
    let filled: number;
    if (zero) {
      filled = this.#fill(address, length, null, false);
    } else {
      if (!this.#chunkBuffer || this.#chunkBuffer.length < length) {
        this.#chunkBuffer = new Uint8Array(Math.max(length, memory.chunkSize));
      }
      const bytes = this.#chunkBuffer.subarray(0, length);
      memory.read(bytes, fileOffset);
      filled = this.#fill(address, length, bytes, false);
    }
    if (this.#outcome === null) this.#sys.wake(this.#uffd, address, length);
    for (let p = first; p < end; p++) {
      setBit(this.#installed, p);
      clearBit(this.#removed, p);
    }
    return filled;
  }

  // --- layout changes -----------------------------------------------------------

  #remove(start: number, end: number): void {
    for (const { page } of this.#pagesIn(start, end)) {
      clearBit(this.#installed, page);
      setBit(this.#removed, page);
      this.stats.removedPages++;
    }
  }

  #unmap(start: number, end: number): void {
    const next: RegionMapping[] = [];
    for (const r of this.#regions) {
      for (const piece of cut(r, start, end).outside) next.push(piece);
    }
    this.#regions.splice(0, this.#regions.length, ...next);
  }

  #remap(from: number, to: number, length: number): void {
    const next: RegionMapping[] = [];
    for (const r of this.#regions) {
      const { inside, outside } = cut(r, from, from + length);
      next.push(...outside);
      if (inside) next.push({ ...inside, base: inside.base - from + to });
    }
    this.#regions.splice(0, this.#regions.length, ...next);
  }

  // --- geometry -----------------------------------------------------------------

  #locate(address: number): PageAt | null {
    for (const r of this.#regions) {
      if (address >= r.base && address < r.base + r.size) {
        const pageAddress = address - ((address - r.base) % this.#pageSize);
        const fileOffset = r.offset + (pageAddress - r.base);
        return { address: pageAddress, fileOffset, page: fileOffset / this.#pageSize };
      }
    }
    return null;
  }

  /** Where file page `page` is mapped now, or null. */
  #addressOfPage(page: number): number | null {
    const offset = page * this.#pageSize;
    for (const r of this.#regions) {
      if (offset >= r.offset && offset < r.offset + r.size) return r.base + (offset - r.offset);
    }
    return null;
  }

  /** The mapped pages whose addresses lie in `start..end`. */
  #pagesIn(start: number, end: number): PageAt[] {
    const out: PageAt[] = [];
    for (const r of this.#regions) {
      const from = Math.max(start, r.base);
      const to = Math.min(end, r.base + r.size);
      for (let a = from - ((from - r.base) % this.#pageSize); a < to; a += this.#pageSize) {
        const fileOffset = r.offset + (a - r.base);
        out.push({ address: a, fileOffset, page: fileOffset / this.#pageSize });
      }
    }
    return out;
  }

  /** The chunks a page at `fileOffset` covers (one, unless pages are larger than chunks). */
  #chunksOf(fileOffset: number): number[] {
    const { chunkSize, chunks } = this.#o.memory;
    const first = Math.floor(fileOffset / chunkSize);
    const last = Math.min(chunks - 1, Math.floor((fileOffset + this.#pageSize - 1) / chunkSize));
    const out: number[] = [];
    for (let c = first; c <= last; c++) out.push(c);
    return out;
  }

  #finishRecording(): void {
    if (!this.#recording) return;
    this.#recording = false;
    if (this.#recorded.length > 0) {
      try {
        this.#o.onRecorded?.([...this.#recorded]);
      } catch (err) {
        this.#o.log.warn("restore: storing the recorded working set failed", {
          id: this.id,
          error: err,
        });
      }
    }
  }
}

/** The part of `r` inside `start..end` (addresses) and the parts outside. */
function cut(
  r: RegionMapping,
  start: number,
  end: number,
): { inside: RegionMapping | null; outside: RegionMapping[] } {
  const lo = Math.max(start, r.base);
  const hi = Math.min(end, r.base + r.size);
  if (lo >= hi) return { inside: null, outside: [r] };
  const outside: RegionMapping[] = [];
  if (lo > r.base) outside.push({ ...r, size: lo - r.base });
  if (hi < r.base + r.size) {
    outside.push({ ...r, base: hi, size: r.base + r.size - hi, offset: r.offset + (hi - r.base) });
  }
  return {
    inside: { ...r, base: lo, size: hi - lo, offset: r.offset + (lo - r.base) },
    outside,
  };
}

function hasBit(bits: Uint8Array, i: number): boolean {
  return ((bits[i >> 3] ?? 0) & (1 << (i & 7))) !== 0;
}

function setBit(bits: Uint8Array, i: number): void {
  if ((i >> 3) < bits.length) bits[i >> 3]! |= 1 << (i & 7);
}

function clearBit(bits: Uint8Array, i: number): void {
  if ((i >> 3) < bits.length) bits[i >> 3]! &= ~(1 << (i & 7));
}
