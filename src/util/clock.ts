/**
 * Time behind an interface: {@linkcode systemClock} for the agent, and
 * {@linkcode VirtualClock} for tests and simulations, where time moves only
 * when told and timers fire in a deterministic order.
 *
 * @module
 */

// setImmediate is the VirtualClock's yield to the real event loop (see
// VirtualClock.settle). A real `setTimeout(r, 0)` would do too, but nested
// zero timers are clamped: measured 2.3 ms per round against 0.02 ms here.
import { setImmediate } from "node:timers";

/** A scheduled callback. */
export interface Timer {
  /** Stops the timer; it never fires after this. Cancelling twice is harmless. */
  cancel(): void;
}

/** Options for {@linkcode Clock.setTimeout} and {@linkcode Clock.setInterval}. */
export interface TimerOptions {
  /** `false`: the timer never keeps the process alive. @default true */
  ref?: boolean;
}

/** Options for {@linkcode Clock.sleep}. */
export interface SleepOptions {
  /** Ends the sleep early: it resolves (never rejects) once aborted. @default undefined */
  signal?: AbortSignal;
  /** `false`: the sleep never keeps the process alive. @default true */
  ref?: boolean;
}

/** Wall time, monotonic time and timers. */
export interface Clock {
  /** Milliseconds since the epoch (wall time: records, logs, ages). */
  now(): number;
  /** Milliseconds from an arbitrary origin that never goes back (durations, rates). */
  monotonic(): number;
  /** Runs `fn` once after `ms`. `ref: false` timers never keep the process alive. */
  setTimeout(fn: () => void, ms: number, options?: TimerOptions): Timer;
  /** Runs `fn` every `ms` until cancelled. */
  setInterval(fn: () => void, ms: number, options?: TimerOptions): Timer;
  /** Resolves after `ms`, or at once (resolving, never rejecting) when `signal` is or becomes aborted. */
  sleep(ms: number, options?: SleepOptions): Promise<void>;
}

/** The longest delay a real timer takes (2^31 - 1 ms, about 24.8 days). */
export const MAX_TIMER_DELAY = 2 ** 31 - 1;

/**
 * Checks a delay the same way for both clocks, so code behaves alike under
 * each: negative delays mean 0 (as with `setTimeout`), but NaN, infinities
 * and delays a real timer would silently wrap to 0 are bugs.
 */
function checkDelay(ms: number, what: string): number {
  if (!Number.isFinite(ms) || ms > MAX_TIMER_DELAY) {
    throw new RangeError(
      `Cannot schedule ${what}: delay ${ms} ms is not a finite number of milliseconds ` +
        `up to ${MAX_TIMER_DELAY} (negative delays mean 0)`,
    );
  }
  return Math.max(0, ms);
}

/** An interval of 0 would fire forever at one instant; like browsers, run it every 1 ms. */
function intervalDelay(ms: number): number {
  return Math.max(1, checkDelay(ms, "an interval"));
}

function sleepOn(clock: Clock, ms: number, options: SleepOptions): Promise<void> {
  const { signal } = options;
  const delay = checkDelay(ms, "a sleep");
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    function onAbort(): void {
      timer.cancel();
      resolve();
    }
    const timer = clock.setTimeout(
      () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      },
      delay,
      { ref: options.ref ?? true },
    );
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

class SystemClock implements Clock {
  now(): number {
    return Date.now();
  }

  monotonic(): number {
    return performance.now();
  }

  setTimeout(fn: () => void, ms: number, options: TimerOptions = {}): Timer {
    const id = setTimeout(fn, checkDelay(ms, "a timer"));
    if (options.ref === false) Deno.unrefTimer(id);
    return { cancel: () => clearTimeout(id) };
  }

  setInterval(fn: () => void, ms: number, options: TimerOptions = {}): Timer {
    const id = setInterval(fn, intervalDelay(ms));
    if (options.ref === false) Deno.unrefTimer(id);
    return { cancel: () => clearInterval(id) };
  }

  sleep(ms: number, options: SleepOptions = {}): Promise<void> {
    return sleepOn(this, ms, options);
  }
}

/** Real time: `Date.now`, `performance.now` and the runtime's timers. */
export const systemClock: Clock = new SystemClock();

/** Options for {@linkcode VirtualClock}. */
export interface VirtualClockOptions {
  /** Wall time at the start, in milliseconds since the epoch. @default 1_735_689_600_000 (2025-01-01T00:00:00Z) */
  start?: number;
}

/** Options for {@linkcode VirtualClock.runUntil}. */
export interface RunUntilOptions {
  /** Give up when the next timer is due more than this many ms after the call. @default Infinity */
  maxMs?: number;
  /** Give up after firing this many timers. @default Infinity */
  maxTimers?: number;
}

