/**
 * Configuration of `snapmesh serve`: what a user may give (flags, `SNAPMESH_*`
 * environment variables, a JSON file; flags win over env over file) and the
 * resolved config the agent runs with. Resolution is a pure function.
 *
 * @module
 */

import { parseDnsSpec } from "../cluster/discovery.ts";
import { redactUrlPasswords } from "../log/mod.ts";
import { DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from "../manifest/manifest.ts";
import { absolute, convert } from "./_convert.ts";
import { ConfigError } from "./config_error.ts";
import type { PushMode, ServeConfig } from "./serve_config.ts";
import { envName, type Setting, SETTINGS } from "./settings.ts";
import { formatSize } from "./size.ts";
import { formatListen } from "./values.ts";

export * from "./config_error.ts";
export * from "./serve_config.ts";
export * from "./settings.ts";
export * from "./values.ts";

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
    out[setting.key] = convert(setting, { ...given, cwd: sources.cwd });
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
const HTTP_TIMEOUTS = [
  ["idleTimeoutMs", "idle-timeout"],
  ["headerTimeoutMs", "header-timeout"],
  ["bodyTimeoutMs", "body-timeout"],
] as const;
const MIN_HTTP_TIMEOUT_MS = 100;
const MAX_HTTP_TIMEOUT_MS = 3_600_000;
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
