/**
 * Lazy restore: serves a Firecracker VM's guest memory page by page
 * (userfaultfd, the `Uffd` memory backend) from the cache, the peers and
 * the origin, working set first; records and shares working sets.
 *
 * @module
 */

export * from "./mappings.ts";
export * from "./memory_image.ts";
export * from "./restores.ts";
export * from "./session.ts";
export * from "./uffd_sys.ts";
export * from "./working_sets.ts";
