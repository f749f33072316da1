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

import { Buckets } from "./_buckets.ts";
import { bit, copyBits } from "./_bits.ts";
import { SourceSearch } from "./_search.ts";
import { declinedNow, holds, type SourceState } from "./_source_state.ts";
import type {
  Assignment,
  ChunkSchedulerOptions,
  Outcome,
  SourceKind,
  SourceSpec,
} from "./_scheduler_types.ts";

export type {
  Assignment,
  ChunkSchedulerOptions,
  Outcome,
  SourceKind,
  SourceSpec,
} from "./_scheduler_types.ts";

/** Below this many useful chunks among the free sources, their bitmaps are read instead. */
const FEW_USEFUL = 64;

const MISSING = 0;
const IN_FLIGHT = 1;
const DONE = 2;

interface Request {
  id: number;
  source: string;
  chunk: number;
  count: number;
  started: number;
  duplicate: boolean;
}

/** Decides what one pull asks for next. */
export class ChunkScheduler {
  readonly total: number;
  readonly #o: ChunkSchedulerOptions;
  readonly #state: Uint8Array;
  /** One bit per chunk, set while it is missing and no request covers it. */
  readonly #missing: Uint8Array;
  /** How many sources hold each chunk. */
  readonly #avail: Uint16Array;
  /** Missing chunks no request covers, by availability (bucket 0: no source holds it). */
  readonly #queue: Buckets;
  readonly #sources = new Map<string, SourceState>();
  readonly #requests = new Map<number, Request>();
  /** Requests per chunk in flight. */
  readonly #byChunk = new Map<number, number[]>();
  readonly #urgent: number[] = [];
  /** When a chunk only other zones hold may be fetched across zones. */
  readonly #crossAt = new Map<number, number>();
  readonly #ownerAt = new Map<number, number>();
  /** What other participants hold (the tracker's union), and when each such chunk may go to the origin. */
  #elsewhere: (() => Uint8Array | "all" | null) | null = null;
  readonly #elsewhereAt = new Map<number, number>();
  readonly #hot: number[];
  /** Which chunk next, from which source: reads the structures above. */
  readonly #search: SourceSearch;
  #hotAt = 0;
  #nextId = 1;
  #done = 0;
  #inFlight = 0;

