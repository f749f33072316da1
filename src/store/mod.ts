/**
 * On-disk files: layout, staging, atomic publish, chunk hashing, ranges.
 *
 * @module
 */

export * from "./chunk_trust.ts";
export * from "./chunk_writer.ts";
export * from "./file_stream.ts";
export * from "./handle_cache.ts";
export * from "./lock.ts";
export * from "./range.ts";
export * from "./store.ts";
export * from "./verified_stream.ts";
export * from "./verify_file.ts";
