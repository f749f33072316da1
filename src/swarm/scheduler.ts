/**
 * The chunk scheduler of one pull: decisions only, no I/O, no timers (time
 * is an argument). It answers "which chunk next, from which source" and
 * learns from what happened:
 *
 * - priority: chunks a reader waits for (urgent), then the hot list in its
 *   order, then **rarest first** among the chunks some source holds (ties
 *   broken at random, so nodes diverge and have chunks to trade);
 * - a holder in this node's zone is preferred; another zone's holder is
 *   used only when no holder in the zone has the chunk (so each chunk
 *   crosses zones about once, then spreads inside the zone);
 * - among holders, the fastest measured rate wins (an exponentially
 *   weighted average per source), then the one with the fewest requests in
 *   flight; a holder that answered "busy" is skipped for a while (choked);
 * - the origin only serves chunks no peer source holds, and only when this
 *   node may read it (the owner, or every owner unreachable);
 * - a request that takes much longer than its source's rate predicts is
 *   duplicated to another holder (a slow holder loses its chunks to faster
 *   ones within seconds), and at the end (**endgame**) every chunk still in
 *   flight is requested from a second holder; the first answer wins and the
 *   others are cancelled.
 *
 * Chunks are numbered across files: chunk `i` of file `f` is `base[f] + i`.
 *
 * @module
 */

import type { Random } from "../util/random.ts";

/** A kind of source. */
export type SourceKind = "local" | "peer" | "origin";

/** What the scheduler knows of a source when it is added. */
export interface SourceSpec {
  id: string;
  kind: SourceKind;
  /** The source's zone (peers), or null when unknown. */
  zone?: string | null;
  /** Requests it may have in flight at once. */
  maxInFlight: number;
  /**
   * Requests that failed or brought bad bytes before the source is dropped.
   * @default 1 for peers (one bad chunk and it is gone), 3 for the origin
   * (bytes can be damaged in transit)
   */
  strikes?: number;
  /**
   * The source serves chunks it does not hold yet by fetching them first
   * (the owner, asked to wait): used only for urgent chunks no one holds.
   */
  waits?: boolean;
}

/** A request to send. */
export interface Assignment {
  id: number;
  source: string;
  /** First chunk (global number). */
  chunk: number;
  /** Consecutive chunks in the request (more than one only from the origin). */
  count: number;
  /** The source may wait for the chunk (urgent, from the owner). */
  wait: boolean;
  /** A second request for a chunk already in flight elsewhere. */
  duplicate: boolean;
}

/** How a request ended. */
export interface Outcome {
  /** Chunks that arrived and verified. */
  good: number[];
  /** Chunks that arrived but failed verification. */
  bad?: number[];
  /** Bytes received (for the source's rate). */
  bytes: number;
  /**
   * Why it failed, when it did: `busy` (the source is saturated: choke it a
   * while), `gone` (unreachable: drop it), `cancelled` (this node gave up on
   * it), `error` (any other failure: strike).
   */
  failure?: "busy" | "gone" | "cancelled" | "error";
}

/** Options for {@linkcode ChunkScheduler}. */
export interface ChunkSchedulerOptions {
  /** Chunks per file. */
  counts: number[];
  /** Bytes of chunk `c` (global number). */
  chunkBytes(chunk: number): number;
  /** The hot chunks, in fetch order (global numbers). */
  hot?: number[];
  random: Random;
  /** This node's zone. @default null */
  zone?: string | null;
  /** Requests in flight at once, over all sources. @default 16 */
  maxInFlight?: number;
  /** Adjacent chunks one origin request may cover. @default 4 */
  originRun?: number;
  /** The endgame starts when at most this many chunks are missing. @default 2 × maxInFlight */
  endgameChunks?: number;
  /** A request is slow after max(this, 4 × its expected time), in ms. @default 2000 */
  slowAfterMs?: number;
  /** How long a busy source is skipped, in ms. @default 300 */
  chokeMs?: number;
  /** Failed requests before a source is dropped. @default 3 */
  strikes?: number;
}

/** Chunks looked at per decision, at most, in the rarest-first scan. */
const SCAN_LIMIT = 256;

const MISSING = 0;
const IN_FLIGHT = 1;
const DONE = 2;

