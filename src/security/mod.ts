/**
 * Trust between nodes: signed node-to-node requests (HMAC with the cluster
 * key), signed snapshots (Ed25519 over manifest digests) and the policy
 * that enforces them, TLS material that reloads when its files change, and
 * the TLS listeners.
 *
 * @module
 */

export * from "./request_signing.ts";
export * from "./snapshot_signing.ts";
export * from "./snapshot_trust.ts";
export * from "./setup.ts";
export * from "./tls.ts";
