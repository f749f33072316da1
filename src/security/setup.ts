/**
 * A node's security, assembled from its settings at start: how its API
 * authenticates clients and peers, what its requests to peers carry, its
 * TLS files (watched for rotation), and its snapshot signature policy.
 *
 * @module
 */

import type { PeerAuthMode, ServeConfig } from "../config/mod.ts";
import { peerAuthMode } from "../config/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { Clock } from "../util/clock.ts";
import { ClusterKeys, RequestVerifier, signRequest } from "./request_signing.ts";
import { SigningKey, TrustedKeys } from "./snapshot_signing.ts";
import { SnapshotTrust } from "./snapshot_trust.ts";
import { PeerTls, TlsMaterial } from "./tls.ts";

/** What {@linkcode loadSecurity} assembles. */
export interface NodeSecurity {
  peerMode: PeerAuthMode;
  /** Checks signed peer requests, or null when peers do not sign. */
  verifier: RequestVerifier | null;
  /** The listener's TLS files (watched), or null: plain HTTP. */
  tls: TlsMaterial | null;
  /** What requests to peers carry. */
  peerCredentials: {
    token: string | null;
    sign:
      | ((method: string, url: string, body?: Uint8Array | null) => Record<string, string>)
      | null;
    client: (() => Deno.HttpClient) | null;
  };
  trust: SnapshotTrust;
  /** Stops watching files and closes the peer HTTP client. */
  close(): void;
}

/** Options for {@linkcode loadSecurity}. */
export interface LoadSecurityOptions {
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  /** How often TLS files are looked at for a rotation. @default 2000 */
  tlsCheckMs?: number;
}

/** A setting that cannot be used; the message says which and why. */
export class SecurityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SecurityError";
  }
}

/**
 * Reads the key files and TLS files a configuration names, checks that they
 * fit together, and logs what each peer and client must present.
 *
 * @throws {SecurityError} naming the file or setting at fault
 */
export async function loadSecurity(
  config: ServeConfig,
  options: LoadSecurityOptions,
): Promise<NodeSecurity> {
  const { log, metrics, clock } = options;
  const peerMode = peerAuthMode(config);
  const keys = config.clusterKey === null ? null : ClusterKeys.parse(config.clusterKey);
  const verifier = keys === null ? null : new RequestVerifier(keys, { clock });

  let tls: TlsMaterial | null = null;
  if (config.tlsCert !== null && config.tlsKey !== null) {
    try {
      tls = await TlsMaterial.load(
        { cert: config.tlsCert, key: config.tlsKey, ca: config.tlsCa },
        { log, ...(options.tlsCheckMs === undefined ? {} : { intervalMs: options.tlsCheckMs }) },
      );
    } catch (err) {
      throw new SecurityError(`Cannot use the TLS files: ${(err as Error).message}`);
    }
    tls.onChange(() => metrics.tlsReloads.inc());
  }
  const peerTls = tls !== null && config.tlsCa !== null
    ? new PeerTls(tls, { clientCertificate: config.peerMtls })
    : null;

  const signer = config.signingKey === null
    ? null
    : await readKey(config.signingKey, "signing key", (text) => SigningKey.fromPem(text), log);
  const trusted = config.trustedKeys === null
    ? null
    : await readKey(config.trustedKeys, "trusted keys", (text) => TrustedKeys.parse(text), null);
  if (trusted && signer && !trusted.has(signer.keyId)) {
    throw new SecurityError(
      `The signing key ${config.signingKey} (key id ${signer.keyId}) is not in ` +
        `${config.trustedKeys}: this node would refuse its own commits. Add its public key ` +
        `line: ${signer.publicLine}`,
    );
  }
  const trust = new SnapshotTrust({
    trusted,
    signer,
    clock,
    log,
    onRefused: (source) => metrics.untrustedSnapshots.inc({ source }),
  });

  const peers = config.peers.length > 0 || config.peersFile !== null || config.peersDns !== null;
  if (peerMode.kind === "legacy" && peers) {
    log.warn(
      config.token === null
        ? "peers are not authenticated: anyone who reaches this port can read /v1/peer/* " +
          "(set --cluster-key-file or --peer-mtls, and a token)"
        : "peers authenticate with the client token: whoever holds it can also read " +
          "/v1/peer/* (set --cluster-key-file or --peer-mtls to give peers their own credentials)",
    );
  } else if (peerMode.kind === "closed") {
    log.info(
      "node-to-node routes are closed: client tokens do not open them, and peers " +
        "have no credentials here (no cluster key, no --peer-mtls)",
    );
  }
  log.info("security", {
    tls: tls !== null,
    peerTls: peerTls !== null,
    peerAuth: peerMode.kind === "peer"
      ? [peerMode.signed ? "signed" : null, peerMode.mtls ? "mtls" : null].filter(Boolean)
      : peerMode.kind,
    readToken: config.readToken !== null,
    signingKeyId: signer?.keyId ?? null,
    trustedKeyIds: trusted?.ids() ?? null,
  });

  return {
    peerMode,
    verifier,
    tls,
    peerCredentials: {
      // The token goes to peers only where it is what peers authenticate with.
      token: peerMode.kind === "legacy" ? config.token : null,
      sign: keys === null
        ? null
        : (method, url, body) => signRequest(keys, { method, url, body }, { now: clock.now() }),
      client: peerTls === null ? null : () => peerTls.client,
    },
    trust,
    close() {
      tls?.stop();
      peerTls?.close();
    },
  };
}

async function readKey<T>(
  path: string,
  what: string,
  parse: (text: string) => Promise<T>,
  log: Logger | null,
): Promise<T> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new SecurityError(`Cannot read the ${what} file ${path}: ${(err as Error).message}`);
  }
  if (log) {
    const mode = (await Deno.stat(path).catch(() => null))?.mode ?? null;
    if (mode !== null && (mode & 0o007) !== 0) {
      log.warn(`the ${what} file can be read by any user; chmod o-rwx it`, {
        path,
        mode: (mode & 0o777).toString(8),
      });
    }
  }
  try {
    return await parse(text);
  } catch (err) {
    throw new SecurityError(`Invalid ${what} in ${path}: ${(err as Error).message}`);
  }
}