interface SourceState extends Omit<SourceSpec, "strikes"> {
  zone: string | null;
  /** Bad answers tolerated (from the spec). */
  maxStrikes: number | undefined;
  /** Held chunks, or null when it holds everything. */
  have: Uint8Array | null;
  inFlight: number;
  chokedUntil: number;
  /** Measured rate in bytes per ms (exponentially weighted), or null. */
  rate: number | null;
  strikes: number;
}

interface Request {
  id: number;
  source: string;
  chunk: number;
  count: number;
  started: number;
  duplicate: boolean;
}

/**
 * Bucketed sets of chunk numbers by availability, with O(1) add, remove and
 * random pick: the rarest-first queue.
 */
class Buckets {
  readonly #lists: number[][] = [];
  readonly #where: Int32Array;
  readonly #pos: Int32Array;

  constructor(size: number) {
    this.#where = new Int32Array(size).fill(-1);
    this.#pos = new Int32Array(size);
  }

  has(chunk: number): boolean {
    return this.#where[chunk]! >= 0;
  }

  add(chunk: number, bucket: number): void {
    if (this.#where[chunk]! >= 0) this.remove(chunk);
    while (this.#lists.length <= bucket) this.#lists.push([]);
    const list = this.#lists[bucket]!;
    this.#where[chunk] = bucket;
    this.#pos[chunk] = list.length;
    list.push(chunk);
  }

  remove(chunk: number): void {
    const bucket = this.#where[chunk]!;
    if (bucket < 0) return;
    const list = this.#lists[bucket]!;
    const at = this.#pos[chunk]!;
    const last = list.pop()!;
    if (last !== chunk) {
      list[at] = last;
      this.#pos[last] = at;
    }
    this.#where[chunk] = -1;
  }

  /** Chunks of `bucket`, the live array (do not modify). */
  list(bucket: number): readonly number[] {
    return this.#lists[bucket] ?? [];
  }

  get depth(): number {
    return this.#lists.length;
  }
}

/** Decides what one pull asks for next. */
export class ChunkScheduler {
  readonly total: number;
  readonly #o: ChunkSchedulerOptions;
  readonly #state: Uint8Array;
  /** How many sources hold each chunk. */
  readonly #avail: Uint16Array;
  /** Missing chunks no request covers, by availability (bucket 0: no source holds it). */
  readonly #queue: Buckets;
  readonly #sources = new Map<string, SourceState>();
  readonly #requests = new Map<number, Request>();
  /** Requests per chunk in flight. */
  readonly #byChunk = new Map<number, number[]>();
  readonly #urgent: number[] = [];
  readonly #hot: number[];
  #hotAt = 0;
  #nextId = 1;
  #done = 0;
  #inFlight = 0;

  constructor(options: ChunkSchedulerOptions) {
    this.#o = options;
    this.total = options.counts.reduce((a, b) => a + b, 0);
    this.#state = new Uint8Array(this.total);
    this.#avail = new Uint16Array(this.total);
    this.#queue = new Buckets(this.total);
    for (let c = 0; c < this.total; c++) this.#queue.add(c, 0);
    this.#hot = [...(options.hot ?? [])];
  }

  /** Chunks not yet verified here. */
  get remaining(): number {
    return this.total - this.#done;
  }

  /** Requests in flight. */
  get inFlight(): number {
    return this.#inFlight;
  }

  isDone(chunk: number): boolean {
    return this.#state[chunk] === DONE;
  }

  /** Marks a chunk done without a request (zero chunks, resumed or local copies). */
  markDone(chunk: number): void {
    if (this.#state[chunk] === DONE) return;
    this.#settle(chunk);
  }

  /** A reader waits for `chunk`: it goes first. */
  urge(chunk: number): void {
    if (this.#state[chunk] === DONE) return;
    this.#urgent.push(chunk);
  }

  /** Adds a source; `have` is its bitmap of held chunks, "all" or "none". */
  addSource(spec: SourceSpec, have: Uint8Array | "all" | "none"): void {
    this.removeSource(spec.id);
    const state: SourceState = {
      ...spec,
      maxStrikes: spec.strikes,
      zone: spec.zone ?? null,
      have: have === "all" ? null : new Uint8Array(Math.ceil(this.total / 8)),
      inFlight: 0,
      chokedUntil: 0,
      rate: null,
      strikes: 0,
    };
    this.#sources.set(spec.id, state);
    // The origin holds everything but is not a holder among peers: chunks
    // only it has stay "unheld" (it serves exactly those).
    if (spec.kind === "origin") return;
    if (have === "all") {
      for (let c = 0; c < this.total; c++) this.#changeAvail(c, 1);
    } else if (have !== "none") {
      this.setHave(spec.id, have);
    }
  }

  /** Drops a source (gone); its requests are the caller's to cancel. */
  removeSource(id: string): void {
    const source = this.#sources.get(id);
    if (!source) return;
    this.#sources.delete(id);
    if (source.kind === "origin") return;
    for (let c = 0; c < this.total; c++) {
      if (holds(source, c)) this.#changeAvail(c, -1);
    }
  }

  /** Replaces what a source holds (a bitmap, bit `c` = chunk `c`), or "all". */
  setHave(id: string, have: Uint8Array | "all"): void {
    const source = this.#sources.get(id);
    if (!source || source.kind === "origin") return;
    for (let c = 0; c < this.total; c++) {
      const before = holds(source, c);
      const after = have === "all" || bit(have, c);
      if (before !== after) this.#changeAvail(c, after ? 1 : -1);
    }
    source.have = have === "all" ? null : copyBits(have, this.total);
  }

  /** A source now holds `chunk` (a have message). */
  addHave(id: string, chunk: number): void {
    const source = this.#sources.get(id);
    if (!source || source.kind === "origin" || holds(source, chunk)) return;
    source.have![chunk >> 3]! |= 1 << (chunk & 7);
    this.#changeAvail(chunk, 1);
  }

  /** The sources, for status and the swarm. */
  sources(): { id: string; kind: SourceKind; inFlight: number; rate: number | null }[] {
    return [...this.#sources.values()].map((s) => ({
      id: s.id,
      kind: s.kind,
      inFlight: s.inFlight,
      rate: s.rate,
    }));
  }

  hasSource(id: string): boolean {
    return this.#sources.has(id);
  }

  /** True when no source can ever serve some missing chunk (nothing in flight either). */
  stuck(): boolean {
    if (this.#inFlight > 0) return false;
    const origin = [...this.#sources.values()].some((s) => s.kind === "origin");
    if (origin) return false;
    return this.#queue.list(0).length > 0 && this.remaining > 0;
  }

  /**
   * The next request to send at `now`, or null when nothing can be sent
   * until something changes (a request ends, a have arrives, a choke ends).
   */
  next(now: number): Assignment | null {
    const cap = this.#o.maxInFlight ?? 16;
    if (this.#inFlight >= cap || this.remaining === 0) return null;
    // Urgent chunks, then the hot list, in order.
    for (const list of [this.#urgent, this.#hot]) {
      const start = list === this.#hot ? this.#hotAt : 0;
      for (let k = start; k < list.length; k++) {
        const chunk = list[k]!;
        if (this.#state[chunk] !== MISSING) {
          if (list === this.#hot && k === this.#hotAt) this.#hotAt++;
          if (list === this.#urgent && this.#state[chunk] === DONE) list.splice(k--, 1);
          continue;
        }
        const urgent = list === this.#urgent;
        const source = this.#pick(chunk, now, { urgent, origin: true });
        if (source) return this.#assign(source, chunk, now, { urgent, duplicate: false });
      }
    }
    // Rarest first: the least held chunks some source can send now. The
    // scan is bounded: when every holder is saturated, waiting is cheaper
    // than looking through every chunk each time a request ends.
    let budget = SCAN_LIMIT;
    if (this.#freePeers(now)) {
      for (let bucket = 1; bucket < this.#queue.depth && budget > 0; bucket++) {
        const list = this.#queue.list(bucket);
        if (list.length === 0) continue;
        // A random start, then the chunks of the bucket in turn.
        const offset = this.#o.random.int(list.length);
        for (let k = 0; k < list.length && budget > 0; k++, budget--) {
          const chunk = list[(offset + k) % list.length]!;
          const source = this.#pick(chunk, now, { urgent: false, origin: false });
          if (source) return this.#assign(source, chunk, now, { urgent: false, duplicate: false });
        }
      }
    }
    // Chunks no peer holds: the origin, when this node may read it.
    const origin = this.#origin(now);
    const unheld = this.#queue.list(0);
    if (origin && unheld.length > 0) {
      // Lowest first, so origin requests can cover adjacent chunks.
      let chunk = unheld[0]!;
      for (const c of unheld) if (c < chunk) chunk = c;
      return this.#assign(origin, chunk, now, { urgent: false, duplicate: false });
    }
    return this.#duplicate(now);
  }

  /**
   * Records how request `id` ended. Returns the other requests for the same
   * chunks that became pointless (the caller cancels them).
   */
  finished(id: number, now: number, outcome: Outcome): number[] {
    const request = this.#requests.get(id);
    if (!request) return [];
    this.#requests.delete(id);
    this.#inFlight--;
    const source = this.#sources.get(request.source);
    if (source) {
      source.inFlight--;
      if (outcome.good.length > 0 && outcome.bytes > 0) {
        const rate = outcome.bytes / Math.max(1, now - request.started);
        source.rate = source.rate === null ? rate : 0.7 * source.rate + 0.3 * rate;
      }
      if (outcome.failure === "busy") source.chokedUntil = now + (this.#o.chokeMs ?? 300);
      const bad = (outcome.bad?.length ?? 0) > 0;
      if (outcome.failure === "error" || bad) {
        source.strikes++;
        const limit = bad
          ? source.maxStrikes ?? (source.kind === "origin" ? 3 : 1)
          : this.#o.strikes ?? 3;
        if (source.strikes >= limit) this.removeSource(source.id);
      }
      if (outcome.failure === "gone") this.removeSource(source.id);
    }
    const cancel: number[] = [];
    for (let c = request.chunk; c < request.chunk + request.count; c++) {
      const list = this.#byChunk.get(c)!;
      list.splice(list.indexOf(id), 1);
      if (outcome.good.includes(c)) {
        if (this.#state[c] !== DONE) this.#settle(c);
        cancel.push(...list);
      }
      if (list.length === 0) {
        this.#byChunk.delete(c);
        if (this.#state[c] === IN_FLIGHT) {
          this.#state[c] = MISSING;
          this.#queue.add(c, Math.min(this.#avail[c]!, 0xffff));
        }
      }
    }
    return [...new Set(cancel)];
  }

  /** Requests in flight, for cancelling everything at the end. */
  requests(): number[] {
    return [...this.#requests.keys()];
  }

  /** Chunks in flight that `source` serves (to requeue when it is dropped). */
  requestsOf(source: string): number[] {
    return [...this.#requests.values()].filter((r) => r.source === source).map((r) => r.id);
  }

  #settle(chunk: number): void {
    this.#state[chunk] = DONE;
    this.#queue.remove(chunk);
    this.#done++;
  }

  #changeAvail(chunk: number, delta: number): void {
    const next = Math.max(0, this.#avail[chunk]! + delta);
    this.#avail[chunk] = next;
    if (this.#state[chunk] === MISSING) this.#queue.add(chunk, next);
  }

  /** The origin source, when it can take a request now. */
  #origin(now: number): SourceState | null {
    for (const s of this.#sources.values()) {
      if (s.kind === "origin" && s.inFlight < s.maxInFlight && s.chokedUntil <= now) return s;
    }
    return null;
  }

  /**
   * The best holder of `chunk` able to take a request now: in this node's
   * zone when any holder is, fastest first.
   */
  #pick(
    chunk: number,
    now: number,
    how: { urgent: boolean; origin: boolean },
  ): SourceState | null {
    const { urgent } = how;
    const zone = this.#o.zone ?? null;
    let inZoneHolder = false;
    let best: SourceState | null = null;
    let bestScore = -Infinity;
    let waiter: SourceState | null = null;
    // A chunk with a local copy is copied, never fetched: wait for the
    // local source rather than use the network.
    const local = this.#sources.get("local");
    if (local && holds(local, chunk)) {
      return local.inFlight < local.maxInFlight ? local : null;
    }
    for (const s of this.#sources.values()) {
      if (s.kind === "origin" || s.kind === "local") continue;
      if (!holds(s, chunk)) {
        if (urgent && s.waits && s.inFlight < s.maxInFlight) waiter = s;
        continue;
      }
      const near = zone === null || s.zone === null || s.zone === zone;
      if (near && !inZoneHolder) {
        inZoneHolder = true;
        best = null;
        bestScore = -Infinity;
      }
      if (inZoneHolder && !near) continue;
      if (s.inFlight >= s.maxInFlight || s.chokedUntil > now) continue;
      // Unmeasured peers are tried as if fast, so every holder gets measured.
      const rate = s.rate ?? Number.MAX_SAFE_INTEGER;
      const score = rate / (1 + s.inFlight) + this.#o.random.next() * 1e-9;
      if (score > bestScore) {
        best = s;
        bestScore = score;
      }
    }
    if (best) return best;
    if (how.origin && this.#avail[chunk] === 0) return this.#origin(now) ?? waiter;
    return null;
  }

  /** True when some peer source can take a request now. */
  #freePeers(now: number): boolean {
    for (const s of this.#sources.values()) {
      if (s.kind !== "origin" && s.inFlight < s.maxInFlight && s.chokedUntil <= now) return true;
    }
    return false;
  }

  #assign(
    source: SourceState,
    chunk: number,
    now: number,
    how: { urgent: boolean; duplicate: boolean },
  ): Assignment {
    let count = 1;
    if (source.kind === "origin" && !how.duplicate) {
      const run = this.#o.originRun ?? 4;
      while (
        count < run && chunk + count < this.total && this.#state[chunk + count] === MISSING &&
        this.#avail[chunk + count] === 0 && this.#sameFile(chunk, chunk + count)
      ) count++;
    }
    const request: Request = {
      id: this.#nextId++,
      source: source.id,
      chunk,
      count,
      started: now,
      duplicate: how.duplicate,
    };
    this.#requests.set(request.id, request);
    this.#inFlight++;
    source.inFlight++;
    for (let c = chunk; c < chunk + count; c++) {
      if (this.#state[c] === MISSING) {
        this.#state[c] = IN_FLIGHT;
        this.#queue.remove(c);
      }
      const list = this.#byChunk.get(c) ?? [];
      list.push(request.id);
      this.#byChunk.set(c, list);
    }
    const wait = how.urgent && !holds(source, chunk) && source.kind === "peer";
    return { id: request.id, source: source.id, chunk, count, wait, duplicate: how.duplicate };
  }

  #sameFile(a: number, b: number): boolean {
    let base = 0;
    for (const n of this.#o.counts) {
      if (a < base + n) return b < base + n;
      base += n;
    }
    return false;
  }

  /**
   * A second request for a chunk in flight: in the endgame (few chunks
   * left, all in flight), or when its request is slow for its source.
   */
  #duplicate(now: number): Assignment | null {
    const endgame = this.remaining <= (this.#o.endgameChunks ?? 2 * (this.#o.maxInFlight ?? 16));
    const slowFloor = this.#o.slowAfterMs ?? 2000;
    for (const request of this.#requests.values()) {
      if (request.count !== 1) continue;
      const copies = this.#byChunk.get(request.chunk)?.length ?? 0;
      if (copies > 1) continue;
      const source = this.#sources.get(request.source);
      const expected = source?.rate ? this.#o.chunkBytes(request.chunk) / source.rate : 0;
      const slow = now - request.started > Math.max(slowFloor, 4 * expected);
      if (!endgame && !slow) continue;
      const other = this.#pickOther(request.chunk, now, request.source);
      if (other) return this.#assign(other, request.chunk, now, { urgent: false, duplicate: true });
    }
    return null;
  }

  #pickOther(chunk: number, now: number, not: string): SourceState | null {
    let best: SourceState | null = null;
    for (const s of this.#sources.values()) {
      if (s.id === not || s.kind === "origin" || !holds(s, chunk)) continue;
      if (s.inFlight >= s.maxInFlight || s.chokedUntil > now) continue;
      if (!best || (s.rate ?? Infinity) > (best.rate ?? Infinity)) best = s;
    }
    return best;
  }
}

function holds(source: SourceState, chunk: number): boolean {
  return source.have === null || bit(source.have, chunk);
}

function bit(bits: Uint8Array, index: number): boolean {
  return ((bits[index >> 3] ?? 0) & (1 << (index & 7))) !== 0;
}

function copyBits(bits: Uint8Array, total: number): Uint8Array {
  const out = new Uint8Array(Math.ceil(total / 8));
  out.set(bits.subarray(0, out.length));
  return out;
}
