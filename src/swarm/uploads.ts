/**
 * Upload slots: a node sends at most `slots` chunk reads at once (each
 * then gets a useful share of its link) and queues a few more. Beyond
 * that it answers "busy" at once, and the asker turns to another holder
 * for a while (it is choked). Among queued requests, peers that uploaded
 * to this node recently go first (they reciprocate), then the oldest.
 *
 * @module
 */

import { SnapmeshError } from "../errors.ts";
import type { Clock } from "../util/clock.ts";

/** Options for {@linkcode UploadSlots}. */
export interface UploadSlotsOptions {
  clock: Clock;
  /** Uploads at once. @default 8 */
  slots?: number;
  /** Requests waiting for a slot, at most. @default 16 */
  queue?: number;
  /** How long a peer counts as reciprocating after it sent this node a chunk, in ms. @default 10000 */
  reciprocityMs?: number;
}

/** Who an upload is for. */
export interface UploadRequest {
  /** The asking node's id, or null when unknown. */
  peer: string | null;
  /** Aborts the wait for a slot. */
  signal?: AbortSignal;
}

interface Waiting {
  peer: string | null;
  since: number;
  resolve(release: () => void): void;
  reject(err: unknown): void;
}

/** Bounded concurrent uploads, with a short priority queue. */
export class UploadSlots {
  readonly #o: UploadSlotsOptions;
  #busy = 0;
  readonly #waiting: Waiting[] = [];
  /** When each peer last sent this node a chunk. */
  readonly #gave = new Map<string, number>();
  readonly stats = { served: 0, refused: 0 };

  constructor(options: UploadSlotsOptions) {
    this.#o = options;
  }

  /** Uploads in progress. */
  get busy(): number {
    return this.#busy;
  }

  /** Notes that `peer` sent this node a chunk (it reciprocates). */
  received(peer: string): void {
    this.#gave.set(peer, this.#o.clock.monotonic());
  }

  /**
   * A slot for an upload. Resolves with the function that frees it;
   * rejects with `busy` when the queue is full or `signal` aborts while
   * waiting.
   */
  acquire(request: UploadRequest): Promise<() => void> {
    const { peer, signal } = request;
    if (this.#busy < (this.#o.slots ?? 8)) {
      this.#busy++;
      this.stats.served++;
      return Promise.resolve(this.#releaser());
    }
    if (this.#waiting.length >= (this.#o.queue ?? 16)) {
      this.stats.refused++;
      return Promise.reject(busy());
    }
    return new Promise((resolve, reject) => {
      const entry: Waiting = { peer, since: this.#o.clock.monotonic(), resolve, reject };
      this.#waiting.push(entry);
      signal?.addEventListener("abort", () => {
        const at = this.#waiting.indexOf(entry);
        if (at >= 0) {
          this.#waiting.splice(at, 1);
          reject(signal.reason ?? busy());
        }
      }, { once: true });
    });
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#busy--;
      const next = this.#nextWaiting();
      if (next) {
        this.#busy++;
        this.stats.served++;
        next.resolve(this.#releaser());
      }
    };
  }

  /** The waiting request to serve next: a reciprocating peer first, then the oldest. */
  #nextWaiting(): Waiting | undefined {
    if (this.#waiting.length === 0) return undefined;
    const now = this.#o.clock.monotonic();
    const window = this.#o.reciprocityMs ?? 10_000;
    let best = 0;
    for (let i = 0; i < this.#waiting.length; i++) {
      const w = this.#waiting[i]!;
      const gave = w.peer !== null && now - (this.#gave.get(w.peer) ?? -Infinity) < window;
      if (gave) {
        best = i;
        break;
      }
    }
    return this.#waiting.splice(best, 1)[0];
  }
}

function busy(): SnapmeshError {
  return new SnapmeshError("busy", "All upload slots are taken; ask another holder");
}
