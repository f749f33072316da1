/**
 * The swarm: how the nodes pulling one snapshot trade chunks — the pure
 * chunk scheduler, the per-pull session (tracker announces, neighbors'
 * have streams, origin rights), the tracker the owner runs, and upload
 * slots.
 *
 * @module
 */

export * from "./scheduler.ts";
export * from "./first_copies.ts";
export * from "./have_stream.ts";
export * from "./session.ts";
export * from "./tracker.ts";
export * from "./uploads.ts";
