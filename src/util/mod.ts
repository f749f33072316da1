/**
 * Small utilities with no dependency on the rest of the agent: time
 * ({@linkcode Clock}), randomness ({@linkcode Random}), rate limiting and
 * mutual exclusion.
 *
 * @module
 */

export * from "./clock.ts";
export * from "./random.ts";
export * from "./rate.ts";
export * from "./mutex.ts";
