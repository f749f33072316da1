/**
 * The tracker of the snapshots this node owns: the owner sees every node
 * that pulls one of them (each announces itself every few seconds) and
 * hands each a **bounded, random** set of other participants to trade
 * with — most from the asker's own zone, a couple from other zones — so
 * the swarm forms a random graph in which every node uploads, instead of
 * everyone reading from the same few holders.
 *
 * @module
 */

import type { Random } from "../util/random.ts";

/** A participant of a swarm, as announced. */
export interface SwarmPeer {
  /** Node id. */
  id: string;
  /** Where peers reach it. */
  url: string;
  zone: string | null;
  /** Its rack, when known (a finer locality than the zone). */
  rack?: string | null;
  /** It holds the whole snapshot. */
  complete: boolean;
}

/** Options for {@linkcode Tracker}. */
export interface TrackerOptions {
  random: Random;
  /** Participants handed out per announce. @default 16 */
  handout?: number;
  /** Of those, at most this many from other zones (and at least one when any exist). @default 2 */
  crossZone?: number;
  /**
   * Of those from the asker's zone, up to this many from its own rack (the
   * rest from other racks, so chunks still travel between racks). @default 8
   */
  sameRack?: number;
  /** A participant that stops announcing is forgotten after this long, in ms. @default 30000 */
  ttlMs?: number;
}

interface Entry extends SwarmPeer {
  seen: number;
}

/** What the participants of one swarm said they hold, together. */
interface Held {
  /** Union of the bitmaps announced (bits are never cleared). */
  bits: Uint8Array;
  /** A participant announced the whole snapshot. */
  all: boolean;
}

/** Swarm participants by snapshot digest. */
export class Tracker {
  readonly #o: TrackerOptions;
  readonly #swarms = new Map<string, Map<string, Entry>>();
  readonly #held = new Map<string, Held>();

  constructor(options: TrackerOptions) {
    this.#o = options;
  }

  /**
   * Records `peer` as a participant of the swarm of `digest` at `now`, and
   * answers a random set of other live participants for it. `self` is this
   * node when it takes part in the swarm (pulling or holding the snapshot):
   * it is recorded as a participant too, so that a node whose view of the
   * fleet made this node its owner by mistake (a tracker only such nodes
   * announce to) still reaches the swarm through it, and it comes first in
   * every answer (the asker always follows its owner).
   */
  announce(request: {
    digest: string;
    peer: SwarmPeer;
    now: number;
    self?: SwarmPeer | null;
    /** The chunks the announcing participant holds (bitmap over global chunks). */
    have?: Uint8Array | null;
  }): SwarmPeer[] {
    const { digest, peer, now } = request;
    this.#addHeld(digest, peer.complete, request.have ?? null);
    let swarm = this.#swarms.get(digest);
    if (!swarm) {
      swarm = new Map();
      this.#swarms.set(digest, swarm);
    }
    swarm.set(peer.id, { ...peer, seen: now });
    if (request.self) swarm.set(request.self.id, { ...request.self, seen: now });
    const ttl = this.#o.ttlMs ?? 30_000;
    const rackMates: Entry[] = [];
    const near: Entry[] = [];
    const far: Entry[] = [];
    const rack = peer.rack ?? null;
    for (const [id, entry] of swarm) {
      if (now - entry.seen > ttl) {
        swarm.delete(id);
        continue;
      }
      if (id === peer.id) continue;
      const same = peer.zone === null || entry.zone === null || entry.zone === peer.zone;
      if (same && rack !== null && entry.rack === rack) rackMates.push(entry);
      else (same ? near : far).push(entry);
    }
    // The tracker's own node, when it takes part, is always handed out,
    // first: it is where chunks enter the swarm, and a swarm whose nodes
    // all filled their neighbors with others before meeting it would
    // never receive a chunk.
    const selfEntry = request.self && request.self.id !== peer.id ? request.self : null;
    if (selfEntry) {
      const drop = (list: Entry[]) => {
        const at = list.findIndex((e) => e.id === selfEntry.id);
        if (at >= 0) list.splice(at, 1);
      };
      drop(rackMates);
      drop(near);
      drop(far);
    }
    const handout = (this.#o.handout ?? 16) - (selfEntry ? 1 : 0);
    const cross = Math.min(far.length, Math.max(far.length > 0 ? 1 : 0, this.#o.crossZone ?? 2));
    const random = this.#o.random;
    const inZone = handout - Math.min(cross, handout);
    // Rack mates first (cheap links), the rest of the zone after them.
    const mates = random.sample(rackMates, Math.min(inZone, this.#o.sameRack ?? 8));
    const chosen = [
      ...mates,
      ...random.sample(near, inZone - mates.length),
      ...random.sample(far, cross),
    ];
    // Fill up from the rack when the zone has too few others.
    if (chosen.length < inZone + cross) {
      const rest = rackMates.filter((e) => !chosen.includes(e));
      chosen.push(...random.sample(rest, inZone + cross - chosen.length));
    }
    // Fill up from the other zones when the asker's zone has too few.
    if (chosen.length < handout) {
      const rest = far.filter((e) => !chosen.includes(e));
      chosen.push(...random.sample(rest, handout - chosen.length));
    }
    if (selfEntry) chosen.unshift({ ...selfEntry, seen: now });
    return chosen.map(({ id, url, zone, rack, complete }) => ({
      id,
      url,
      zone,
      rack: rack ?? null,
      complete,
    }));
  }

  /**
   * What the swarm of `digest` holds, as far as its announces told: the
   * union of their bitmaps, "all" once a participant announced the whole
   * snapshot, null when nothing is known. A chunk in it may still be lost
   * (its holders gone): the caller only waits a while for it.
   */
  held(digest: string): Uint8Array | "all" | null {
    const held = this.#held.get(digest);
    if (!held) return null;
    return held.all ? "all" : held.bits;
  }

  #addHeld(digest: string, complete: boolean, have: Uint8Array | null): void {
    if (!complete && have === null) return;
    let held = this.#held.get(digest);
    if (!held) {
      held = { bits: new Uint8Array(have?.length ?? 0), all: false };
      this.#held.set(digest, held);
    }
    if (complete) held.all = true;
    if (have === null) return;
    if (have.length > held.bits.length) {
      const grown = new Uint8Array(have.length);
      grown.set(held.bits);
      held.bits = grown;
    }
    for (let i = 0; i < have.length; i++) held.bits[i]! |= have[i]!;
  }

  /** Live participants of a swarm, for status. */
  participants(digest: string): SwarmPeer[] {
    return [...(this.#swarms.get(digest)?.values() ?? [])].map((
      { id, url, zone, rack, complete },
    ) => ({ id, url, zone, rack: rack ?? null, complete }));
  }

  /** Forgets swarms nobody announced to for the TTL. */
  sweep(now: number): void {
    const ttl = this.#o.ttlMs ?? 30_000;
    for (const [digest, swarm] of this.#swarms) {
      for (const [id, entry] of swarm) if (now - entry.seen > ttl) swarm.delete(id);
      if (swarm.size === 0) {
        this.#swarms.delete(digest);
        this.#held.delete(digest);
      }
    }
  }
}
