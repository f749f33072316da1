/**
 * Pulls: chunk sources, scheduling, verification.
 *
 * @module
 */

export * from "./origin_source.ts";
export * from "./pull_job.ts";
export * from "./pull_stream.ts";
export * from "./source.ts";
