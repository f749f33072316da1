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
import { FaultLatency, type LatencyPercentiles } from "./_latency.ts";
import { PageInstaller } from "./_page_installer.ts";
import { type PageAt, PageMap } from "./_page_map.ts";
import type { RegionMapping } from "./mappings.ts";
import type {
  FaultSource,
  MemoryImage,
  SessionObserver,
  SessionOutcome,
  SessionStats,
} from "./session_types.ts";
import type { UffdEvent, UffdSys } from "./uffd_sys.ts";

export * from "./session_types.ts";

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
  readonly #latency = new FaultLatency();
  readonly #sys: UffdSys;
  readonly #uffd: number;
  readonly #pages: PageMap;
  readonly #installer: PageInstaller;
  #workingSet: Set<number> | null;
  readonly #recorded: number[] = [];
  readonly #recordedSet = new Set<number>();
  #recording: boolean;
  #recordTimer: Timer | null = null;
  readonly #wakeFd: number;
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
    this.#pages = new PageMap(options.regions);
    this.#installer = new PageInstaller({
      sys: this.#sys,
      uffd: this.#uffd,
      pages: this.#pages,
      memory: options.memory,
      ended: () => this.#outcome !== null,
      readPending: () => this.#readPending(),
    });
    this.#workingSet = options.workingSet ? new Set(options.workingSet) : null;
    this.#recording = (options.recordWindowMs ?? null) !== null;
    this.#wakeFd = this.#sys.eventFd();
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
    return this.#pages.pageSize;
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
      this.#installer.installChunk(c, false);
    }
    return this.#pages.pending.size === 0;
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
        this.stats.removedPages += this.#pages.remove(event.start, event.end);
        return;
      case "unmap":
        return this.#pages.unmap(event.start, event.end);
      case "remap":
        return this.#pages.remap(event.from, event.to, event.length);
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
    const at = this.#pages.locate(address);
    if (at === null) {
      this.#o.log.warn("restore: fault outside every region", { id: this.id, address });
      return;
    }
    const chunks = this.#installer.chunksOf(at.fileOffset);
    if (this.#recording) {
      for (const c of chunks) {
        if (!this.#recordedSet.has(c)) {
          this.#recordedSet.add(c);
          this.#recorded.push(c);
        }
      }
    }
    if (this.#pages.pending.has(at.page)) return; // its install wakes every waiter
    if (this.#pages.isInstalled(at.page)) {
      // Another thread faulted it and was served first: only wake.
      this.#sys.wake(this.#uffd, at.address, this.#pages.pageSize);
      return;
    }
    const outside = this.#workingSet !== null && !chunks.some((c) => this.#workingSet!.has(c));
    if (outside) this.stats.outsideWorkingSet++;
    const started = this.#o.clock.monotonic();
    if (this.#pages.isRemoved(at.page)) {
      this.#installer.installPage(at, true);
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
      this.#installer.installPage(at, true);
      return this.#served(zero ? "zero" : "local", started, outside);
    }
    this.#waitAndInstall(at, { chunks, started, outside });
  }

  #served(source: FaultSource, started: number, outside: boolean): void {
    this.stats.faults[source]++;
    const seconds = (this.#o.clock.monotonic() - started) / 1000;
    this.#latency.record(source, seconds);
    this.#o.observer?.fault?.(source, seconds, outside);
  }

  /** Fault service time by source (the last 8192 faults of each), in µs. */
  latencyUs(): Partial<Record<FaultSource, LatencyPercentiles>> {
    return this.#latency.percentilesUs();
  }

  /** A fault on a page whose chunks are not local: fetch them, then install it. */
  #waitAndInstall(
    at: PageAt,
    { chunks, started, outside }: { chunks: number[]; started: number; outside: boolean },
  ): void {
    const timeoutMs = this.#o.faultTimeoutMs ?? 30_000;
    this.#pages.pending.add(at.page);
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
      this.#pages.pending.delete(at.page);
      if (this.#outcome !== null) return;
      // The page may have moved (remap) or been removed (balloon) meanwhile.
      const now = this.#pages.addressOfPage(at.page);
      if (now === null) return; // unmapped
      const removed = this.#pages.isRemoved(at.page);
      this.#installer.installPage({ ...at, address: now }, true);
      this.#served(removed ? "zero" : source, started, outside);
    })().catch((err) => {
      timer.cancel();
      this.#pages.pending.delete(at.page);
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
          const pages = this.#installer.installChunk(chunk, true);
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
