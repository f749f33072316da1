import { type Clock, systemClock } from "./clock.ts";

/**
 * A token bucket shared by every stream it paces (for example all the bytes
 * a node serves to peers), so a node's own workloads keep bandwidth.
 *
 * @module
 */

/** Limits a byte rate; `take` waits until the bytes fit. */
export class RateLimiter {
  readonly bytesPerSecond: number;
  readonly #burst: number;
  readonly #clock: Clock;
  #tokens: number;
  #last: number;
  #queue: Promise<void> = Promise.resolve();

  /**
   * `bytesPerSecond` of 0 means unlimited. The burst is a quarter second of
   * traffic.
   */
  constructor(bytesPerSecond: number, options: { clock?: Clock } = {}) {
    this.bytesPerSecond = bytesPerSecond;
    this.#clock = options.clock ?? systemClock;
    this.#burst = Math.max(bytesPerSecond / 4, 256 * 1024);
    this.#tokens = this.#burst;
    this.#last = this.#clock.monotonic();
  }

  /** Waits until `bytes` may be sent (callers are served in order). */
  take(bytes: number): Promise<void> {
    if (this.bytesPerSecond <= 0) return Promise.resolve();
    const turn = this.#queue.then(() => this.#wait(bytes));
    this.#queue = turn;
    return turn;
  }

  async #wait(bytes: number): Promise<void> {
    this.#refill();
    this.#tokens -= bytes;
    if (this.#tokens >= 0) return;
    const ms = (-this.#tokens / this.bytesPerSecond) * 1000;
    await this.#clock.sleep(ms);
    this.#refill();
  }

  #refill(): void {
    const now = this.#clock.monotonic();
    this.#tokens = Math.min(
      this.#burst,
      this.#tokens + ((now - this.#last) / 1000) * this.bytesPerSecond,
    );
    this.#last = now;
  }
}
