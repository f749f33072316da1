/**
 * Waiting for a condition instead of sleeping: tests poll what they are
 * waiting for, with a deadline, and fail saying what never happened; under
 * a virtual clock they run the clock until the work is done.
 *
 * @module
 */

import type { VirtualClock } from "../../src/util/clock.ts";

/** Options for {@linkcode waitFor}. */
export interface WaitForOptions {
  /** @default 20000 */
  timeoutMs?: number;
  /** Pause between two checks. @default 50 */
  intervalMs?: number;
  /** Appended to the failure (an agent's log, the last status seen). */
  context?: () => string;
}

/** Polls `condition` until it holds; throws naming `what` once `timeoutMs` have passed. */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  options: WaitForOptions = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  while (!(await condition())) {
    if (Date.now() > deadline) {
      const context = options.context?.();
      throw new Error(`Timed out waiting for ${what}${context ? `\n${context}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 50));
  }
}

/**
 * Awaits `work` while `clock` runs: timers fire (time jumps to each) until
 * the promise settles. Fails when nothing is left to fire, or after `maxMs`
 * of virtual time, instead of hanging.
 */
export async function drive<T>(clock: VirtualClock, work: Promise<T>, maxMs = 600_000): Promise<T> {
  let settled = false;
  work.then(() => (settled = true), () => (settled = true));
  try {
    await clock.runUntil(() => settled, { maxMs });
  } catch (err) {
    // Surface the work's own failure first when it failed meanwhile.
    if (settled) return await work;
    throw err;
  }
  return await work;
}
