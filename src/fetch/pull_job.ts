/**
 * One pull of one snapshot: every missing chunk fetched from the best
 * available source, verified against the manifest before it counts, written
 * into the partial file at its offset.
 *
 * - Zero chunks are never fetched (the partial file is sparse).
 * - Hot chunks go first, in their recorded order; a reader waiting on a
 *   chunk moves it (and its neighbours) to the front.
 * - A chunk that fails verification is discarded; its source gets a strike,
 *   and a source out of strikes (or failing outright) is avoided for the rest
 *   of the pull. The chunk is fetched again from another source.
 * - Each node asks the owner only for its share of the chunks; when views
 *   of who pulls differ, chunks can be nobody's share: a node with nothing
 *   in flight and no chunk done for {@linkcode SHARE_STALL_MS} takes any
 *   chunk no other node is fetching from the owner.
 * - When no source is left for some chunk and none can appear (no peer
 *   still pulling), the pull fails with `upstream_failed`, naming what was
 *   tried; when no chunk arrives for `stallMs` with nothing in flight, too.
 *
 * @module
 */

import { errorMessage, SnapmeshError } from "../errors.ts";
import { type FileHandle, isNoSpace } from "../fs/mod.ts";
import type { Logger } from "../log/mod.ts";
import { chunkCount, chunkLength, isAllZero, verifyChunk, ZERO_CHUNK } from "../manifest/mod.ts";
import { Mutex } from "../util/mutex.ts";
import { type Clock, systemClock } from "../util/clock.ts";
import { type Random, systemRandom } from "../util/random.ts";
import { RateMeter } from "../util/rate_meter.ts";
import { encodeBitmap } from "../cluster/mod.ts";
import type { ChunkRequest, ChunkSource, SourceKind } from "./source.ts";

/** A file as the pull sees it. Chunk digests may be unknown (null) when adopting. */
export interface PullFile {
  name: string;
  size: number;
  /** Expected digest per chunk, {@linkcode ZERO_CHUNK}, or null when unknown. */
  chunks: (string | null)[];
  hot?: number[];
}

/** Options for {@linkcode PullJob}. */
export interface PullJobOptions {
  name: string;
  files: PullFile[];
  chunkSize: number;
  sources: ChunkSource[];
  /** Opens the partial file of `file` for writing. */
  openFile(file: string): Promise<FileHandle>;
  /** Parallel requests. @default 8 */
  concurrency?: number;
  /**
   * Adjacent missing chunks are fetched in one request of at most this many
   * bytes (each chunk still verified on its own). @default 4 MiB
   */
  maxRequestBytes?: number;
  /** This node's id (to find its share of the chunks it asks the owner for). */
  selfId?: string;
  /**
   * Where in each file (a fraction, 0..1) the fetch order starts. Nodes
   * pulling the same snapshot at once start at different places, so they
   * soon hold different chunks to trade. @default 0
   */
  rotate?: number;
  log: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** Breaks ties between equally good sources. @default systemRandom */
  random?: Random;
  /** Called for every verified chunk, with its source kind and byte count. */
  onBytes?: (kind: SourceKind, bytes: number) => void;
  /** Called when a chunk fails verification. */
  onVerifyFailure?: (source: ChunkSource) => void;
  /**
   * The pull fails when no chunk arrives for this long while nothing is in
   * flight (sources that may still get the chunks, but do not). @default 15000
   */
  stallMs?: number;
}

/** Live progress of a pull. */
export interface PullProgress {
  name: string;
  bytesTotal: number;
  bytesDone: number;
  chunksTotal: number;
  chunksDone: number;
  bySource: Record<SourceKind, number>;
  /** Bytes of chunks a resumed pull found verified on disk (counted as `local` too). */
  resumedBytes: number;
  startedAt: number;
  state: "running" | "done" | "failed";
}

/** Progress as `/v1/pulls` reports it. */
export interface PullReport extends PullProgress {
  /** Bytes per second, smoothed over about the last ten seconds. */
  rateBytesPerSecond: number;
  /** Seconds left at that rate, or null before the first byte. */
  etaSeconds: number | null;
}

