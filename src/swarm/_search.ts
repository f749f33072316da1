// The scheduler's searches: which source may serve a chunk now, and which
// chunk to fetch next, rarest first. They read the scheduler's structures
// through one state object, built once, so a decision allocates no more than
// it did inside the scheduler (the simulation makes millions of them).

import type { Buckets } from "./_buckets.ts";
import type { ChunkSchedulerOptions } from "./_scheduler_types.ts";
import { declinedNow, holds, type SourceState } from "./_source_state.ts";

/** Chunks looked at per decision, at most, in the rarest-first bucket scan. */
const SCAN_LIMIT = 256;

/** The scheduler's structures the searches read (shared, not copied). */
export interface SearchState {
  options: ChunkSchedulerOptions;
  /** The sources by id. */
  sources: Map<string, SourceState>;
  /** One bit per chunk, set while it is missing and no request covers it. */
  missing: Uint8Array;
  /** How many sources hold each chunk. */
  avail: Uint16Array;
  /** Missing chunks no request covers, by availability. */
  queue: Buckets;
  /** When a chunk only other zones hold may be fetched across zones. */
  crossAt: Map<number, number>;
  /** When a chunk only the owner holds may be asked of it. */
  ownerAt: Map<number, number>;
}

/** A source and the chunk to ask it for. */
export interface Found {
  source: SourceState;
  chunk: number;
}

/**
 * The scheduler's searches over one {@linkcode SearchState}. Its parts are
 * held in fields of their own: one load fewer per read in the hot loops.
 */
export class SourceSearch {
  readonly #o: ChunkSchedulerOptions;
  readonly #sources: Map<string, SourceState>;
  readonly #missing: Uint8Array;
  readonly #avail: Uint16Array;
  readonly #queue: Buckets;
  readonly #crossAt: Map<number, number>;
  readonly #ownerAt: Map<number, number>;
  /** The soonest time a choice held back in this decision becomes possible (Infinity: none). */
  soonest = Infinity;

  constructor(state: SearchState) {
    this.#o = state.options;
    this.#sources = state.sources;
    this.#missing = state.missing;
    this.#avail = state.avail;
    this.#queue = state.queue;
    this.#crossAt = state.crossAt;
    this.#ownerAt = state.ownerAt;
  }

  /** The origin source, when it can take a request now. */
  origin(now: number): SourceState | null {
    for (const s of this.#sources.values()) {
      if (s.kind === "origin" && s.inFlight < s.maxInFlight && s.chokedUntil <= now) return s;
    }
    return null;
  }

  /**
   * The best holder of `chunk` able to take a request now: in this node's
   * zone when any holder is, fastest first.
   */
  pick(
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
      if (s.declined.size > 0 && declinedNow(s, chunk, now)) continue;
      if (!urgent && !this.#ownerTurn(s, chunk, now)) continue;
      const score = this.#speed(s) / (1 + s.inFlight) + this.#o.random.next() * 1e-9;
      if (score > bestScore) {
        best = s;
        bestScore = score;
      }
    }
    if (best && !inZoneHolder && zone !== null && !urgent && !this.#mayCross(chunk, now)) {
      return null;
    }
    if (best) return best;
    if (how.origin && this.#avail[chunk] === 0) return this.origin(now) ?? waiter;
    return null;
  }

  /**
   * How fast a source is taken to be: its measured rate (unmeasured peers
   * as if fast, so every holder gets measured), doubled for a holder in
   * this node's rack (its link is the cheap one).
   */
  #speed(source: SourceState): number {
    const rate = source.rate ?? Number.MAX_SAFE_INTEGER;
    const rack = this.#o.rack ?? null;
    return rack !== null && source.rack === rack ? 2 * rate : rate;
  }

  /** True when `source` may be asked for `chunk` now: not the owner alone holding it before its turn. */
  #ownerTurn(source: SourceState, chunk: number, now: number): boolean {
    if (!source.waits || this.#avail[chunk]! > 1) return true;
    const wait = this.#o.ownerWaitMs ?? 300;
    if (wait <= 0) return true;
    let at = this.#ownerAt.get(chunk);
    if (at === undefined) {
      at = now + this.#o.random.next() * wait;
      this.#ownerAt.set(chunk, at);
    }
    if (now >= at) return true;
    if (at < this.soonest) this.soonest = at;
    return false;
  }

