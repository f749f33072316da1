/**
 * Index of cached snapshots: LRU order, pins, push queue, eviction planning.
 *
 * @module
 */

export * from "./index.ts";
export * from "./records.ts";
export * from "./scrubber.ts";
export * from "./budget.ts";
export * from "./catalog.ts";
export * from "./recovery.ts";
