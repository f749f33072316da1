/**
 * Signed node-to-node requests: an HMAC-SHA256 over the method, host,
 * request target (path and query exactly as sent), a timestamp, a nonce and
 * the sha256 of the body, keyed by the cluster key that every node of a
 * cluster shares. The receiver refuses a signature outside a short window
 * (30 s either way by default), a nonce it has already accepted within that
 * window, and anything altered; a captured request can be neither replayed
 * nor changed.
 *
 * The string signed (UTF-8, fields joined by `\n`):
 *
 * ```
 * snapmesh-request-v1
 * GET
 * 10.0.0.7:7070
 * /v1/peer/snapshots/fn-a/files/mem?digest=…
 * 1767225600000
 * Yq3Jx2b…
 * e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
 * ```
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Clock } from "../util/clock.ts";

/** Header names of a signed request (lower case). */
export const SIGNED_HEADERS = {
  date: "x-snapmesh-date",
  nonce: "x-snapmesh-nonce",
  contentSha256: "x-snapmesh-content-sha256",
  signature: "x-snapmesh-signature",
} as const;

const PREFIX = "snapmesh-request-v1";
/** sha256 of no bytes: the body digest of a GET. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const NONCE = /^[A-Za-z0-9_-]{16,64}$/;
const DATE = /^\d{1,16}$/;
const SIGNATURE = /^v1=([0-9a-f]{64})$/;
/** Shortest cluster key accepted, in bytes. */
export const MIN_CLUSTER_KEY_BYTES = 32;

/** The parts of a request a signature covers. */
export interface SignedParts {
  method: string;
  /** `host[:port]` as the Host header carries it. */
  host: string;
  /** Path and query as sent on the request line (`/v1/peer/hello?x=1`). */
  target: string;
  /** Milliseconds since the epoch. */
  date: number;
  nonce: string;
  /** sha256 of the body, lowercase hex. */
  bodySha256: string;
}

/** The exact text a signature covers. */
export function canonicalRequest(parts: SignedParts): string {
  return [
    PREFIX,
    parts.method.toUpperCase(),
    parts.host.toLowerCase(),
    parts.target,
    String(parts.date),
    parts.nonce,
    parts.bodySha256,
  ].join("\n");
}

/**
 * The cluster keys of a node: the first signs, every one verifies (so a key
 * can be rotated node by node: add the new one second everywhere, then
 * first, then drop the old one).
 */
export class ClusterKeys {
  readonly #keys: Uint8Array[];

  /**
   * @param secrets one secret per key, as text; each at least
   *   {@linkcode MIN_CLUSTER_KEY_BYTES} bytes
   * @throws {RangeError} when there is none, or one is too short
   */
  constructor(secrets: readonly string[]) {
    if (secrets.length === 0) throw new RangeError("A cluster key is required");
    this.#keys = secrets.map((secret, i) => {
      const bytes = new TextEncoder().encode(secret);
      if (bytes.length < MIN_CLUSTER_KEY_BYTES) {
        throw new RangeError(
          `Cluster key ${i + 1} is ${bytes.length} bytes; use at least ${MIN_CLUSTER_KEY_BYTES} ` +
            "(for example: openssl rand -base64 48)",
        );
      }
      return bytes;
    });
  }

  /** Parses a key file or variable: one key a line; blank lines and `#` comments skipped. */
  static parse(text: string): ClusterKeys {
    const lines = text.split("\n").map((l) => l.trim()).filter((l) =>
      l !== "" && !l.startsWith("#")
    );
    return new ClusterKeys(lines);
  }

  /** HMAC-SHA256 of `text` with the signing key (the first). */
  sign(text: string): Uint8Array {
    return hmac(this.#keys[0]!, text);
  }

  /** True when `mac` is the HMAC of `text` under any of the keys; constant time per key. */
  matches(text: string, mac: Uint8Array): boolean {
    let ok = false;
    for (const key of this.#keys) {
      const expected = hmac(key, text);
      // Every key is tried: the time taken does not say which one matched.
      if (mac.length === expected.length && timingSafeEqual(mac, expected)) ok = true;
    }
    return ok;
  }
}

function hmac(key: Uint8Array, text: string): Uint8Array {
  return createHmac("sha256", key).update(text).digest();
}

/** sha256 of `bytes`, lowercase hex. */
export function bodySha256(bytes: Uint8Array | null | undefined): string {
  if (!bytes || bytes.length === 0) return EMPTY_SHA256;
  return createHash("sha256").update(bytes).digest("hex");
}

/** A fresh nonce: 16 random bytes, base64url. */
export function newNonce(): string {
  return randomBytes(16).toString("base64url");
}

/** What {@linkcode signRequest} signs. */
export interface RequestToSign {
  method: string;
  /** The full URL, as it will be fetched. */
  url: string | URL;
  body?: Uint8Array | null;
}

/**
 * The headers that sign a request. The URL is parsed as `fetch` will send
 * it, so the host and target signed are the ones on the wire.
 */
