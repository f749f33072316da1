/**
 * Signed snapshots: a publisher's Ed25519 key signs each manifest's digest;
 * nodes that trust the publisher's public key accept the manifest only with
 * such a signature. The digest names the manifest's exact bytes (name,
 * files, chunk digests), so the signature covers every byte a node will
 * ever serve under that snapshot.
 *
 * - Private key: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as written by
 *   `snapmesh keygen` or `openssl genpkey -algorithm ed25519`.
 * - Public key: one line, `ed25519 <base64 of the 32-byte key> [comment]`.
 * - Key id: the first 16 hex digits of the sha256 of the 32-byte public key.
 * - Message signed: the UTF-8 text `snapmesh-snapshot-v1:<digest>`.
 * - Signature: `{"keyId": "…", "signature": "<base64 of 64 bytes>"}`; the
 *   sidecar file `manifest.sig` holds `{"digest": "…", "signatures": […]}`.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** One signature over a snapshot digest. */
export interface SnapshotSignature {
  keyId: string;
  /** base64 of the 64-byte Ed25519 signature. */
  signature: string;
}

/** The sidecar of a manifest, locally and at the origin. */
export const SIGNATURE_FILE = "manifest.sig";
/** Signatures carried with one manifest, at most. */
export const MAX_SIGNATURES = 8;
const KEY_ID = /^[0-9a-f]{16}$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const DIGEST = /^[0-9a-f]{64}$/;

/** What is signed for a snapshot digest. */
export function signedMessage(digest: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`snapmesh-snapshot-v1:${digest}`);
}

/** The key id of a raw 32-byte public key. */
export function keyIdOf(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("hex").slice(0, 16);
}

/** `ed25519 <base64> [comment]`. */
export function formatPublicKeyLine(publicKey: Uint8Array, comment?: string): string {
  const line = `ed25519 ${toBase64(publicKey)}`;
  return comment ? `${line} ${comment.replace(/\s+/g, "-")}` : line;
}

/** A trusted public key. */
export interface PublicKey {
  keyId: string;
  raw: Uint8Array<ArrayBuffer>;
  comment: string;
}

/**
 * Parses one public key line.
 *
 * @throws {SyntaxError} naming what is wrong
 */
export function parsePublicKeyLine(line: string): PublicKey {
  const [kind, data, ...rest] = line.trim().split(/\s+/);
  if (kind !== "ed25519" || data === undefined) {
    throw new SyntaxError('expected "ed25519 <base64 public key> [comment]"');
  }
  const raw = fromBase64(data);
  if (raw === null || raw.length !== 32) {
    throw new SyntaxError("the public key is not 32 bytes of base64");
  }
  return { keyId: keyIdOf(raw), raw, comment: rest.join(" ") };
}

/** A private signing key. */
export class SigningKey {
  readonly keyId: string;
  /** The public key line to put in other nodes' `--trusted-keys`. */
  readonly publicLine: string;
  readonly publicKey: Uint8Array<ArrayBuffer>;
  readonly #key: CryptoKey;

  private constructor(key: CryptoKey, publicKey: Uint8Array<ArrayBuffer>) {
    this.#key = key;
    this.publicKey = publicKey;
    this.keyId = keyIdOf(publicKey);
    this.publicLine = formatPublicKeyLine(publicKey);
  }

  /**
   * Reads a PKCS#8 PEM Ed25519 private key.
   *
   * @throws {SyntaxError} when the text is not one
   */
  static async fromPem(text: string): Promise<SigningKey> {
    const match = /-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/.exec(text);
    const der = match ? fromBase64(match[1]!.replace(/\s+/g, "")) : null;
    if (der === null) {
      throw new SyntaxError("expected a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----)");
    }
    let key: CryptoKey;
    try {
      key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
    } catch {
      throw new SyntaxError("the private key is not an Ed25519 key");
    }
    const jwk = await crypto.subtle.exportKey("jwk", key);
    const publicKey = fromBase64Url(jwk.x ?? "");
    if (publicKey === null || publicKey.length !== 32) {
      throw new SyntaxError("cannot derive the public key");
    }
    return new SigningKey(key, publicKey);
  }

