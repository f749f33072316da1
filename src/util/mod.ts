/**
 * Small utilities with no dependency on the rest of the agent: time
 * ({@linkcode Clock}), randomness ({@linkcode Random}), rate limiting,
 * mutual exclusion, bytes, bounded body reads and idle watchdogs.
 *
 * @module
 */

export * from "./clock.ts";
export * from "./random.ts";
export * from "./rate.ts";
export * from "./mutex.ts";
export * from "./bytes.ts";
export * from "./bounded_body.ts";
export * from "./idle_watchdog.ts";
