/**
 * The Hono app: client routes, auth, error mapping.
 *
 * @module
 */

export * from "./app.ts";
export * from "./errors.ts";
export { fastReads } from "./fast_reads.ts";
