/**
 * Membership, health, owner selection (HRW) and the peer client.
 *
 * @module
 */

export * from "./hrw.ts";
export * from "./membership.ts";
export * from "./peer_client.ts";
