/**
 * Pulls: chunk sources, scheduling, verification.
 *
 * @module
 */

export * from "./local_source.ts";
export * from "./origin_source.ts";
export * from "./peer_source.ts";
export * from "./pull_job.ts";
export * from "./pull_stream.ts";
export * from "./source.ts";
export * from "./puller.ts";
export * from "./sources_io.ts";