  constructor(options: ChunkSchedulerOptions) {
    this.#o = options;
    this.total = options.counts.reduce((a, b) => a + b, 0);
    this.#state = new Uint8Array(this.total);
    this.#missing = new Uint8Array(Math.ceil(this.total / 8));
    for (let c = 0; c < this.total; c++) this.#missing[c >> 3]! |= 1 << (c & 7);
    this.#avail = new Uint16Array(this.total);
    this.#queue = new Buckets(this.total);
    for (let c = 0; c < this.total; c++) this.#queue.add(c, 0);
    this.#hot = [...(options.hot ?? [])];
    this.#search = new SourceSearch({
      options,
      sources: this.#sources,
      missing: this.#missing,
      avail: this.#avail,
      queue: this.#queue,
      crossAt: this.#crossAt,
      ownerAt: this.#ownerAt,
    });
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
      rack: spec.rack ?? null,
      have: have === "all" ? null : new Uint8Array(Math.ceil(this.total / 8)),
      inFlight: 0,
      chokedUntil: 0,
      declined: new Map(),
      useful: 0,
      rate: null,
      strikes: 0,
    };
    this.#sources.set(spec.id, state);
    // The origin holds everything but is not a holder among peers: chunks
    // only it has stay "unheld" (it serves exactly those).
    if (spec.kind === "origin") return;
    if (have === "all") {
      for (let c = 0; c < this.total; c++) this.#changeAvail(c, 1);
      state.useful = this.#countMissing(null);
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
    source.useful = this.#countMissing(source.have);
  }

  /** Missing, unrequested chunks among `have` (null: all chunks). */
  #countMissing(have: Uint8Array | null): number {
    let n = 0;
    for (let w = 0; w < this.#missing.length; w++) {
      let bits = this.#missing[w]! & (have === null ? 0xff : have[w]!);
      while (bits !== 0) {
        bits &= bits - 1;
        n++;
      }
    }
    return n;
  }

  /** Sets or clears chunk `chunk`'s missing bit, keeping the sources' useful counts. */
  #setMissing(chunk: number, missing: boolean): void {
    const mask = 1 << (chunk & 7);
    const was = (this.#missing[chunk >> 3]! & mask) !== 0;
    if (was === missing) return;
    if (missing) this.#missing[chunk >> 3]! |= mask;
    else this.#missing[chunk >> 3]! &= ~mask;
    for (const s of this.#sources.values()) {
      if (s.kind !== "origin" && holds(s, chunk)) s.useful += missing ? 1 : -1;
    }
  }

  /** A source now holds `chunk` (a have message). */
  addHave(id: string, chunk: number): void {
    const source = this.#sources.get(id);
    if (!source || source.kind === "origin" || holds(source, chunk)) return;
    source.have![chunk >> 3]! |= 1 << (chunk & 7);
    if (bit(this.#missing, chunk)) source.useful++;
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

  /** What other participants hold, looked up when needed (see `heldElsewhereWaitMs`). */
  setHeldElsewhere(held: () => Uint8Array | "all" | null): void {
    this.#elsewhere = held;
  }

  /** True when `chunk` may be read from the origin now: nobody else holds it, or it waited. */
  #originMay(chunk: number, now: number, held: Uint8Array | "all" | null): boolean {
    if (held === null || (held !== "all" && !bit(held, chunk))) return true;
    let at = this.#elsewhereAt.get(chunk);
    if (at === undefined) {
      at = now + (this.#o.heldElsewhereWaitMs ?? 3000);
      this.#elsewhereAt.set(chunk, at);
    }
    if (now >= at) return true;
    if (at < this.#search.soonest) this.#search.soonest = at;
    return false;
  }

  /** After `next()` answered null: when a choice it held back (a turn) becomes possible, or null. */
  wakeAt(): number | null {
    return Number.isFinite(this.#search.soonest) ? this.#search.soonest : null;
  }

  /**
   * The next request to send at `now`, or null when nothing can be sent
   * until something changes (a request ends, a have arrives, a choke ends).
   */
  next(now: number): Assignment | null {
    this.#search.soonest = Infinity;
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
        const source = this.#search.pick(chunk, now, { urgent, origin: true });
        if (source) return this.#assign(source, chunk, now, { urgent, duplicate: false });
      }
    }
    // A chunk with a local copy is copied, never fetched.
    const local = this.#sources.get("local");
    if (local && local.useful > 0 && local.inFlight < local.maxInFlight) {
      const chunk = this.#search.firstMissingIn(local);
      if (chunk >= 0) return this.#assign(local, chunk, now, { urgent: false, duplicate: false });
    }
    // Rarest first, among the missing chunks the sources free now hold.
    // When they hold few such chunks, one pass over their bitmaps finds the
    // rarest; when they hold many, a bounded scan of the rarest buckets (a
    // random start in each, so nodes diverge) finds one at once, and the pass
    // runs when the scan's budget went on chunks no free source may serve.
    const free = this.#search.freePeers(now);
    if (free.length > 0) {
      const useful = free.reduce((n, s) => n + s.useful, 0);
      const found = (useful > FEW_USEFUL ? this.#search.scan(free, now) : null) ??
        this.#search.rarest(free, now);
      if (found) {
        return this.#assign(found.source, found.chunk, now, { urgent: false, duplicate: false });
      }
    }
    // Chunks no peer holds: the origin, when this node may read it.
    const origin = this.#search.origin(now);
    const unheld = this.#queue.list(0);
    if (origin && unheld.length > 0) {
      // Lowest first, so origin requests can cover adjacent chunks.
      let chunk = -1;
      const held = this.#elsewhere?.() ?? null;
      for (const c of unheld) {
        if ((chunk < 0 || c < chunk) && this.#originMay(c, now, held)) chunk = c;
      }
      if (chunk >= 0) return this.#assign(origin, chunk, now, { urgent: false, duplicate: false });
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
      if (outcome.failure === "declined") {
        const until = now + (this.#o.declineMs ?? 1000);
        for (let c = request.chunk; c < request.chunk + request.count; c++) {
          source.declined.set(c, until);
        }
      }
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
          this.#setMissing(c, true);
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
    this.#crossAt.delete(chunk);
    this.#ownerAt.delete(chunk);
    this.#state[chunk] = DONE;
    this.#setMissing(chunk, false);
    this.#queue.remove(chunk);
    this.#done++;
  }

  #changeAvail(chunk: number, delta: number): void {
    const next = Math.max(0, this.#avail[chunk]! + delta);
    this.#avail[chunk] = next;
    if (this.#state[chunk] === MISSING) this.#queue.add(chunk, next);
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
        this.#avail[chunk + count] === 0 && this.#sameFile(chunk, chunk + count) &&
        this.#originMay(chunk + count, now, this.#elsewhere?.() ?? null)
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
        this.#setMissing(c, false);
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
   * Chunks left when the endgame starts: twice the requests in flight, but
   * at most a sixteenth of the chunks, so a small pull is not duplicated
   * from its start.
   */
  get #endgameChunks(): number {
    if (this.#o.endgameChunks !== undefined) return this.#o.endgameChunks;
    const inFlight = 2 * (this.#o.maxInFlight ?? 16);
    return Math.min(inFlight, Math.max(2, Math.ceil(this.total / 16)));
  }

  /**
   * A second request for a chunk in flight: in the endgame (few chunks
   * left, all in flight), or when its request is slow for its source.
   */
  #duplicate(now: number): Assignment | null {
    const endgame = this.remaining <= this.#endgameChunks;
    const slowFloor = this.#o.slowAfterMs ?? 2000;
    for (const request of this.#requests.values()) {
      // A chunk already delivered: its losing requests are being cancelled.
      if (request.count !== 1 || this.#state[request.chunk] !== IN_FLIGHT) continue;
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
      if (s.declined.size > 0 && declinedNow(s, chunk, now)) continue;
      if (!best || (s.rate ?? Infinity) > (best.rate ?? Infinity)) best = s;
    }
    return best;
  }
}
