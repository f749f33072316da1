/**
 * Write-ahead journal: checksummed records, checkpoints, compaction and
 * recovery that truncates only a torn tail.
 *
 * @module
 */

export * from "./journal.ts";
export * from "./reader.ts";
export * from "./record.ts";
