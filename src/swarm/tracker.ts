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
  /** A participant that stops announcing is forgotten after this long, in ms. @default 30000 */
  ttlMs?: number;
}

interface Entry extends SwarmPeer {
  seen: number;
}

/** Swarm participants by snapshot digest. */
export class Tracker {
  readonly #o: TrackerOptions;
  readonly #swarms = new Map<string, Map<string, Entry>>();

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
  }): SwarmPeer[] {
    const { digest, peer, now } = request;
    let swarm = this.#swarms.get(digest);
    if (!swarm) {
      swarm = new Map();
      this.#swarms.set(digest, swarm);
    }
    swarm.set(peer.id, { ...peer, seen: now });
    if (request.self) swarm.set(request.self.id, { ...request.self, seen: now });
    const ttl = this.#o.ttlMs ?? 30_000;
    const near: Entry[] = [];
    const far: Entry[] = [];
    for (const [id, entry] of swarm) {
      if (now - entry.seen > ttl) {
        swarm.delete(id);
        continue;
      }
      if (id === peer.id) continue;
      const same = peer.zone === null || entry.zone === null || entry.zone === peer.zone;
      (same ? near : far).push(entry);
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
      drop(near);
      drop(far);
    }
    const handout = (this.#o.handout ?? 16) - (selfEntry ? 1 : 0);
    const cross = Math.min(far.length, Math.max(far.length > 0 ? 1 : 0, this.#o.crossZone ?? 2));
    const random = this.#o.random;
    const chosen = [
      ...random.sample(near, handout - Math.min(cross, handout)),
      ...random.sample(far, cross),
    ];
    // Fill up from the other zones when the asker's zone has too few.
    if (chosen.length < handout) {
      const rest = far.filter((e) => !chosen.includes(e));
      chosen.push(...random.sample(rest, handout - chosen.length));
    }
    if (selfEntry) chosen.unshift({ ...selfEntry, seen: now });
    return chosen.map(({ id, url, zone, complete }) => ({ id, url, zone, complete }));
  }

  /** Live participants of a swarm, for status. */
  participants(digest: string): SwarmPeer[] {
    return [...(this.#swarms.get(digest)?.values() ?? [])].map((
      { id, url, zone, complete },
    ) => ({ id, url, zone, complete }));
  }

  /** Forgets swarms nobody announced to for the TTL. */
  sweep(now: number): void {
    const ttl = this.#o.ttlMs ?? 30_000;
    for (const [digest, swarm] of this.#swarms) {
      for (const [id, entry] of swarm) if (now - entry.seen > ttl) swarm.delete(id);
      if (swarm.size === 0) this.#swarms.delete(digest);
    }
  }
}
