/**
 * Retries for origin requests: capped exponential backoff with full jitter,
 * on the failures that are worth another try (5xx, throttling, resets,
 * stalled or short bodies), never on the ones that are not (403, 404, …).
 *
 * @module
 */

/** How hard to retry. */
export interface RetryPolicy {
  /** Attempts in all, the first included. @default 6 */
  attempts: number;
  /** First backoff, before jitter. @default 100 */
  baseMs: number;
  /** Largest backoff. @default 5000 */
  capMs: number;
}

/** The default policy: 6 attempts, 100 ms doubling up to 5 s, full jitter. */
export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseMs: 100, capMs: 5000 };

/** A body sent nothing for longer than the stall timeout. */
export class StallError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StallError";
  }
}

/** A body ended before its announced length. */
export class ShortBodyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ShortBodyError";
  }
}

const RETRYABLE_NAMES = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "RequestTimeout",
  "RequestTimeTooSkewed",
  "InternalError",
  "ServiceUnavailable",
  "StallError",
  "ShortBodyError",
  "TimeoutError",
]);

const RETRYABLE_MESSAGE =
  /ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN|socket hang up|premature close|aborted|connection (was )?(reset|closed)|network|unexpected end|terminated|error sending request|error reading a body|body (was )?(too short|incomplete)/i;

/** HTTP status of an SDK error, when it has one. */
export function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** True for failures another attempt may cure. */
export function isRetryable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  // By name first: S3 answers RequestTimeout with HTTP 400.
  if (RETRYABLE_NAMES.has(err.name)) return true;
  const status = statusOf(err);
  if (status !== undefined) return status >= 500 || status === 429 || status === 408;
  const code = (err as { code?: string }).code;
  if (code && RETRYABLE_MESSAGE.test(code)) return true;
  return RETRYABLE_MESSAGE.test(err.message) ||
    (err.cause instanceof Error && RETRYABLE_MESSAGE.test(err.cause.message));
}

/** Backoff before attempt `attempt` (1-based retries): full jitter over a capped exponential. */
export function backoffMs(attempt: number, policy: RetryPolicy, random = Math.random): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** (attempt - 1));
  return Math.floor(random() * ceiling);
}

/** Options for {@linkcode withRetries}. */
export interface WithRetriesOptions {
  policy?: RetryPolicy;
  /** Called before each retry with the error that caused it. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Stops retrying (and waiting) when aborted. */
  signal?: AbortSignal;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** Runs `task` until it succeeds, fails for good, or the attempts are spent. */
export async function withRetries<T>(
  task: (attempt: number) => Promise<T>,
  options: WithRetriesOptions = {},
): Promise<T> {
  const policy = options.policy ?? DEFAULT_RETRY;
  const sleep = options.sleep ?? abortableSleep;
  for (let attempt = 1;; attempt++) {
    try {
      return await task(attempt);
    } catch (err) {
      if (attempt >= policy.attempts || !isRetryable(err) || options.signal?.aborted) throw err;
      const delay = backoffMs(attempt, policy);
      options.onRetry?.(err, attempt, delay);
      await sleep(delay, options.signal);
    }
  }
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(timer);
      reject(signal!.reason);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