export function signRequest(
  keys: ClusterKeys,
  request: RequestToSign,
  options: { now: number; nonce?: string },
): Record<string, string> {
  const url = new URL(request.url);
  const parts: SignedParts = {
    method: request.method,
    host: url.host,
    target: url.pathname + url.search,
    date: Math.floor(options.now),
    nonce: options.nonce ?? newNonce(),
    bodySha256: bodySha256(request.body),
  };
  const mac = keys.sign(canonicalRequest(parts));
  return {
    [SIGNED_HEADERS.date]: String(parts.date),
    [SIGNED_HEADERS.nonce]: parts.nonce,
    [SIGNED_HEADERS.contentSha256]: parts.bodySha256,
    [SIGNED_HEADERS.signature]: `v1=${Buffer.from(mac).toString("hex")}`,
  };
}

/** Why a signed request was refused (for logs and metrics; never a secret). */
export type SignatureFailure =
  | "missing"
  | "malformed"
  | "expired"
  | "body_mismatch"
  | "bad_signature"
  | "replayed"
  | "overloaded";

/** A request as the receiver saw it. */
export interface ReceivedRequest {
  method: string;
  host: string;
  target: string;
  /** Reads a header (case-insensitive). */
  header(name: string): string | undefined;
  /** sha256 of the body the receiver read, lowercase hex. */
  bodySha256: string;
}

/** Options for {@linkcode RequestVerifier}. */
export interface RequestVerifierOptions {
  clock: Pick<Clock, "now">;
  /** Largest difference between the signer's clock and ours, either way. @default 30000 */
  windowMs?: number;
  /** Nonces remembered at most; beyond, signed requests are refused until some expire. @default 500000 */
  maxNonces?: number;
}

/** Checks signed requests: window, body, signature, then nonce (in that order). */
export class RequestVerifier {
  readonly #keys: ClusterKeys;
  readonly #clock: Pick<Clock, "now">;
  readonly windowMs: number;
  readonly #nonces: NonceSet;

  constructor(keys: ClusterKeys, options: RequestVerifierOptions) {
    this.#keys = keys;
    this.#clock = options.clock;
    this.windowMs = options.windowMs ?? 30_000;
    this.#nonces = new NonceSet(this.windowMs, options.maxNonces ?? 500_000);
  }

  /** True when the request carries any signature header (then it must verify). */
  static isSigned(request: Pick<ReceivedRequest, "header">): boolean {
    return request.header(SIGNED_HEADERS.signature) !== undefined;
  }

  /** Null when the request is signed, fresh and unaltered; else why not. */
  verify(request: ReceivedRequest): SignatureFailure | null {
    const dateText = request.header(SIGNED_HEADERS.date);
    const nonce = request.header(SIGNED_HEADERS.nonce);
    const signature = request.header(SIGNED_HEADERS.signature);
    if (dateText === undefined || nonce === undefined || signature === undefined) return "missing";
    const match = SIGNATURE.exec(signature.trim());
    if (!DATE.test(dateText) || !NONCE.test(nonce) || !match) return "malformed";
    const date = Number(dateText);
    const now = this.#clock.now();
    if (Math.abs(now - date) > this.windowMs) return "expired";
    const claimed = request.header(SIGNED_HEADERS.contentSha256);
    if (claimed !== undefined && claimed !== request.bodySha256) return "body_mismatch";
    const text = canonicalRequest({
      method: request.method,
      host: request.host,
      target: request.target,
      date,
      nonce,
      bodySha256: request.bodySha256,
    });
    if (!this.#keys.matches(text, Buffer.from(match[1]!, "hex"))) return "bad_signature";
    // Only a valid signature reaches the nonce set: junk cannot fill it.
    return this.#nonces.add(nonce, date + this.windowMs, now);
  }

  /** Nonces remembered now (for tests and metrics). */
  get remembered(): number {
    return this.#nonces.size;
  }
}

/**
 * Nonces seen, each kept until the last moment a request carrying it could
 * still be accepted. Grouped in buckets by expiry (one window wide), so
 * expired ones are dropped a bucket at a time and memory stays bounded by
 * the request rate times two windows.
 */
class NonceSet {
  readonly #bucketMs: number;
  readonly #max: number;
  readonly #buckets = new Map<number, Set<string>>();
  size = 0;

  constructor(windowMs: number, max: number) {
    this.#bucketMs = Math.max(1, windowMs);
    this.#max = max;
  }

  /** Adds a nonce valid until `expiresAt`; "replayed" when it is known already. */
  add(nonce: string, expiresAt: number, now: number): SignatureFailure | null {
    this.#expire(now);
    for (const bucket of this.#buckets.values()) if (bucket.has(nonce)) return "replayed";
    if (this.size >= this.#max) return "overloaded";
    const key = Math.floor(expiresAt / this.#bucketMs);
    let bucket = this.#buckets.get(key);
    if (!bucket) this.#buckets.set(key, bucket = new Set());
    bucket.add(nonce);
    this.size++;
    return null;
  }

  #expire(now: number): void {
    for (const [key, bucket] of this.#buckets) {
      // Every nonce in the bucket expires before the bucket's end.
      if ((key + 1) * this.#bucketMs <= now) {
        this.size -= bucket.size;
        this.#buckets.delete(key);
      }
    }
  }
}
