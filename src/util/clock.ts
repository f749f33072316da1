/**
 * Time behind an interface (temporary stand-in; replaced by the seams branch).
 *
 * @module
 */

/** A scheduled callback. */
export interface Timer {
  cancel(): void;
}

/** Time, as everything in snapmesh sees it. */
export interface Clock {
  /** Milliseconds since the epoch (wall time: records, logs, ages). */
  now(): number;
  /** Milliseconds from an arbitrary origin that never goes back (durations, rates). */
  monotonic(): number;
  /** Runs `fn` once after `ms`. `ref: false` timers never keep the process alive. */
  setTimeout(fn: () => void, ms: number, options?: { ref?: boolean }): Timer;
  /** Runs `fn` every `ms` until cancelled. */
  setInterval(fn: () => void, ms: number, options?: { ref?: boolean }): Timer;
  /** Resolves after `ms`, or at once when `signal` is or becomes aborted. */
  sleep(ms: number, options?: { signal?: AbortSignal; ref?: boolean }): Promise<void>;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout(fn, ms, options = {}) {
    const id = setTimeout(fn, ms);
    if (options.ref === false) Deno.unrefTimer(id);
    return { cancel: () => clearTimeout(id) };
  },
  setInterval(fn, ms, options = {}) {
    const id = setInterval(fn, ms);
    if (options.ref === false) Deno.unrefTimer(id);
    return { cancel: () => clearInterval(id) };
  },
  sleep(ms, options = {}) {
    const { signal } = options;
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const id = setTimeout(done, ms);
      if (options.ref === false) Deno.unrefTimer(id);
      function done() {
        signal?.removeEventListener("abort", done);
        clearTimeout(id);
        resolve();
      }
      signal?.addEventListener("abort", done, { once: true });
    });
  },
};
