/**
 * The agent: uploads, commits, reads, eviction and recovery, over the store,
 * the journal and the index.
 *
 * @module
 */

export * from "./agent.ts";
