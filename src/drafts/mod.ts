/**
 * Drafts: staging files by upload or import, and committing them as snapshots.
 *
 * @module
 */

export * from "./commit.ts";
export * from "./drafts.ts";
