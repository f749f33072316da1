/**
 * A transfer rate that stays honest when bytes arrive in bursts or slowly.
 *
 * The rate is an exponentially weighted moving average: every byte counts
 * with weight `e^(-age/τ)`, so the last τ (10 s by default) dominate and a
 * burst fades out smoothly instead of falling off a window's edge. The sum
 * is updated when bytes arrive and decayed when it is read, so a stalled
 * transfer shows a falling rate (and a growing ETA), never a frozen one.
 *
 * Dividing the decayed sum by the weight of the history seen so far makes
 * the first seconds the plain average since the start (no ramp-up from 0),
 * and a constant rate reads exactly as itself at any time.
 *
 * @module
 */

/** Options for {@linkcode RateMeter}. */
export interface RateMeterOptions {
  /** Time constant of the smoothing, in milliseconds. @default 10000 */
  timeConstantMs?: number;
  /** The clock, in milliseconds. @default Date.now */
  now?: () => number;
}

/**
 * Shortest history the rate is averaged over: bytes that arrive a few
 * milliseconds after the start say little about the rate to come.
 */
const MIN_SPAN_MS = 250;

/** Measures bytes per second, smoothed over about `timeConstantMs`. */
export class RateMeter {
  readonly #tau: number;
  readonly #now: () => number;
  readonly #start: number;
  /** Decayed byte count as of `#at`. */
  #sum = 0;
  #at: number;

  constructor(options: RateMeterOptions = {}) {
    const tau = options.timeConstantMs ?? 10_000;
    if (!(tau > 0)) throw new RangeError(`timeConstantMs must be positive, got ${tau}`);
    this.#tau = tau;
    this.#now = options.now ?? Date.now;
    this.#start = this.#now();
    this.#at = this.#start;
  }

  /** Counts `bytes` that arrived at `at` (ms; default now). */
  add(bytes: number, at: number = this.#now()): void {
    this.#sum = this.#decayed(at) + bytes;
    this.#at = Math.max(at, this.#at);
  }

  /** Bytes per second at `at` (ms; default now); 0 before any byte. */
  rate(at: number = this.#now()): number {
    const span = Math.max(at - this.#start, MIN_SPAN_MS);
    // Weight of a history `span` long: τ(1 - e^(-span/τ)), which tends to τ.
    const weight = this.#tau * -Math.expm1(-span / this.#tau);
    return (this.#decayed(at) / weight) * 1000;
  }

  /** Seconds until `remaining` bytes are done at the current rate, or null without a rate. */
  eta(remaining: number, at: number = this.#now()): number | null {
    if (remaining <= 0) return 0;
    const rate = this.rate(at);
    return rate > 0 ? remaining / rate : null;
  }

  #decayed(at: number): number {
    const age = Math.max(0, at - this.#at);
    return this.#sum * Math.exp(-age / this.#tau);
  }
}
