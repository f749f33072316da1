/**
 * Reads: what clients read and pull, and what peers are answered.
 *
 * @module
 */

export * from "./local_reads.ts";
export * from "./peer_service.ts";