interface Entry {
  due: number;
  /** Creation order: breaks ties between timers due at the same time (FIFO). */
  seq: number;
  fn: () => void;
  /** 0 for a one-shot timer. */
  every: number;
  /** Position in the heap, -1 once out of it. */
  index: number;
}

/** 2025-01-01T00:00:00Z: a fixed start, so traces do not depend on the day a test runs. */
const DEFAULT_START = 1_735_689_600_000;

/** Rounds of real macrotasks after which {@linkcode VirtualClock.settle} gives up. */
const MAX_SETTLE_ROUNDS = 100_000;

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function before(a: Entry, b: Entry): boolean {
  return a.due < b.due || (a.due === b.due && a.seq < b.seq);
}

/**
 * A clock whose time moves only when told ({@linkcode VirtualClock.advance},
 * {@linkcode VirtualClock.runUntil}), for tests and simulations.
 *
 * Timers wait in a priority queue ordered by due time, then by creation
 * (FIFO for equal times), and fire one at a time with `now()` set to their
 * due time; between two timers every pending promise chain runs to
 * quiescence ({@linkcode VirtualClock.settle}), as microtasks run between two
 * tasks of a real event loop. Intervals re-arm from their scheduled time, so
 * they never drift. `ref` is accepted and ignored: no virtual timer keeps the
 * process alive.
 *
 * Contract: code run under a VirtualClock must do no real I/O (no network,
 * no `Deno.*` file calls; use `MemoryFileSystem`) and no real timers. Its
 * asynchrony must come from promises and this clock only; otherwise
 * `settle()` cannot know when the code is idle, and runs stop being
 * deterministic.
 */
export class VirtualClock implements Clock {
  readonly #start: number;
  #elapsed = 0;
  #heap: Entry[] = [];
  #seq = 0;
  #fired = 0;
  /** Bumped on every schedule, cancel and fire: settle() watches it for progress. */
  #changes = 0;
  #running: string | null = null;

  constructor(options: VirtualClockOptions = {}) {
    const start = options.start ?? DEFAULT_START;
    if (!Number.isFinite(start)) {
      throw new RangeError(`Cannot create a VirtualClock: start ${start} is not a finite time`);
    }
    this.#start = start;
    // Bound, so `clock.now` can be passed where a `() => number` is wanted.
    this.now = this.now.bind(this);
    this.monotonic = this.monotonic.bind(this);
  }

  /** Virtual wall time: the start plus the virtual time elapsed. */
  now(): number {
    return this.#start + this.#elapsed;
  }

  /** Virtual milliseconds elapsed since the clock was created. */
  monotonic(): number {
    return this.#elapsed;
  }

  /** How many timers have fired since the clock was created. */
  get timersFired(): number {
    return this.#fired;
  }

  /** How many timers are scheduled and not cancelled (an interval counts once). */
  pendingTimers(): number {
    return this.#heap.length;
  }

  setTimeout(fn: () => void, ms: number, _options?: TimerOptions): Timer {
    return this.#schedule(fn, checkDelay(ms, "a timer"), 0);
  }

  setInterval(fn: () => void, ms: number, _options?: TimerOptions): Timer {
    const every = intervalDelay(ms);
    return this.#schedule(fn, every, every);
  }

  sleep(ms: number, options: SleepOptions = {}): Promise<void> {
    return sleepOn(this, ms, options);
  }

  /**
   * Moves time forward by `ms`, firing every timer due on the way in order,
   * with `now()` at each timer's due time, and settling between timers (so
   * timers scheduled by callbacks or their promise chains, if due within
   * the window, fire too). Ends with time exactly `ms` later. A callback
   * that throws stops the advance there and rejects with its error.
   */
  async advance(ms: number): Promise<void> {
    if (!(ms >= 0) || !Number.isFinite(ms)) {
      throw new RangeError(`Cannot advance a VirtualClock by ${ms} ms: not a finite number >= 0`);
    }
    this.#enter("advance()");
    try {
      const target = this.#elapsed + ms;
      await this.settle();
      for (let next = this.#heap[0]; next && next.due <= target; next = this.#heap[0]) {
        this.#fire(next);
        await this.settle();
      }
      this.#elapsed = target;
    } finally {
      this.#running = null;
    }
  }

