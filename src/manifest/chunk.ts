/**
 * Chunk bytes against the digests of a manifest: the one place where a
 * chunk is hashed and compared.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { ZERO_CHUNK } from "./manifest.ts";

/** True when every byte of `bytes` is zero. */
export function isAllZero(bytes: Uint8Array): boolean {
  const aligned = bytes.byteOffset % 4 === 0;
  let i = 0;
  if (aligned) {
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
    for (let w = 0; w < words.length; w++) if (words[w] !== 0) return false;
    i = words.length << 2;
  }
  for (; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** The manifest digest of a chunk's bytes: {@linkcode ZERO_CHUNK} or its sha256. */
export function chunkDigest(bytes: Uint8Array): string {
  return isAllZero(bytes) ? ZERO_CHUNK : createHash("sha256").update(bytes).digest("hex");
}

/**
 * Checks bytes against the expected chunk digest (or accepts them when the
 * digest is unknown, as when adopting). Returns the digest, or null when the
 * bytes are wrong.
 */
export function verifyChunk(bytes: Uint8Array, expected: string | null): string | null {
  if (expected === ZERO_CHUNK) return isAllZero(bytes) ? ZERO_CHUNK : null;
  if (expected === null) return chunkDigest(bytes);
  return createHash("sha256").update(bytes).digest("hex") === expected ? expected : null;
}
