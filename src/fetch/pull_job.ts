/**
 * One pull of one snapshot, executed: the {@linkcode ChunkScheduler}
 * decides which chunk to ask which source for; the job sends those
 * requests through its {@linkcode ChunkIO} (which verifies every chunk
 * against the manifest before it counts and writes it at its offset),
 * cancels the losers of duplicated requests, tells readers waiting on a
 * chunk, and tells its subscribers (peers) about every chunk it now holds.
 *
 * The swarm session (the control plane) adds and removes sources and feeds
 * what they hold; the job itself never looks for sources.
 *
 * - Zero chunks are never fetched (the partial file is sparse).
 * - A reader waiting on a chunk moves it, and a few after it, to the front.
 * - When no chunk can be had from any source and none can appear (the
 *   session says the swarm is exhausted), the pull fails with
 *   `upstream_failed`, naming what was tried; when nothing arrives for
 *   `stallMs` with nothing in flight, too.
 *
 * @module
 */

import { errorMessage, type SnapmeshError } from "../errors.ts";
import { isNoSpace } from "../fs/mod.ts";
import { chunkCount, chunkLength } from "../manifest/mod.ts";
import { ChunkScheduler, type SourceSpec } from "../swarm/scheduler.ts";
import { encodeBitmap } from "../cluster/mod.ts";
import { type Clock, systemClock, type Timer } from "../util/clock.ts";
import { systemRandom } from "../util/random.ts";
import { RateMeter } from "../util/rate_meter.ts";
import { asPullError, cannotFinish } from "./_pull_errors.ts";
import { layoutOf, reportOf, startProgress } from "./_pull_progress.ts";
import type {
  ChunkFetch,
  FetchResult,
  HaveListener,
  PullFile,
  PullJobOptions,
  PullProgress,
  PullReport,
} from "./_pull_job_types.ts";
import type { SourceKind } from "./source.ts";

export type {
  ChunkFetch,
  ChunkIO,
  FetchResult,
  HaveListener,
  PullFile,
  PullJobOptions,
  PullProgress,
  PullReport,
} from "./_pull_job_types.ts";

/** How often the job looks for stalls and slow requests. */
const TICK_MS = 250;
/** A pull with no source for some chunk and none that may appear fails after this long. */
const HOPELESS_MS = 2000;

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

/** A running pull. Call {@linkcode PullJob.run} once. */
export class PullJob {
  readonly name: string;
  readonly files: PullFile[];
  readonly chunkSize: number;
  /** Digest per chunk as received (fills in unknown ones when adopting). */
  readonly received: string[][];
  readonly progress: PullProgress;
  /** Resolves once every hot chunk is local (at once when there are none). */
  readonly hotReady: Promise<void>;
  readonly #o: PullJobOptions;
  readonly #clock: Clock;
  readonly #scheduler: ChunkScheduler;
  readonly #base: number[];
  readonly #kinds = new Map<string, SourceKind>();
  readonly #waiters = new Map<number, Waiter[]>();
  readonly #inFlight = new Map<number, { controller: AbortController; fetch: ChunkFetch }>();
  readonly #haveListeners = new Set<HaveListener>();
  readonly #abort = new AbortController();
  readonly #hot = new Set<number>();
  readonly #tried: string[] = [];
  readonly #meter: RateMeter;
  #wake: (() => void) | null = null;
  #lastProgress: number;
  #hopelessSince = 0;
  #failure: SnapmeshError | null = null;
  #hotResolve!: () => void;
  #hotReject!: (err: unknown) => void;
  /** True while the swarm may still bring sources (more peers, an owner fetching). */
  #moreMayCome = true;
  /** When the job last had nothing in flight, since (0 while requests are out). */
  #idleSince = 0;

