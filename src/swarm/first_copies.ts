/**
 * First copies: a node that reads the origin for a swarm (its owner) sends
 * each new chunk to one peer first, and declines to send the same chunk to
 * another peer while that first copy is on its way and for a short window
 * after it arrived: the first recipient's have reaches the others, and they
 * take it from there. The owner's uplink then carries about one copy of the
 * snapshot instead of one per asker, and the swarm, not the owner,
 * multiplies each chunk (BitTorrent's "super-seeding"). After the window
 * (or when a first copy takes too long) the chunk may go out again: its
 * first recipient may be slow or gone, and nothing waits on one peer long.
 *
 * @module
 */

import type { Clock } from "../util/clock.ts";

/** Options for {@linkcode FirstCopies}. */
export interface FirstCopiesOptions {
  clock: Clock;
  /** After a first copy arrived, how long the chunk is not sent to another peer, in ms. @default 1000 */
  windowMs?: number;
  /** A first copy still on its way after this long no longer holds the chunk back, in ms. @default 5000 */
  transitMs?: number;
}

interface Sent {
  to: string;
  /** Until when other askers are declined. */
  until: number;
}

/** Which chunks went to which peer lately, keyed by the caller (digest, file, chunk). */
export class FirstCopies {
  readonly #clock: Clock;
  readonly #windowMs: number;
  readonly #transitMs: number;
  /** Roughly in expiry order: entries are re-inserted when their deadline moves. */
  readonly #sent = new Map<string, Sent>();
  readonly stats = { sent: 0, declined: 0 };

  constructor(options: FirstCopiesOptions) {
    this.#clock = options.clock;
    this.#windowMs = options.windowMs ?? 1000;
    this.#transitMs = options.transitMs ?? 5000;
  }

  /** Entries held (each expires after its deadline). */
  get size(): number {
    return this.#sent.size;
  }

  /**
   * May the chunks `keys` go to peer `to` now? Yes when none of them is
   * held back for another peer; then they are recorded as on their way to
   * `to` (call {@linkcode FirstCopies.arrived} when the send ends). An
   * unnamed asker (`null`) is always served and never recorded.
   */
  admit(keys: readonly string[], to: string | null): boolean {
    if (to === null) return true;
    const now = this.#clock.monotonic();
    this.#expire(now);
    for (const key of keys) {
      const sent = this.#sent.get(key);
      if (sent && sent.to !== to && now < sent.until) {
        this.stats.declined++;
        return false;
      }
    }
    for (const key of keys) this.#set(key, { to, until: now + this.#transitMs });
    this.stats.sent++;
    return true;
  }

  /** The send of `keys` to `to` ended: the chunks stay held back for the window from now. */
  arrived(keys: readonly string[], to: string | null): void {
    if (to === null) return;
    const until = this.#clock.monotonic() + this.#windowMs;
    for (const key of keys) {
      if (this.#sent.get(key)?.to === to) this.#set(key, { to, until });
    }
  }

  #set(key: string, sent: Sent): void {
    this.#sent.delete(key);
    this.#sent.set(key, sent);
  }

  #expire(now: number): void {
    for (const [key, sent] of this.#sent) {
      if (now < sent.until) break;
      this.#sent.delete(key);
    }
  }
}