  /**
   * Settles, then fires the next timer (jumping time to it) and settles
   * again, until `predicate()` is true. Throws when no timer is left while
   * the predicate is false (a deadlock), or when a limit would be exceeded;
   * time then stays at the last timer fired.
   */
  async runUntil(predicate: () => boolean, options: RunUntilOptions = {}): Promise<void> {
    const maxMs = options.maxMs ?? Infinity;
    const maxTimers = options.maxTimers ?? Infinity;
    this.#enter("runUntil()");
    try {
      const startedAt = this.#elapsed;
      let fired = 0;
      await this.settle();
      while (!predicate()) {
        const next = this.#heap[0];
        let failure: string | null = null;
        if (!next) failure = "no timer is pending";
        else if (fired >= maxTimers) failure = `${fired} timers fired (maxTimers)`;
        else if (next.due - startedAt > maxMs) {
          failure = `the next timer is due ${
            next.due - startedAt
          } ms after the start (maxMs ${maxMs})`;
        }
        if (failure !== null || !next) {
          throw new Error(
            `VirtualClock.runUntil() ${next ? "gave up" : "deadlocked"}: the predicate is ` +
              `still false and ${failure} at virtual time ${this.#describeTime()}; ` +
              `${fired} timer(s) fired in this run, ${this.#heap.length} pending`,
          );
        }
        this.#fire(next);
        fired++;
        await this.settle();
      }
    } finally {
      this.#running = null;
    }
  }

  /**
   * Lets pending microtasks and promise chains run to quiescence without
   * moving time.
   *
   * It yields to the real event loop with one real macrotask (a
   * `setImmediate`); the runtime runs every queued microtask, and every
   * microtask those queue, before it. It repeats while a round changed the
   * timer queue (a timer scheduled or cancelled), and returns after the
   * first round that changed nothing. For code that does no real I/O,
   * everything not waiting on a virtual timer has then run: promise chains
   * finish within one round however long they are. Work waiting on real
   * I/O, real timers or other threads may still be pending; that breaks the
   * contract in the class documentation. Throws after 100,000 rounds that
   * all changed the queue.
   */
  async settle(): Promise<void> {
    for (let round = 0; round < MAX_SETTLE_ROUNDS; round++) {
      const seen = this.#changes;
      await yieldToEventLoop();
      if (this.#changes === seen) return;
    }
    throw new Error(
      `VirtualClock.settle() gave up: the timer queue still changed after ` +
        `${MAX_SETTLE_ROUNDS} rounds of the event loop at virtual time ${this.#describeTime()}`,
    );
  }

  #enter(what: string): void {
    if (this.#running !== null) {
      throw new Error(
        `Cannot call VirtualClock.${what} while ${this.#running} is running ` +
          `(await it first; do not call it from a timer callback)`,
      );
    }
    this.#running = what;
  }

  #describeTime(): string {
    return `${new Date(this.now()).toISOString()} (+${this.#elapsed} ms)`;
  }

  #schedule(fn: () => void, ms: number, every: number): Timer {
    const entry: Entry = { due: this.#elapsed + ms, seq: this.#seq++, fn, every, index: -1 };
    this.#push(entry);
    this.#changes++;
    return { cancel: () => this.#cancel(entry) };
  }

  #cancel(entry: Entry): void {
    entry.every = 0;
    if (entry.index < 0) return;
    this.#remove(entry);
    this.#changes++;
  }

  /** Fires `entry`, the head of the queue; an interval is re-armed before its callback runs. */
  #fire(entry: Entry): void {
    this.#remove(entry);
    this.#elapsed = entry.due;
    this.#fired++;
    this.#changes++;
    if (entry.every > 0) {
      entry.due += entry.every;
      entry.seq = this.#seq++;
      this.#push(entry);
    }
    entry.fn();
  }

  // A binary min-heap on (due, seq) that knows each entry's index, so a
  // cancelled timer leaves at once instead of lingering until due.

  #push(entry: Entry): void {
    entry.index = this.#heap.length;
    this.#heap.push(entry);
    this.#up(entry.index);
  }

  #remove(entry: Entry): void {
    const heap = this.#heap;
    const index = entry.index;
    const last = heap.pop()!;
    entry.index = -1;
    if (last === entry) return;
    heap[index] = last;
    last.index = index;
    this.#up(index);
    this.#down(last.index);
  }

  #up(index: number): void {
    const heap = this.#heap;
    const entry = heap[index]!;
    while (index > 0) {
      const parentIndex = (index - 1) >> 1;
      const parent = heap[parentIndex]!;
      if (!before(entry, parent)) break;
      heap[index] = parent;
      parent.index = index;
      index = parentIndex;
    }
    heap[index] = entry;
    entry.index = index;
  }

  #down(index: number): void {
    const heap = this.#heap;
    const entry = heap[index]!;
    for (;;) {
      let child = 2 * index + 1;
      if (child >= heap.length) break;
      const right = child + 1;
      if (right < heap.length && before(heap[right]!, heap[child]!)) child = right;
      if (!before(heap[child]!, entry)) break;
      heap[index] = heap[child]!;
      heap[index]!.index = index;
      index = child;
    }
    heap[index] = entry;
    entry.index = index;
  }
}