  constructor(options: PullJobOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.name = options.name;
    this.files = options.files;
    this.chunkSize = options.chunkSize;
    this.#lastProgress = this.#clock.monotonic();
    this.#meter = new RateMeter({ now: () => this.#clock.monotonic() });
    this.received = options.files.map((f) => f.chunks.map((c) => c ?? ""));
    const layout = layoutOf(options.files, options.chunkSize);
    const { counts, hot } = layout;
    this.#base = layout.base;
    this.#scheduler = new ChunkScheduler({
      counts,
      chunkBytes: (chunk) => this.#bytesOf(chunk),
      hot,
      random: options.random ?? systemRandom,
      zone: options.zone ?? null,
      rack: options.rack ?? null,
      maxInFlight: options.maxInFlight ?? 16,
      // Origin requests cover up to 4 MiB of adjacent chunks (each still
      // verified on its own): fewer, larger ranged GETs.
      originRun: Math.max(1, Math.floor(4 * 1024 * 1024 / options.chunkSize)),
    });
    this.hotReady = new Promise((resolve, reject) => {
      this.#hotResolve = resolve;
      this.#hotReject = reject;
    });
    this.hotReady.catch(() => {});
    for (const chunk of layout.zero) this.#scheduler.markDone(chunk);
    for (const chunk of hot) if (!this.#scheduler.isDone(chunk)) this.#hot.add(chunk);
    if (this.#hot.size === 0) this.#hotResolve();
    this.progress = startProgress(options.name, {
      bytesTotal: layout.bytesTotal,
      chunksTotal: layout.chunksTotal,
      startedAt: this.#clock.now(),
    });
  }

  /** Index of a file by name, or -1. */
  fileIndex(name: string): number {
    return this.files.findIndex((f) => f.name === name);
  }

  /** True when chunk `index` of file `file` is local and verified. */
  isDone(file: number, index: number): boolean {
    return this.#scheduler.isDone(this.#base[file]! + index);
  }

  /** Chunks of all files, as one bitmap (bit `c` = global chunk `c`). */
  get chunkTotal(): number {
    return this.#scheduler.total;
  }

  /** The global number of chunk `index` of file `file`. */
  chunkOf(file: number, index: number): number {
    return this.#base[file]! + index;
  }

  /** File and index of global chunk `chunk`. */
  locate(chunk: number): { file: number; index: number } {
    let file = this.#base.length - 1;
    while (file > 0 && this.#base[file]! > chunk) file--;
    return { file, index: chunk - this.#base[file]! };
  }

  /**
   * Marks chunks already present and verified (a resumed pull, a local
   * copy) as done. Call before {@linkcode PullJob.run} or while it runs.
   */
  markPresent(file: number, index: number, bytes: number, digest: string): void {
    this.#completed(file, index, { digest, bytes, kind: "local" });
    this.progress.resumedBytes += bytes;
  }

  /** Waits until chunk `index` of file `file` is local, fetching it first. */
  waitChunk(file: number, index: number): Promise<void> {
    const chunk = this.#base[file]! + index;
    if (this.#scheduler.isDone(chunk)) return Promise.resolve();
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      const list = this.#waiters.get(chunk) ?? [];
      list.push({ resolve, reject });
      this.#waiters.set(chunk, list);
      // This chunk and a few after it: readers read forward.
      const count = chunkCount(this.files[file]!.size, this.chunkSize);
      for (let i = index; i < Math.min(index + 4, count); i++) {
        this.#scheduler.urge(this.#base[file]! + i);
      }
      this.nudge();
    });
  }

  /** Adds (or replaces) a source; `have` is a bitmap over global chunks, "all" or "none". */
  addSource(spec: SourceSpec, have: Uint8Array | "all" | "none"): void {
    this.#kinds.set(spec.id, spec.kind);
    this.#scheduler.addSource(spec, have);
    this.nudge();
  }

  /** Drops a source; its requests in flight are cancelled and go back in the queue. */
  removeSource(id: string): void {
    for (const request of this.#scheduler.requestsOf(id)) {
      this.#inFlight.get(request)?.controller.abort(new Error(`source ${id} was dropped`));
    }
    this.#scheduler.removeSource(id);
    this.nudge();
  }

  hasSource(id: string): boolean {
    return this.#scheduler.hasSource(id);
  }

  /** What a source holds now (its bitmap over global chunks, or "all"). */
  setSourceHave(id: string, have: Uint8Array | "all"): void {
    this.#scheduler.setHave(id, have);
    this.nudge();
  }

  /** A source now holds chunk `chunk` (global numbering; a have message). */
  sourceHasChunk(id: string, chunk: number): void {
    if (chunk < 0 || chunk >= this.#scheduler.total) return;
    this.#scheduler.addHave(id, chunk);
    this.nudge();
  }

  /** Listens to sources the pull gave up on (bad bytes, repeated failures, unreachable). */
  onSourceDropped(listener: (id: string) => void): void {
    this.#droppedListeners.push(listener);
  }

  readonly #droppedListeners: ((id: string) => void)[] = [];

  /** Calls `listener` once when the pull ends, with how. */
  onEnd(listener: (state: "done" | "failed") => void): void {
    if (this.progress.state !== "running") {
      queueMicrotask(() => listener(this.progress.state as "done" | "failed"));
      return;
    }
    this.#endListeners.push(listener);
  }

  readonly #endListeners: ((state: "done" | "failed") => void)[] = [];

  /** A source now holds chunk `index` of file `file` (a have message). */
  sourceHas(id: string, file: number, index: number): void {
    this.#scheduler.addHave(id, this.#base[file]! + index);
    this.nudge();
  }

  /** The sources and their measured rates, for status. */
  sources(): ReturnType<ChunkScheduler["sources"]> {
    return this.#scheduler.sources();
  }

  /**
   * Whether more sources may still come (set by the swarm session). When
   * false and some chunk has no source, the pull fails instead of waiting.
   */
  setMoreMayCome(value: boolean): void {
    this.#moreMayCome = value;
    this.nudge();
  }

  /** What other participants of the swarm hold: the origin waits a while for those. */
  setHeldElsewhere(held: () => Uint8Array | "all" | null): void {
    this.#scheduler.setHeldElsewhere(held);
    this.nudge();
  }

  /** Listens to the chunks this node verifies (for peers' have streams). */
  onHave(listener: HaveListener): () => void {
    this.#haveListeners.add(listener);
    return () => this.#haveListeners.delete(listener);
  }

  /** Verified chunks of all files, as one bitmap over global chunk numbers. */
  bitmap(): Uint8Array {
    const bits = new Uint8Array(Math.ceil(this.#scheduler.total / 8));
    for (let c = 0; c < this.#scheduler.total; c++) {
      if (this.#scheduler.isDone(c)) bits[c >> 3]! |= 1 << (c & 7);
    }
    return bits;
  }

  /** Verified chunks of each file, as base64 bitmaps (the availability answer). */
  availability(): { complete: boolean; have: Record<string, string> } {
    const have: Record<string, string> = {};
    this.files.forEach((f, fi) => {
      const n = chunkCount(f.size, this.chunkSize);
      have[f.name] = encodeBitmap(Array.from({ length: n }, (_, i) => this.isDone(fi, i)));
    });
    return { complete: this.#scheduler.remaining === 0, have };
  }

  /** Stops the pull: requests in flight are aborted, waiters rejected. */
  abort(reason: SnapmeshError): void {
    this.#fail(reason);
  }

  /** Lets the job look again (new sources, a have, a choke that ended). */
  nudge(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /**
   * Fetches every missing chunk. Resolves when all are local (files are not
   * yet fsynced); rejects with `upstream_failed` when some chunk cannot be
   * fetched from any source.
   */
  async run(): Promise<void> {
    this.#lastProgress = this.#clock.monotonic();
    const ticker: Timer = this.#clock.setInterval(() => this.#tick(), TICK_MS);
    try {
      while (this.#scheduler.remaining > 0 && !this.#failure) {
        const now = this.#clock.monotonic();
        const assignment = this.#scheduler.next(now);
        if (assignment === null) {
          // Nothing to send now: wait for a request to end, a have, a new
          // source, a held-back chunk's turn, or the ticker.
          const at = this.#scheduler.wakeAt();
          const turn = at === null ? null : this.#clock.setTimeout(() => this.nudge(), at - now);
          await new Promise<void>((resolve) => (this.#wake = resolve));
          turn?.cancel();
          continue;
        }
        const { file, index } = this.locate(assignment.chunk);
        this.#send(assignment.id, {
          source: assignment.source,
          file,
          index,
          count: assignment.count,
          wait: assignment.wait,
        });
      }
      if (this.#failure) throw this.#failure;
      this.progress.state = "done";
      for (const listener of this.#endListeners.splice(0)) listener("done");
    } catch (err) {
      this.#fail(asPullError(this.name, err));
      throw this.#failure;
    } finally {
      ticker.cancel();
      for (const { controller } of this.#inFlight.values()) {
        controller.abort(new Error("pull ended"));
      }
      await Promise.allSettled([...this.#sending]);
      await this.#o.io.close();
    }
  }

  readonly #sending = new Set<Promise<void>>();

  #send(id: number, fetch: ChunkFetch): void {
    const controller = new AbortController();
    const onAbort = () => controller.abort(this.#abort.signal.reason);
    this.#abort.signal.addEventListener("abort", onAbort, { once: true });
    this.#inFlight.set(id, { controller, fetch });
    const kind = this.#kinds.get(fetch.source) ?? "peer";
    const done = (async () => {
      let result: FetchResult;
      try {
        result = await this.#o.io.fetch(fetch, controller.signal);
      } catch (err) {
        result = { good: [], bad: [], bytes: 0, failure: "error", error: err };
      }
      this.#abort.signal.removeEventListener("abort", onAbort);
      this.#inFlight.delete(id);
      if (this.#failure) return;
      if (isNoSpace(result.error)) {
        this.#fail(asPullError(this.name, result.error));
        return;
      }
      const cancelled = controller.signal.aborted && result.good.length === 0;
      for (const { index, digest } of result.good) {
        const bytes = chunkLength(this.files[fetch.file]!.size, this.chunkSize, index);
        this.#completed(fetch.file, index, { digest, bytes, kind });
      }
      if (result.bad.length > 0) {
        this.#tried.push(`${fetch.source}: ${result.bad.length} chunk(s) failed verification`);
        this.#o.onVerifyFailure?.(fetch.source, kind);
        this.#o.log.warn("pull: chunks failed verification; discarded", {
          name: this.name,
          source: fetch.source,
          file: this.files[fetch.file]!.name,
          chunks: result.bad,
        });
      } else if (result.failure && !cancelled) {
        this.#tried.push(`${fetch.source}: ${errorMessage(result.error ?? result.failure)}`);
        this.#o.log.debug("pull: a request failed", {
          name: this.name,
          source: fetch.source,
          failure: result.failure,
          error: result.error,
        });
      }
      const good = result.good.map((g) => this.#base[fetch.file]! + g.index);
      const bad = result.bad.map((i) => this.#base[fetch.file]! + i);
      const losers = this.#scheduler.finished(id, this.#clock.monotonic(), {
        good,
        bad,
        bytes: result.bytes,
        ...(cancelled
          ? { failure: "cancelled" }
          : result.failure
          ? { failure: result.failure }
          : {}),
      });
      for (const loser of losers) {
        this.#inFlight.get(loser)?.controller.abort(new Error("another source delivered it first"));
      }
      // The scheduler gave up on the source (bad bytes, strikes, gone).
      if (!this.#scheduler.hasSource(fetch.source)) {
        for (const listener of this.#droppedListeners) listener(fetch.source);
      }
      this.nudge();
    })();
    this.#sending.add(done);
    done.finally(() => this.#sending.delete(done));
  }

  #completed(
    file: number,
    index: number,
    got: { digest: string; bytes: number; kind: SourceKind },
  ): void {
    const chunk = this.#base[file]! + index;
    if (this.#scheduler.isDone(chunk)) return;
    this.#scheduler.markDone(chunk);
    this.received[file]![index] = got.digest;
    this.#lastProgress = this.#clock.monotonic();
    this.progress.bytesDone += got.bytes;
    this.progress.chunksDone++;
    this.progress.bySource[got.kind] += got.bytes;
    this.#meter.add(got.bytes);
    this.#o.onBytes?.(got.kind, got.bytes);
    for (const waiter of this.#waiters.get(chunk) ?? []) waiter.resolve();
    this.#waiters.delete(chunk);
    if (this.#hot.delete(chunk) && this.#hot.size === 0) this.#hotResolve();
    for (const listener of this.#haveListeners) listener(file, index);
  }

  /**
   * Every {@linkcode TICK_MS}: wakes the loop (slow requests, chokes that
   * ended), and fails the pull when it cannot finish.
   */
  #tick(): void {
    if (this.#failure || this.#scheduler.remaining === 0) return;
    const now = this.#clock.monotonic();
    const idle = this.#scheduler.inFlight === 0;
    if (idle && !this.#moreMayCome && this.#scheduler.stuck()) {
      this.#hopelessSince ||= now;
      if (now - this.#hopelessSince >= HOPELESS_MS) {
        this.#fail(this.#stuck("no source holds the missing chunks and none is fetching them"));
        return;
      }
    } else {
      this.#hopelessSince = 0;
    }
    // Stalled: idle and no chunk for the stall time, or no chunk for 4× that.
    this.#idleSince = idle ? this.#idleSince || now : 0;
    const stallMs = this.#o.stallMs ?? 15_000;
    const quiet = now - this.#lastProgress;
    const idleFor = now - Math.max(this.#lastProgress, this.#idleSince);
    if ((idle && idleFor >= stallMs) || quiet >= 4 * stallMs) {
      this.#fail(this.#stuck(`no chunk arrived for ${Math.round(quiet / 1000)} s`));
      return;
    }
    this.nudge();
  }

  #stuck(why: string): SnapmeshError {
    return cannotFinish(this.name, {
      why,
      remaining: this.#scheduler.remaining,
      tried: this.#tried,
    });
  }

  /** Progress with the current rate (smoothed over about ten seconds, see RateMeter). */
  report(now = this.#clock.monotonic()): PullReport {
    return reportOf(this.progress, { meter: this.#meter, now });
  }

  #bytesOf(chunk: number): number {
    const { file, index } = this.locate(chunk);
    return chunkLength(this.files[file]!.size, this.chunkSize, index);
  }

  #fail(err: SnapmeshError): void {
    if (this.#failure) return;
    this.#failure = err;
    this.progress.state = "failed";
    for (const listener of this.#endListeners.splice(0)) listener("failed");
    this.#abort.abort(err);
    for (const list of this.#waiters.values()) for (const w of list) w.reject(err);
    this.#waiters.clear();
    this.#hotReject(err);
    this.nudge();
  }
}
