/**
 * The Hono app: client routes, auth, error mapping.
 *
 * @module
 */

export * from "./app.ts";
export * from "./errors.ts";
