/**
 * The resolved configuration an agent runs with (every field required), and
 * what it implies for peer authentication.
 *
 * @module
 */

import type { LogLevel } from "../log/mod.ts";

/** How commits reach the origin. */
export type PushMode = "async" | "sync" | "off";

/** The resolved configuration of an agent. */
export interface ServeConfig {
  listen: { hostname: string; port: number };
  dataDir: string;
  cacheSize: number;
  /** Full client access (`--token`, `--token-file` or SNAPMESH_TOKEN). */
  token: string | null;
  /** File the token was read from (read at start), or null. */
  tokenFile: string | null;
  /** Read-only client access: reads and pulls. */
  readToken: string | null;
  /** File of cluster keys (signed peer requests), read at start, or null. */
  clusterKeyFile: string | null;
  /** The cluster keys' text (from SNAPMESH_CLUSTER_KEY or the file), or null. */
  clusterKey: string | null;
  /** PEM certificate chain of the listener (reloaded on change), or null: plain HTTP. */
  tlsCert: string | null;
  /** PEM private key of the listener (reloaded on change). */
  tlsKey: string | null;
  /** PEM CA peers' certificates chain to: peers are reached over https and verified. */
  tlsCa: string | null;
  /** Node-to-node routes require a client certificate from `tlsCa`. */
  peerMtls: boolean;
  /** Ed25519 private key (PKCS#8 PEM) that signs this node's commits, or null. */
  signingKey: string | null;
  /** File of trusted public keys: only snapshots signed by one are accepted. */
  trustedKeys: string | null;
  nodeId: string;
  /** URL peers use to reach this node; null: derived from the listen address. */
  advertise: string | null;
  peers: string[];
  peersFile: string | null;
  peersDns: string | null;
  originEndpoint: string | null;
  originBucket: string | null;
  originPrefix: string;
  originRegion: string;
  /** Create the origin bucket at start when it does not exist. */
  originCreateBucket: boolean;
  push: PushMode;
  /** Stalled origin bodies are aborted after this many milliseconds. */
  originStallTimeoutMs: number;
  chunkSize: number;
  /** Uncommitted drafts untouched this long are dropped. */
  draftTtlMs: number;
  importRoot: string | null;
  maxFileSize: number;
  logLevel: LogLevel;
  /** Move a damaged journal aside and rebuild the index from a verified scan. */
  rebuildIndex: boolean;
  /** Bytes per second this node serves to peers (0: unlimited). */
  maxEgress: number;
  /** Bytes per second this node reads from the origin (0: unlimited). */
  maxOriginRate: number;
  /** Bytes per second the background scrub re-verifies local chunks at (0: off). */
  scrubRate: number;
  /** This node's zone: peers of the same zone are preferred. */
  zone: string | null;
  /** This node's rack: within its zone, peers of the same rack are preferred. */
  rack: string | null;
  /** A connection with no request in progress is closed after this long. */
  idleTimeoutMs: number;
  /** A request head must arrive within this long of its first byte. */
  headerTimeoutMs: number;
  /** A request body (or a response write) idle this long closes the connection. */
  bodyTimeoutMs: number;
  /** Open HTTP connections at most (lowered to fit the open file limit). */
  maxConnections: number;
  /** Large or chunked uploads in progress at most. */
  maxUploads: number;
  /** Where restore sockets (and the files linked for Firecracker) may be. */
  restoreDir: string;
  /** A restore fault not served within this long ends the session (the VM is killed). */
  restoreFaultTimeoutMs: number;
  /** How long a restore records the fault order as a working set (0: never records). */
  restoreRecordWindowMs: number;
}

/** How peers authenticate to a node, from its settings. */
export type PeerAuthMode =
  /** Signed requests (cluster key), client certificates (mTLS), or either. */
  | { kind: "peer"; signed: boolean; mtls: boolean }
  /** No peer credentials and no role separation: the full token (if any) opens peer routes. */
  | { kind: "legacy" }
  /** Roles separated but no peer credentials: node-to-node routes are closed. */
  | { kind: "closed" };

/** Which credentials open `/v1/peer/*` (README "Security"). */
export function peerAuthMode(config: ServeConfig): PeerAuthMode {
  if (config.clusterKey !== null || config.peerMtls) {
    return { kind: "peer", signed: config.clusterKey !== null, mtls: config.peerMtls };
  }
  return config.readToken !== null ? { kind: "closed" } : { kind: "legacy" };
}
