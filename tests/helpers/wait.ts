/**
 * Waiting for a condition instead of sleeping: tests poll what they are
 * waiting for, with a deadline, and fail saying what never happened.
 *
 * @module
 */

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
