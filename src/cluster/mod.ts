/**
 * Membership, health, owner selection (HRW) and the peer client.
 *
 * @module
 */

export * from "./hrw.ts";
export * from "./membership.ts";
export * from "./discovery.ts";
export * from "./http_transport.ts";
export * from "./memory_transport.ts";
export * from "./transport.ts";