  /** Signs a snapshot digest. */
  async sign(digest: string): Promise<SnapshotSignature> {
    const signature = await crypto.subtle.sign("Ed25519", this.#key, signedMessage(digest));
    return { keyId: this.keyId, signature: toBase64(new Uint8Array(signature)) };
  }
}

/** A new key pair: the private key as PKCS#8 PEM and the public key line. */
export async function generateKeyPair(
  comment?: string,
): Promise<{ privatePem: string; publicLine: string; keyId: string }> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const body = toBase64(pkcs8).replace(/(.{64})/g, "$1\n").replace(/\n$/, "");
  return {
    privatePem: `-----BEGIN PRIVATE KEY-----\n${body}\n-----END PRIVATE KEY-----\n`,
    publicLine: formatPublicKeyLine(raw, comment),
    keyId: keyIdOf(raw),
  };
}

/** Why signatures did not verify. */
export type TrustFailure = "unsigned" | "unknown_key" | "bad_signature";

/** The public keys a node trusts (`--trusted-keys`). */
export class TrustedKeys {
  readonly #keys = new Map<string, { key: CryptoKey; comment: string }>();

  private constructor() {}

  /**
   * Parses a trusted keys file: one public key line each; blank lines and
   * `#` comments skipped.
   *
   * @throws {SyntaxError} naming the line that is wrong
   */
  static async parse(text: string): Promise<TrustedKeys> {
    const out = new TrustedKeys();
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === "" || line.startsWith("#")) continue;
      let parsed: PublicKey;
      try {
        parsed = parsePublicKeyLine(line);
      } catch (err) {
        throw new SyntaxError(`line ${i + 1}: ${(err as Error).message}`);
      }
      const key = await crypto.subtle.importKey("raw", parsed.raw, { name: "Ed25519" }, false, [
        "verify",
      ]);
      out.#keys.set(parsed.keyId, { key, comment: parsed.comment });
    }
    if (out.#keys.size === 0) throw new SyntaxError("no public key in the file");
    return out;
  }

  get size(): number {
    return this.#keys.size;
  }

  has(keyId: string): boolean {
    return this.#keys.has(keyId);
  }

  /** The key ids trusted, for logs. */
  ids(): string[] {
    return [...this.#keys.keys()];
  }

  /**
   * Which trusted key signed `digest` among `signatures`, or why none did.
   * Signatures by keys this node does not know are skipped.
   */
  async verify(
    digest: string,
    signatures: readonly SnapshotSignature[],
  ): Promise<{ keyId: string } | { failure: TrustFailure }> {
    if (signatures.length === 0) return { failure: "unsigned" };
    let known = false;
    for (const s of signatures) {
      const trusted = this.#keys.get(s.keyId);
      if (!trusted) continue;
      known = true;
      const bytes = fromBase64(s.signature);
      if (bytes === null || bytes.length !== 64) continue;
      if (await crypto.subtle.verify("Ed25519", trusted.key, bytes, signedMessage(digest))) {
        return { keyId: s.keyId };
      }
    }
    return { failure: known ? "bad_signature" : "unknown_key" };
  }
}

/**
 * Checks the shape of signatures received from elsewhere (a peer's answer,
 * a sidecar); drops what is malformed, keeps at most {@linkcode MAX_SIGNATURES}.
 */
export function parseSignatures(value: unknown): SnapshotSignature[] {
  if (!Array.isArray(value)) return [];
  const out: SnapshotSignature[] = [];
  for (const item of value) {
    if (out.length >= MAX_SIGNATURES) break;
    if (typeof item !== "object" || item === null) continue;
    const { keyId, signature } = item as Record<string, unknown>;
    if (typeof keyId !== "string" || !KEY_ID.test(keyId)) continue;
    if (typeof signature !== "string" || signature.length > 128 || !BASE64.test(signature)) {
      continue;
    }
    if (!out.some((s) => s.keyId === keyId && s.signature === signature)) {
      out.push({ keyId, signature });
    }
  }
  return out;
}

/** The bytes of a `manifest.sig` sidecar. */
export function encodeSignatureFile(
  digest: string,
  signatures: readonly SnapshotSignature[],
): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(JSON.stringify({ digest, signatures }) + "\n");
}

/**
 * The signatures in a sidecar, when it is for `digest` (a sidecar left
 * from other content says nothing about this one); empty otherwise.
 */
export function decodeSignatureFile(bytes: Uint8Array, digest: string): SnapshotSignature[] {
  try {
    const value = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof value?.digest !== "string" || !DIGEST.test(value.digest)) return [];
    if (value.digest !== digest) return [];
    return parseSignatures(value.signatures);
  } catch {
    return [];
  }
}

function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> | null {
  if (!BASE64.test(text)) return null;
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

function fromBase64Url(text: string): Uint8Array<ArrayBuffer> | null {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return fromBase64(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
}