const DEFAULT_PRIORITY: Record<SourceKind, number> = { local: 0, peer: 1, origin: 3 };
/** A peer source at this priority is the owner waiting for a chunk it lacks. */
const WAITING_PRIORITY = 2;
/** Requests that may wait on the owner at once: the rest of the workers stay free for chunks other peers hold. */
const MAX_WAITING = 2;
/** How far ahead in fetch order a worker looks for a chunk it can get without waiting. */
const LOOKAHEAD = 256;
/** Idle this long with no chunk done, a node stops keeping to its share. */
export const SHARE_STALL_MS = 2000;
/** How often the job looks for stalls. */
const TICK_MS = 250;
/** A pull with no source for some chunk and none that may get it fails after this long. */
const HOPELESS_MS = 2000;

const MISSING = 0;
const BUSY = 1;
const DONE = 2;

interface Task {
  file: number;
  index: number;
  /** Consecutive chunks in this request (1 when queued). */
  count: number;
}

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
  readonly #options: PullJobOptions;
  readonly #clock: Clock;
  readonly #random: Random;
  readonly #state: Uint8Array[];
  readonly #queue: Task[] = [];
  readonly #urgent: Task[] = [];
  readonly #waiters = new Map<string, Waiter[]>();
  /** Open partial files (the promise, so two writers never open one twice). */
  readonly #handles = new Map<number, Promise<{ handle: FileHandle; lock: Mutex }>>();
  readonly #strikes = new Map<string, number>();
  readonly #bad = new Set<string>();
  readonly #inFlight = new Map<string, number>();
  /** Requests in flight that a peer answers only once it has fetched the chunk itself. */
  readonly #waiting = new Map<string, number>();
  /** Chunks being fetched from the owner right now, as "file:index". */
  readonly #fromOwner = new Set<string>();
  readonly #abort = new AbortController();
  readonly #idle: (() => void)[] = [];
  #remaining = 0;
  #hotRemaining = 0;
  /** When the last chunk was verified (or the pull started). */
  #lastProgress: number;
  /** Shares are off: this node takes any chunk no other node fetches from the owner. */
  #anyShare = false;
  /** Since when some missing chunk had no source and none could appear, or 0. */
  #hopelessSince = 0;
  /** Why sources were given up on, for the failure message. */
  readonly #tried: string[] = [];
  readonly #hot: Set<string>;
  #failure: SnapmeshError | null = null;
  #hotResolve!: () => void;
  #hotReject!: (err: unknown) => void;
  /** Resolves once every hot chunk is local (at once when there are none). */
  readonly hotReady: Promise<void>;
  readonly progress: PullProgress;

  constructor(options: PullJobOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? systemRandom;
    this.#lastProgress = this.#clock.monotonic();
    this.#meter = new RateMeter({ now: () => this.#clock.monotonic() });
    this.name = options.name;
    this.files = options.files;
    this.chunkSize = options.chunkSize;
    this.#state = options.files.map((f) => new Uint8Array(chunkCount(f.size, options.chunkSize)));
    this.received = options.files.map((f) => f.chunks.map((c) => c ?? ""));
    this.#hot = new Set();
    this.hotReady = new Promise((resolve, reject) => {
      this.#hotResolve = resolve;
      this.#hotReject = reject;
    });
    this.hotReady.catch(() => {});
    let bytesTotal = 0;
    let chunksTotal = 0;
    options.files.forEach((f, fi) => {
      f.chunks.forEach((digest, i) => {
        if (digest === ZERO_CHUNK) {
          this.#state[fi]![i] = DONE;
          return;
        }
        chunksTotal++;
        bytesTotal += chunkLength(f.size, options.chunkSize, i);
      });
    });
    this.progress = {
      name: options.name,
      bytesTotal,
      bytesDone: 0,
      chunksTotal,
      chunksDone: 0,
      bySource: { local: 0, peer: 0, origin: 0 },
      resumedBytes: 0,
      startedAt: this.#clock.now(),
      state: "running",
    };
  }

  /** Index of a file by name, or -1. */
  fileIndex(name: string): number {
    return this.files.findIndex((f) => f.name === name);
  }

  /** True when chunk `index` of file `file` is local and verified. */
  isDone(file: number, index: number): boolean {
    return this.#state[file]![index] === DONE;
  }

  /**
   * Marks chunks already present and verified (a resumed pull) as done.
   * Call before {@linkcode PullJob.run}.
   */
  markPresent(file: number, index: number, bytes: number, digest: string): void {
    if (this.#state[file]![index] === DONE) return;
    this.#state[file]![index] = DONE;
    this.received[file]![index] = digest;
    this.progress.bytesDone += bytes;
    this.progress.chunksDone++;
    this.progress.bySource.local += bytes;
    this.progress.resumedBytes += bytes;
  }

  /** Waits until chunk `index` of file `file` is local, fetching it first. */
  waitChunk(file: number, index: number): Promise<void> {
    if (this.#state[file]![index] === DONE) return Promise.resolve();
    if (this.#failure) return Promise.reject(this.#failure);
    const key = `${file}:${index}`;
    return new Promise((resolve, reject) => {
      const list = this.#waiters.get(key) ?? [];
      list.push({ resolve, reject });
      this.#waiters.set(key, list);
      // Ask for this chunk and a few after it: readers read forward.
      for (let i = index; i < Math.min(index + 4, this.#state[file]!.length); i++) {
        if (this.#state[file]![i] === MISSING) this.#urgent.push({ file, index: i, count: 1 });
      }
      this.#wake();
    });
  }

  /** Stops the pull: in-flight requests are aborted, waiters rejected. */
  abort(reason: SnapmeshError): void {
    this.#fail(reason);
  }

  /**
   * Fetches every missing chunk. Resolves when all are local (files are not
   * yet fsynced); rejects with `upstream_failed` when some chunk cannot be
   * fetched from any source.
   */
  async run(): Promise<void> {
    const { files, concurrency = 8 } = this.#options;
    files.forEach((f, fi) => {
      for (const i of f.hot ?? []) {
        if (this.#state[fi]![i] === DONE) continue;
        this.#hot.add(`${fi}:${i}`);
        this.#queue.push({ file: fi, index: i, count: 1 });
      }
    });
    this.#hotRemaining = this.#hot.size;
    if (this.#hotRemaining === 0) this.#hotResolve();
    const rotate = Math.min(Math.max(this.#options.rotate ?? 0, 0), 1);
    files.forEach((f, fi) => {
      const n = f.chunks.length;
      const first = Math.floor(rotate * n) % Math.max(n, 1);
      for (let k = 0; k < n; k++) {
        const i = (first + k) % n;
        if (this.#state[fi]![i] === DONE || this.#hot.has(`${fi}:${i}`)) continue;
        this.#queue.push({ file: fi, index: i, count: 1 });
      }
    });
    this.#queue.reverse(); // taken from the end
    this.#remaining = this.#state.reduce((n, s) => n + s.filter((x) => x !== DONE).length, 0);
    this.#lastProgress = this.#clock.monotonic();
    const ticker = this.#clock.setInterval(() => this.#tick(), TICK_MS);
    try {
      if (this.#remaining > 0) {
        await Promise.all(Array.from({ length: concurrency }, () => this.#worker()));
      }
      if (this.#failure) throw this.#failure;
      this.progress.state = "done";
    } catch (err) {
      this.#fail(asPullError(this.name, err));
      throw this.#failure;
    } finally {
      ticker.cancel();
      for (const slot of this.#handles.values()) {
        await slot.then(({ handle }) => handle.close(), () => {});
      }
      this.#handles.clear();
    }
  }

  /**
   * Every {@linkcode TICK_MS}: wakes idle workers (so stall rules take
   * effect without new events), and fails the pull when it cannot finish.
   */
  #tick(): void {
    if (this.#failure || this.#remaining === 0) return;
    const now = this.#clock.monotonic();
    const idle = this.#busyCount() === 0;
    if (idle && this.#hopeless()) {
      this.#hopelessSince ||= now;
      if (now - this.#hopelessSince >= HOPELESS_MS && idle) {
        this.#fail(this.#stuck("no source holds the missing chunks and none is fetching them"));
        return;
      }
    } else {
      this.#hopelessSince = 0;
    }
    const stallMs = this.#options.stallMs ?? 15_000;
    if (idle && now - this.#lastProgress >= stallMs) {
      this.#fail(this.#stuck(`no chunk arrived for ${Math.round(stallMs / 1000)} s`));
      return;
    }
    this.#wake();
  }

  #stuck(why: string): SnapmeshError {
    const tried = this.#tried.length ? `; tried: ${this.#tried.slice(-8).join("; ")}` : "";
    return new SnapmeshError(
      "upstream_failed",
      `Pull of "${this.name}" cannot finish: ${why} (${this.#remaining} chunk(s) missing)${tried}`,
    );
  }

  /** True when some source not given up on is a peer still pulling (it may come to hold chunks). */
  #mayAppear(): boolean {
    return this.#options.sources.some((s) => !this.#bad.has(s.id) && s.participant?.() === true);
  }

  /** Requests in flight to any source. */
  #busyCount(): number {
    let n = 0;
    for (const count of this.#inFlight.values()) n += count;
    return n;
  }

  /**
   * True when some missing chunk has no source that can serve it, and no
   * source can come to hold it (a peer still pulling may).
   */
  #hopeless(): boolean {
    if (this.#mayAppear()) return false;
    const live = this.#options.sources.filter((s) => !this.#bad.has(s.id));
    for (let fi = 0; fi < this.files.length; fi++) {
      const state = this.#state[fi]!;
      for (let i = 0; i < state.length; i++) {
        if (state[i] !== MISSING) continue;
        const request = this.#request(fi, i, 1);
        if (!live.some((s) => s.has(request))) return true;
      }
    }
    return false;
  }

  /**
   * The next request to send, and where: a chunk a reader waits for; else the
   * first chunk (looking ahead in fetch order) that some source can serve
   * now without waiting (a local copy, a peer that holds it); else the next
   * chunk in order, from a source that waits for it (the owner fetching for
   * everyone, at most {@linkcode MAX_WAITING} such requests at a time) or the
   * origin. Null when nothing can be sent now.
   */
  #next(): { task: Task; source: ChunkSource } | null {
    while (this.#urgent.length > 0) {
      const task = this.#urgent.shift()!;
      if (this.#state[task.file]![task.index] !== MISSING) continue;
      const source = this.#pick(this.#request(task.file, task.index, 1), true);
      if (source) return this.#claim(task, source);
      this.#urgent.unshift(task); // no capacity now: keep its place
      break;
    }
    const queue = this.#queue;
    while (queue.length > 0 && !this.#isMissing(queue[queue.length - 1]!)) queue.pop();
    let scanned = 0;
    for (let k = queue.length - 1; k >= 0 && scanned < LOOKAHEAD; k--) {
      const task = queue[k]!;
      if (!this.#isMissing(task)) continue;
      scanned++;
      const source = this.#pick(this.#request(task.file, task.index, 1), true);
      if (source && this.#priority(source, this.#request(task.file, task.index, 1)) <= 1) {
        queue.splice(k, 1);
        return this.#claim(task, source);
      }
    }
    // Nothing to take without waiting: the next chunk in order from a
    // waiting source (the owner, or the origin). Each node asks the owner
    // only for its share of the chunks (split among the nodes pulling this
    // snapshot) and skips chunks another node is fetching from it right now:
    // the owner then uploads each chunk about once and the nodes relay the
    // rest to each other. Near the end, any missing chunk will do.
    // Chunks the owner already holds come first (they are sent at once and
    // leave its origin download undisturbed); then chunks it must fetch.
    const members = this.#participants();
    const endgame = this.#remaining <= Math.max(16, this.progress.chunksTotal / 20);
    // Idle and nothing arriving: this node's share is done, yet chunks are
    // missing that nobody fetches (the nodes disagree on who pulls). From
    // now on, take any that no other node is fetching from the owner.
    if (
      !this.#anyShare && !endgame && this.#busyCount() === 0 &&
      this.#clock.monotonic() - this.#lastProgress >= SHARE_STALL_MS
    ) {
      this.#anyShare = true;
      this.#options.log.info("pull: no progress on this node's share; taking any chunk", {
        name: this.name,
        missing: this.#remaining,
      });
    }
    const stalled = this.#anyShare && !endgame;
    for (const held of [true, false]) {
      scanned = 0;
      for (let k = queue.length - 1; k >= 0 && scanned < LOOKAHEAD * 4; k--) {
        const task = queue[k]!;
        if (!this.#isMissing(task)) continue;
        scanned++;
        const request = this.#request(task.file, task.index, 1);
        const source = this.#pick(request, true);
        if (!source) {
          if (this.#pick(request, false)) return null; // waiting slots full
          continue; // nobody can serve this one now
        }
        const fromOwner = source.kind === "peer" &&
          this.#priority(source, request) >= WAITING_PRIORITY;
        if (fromOwner) {
          if (held && !source.holds?.(request)) continue;
          if (stalled) {
            if (this.#pendingElsewhere(request)) continue;
          } else if (!endgame) {
            const share = members[(task.index + task.file) % members.length];
            if (share !== this.#options.selfId || this.#pendingElsewhere(request)) continue;
          }
        }
        queue.splice(k, 1);
        return this.#claim(task, source);
      }
    }
    return null;
  }

  /** This node and the peers pulling the same snapshot (not the owner), sorted. */
  #participants(): string[] {
    const self = this.#options.selfId ?? "self";
    const ids = new Set([self]);
    for (const source of this.#options.sources) {
      if (!this.#bad.has(source.id) && source.participant?.()) {
        ids.add(source.participantId ?? source.id);
      }
    }
    return [...ids].sort();
  }

  #pendingElsewhere(request: ChunkRequest): boolean {
    return this.#options.sources.some((s) => !this.#bad.has(s.id) && s.pending?.(request) === true);
  }

  #isMissing(task: Task): boolean {
    return this.#state[task.file]![task.index] === MISSING;
  }

  #request(file: number, index: number, count: number): ChunkRequest {
    const f = this.files[file]!;
    const start = index * this.chunkSize;
    const end = Math.min(f.size, (index + count) * this.chunkSize) - 1;
    return { file: f.name, index, count, start, end };
  }

  /** Marks the chunk, and the following ones the same source serves as well, as busy. */
  #claim(task: Task, source: ChunkSource): { task: Task; source: ChunkSource } {
    const state = this.#state[task.file]!;
    const maxChunks = Math.max(
      1,
      Math.floor((this.#options.maxRequestBytes ?? 4 * 1024 * 1024) / this.chunkSize),
    );
    const priority = this.#priority(source, this.#request(task.file, task.index, 1));
    // One chunk at a time from the primary: the sooner a chunk is complete
    // here, the sooner this node can relay it.
    const limit = priority >= WAITING_PRIORITY && source.kind === "peer" ? 1 : maxChunks;
    let count = 1;
    while (
      count < limit && task.index + count < state.length && state[task.index + count] === MISSING
    ) {
      const run = this.#request(task.file, task.index, count + 1);
      if (!source.has(run) || this.#priority(source, run) !== priority) break;
      count++;
    }
    for (let i = 0; i < count; i++) state[task.index + i] = BUSY;
    return { task: { ...task, count }, source };
  }

  /** Lets idle workers look again (new availability, a chunk done, a failure). */
  nudge(): void {
    this.#wake();
  }

  #wake(): void {
    for (const resolve of this.#idle.splice(0)) resolve();
  }

  async #worker(): Promise<void> {
    while (this.#remaining > 0 && !this.#failure) {
      const next = this.#next();
      if (next === null) {
        // Nothing can be sent now: wait for a chunk to complete, new
        // availability from peers, a retry, or the end.
        await new Promise<void>((resolve) => this.#idle.push(resolve));
        continue;
      }
      try {
        await this.#fetch(next.task, next.source);
      } catch (err) {
        this.#fail(asPullError(this.name, err));
      }
    }
    this.#wake();
  }

  async #fetch(task: Task, chosen: ChunkSource): Promise<void> {
    const file = this.files[task.file]!;
    const size = this.chunkSize;
    const tried: string[] = [];
    let first = task.index;
    let count = task.count;
    let preferred: ChunkSource | null = chosen;
    while (count > 0 && !this.#failure) {
      const start = first * size;
      const end = Math.min(file.size, (first + count) * size) - 1;
      const request: ChunkRequest = { file: file.name, index: first, count, start, end };
      // After a failure, any source that can serve it, waiting slots or not.
      const source = (preferred && !this.#bad.has(preferred.id) ? preferred : null) ??
        this.#pick(request, false) ?? (count > 1 ? null : undefined);
      preferred = null;
      if (source === null) {
        // Nobody serves the whole run: split it, one chunk at a time.
        for (let i = first + 1; i < first + count; i++) {
          this.#state[task.file]![i] = MISSING;
          this.#urgent.unshift({ file: task.file, index: i, count: 1 });
        }
        count = 1;
        this.#wake();
        continue;
      }
      if (!source && this.#mayAppear()) {
        // A peer still pulling may come to hold it: back in the queue (the
        // job's stall watchdog ends the pull if nothing ever arrives).
        this.#state[task.file]![first] = MISSING;
        this.#queue.push({ file: task.file, index: first, count: 1 });
        this.#wake();
        return;
      }
      if (!source) {
        const why = tried.length ? tried.join("; ") : "no source holds it";
        throw new SnapmeshError(
          "upstream_failed",
          `No source could deliver a verified copy of "${this.name}" ${file.name} chunk ${first}: ${why}`,
        );
      }
      let bytes: Uint8Array;
      const waiting = this.#priority(source, request) >= WAITING_PRIORITY && source.kind === "peer";
      this.#inFlight.set(source.id, (this.#inFlight.get(source.id) ?? 0) + 1);
      if (waiting) {
        this.#waiting.set(source.id, (this.#waiting.get(source.id) ?? 0) + 1);
        for (let i = first; i < first + count; i++) this.#fromOwner.add(`${task.file}:${i}`);
      }
      try {
        bytes = await source.read(request, this.#abort.signal);
        if (bytes.length !== end - start + 1) {
          throw new Error(`sent ${bytes.length} bytes instead of ${end - start + 1}`);
        }
      } catch (err) {
        if (this.#failure) return;
        tried.push(`${source.id}: ${errorMessage(err)}`);
        this.#tried.push(`${source.id}: ${errorMessage(err)}`);
        this.#options.log.warn("pull: source failed; avoiding it for this pull", {
          name: this.name,
          source: source.id,
          file: file.name,
          chunk: first,
          chunks: count,
          error: err,
        });
        this.#bad.add(source.id);
        continue;
      } finally {
        this.#inFlight.set(source.id, this.#inFlight.get(source.id)! - 1);
        if (waiting) {
          this.#waiting.set(source.id, this.#waiting.get(source.id)! - 1);
          for (let i = first; i < first + count; i++) this.#fromOwner.delete(`${task.file}:${i}`);
        }
        this.#wake();
      }
      // Verify chunk by chunk; keep the good ones, refetch the rest.
      const failed: number[] = [];
      for (let i = 0; i < count; i++) {
        const index = first + i;
        const offset = i * size;
        const chunk = bytes.subarray(offset, Math.min(bytes.length, offset + size));
        const expected = file.chunks[index] ?? null;
        const digest = verifyChunk(chunk, expected);
        if (digest === null) {
          failed.push(index);
          continue;
        }
        await this.#write(task.file, chunk, index * size);
        this.#complete(task.file, index, digest, chunk.length, source.kind);
      }
      if (failed.length === 0) return;
      for (const index of failed) source.suspect?.(file.name, index);
      tried.push(`${source.id}: ${failed.length} chunk(s) failed verification`);
      this.#tried.push(`${source.id}: chunks failed verification`);
      this.#options.onVerifyFailure?.(source);
      const strikes = (this.#strikes.get(source.id) ?? 0) + 1;
      this.#strikes.set(source.id, strikes);
      this.#options.log.warn("pull: chunks failed verification; discarded", {
        name: this.name,
        source: source.id,
        file: file.name,
        chunks: failed,
        strikes,
      });
      if (strikes >= source.strikes) this.#bad.add(source.id);
      // Refetch the failed ones: the first here, the others queued.
      for (const index of failed.slice(1)) {
        this.#state[task.file]![index] = MISSING;
        this.#urgent.unshift({ file: task.file, index, count: 1 });
      }
      if (failed.length > 1) this.#wake();
      first = failed[0]!;
      count = 1;
    }
  }

  /**
   * The source for a request: the lowest priority among those that can serve
   * it, then the one with the fewest requests in flight (spreading load over
   * holders), then at random.
   */
  #pick(request: ChunkRequest, limits: boolean): ChunkSource | undefined {
    let best: ChunkSource | undefined;
    let bestKey = [Infinity, Infinity, 0];
    for (const source of this.#options.sources) {
      if (this.#bad.has(source.id) || !source.has(request)) continue;
      const key = [
        this.#priority(source, request),
        this.#inFlight.get(source.id) ?? 0,
        this.#random.next(),
      ];
      if (
        key[0]! < bestKey[0]! || (key[0] === bestKey[0] && (key[1]! < bestKey[1]! ||
          (key[1] === bestKey[1] && key[2]! < bestKey[2]!)))
      ) {
        best = source;
        bestKey = key;
      }
    }
    // The owner that fetches for everyone has all its waiting slots taken:
    // wait for one rather than fall back to a worse source (the origin).
    if (
      limits && best && bestKey[0]! >= WAITING_PRIORITY && best.kind === "peer" &&
      (this.#waiting.get(best.id) ?? 0) >= MAX_WAITING
    ) return undefined;
    return best;
  }

  #priority(source: ChunkSource, request: ChunkRequest): number {
    return source.priority?.(request) ?? DEFAULT_PRIORITY[source.kind];
  }

  /** Verified chunks of each file, as base64 bitmaps (for peers asking what this node holds). */
  availability(): {
    complete: boolean;
    have: Record<string, string>;
    pending: Record<string, string>;
  } {
    const have: Record<string, string> = {};
    const pending: Record<string, string> = {};
    let complete = true;
    this.files.forEach((f, fi) => {
      const state = this.#state[fi]!;
      const bits = Array.from(state, (s) => s === DONE);
      if (bits.some((b) => !b)) complete = false;
      have[f.name] = encodeBitmap(bits);
      pending[f.name] = encodeBitmap(
        Array.from(state, (_, i) => this.#fromOwner.has(`${fi}:${i}`)),
      );
    });
    return { complete, have, pending };
  }

  /** Progress with the current rate (smoothed over about ten seconds, see RateMeter). */
  report(now = this.#clock.monotonic()): PullReport {
    const left = this.progress.bytesTotal - this.progress.bytesDone;
    const eta = this.#meter.eta(left, now);
    return {
      ...this.progress,
      bySource: { ...this.progress.bySource },
      rateBytesPerSecond: Math.round(this.#meter.rate(now)),
      etaSeconds: eta === null ? null : Math.round(eta),
    };
  }

  /** True when `source` was given up on for this pull. */
  isBad(sourceId: string): boolean {
    return this.#bad.has(sourceId);
  }

  async #write(file: number, bytes: Uint8Array, offset: number): Promise<void> {
    let slot = this.#handles.get(file);
    if (!slot) {
      slot = this.#options.openFile(this.files[file]!.name).then((handle) => ({
        handle,
        lock: new Mutex(),
      }));
      this.#handles.set(file, slot);
    }
    const { handle, lock } = await slot;
    // An all-zero chunk of an adopted file stays a hole.
    if (isAllZero(bytes)) return;
    await lock.run(() => handle.writeAt(bytes, offset));
  }

  /** Bytes per second of verified chunks, for report(). */
  readonly #meter: RateMeter;

  #complete(file: number, index: number, digest: string, bytes: number, kind: SourceKind): void {
    this.#state[file]![index] = DONE;
    this.received[file]![index] = digest;
    this.#remaining--;
    this.#lastProgress = this.#clock.monotonic();
    this.progress.bytesDone += bytes;
    this.progress.chunksDone++;
    this.progress.bySource[kind] += bytes;
    this.#options.onBytes?.(kind, bytes);
    this.#meter.add(bytes);
    const key = `${file}:${index}`;
    for (const waiter of this.#waiters.get(key) ?? []) waiter.resolve();
    this.#waiters.delete(key);
    if (this.#hot.delete(key) && --this.#hotRemaining === 0) this.#hotResolve();
    this.#wake();
  }

  #fail(err: SnapmeshError): void {
    if (this.#failure) return;
    this.#failure = err;
    this.progress.state = "failed";
    this.#abort.abort(err);
    for (const list of this.#waiters.values()) for (const w of list) w.reject(err);
    this.#waiters.clear();
    this.#hotReject(err);
    this.#wake();
  }
}

/**
 * The error a pull fails with: a full disk is `insufficient_storage` (507),
 * anything else not already classified is `upstream_failed` (502).
 */
function asPullError(name: string, err: unknown): SnapmeshError {
  if (err instanceof SnapmeshError) return err;
  if (isNoSpace(err)) {
    return new SnapmeshError(
      "insufficient_storage",
      `Pull of "${name}" failed: the disk is full (${errorMessage(err)})`,
    );
  }
  return new SnapmeshError("upstream_failed", `Pull of "${name}" failed: ${errorMessage(err)}`);
}
