/**
 * The table of `serve` settings: each one's flag, value kind, help text and
 * default as `--help` and the config template show it.
 *
 * @module
 */

import type { ServeConfig } from "./serve_config.ts";

/** Value kinds a setting may have. */
type Kind =
  | "string"
  | "path"
  | "size"
  | "list"
  | "push"
  | "level"
  | "listen"
  | "url"
  | "bool"
  | "ms"
  | "count";

/** One `serve` setting. */
export interface Setting {
  key: keyof ServeConfig;
  flag: string;
  kind: Kind;
  help: string;
  /** Shown in --help and the default config file. */
  defaultText: string;
}

/** Every `serve` setting, in the order `--help` lists them. */
export const SETTINGS: readonly Setting[] = [
  {
    key: "listen",
    flag: "listen",
    kind: "listen",
    help: "address to listen on",
    defaultText: "127.0.0.1:7070",
  },
  {
    key: "dataDir",
    flag: "data-dir",
    kind: "path",
    help: "cache, journal and drafts",
    defaultText: "./snapmesh-data",
  },
  {
    key: "cacheSize",
    flag: "cache-size",
    kind: "size",
    help: "disk budget of the cache",
    defaultText: "10GiB",
  },
  {
    key: "token",
    flag: "token",
    kind: "string",
    help: "bearer token for /v1: full client access (peers too, unless a cluster key or mTLS)",
    defaultText: "none",
  },
  {
    key: "tokenFile",
    flag: "token-file",
    kind: "path",
    help: "file holding the full-access token (read at start; keeps it out of ps)",
    defaultText: "none",
  },
  {
    key: "readToken",
    flag: "read-token",
    kind: "string",
    help: "bearer token for reads and pulls only (no publish, delete, pin, drafts)",
    defaultText: "none",
  },
  {
    key: "clusterKeyFile",
    flag: "cluster-key-file",
    kind: "path",
    help: "file of cluster keys, one a line (first signs): peers sign requests (HMAC)",
    defaultText: "none (or SNAPMESH_CLUSTER_KEY)",
  },
  {
    key: "tlsCert",
    flag: "tls-cert",
    kind: "path",
    help: "PEM certificate chain: serve https (reloaded when the file changes)",
    defaultText: "none (plain http)",
  },
  {
    key: "tlsKey",
    flag: "tls-key",
    kind: "path",
    help: "PEM private key of --tls-cert (reloaded when the file changes)",
    defaultText: "none",
  },
  {
    key: "tlsCa",
    flag: "tls-ca",
    kind: "path",
    help: "PEM CA of the cluster: peers are reached over https and verified against it",
    defaultText: "none",
  },
  {
    key: "peerMtls",
    flag: "peer-mtls",
    kind: "bool",
    help: "node-to-node routes require a client certificate from --tls-ca",
    defaultText: "false",
  },
  {
    key: "signingKey",
    flag: "signing-key",
    kind: "path",
    help: "Ed25519 private key (PKCS#8 PEM) that signs this node's commits",
    defaultText: "none",
  },
  {
    key: "trustedKeys",
    flag: "trusted-keys",
    kind: "path",
    help: "file of trusted public keys: accept only snapshots signed by one",
    defaultText: "none (accept unsigned snapshots)",
  },
  {
    key: "nodeId",
    flag: "node-id",
    kind: "string",
    help: "this node's id",
    defaultText: "the hostname",
  },
  {
    key: "advertise",
    flag: "advertise",
    kind: "url",
    help: "URL peers use to reach this node",
    defaultText: "http://<listen>",
  },
  {
    key: "peers",
    flag: "peers",
    kind: "list",
    help: "peer URLs, comma-separated",
    defaultText: "none",
  },
  {
    key: "peersFile",
    flag: "peers-file",
    kind: "path",
    help: "file of peer URLs, one a line (reread on change)",
    defaultText: "none",
  },
  {
    key: "peersDns",
    flag: "peers-dns",
    kind: "string",
    help: "NAME:PORT resolved to peers (re-resolved)",
    defaultText: "none",
  },
  {
    key: "originEndpoint",
    flag: "origin-endpoint",
    kind: "url",
    help: "S3/MinIO endpoint URL",
    defaultText: "none",
  },
  {
    key: "originBucket",
    flag: "origin-bucket",
    kind: "string",
    help: "origin bucket",
    defaultText: "none",
  },
  {
    key: "originPrefix",
    flag: "origin-prefix",
    kind: "string",
    help: "key prefix in the bucket",
    defaultText: '""',
  },
  {
    key: "originRegion",
    flag: "origin-region",
    kind: "string",
    help: "origin region",
    defaultText: "us-east-1",
  },
  {
    key: "originCreateBucket",
    flag: "origin-create-bucket",
    kind: "bool",
    help: "create the origin bucket at start when it does not exist (else it must exist)",
    defaultText: "false",
  },
  {
    key: "push",
    flag: "push",
    kind: "push",
    help: "async|sync|off: upload commits to the origin",
    defaultText: "async with an origin, else off",
  },
  {
    key: "originStallTimeoutMs",
    flag: "origin-stall-timeout",
    kind: "ms",
    help: "abort an origin body idle this long (ms, or 30s)",
    defaultText: "30s",
  },
  {
    key: "chunkSize",
    flag: "chunk-size",
    kind: "size",
    help: "chunk size, 64KiB..64MiB",
    defaultText: "1MiB",
  },
  {
    key: "draftTtlMs",
    flag: "draft-ttl",
    kind: "ms",
    help: "drop drafts untouched this long (ms, or 30s, 15m, 24h)",
    defaultText: "24h",
  },
  {
    key: "importRoot",
    flag: "import-root",
    kind: "path",
    help: "directory whose files may be imported by path",
    defaultText: "none (import disabled)",
  },
  {
    key: "maxFileSize",
    flag: "max-file-size",
    kind: "size",
    help: "largest file accepted",
    defaultText: "64GiB",
  },
  {
    key: "restoreDir",
    flag: "restore-dir",
    kind: "path",
    help: "directory restore sockets (and the files linked for Firecracker) must lie in",
    defaultText: "<data-dir>/restore",
  },
  {
    key: "restoreFaultTimeoutMs",
    flag: "restore-fault-timeout",
    kind: "ms",
    help: "a restore fault not served within this long ends the session and stops the VM",
    defaultText: "30s",
  },
  {
    key: "restoreRecordWindowMs",
    flag: "restore-record-window",
    kind: "ms",
    help: "record a restore's fault order this long as the working set (0: never)",
    defaultText: "10s",
  },
  {
    key: "maxEgress",
    flag: "max-egress",
    kind: "size",
    help: "bytes per second served to peers, like 50MB (0: unlimited)",
    defaultText: "0 (unlimited)",
  },
  {
    key: "maxOriginRate",
    flag: "max-origin-rate",
    kind: "size",
    help: "bytes per second read from the origin (0: unlimited)",
    defaultText: "0 (unlimited)",
  },
  {
    key: "zone",
    flag: "zone",
    kind: "string",
    help: "this node's zone: peers in the same zone are preferred",
    defaultText: "none",
  },
  {
    key: "rack",
    flag: "rack",
    kind: "string",
    help: "this node's rack: within the zone, peers in the same rack are preferred",
    defaultText: "none",
  },
  {
    key: "scrubRate",
    flag: "scrub-rate",
    kind: "size",
    help: "bytes per second the background scrub re-verifies cached chunks at (0: off)",
    defaultText: "16MiB",
  },
  {
    key: "idleTimeoutMs",
    flag: "idle-timeout",
    kind: "ms",
    help: "close a connection with no request in progress after this long",
    defaultText: "60s",
  },
  {
    key: "headerTimeoutMs",
    flag: "header-timeout",
    kind: "ms",
    help: "time a client has to send a request head",
    defaultText: "10s",
  },
  {
    key: "bodyTimeoutMs",
    flag: "body-timeout",
    kind: "ms",
    help: "close a connection whose request body (or response) makes no progress this long",
    defaultText: "30s",
  },
  {
    key: "maxConnections",
    flag: "max-connections",
    kind: "count",
    help: "open HTTP connections at most; more are answered 503",
    defaultText: "1024",
  },
  {
    key: "maxUploads",
    flag: "max-uploads",
    kind: "count",
    help: "uploads (PUT/POST bodies over 1MiB or chunked) in progress at most; more get 503",
    defaultText: "64",
  },
  {
    key: "logLevel",
    flag: "log-level",
    kind: "level",
    help: "debug|info|warn|error",
    defaultText: "info",
  },
  {
    key: "rebuildIndex",
    flag: "rebuild-index",
    kind: "bool",
    help: "rebuild a damaged journal from a verified scan",
    defaultText: "false",
  },
];

/** Environment variable of a flag: `data-dir` → `SNAPMESH_DATA_DIR`. */
export function envName(flag: string): string {
  return `SNAPMESH_${flag.toUpperCase().replaceAll("-", "_")}`;
}