  /** True once `chunk`, held only in other zones, has waited its turn to cross. */
  #mayCross(chunk: number, now: number): boolean {
    const wait = this.#o.crossZoneWaitMs ?? 500;
    if (wait <= 0) return true;
    let at = this.#crossAt.get(chunk);
    if (at === undefined) {
      at = now + this.#o.random.next() * wait;
      this.#crossAt.set(chunk, at);
    }
    if (now >= at) return true;
    if (at < this.soonest) this.soonest = at;
    return false;
  }

  /** The peer sources that can take a request now and hold something missing here. */
  freePeers(now: number): SourceState[] {
    const free: SourceState[] = [];
    for (const s of this.#sources.values()) {
      if (s.kind === "origin" || s.kind === "local" || s.useful <= 0) continue;
      if (s.inFlight < s.maxInFlight && s.chokedUntil <= now) free.push(s);
    }
    return free;
  }

  /** The rarest-first bucket scan, bounded by {@linkcode SCAN_LIMIT} chunks. */
  scan(free: SourceState[], now: number): Found | null {
    let budget = SCAN_LIMIT;
    for (let bucket = 1; bucket < this.#queue.depth && budget > 0; bucket++) {
      const list = this.#queue.list(bucket);
      if (list.length === 0) continue;
      const offset = this.#o.random.int(list.length);
      for (let k = 0; k < list.length && budget > 0; k++, budget--) {
        const chunk = list[(offset + k) % list.length]!;
        const source = this.#pickFree(chunk, now, free);
        if (source) return { source, chunk };
      }
    }
    return null;
  }

  /**
   * The best free source for `chunk` in the scan: the fastest free holder
   * in this node's zone; a free holder in another zone only when no holder
   * in the zone (free or not) has the chunk and the chunk has waited its
   * turn to cross.
   */
  #pickFree(chunk: number, now: number, free: SourceState[]): SourceState | null {
    const local = this.#sources.get("local");
    if (local && holds(local, chunk)) {
      return local.inFlight < local.maxInFlight ? local : null;
    }
    const zone = this.#o.zone ?? null;
    let near: SourceState | null = null;
    let nearScore = -Infinity;
    let far: SourceState | null = null;
    let farScore = -Infinity;
    for (const s of free) {
      if (s.inFlight >= s.maxInFlight || !holds(s, chunk)) continue;
      if (s.declined.size > 0 && declinedNow(s, chunk, now)) continue;
      if (!this.#ownerTurn(s, chunk, now)) continue;
      const score = this.#speed(s) / (1 + s.inFlight);
      if (zone === null || s.zone === null || s.zone === zone) {
        if (score > nearScore) [near, nearScore] = [s, score];
      } else if (score > farScore) {
        [far, farScore] = [s, score];
      }
    }
    if (near) return near;
    if (!far || this.#heldInZone(chunk, zone)) return null;
    return this.#mayCross(chunk, now) ? far : null;
  }

  /**
   * The rarest missing chunk a free source holds, and that source: one pass
   * over each free source's bitmap against the missing bitmap (from a
   * random word, so nodes diverge), fewest holders first. A holder in this
   * node's zone wins; one in another zone only when no holder in the zone
   * (free or not) has the chunk and the chunk has waited its turn to cross.
   */
  rarest(free: SourceState[], now: number): Found | null {
    const local = this.#sources.get("local");
    const zone = this.#o.zone ?? null;
    const words = this.#missing.length;
    const start = this.#o.random.int(words);
    let near: { source: SourceState; chunk: number; avail: number } | null = null;
    const far: { source: SourceState; chunk: number; avail: number }[] = [];
    for (const s of free) {
      const isNear = zone === null || s.zone === null || s.zone === zone;
      if (!isNear && near) continue;
      let best = -1;
      let bestAvail = Infinity;
      let seen = 0;
      for (let k = 0; k < words && seen < s.useful; k++) {
        const w = (start + k) % words;
        let bits = this.#missing[w]! & (s.have === null ? 0xff : s.have[w]!);
        while (bits !== 0) {
          const low = bits & -bits;
          bits &= ~low;
          const chunk = (w << 3) + (31 - Math.clz32(low));
          seen++;
          const avail = this.#avail[chunk]!;
          if (avail >= bestAvail) continue;
          // A chunk with a local copy is copied, never fetched.
          if (local && holds(local, chunk)) continue;
          if (s.declined.size > 0 && declinedNow(s, chunk, now)) continue;
          if (!this.#ownerTurn(s, chunk, now)) continue;
          best = chunk;
          bestAvail = avail;
        }
        if (bestAvail <= 1) break;
      }
      if (best < 0) continue;
      if (isNear) {
        // Rarer wins; between equals, the faster source.
        if (
          !near || bestAvail < near.avail ||
          (bestAvail === near.avail && this.#speed(s) > this.#speed(near.source))
        ) near = { source: s, chunk: best, avail: bestAvail };
      } else {
        far.push({ source: s, chunk: best, avail: bestAvail });
      }
    }
    if (near) return near;
    far.sort((a, b) => a.avail - b.avail);
    for (const candidate of far) {
      if (this.#heldInZone(candidate.chunk, zone)) continue; // worth waiting for
      if (this.#mayCross(candidate.chunk, now)) return candidate;
    }
    return null;
  }

  /** The lowest missing chunk `source` holds, or -1. */
  firstMissingIn(source: SourceState): number {
    for (let w = 0; w < this.#missing.length; w++) {
      const bits = this.#missing[w]! & (source.have === null ? 0xff : source.have[w]!);
      if (bits !== 0) return (w << 3) + (31 - Math.clz32(bits & -bits));
    }
    return -1;
  }

  /** True when a peer source of `zone` (free or not) holds `chunk`. */
  #heldInZone(chunk: number, zone: string | null): boolean {
    for (const s of this.#sources.values()) {
      if (s.kind === "peer" && s.zone !== null && s.zone === zone && holds(s, chunk)) return true;
    }
    return false;
  }
}
