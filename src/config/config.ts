/**
 * Configuration of `snapmesh serve`: what a user may give (flags, `SNAPMESH_*`
 * environment variables, a JSON file; flags win over env over file) and the
 * resolved config the agent runs with. Resolution is a pure function.
 *
 * @module
 */

import { isLogLevel, type LogLevel, redactUrlPasswords } from "../log/mod.ts";
import { DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from "../manifest/manifest.ts";
import { normalizePeerUrl, parseDnsSpec } from "../cluster/discovery.ts";
import { formatSize, parseSize } from "./size.ts";

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
  /** This node's rack (reported to peers; a finer locality than the zone). */
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

interface Setting {
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
    help: "this node's rack (reported to peers)",
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

/** Raw values as given by one source, keyed by flag name. */
export type RawSettings = Record<string, unknown>;

/** Inputs of {@linkcode resolveServeConfig}. */
export interface ConfigSources {
  flags: RawSettings;
  env: Record<string, string | undefined>;
  /** Parsed JSON config file, or null. */
  file: unknown;
  /** Working directory, to make paths absolute. */
  cwd: string;
  /** This machine's hostname (the default node id). */
  hostname: string;
}

/** A setting has a bad value or an unknown key; the message names it. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Environment variable of a flag: `data-dir` → `SNAPMESH_DATA_DIR`. */
export function envName(flag: string): string {
  return `SNAPMESH_${flag.toUpperCase().replaceAll("-", "_")}`;
}

/** Resolves flags over env over file over defaults, validating each value. */
export function resolveServeConfig(sources: ConfigSources): ServeConfig {
  const file = sources.file ?? {};
  if (typeof file !== "object" || Array.isArray(file)) {
    throw new ConfigError("The config file must hold a JSON object of settings");
  }
  const known = new Set(SETTINGS.map((s) => s.flag));
  for (const key of Object.keys(file)) {
    if (!known.has(key)) {
      throw new ConfigError(
        `Unknown key "${key}" in the config file; known keys: ${[...known].join(", ")}`,
      );
    }
  }
  const raw = (s: Setting): { value: unknown; where: string } | undefined => {
    const flag = sources.flags[s.flag];
    if (flag !== undefined) return { value: flag, where: `--${s.flag}` };
    const env = sources.env[envName(s.flag)];
    if (env !== undefined && env !== "") return { value: env, where: envName(s.flag) };
    const fromFile = (file as RawSettings)[s.flag];
    if (fromFile !== undefined) return { value: fromFile, where: `"${s.flag}" in the config file` };
    return undefined;
  };

  const out: Record<string, unknown> = {
    listen: { hostname: "127.0.0.1", port: 7070 },
    dataDir: absolute(sources.cwd, "./snapmesh-data"),
    cacheSize: 10 * 1024 ** 3,
    token: null,
    tokenFile: null,
    readToken: null,
    clusterKeyFile: null,
    clusterKey: null,
    tlsCert: null,
    tlsKey: null,
    tlsCa: null,
    peerMtls: false,
    signingKey: null,
    trustedKeys: null,
    nodeId: sources.hostname || "snapmesh",
    advertise: null,
    peers: [],
    peersFile: null,
    peersDns: null,
    originEndpoint: null,
    originBucket: null,
    originPrefix: "",
    originRegion: "us-east-1",
    originCreateBucket: false,
    push: null,
    originStallTimeoutMs: 30_000,
    chunkSize: DEFAULT_CHUNK_SIZE,
    draftTtlMs: 24 * 3_600_000,
    importRoot: null,
    maxFileSize: 64 * 1024 ** 3,
    logLevel: "info",
    rebuildIndex: false,
    maxEgress: 0,
    maxOriginRate: 0,
    scrubRate: 16 * 1024 * 1024,
    zone: null,
    rack: null,
    idleTimeoutMs: 60_000,
    headerTimeoutMs: 10_000,
    bodyTimeoutMs: 30_000,
    maxConnections: 1024,
    maxUploads: 64,
    restoreDir: null,
    restoreFaultTimeoutMs: 30_000,
    restoreRecordWindowMs: 10_000,
  };
  for (const setting of SETTINGS) {
    const given = raw(setting);
    if (given === undefined) continue;
    out[setting.key] = convert(setting, given.value, given.where, sources.cwd);
  }

  const config = out as unknown as ServeConfig & { push: PushMode | null };
  const chunk = config.chunkSize;
  if (chunk < MIN_CHUNK_SIZE || chunk > MAX_CHUNK_SIZE || chunk % 4096 !== 0) {
    throw new ConfigError(
      `chunk-size ${formatSize(chunk)} is out of range: use a multiple of 4KiB from 64KiB to 64MiB`,
    );
  }
  if (config.cacheSize < 1) throw new ConfigError("cache-size must be at least 1 byte");
  if (config.peersDns !== null) {
    try {
      parseDnsSpec(config.peersDns);
    } catch (err) {
      throw new ConfigError(`Invalid value for peers-dns: ${(err as Error).message}`);
    }
  }
  if ((config.originEndpoint === null) !== (config.originBucket === null)) {
    throw new ConfigError("origin-endpoint and origin-bucket must be given together");
  }
  if (config.originCreateBucket && config.originEndpoint === null) {
    throw new ConfigError(
      "origin-create-bucket needs an origin (--origin-endpoint, --origin-bucket)",
    );
  }
  config.restoreDir ??= `${config.dataDir}/restore`;
  if (config.restoreFaultTimeoutMs < 100) {
    throw new ConfigError("restore-fault-timeout must be at least 100ms");
  }
  if (config.push === null) config.push = config.originEndpoint ? "async" : "off";
  if (config.push !== "off" && config.originEndpoint === null) {
    throw new ConfigError(
      `push ${config.push} needs an origin (--origin-endpoint, --origin-bucket)`,
    );
  }
  config.originPrefix = config.originPrefix.replace(/^\/+|\/+$/g, "");
  for (const [key, flag] of HTTP_TIMEOUTS) {
    const ms = config[key];
    if (ms < MIN_HTTP_TIMEOUT_MS || ms > MAX_HTTP_TIMEOUT_MS) {
      throw new ConfigError(`${flag} ${ms}ms is out of range: use 100ms to 1h`);
    }
  }
  if (config.maxConnections > 1_000_000) {
    throw new ConfigError(
      `max-connections ${config.maxConnections} is out of range: use 1 to 1000000`,
    );
  }
  if (config.maxUploads > 100_000) {
    throw new ConfigError(`max-uploads ${config.maxUploads} is out of range: use 1 to 100000`);
  }
  checkSecurity(config, sources.env);
  return config;
}

/** Security settings that only make sense together. */
function checkSecurity(config: ServeConfig, env: Record<string, string | undefined>): void {
  const envKey = env.SNAPMESH_CLUSTER_KEY;
  if (envKey !== undefined && envKey !== "") {
    if (config.clusterKeyFile !== null) {
      throw new ConfigError(
        "SNAPMESH_CLUSTER_KEY and cluster-key-file are both set: give the cluster key once",
      );
    }
    config.clusterKey = envKey;
  }
  if (config.token !== null && config.tokenFile !== null) {
    throw new ConfigError("token and token-file are both set: give the token once");
  }
  if (config.readToken !== null && config.token === null && config.tokenFile === null) {
    throw new ConfigError(
      "read-token needs a full-access token too (token, token-file or SNAPMESH_TOKEN)",
    );
  }
  if (config.readToken !== null && config.readToken === config.token) {
    throw new ConfigError("read-token must differ from the full-access token");
  }
  if ((config.tlsCert === null) !== (config.tlsKey === null)) {
    throw new ConfigError("tls-cert and tls-key must be given together");
  }
  if (config.tlsCa !== null && config.tlsCert === null) {
    throw new ConfigError(
      "tls-ca needs tls-cert and tls-key: a node that reaches its peers over https serves https",
    );
  }
  if (config.peerMtls && config.tlsCa === null) {
    throw new ConfigError(
      "peer-mtls needs tls-ca (and tls-cert, tls-key): the CA peers' certificates chain to",
    );
  }
  const peers = config.peers.length > 0 || config.peersFile !== null || config.peersDns !== null;
  const peerAuth = config.clusterKey !== null || config.clusterKeyFile !== null || config.peerMtls;
  if (config.readToken !== null && peers && !peerAuth) {
    throw new ConfigError(
      "read-token separates client roles, so client tokens no longer open node-to-node " +
        "routes: give peers their own credentials with cluster-key-file (or " +
        "SNAPMESH_CLUSTER_KEY) or peer-mtls",
    );
  }
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

const HTTP_TIMEOUTS = [
  ["idleTimeoutMs", "idle-timeout"],
  ["headerTimeoutMs", "header-timeout"],
  ["bodyTimeoutMs", "body-timeout"],
] as const;
const MIN_HTTP_TIMEOUT_MS = 100;
const MAX_HTTP_TIMEOUT_MS = 3_600_000;

function convert(setting: Setting, value: unknown, where: string, cwd: string): unknown {
  const fail = (form: string): never => {
    throw new ConfigError(`${where}: invalid value ${JSON.stringify(value)}; expected ${form}`);
  };
  const text = (): string => {
    if (typeof value === "string") return value;
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    return fail("a string");
  };
  switch (setting.kind) {
    case "string": {
      const s = text();
      if (s === "") fail("a non-empty string");
      return s;
    }
    case "path": {
      const s = text();
      if (s === "") fail("a path");
      return absolute(cwd, s);
    }
    case "size":
      try {
        return parseSize(typeof value === "number" ? value : text());
      } catch {
        return fail("a size in bytes, like 1048576, 500MB or 10GiB");
      }
    case "ms": {
      const match = /^(\d+)(ms|s|m|h)?$/.exec(text().trim());
      if (!match) return fail("a duration like 30000, 30s, 2m or 24h");
      const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? "ms"]!;
      return Number(match[1]) * unit;
    }
    case "count": {
      const s = text().trim();
      if (!/^\d{1,9}$/.test(s) || Number(s) < 1) return fail("a whole number of at least 1");
      return Number(s);
    }
    case "list": {
      const items = Array.isArray(value)
        ? value.map(String)
        : text().split(",").map((s) => s.trim()).filter((s) => s !== "");
      return items.map((item) => {
        try {
          return normalizePeerUrl(item);
        } catch (err) {
          throw new ConfigError(`${where}: invalid peer URL ${(err as Error).message}`);
        }
      });
    }
    case "url":
      return normalizeUrl(text()) ?? fail("an http(s) URL");
    case "push": {
      const s = text();
      return s === "async" || s === "sync" || s === "off" ? s : fail("async, sync or off");
    }
    case "level": {
      const s = text();
      return isLogLevel(s) ? s : fail("debug, info, warn or error");
    }
    case "bool":
      if (typeof value === "boolean") return value;
      if (/^(1|true|yes)$/i.test(text())) return true;
      if (/^(0|false|no)$/i.test(text())) return false;
      return fail("true or false");
    case "listen":
      return parseListen(text()) ?? fail("HOST:PORT, like 127.0.0.1:7070 or [::1]:0");
  }
}

/** Parses `host:port` (`[v6]:port` for IPv6; an empty host means all interfaces). */
export function parseListen(text: string): { hostname: string; port: number } | null {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  if (!match) return null;
  const port = Number(match[3]);
  if (port > 65535) return null;
  const hostname = match[1] ?? (match[2] === "" ? "0.0.0.0" : match[2]!);
  return { hostname, port };
}

function normalizeUrl(text: string): string | null {
  try {
    const url = new URL(text);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    return url.href.replace(/\/+$/, "");
  } catch {
    return null;
  }
}

function absolute(cwd: string, path: string): string {
  if (path.startsWith("/")) return normalizePath(path);
  return normalizePath(`${cwd}/${path}`);
}

/** Collapses `.`, `..` and repeated slashes of an absolute path. */
export function normalizePath(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return "/" + out.join("/");
}

/**
 * The config as JSON-able settings, with secrets shown as `[set]` (for
 * --print-config). Key files appear as their paths, never their contents.
 */
export function describeConfig(config: ServeConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    let value: unknown = config[s.key];
    if (s.key === "listen") value = formatListen(config.listen);
    if ((s.key === "token" || s.key === "readToken") && value !== null) value = "[set]";
    if (typeof value === "string") value = redactUrlPasswords(value);
    if (Array.isArray(value)) value = value.map((v) => redactUrlPasswords(String(v)));
    out[s.flag] = value;
  }
  return out;
}

/** `host:port`, bracketing IPv6 hosts. */
export function formatListen(listen: { hostname: string; port: number }): string {
  return listen.hostname.includes(":")
    ? `[${listen.hostname}]:${listen.port}`
    : `${listen.hostname}:${listen.port}`;
}
