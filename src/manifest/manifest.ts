/**
 * The snapshot manifest: what a snapshot holds, chunk by chunk. Its canonical
 * encoding (RFC 8785 JSON canonicalization) is hashed into the snapshot
 * digest, the snapshot's identity on the wire.
 *
 * @module
 */

import canonicalize from "canonicalize";
import { createHash } from "node:crypto";
import { SnapmeshError } from "../errors.ts";
import { isValidName, MAX_FILES, NAME_PATTERN } from "./names.ts";

/** Schema id written into every manifest. */
export const MANIFEST_SCHEMA = "snapmesh.manifest/v1";

/** Marker used in a file's chunk list for an all-zero chunk. */
export const ZERO_CHUNK = "zero";

/** Smallest accepted chunk size (64 KiB). */
export const MIN_CHUNK_SIZE = 64 * 1024;
/** Largest accepted chunk size (64 MiB). */
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;
/** Default chunk size (1 MiB). */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
/** Most bytes the canonical encoding of `labels` may take. */
export const MAX_LABELS_BYTES = 4096;

/** One file of a snapshot. */
export interface ManifestFile {
  name: string;
  size: number;
  /** sha256 (hex) of the whole file. */
  sha256: string;
  /** sha256 (hex) of each chunk, or {@linkcode ZERO_CHUNK} for an all-zero chunk. */
  chunks: string[];
  /** Chunk indexes a restored VM touches first, in fetch order. */
  hot?: number[];
}

/** A snapshot manifest, as hashed (without its digest). */
export interface Manifest {
  schema: typeof MANIFEST_SCHEMA;
  name: string;
  createdAt: string;
  chunkSize: number;
  labels: Record<string, string>;
  /** Sorted by name. */
  files: ManifestFile[];
}

/** A manifest with its digest, as the API returns it. */
export type ManifestWithDigest = Manifest & { digest: string };

const HEX64 = /^[0-9a-f]{64}$/;
const encoder = new TextEncoder();

/** Canonical bytes of a manifest; the digest is the sha256 of exactly these. */
export function encodeManifest(manifest: Manifest): Uint8Array {
  const { schema, name, createdAt, chunkSize, labels, files } = manifest;
  const clean: Manifest = {
    schema,
    name,
    createdAt,
    chunkSize,
    labels,
    files: files.map((f) => {
      const out: ManifestFile = { name: f.name, size: f.size, sha256: f.sha256, chunks: f.chunks };
      if (f.hot !== undefined && f.hot.length > 0) out.hot = f.hot;
      return out;
    }),
  };
  return encoder.encode(canonicalize(clean)!);
}

/** The snapshot digest: sha256 (hex) of the canonical manifest bytes. */
export function manifestDigest(manifest: Manifest): string {
  return sha256Hex(encodeManifest(manifest));
}

/** sha256 (hex) of some bytes. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Number of chunks of a file of `size` bytes. */
export function chunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

/** Byte length of chunk `index` of a file of `size` bytes. */
export function chunkLength(size: number, chunkSize: number, index: number): number {
  return Math.min(chunkSize, size - index * chunkSize);
}

/** Bytes a file takes on disk: its non-zero chunks (zero chunks are holes). */
export function storedBytes(file: ManifestFile, chunkSize: number): number {
  let bytes = 0;
  file.chunks.forEach((digest, i) => {
    if (digest !== ZERO_CHUNK) bytes += chunkLength(file.size, chunkSize, i);
  });
  return bytes;
}

/** Sum of the file sizes. */
export function logicalSize(manifest: Manifest): number {
  return manifest.files.reduce((sum, f) => sum + f.size, 0);
}

/** Looks up a file of a manifest by name. */
export function findFile(manifest: Manifest, name: string): ManifestFile | undefined {
  return manifest.files.find((f) => f.name === name);
}

/**
 * Validates labels: a flat map of strings whose canonical JSON takes at most
 * {@linkcode MAX_LABELS_BYTES}.
 */
export function validateLabels(value: unknown): Record<string, string> {
  if (!isPlainObject(value)) throw invalidBody("labels must be an object of strings");
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") throw invalidBody(`label ${JSON.stringify(k)} must be a string`);
  }
  const size = encoder.encode(canonicalize(value)!).length;
  if (size > MAX_LABELS_BYTES) {
    throw invalidBody(`labels take ${size} bytes; at most ${MAX_LABELS_BYTES} are allowed`);
  }
  return value as Record<string, string>;
}

/**
 * Validates a hot list for a file of `chunks` chunks: unique chunk indexes in
 * range, in fetch order.
 */
export function validateHot(file: string, value: unknown, chunks: number): number[] {
  if (!Array.isArray(value)) throw invalidBody(`hot list of "${file}" must be an array`);
  const seen = new Set<number>();
  for (const index of value) {
    if (!Number.isSafeInteger(index) || index < 0 || index >= chunks) {
      throw invalidBody(
        `hot list of "${file}" holds ${JSON.stringify(index)}: chunk indexes are 0..${chunks - 1}`,
      );
    }
    if (seen.has(index)) throw invalidBody(`hot list of "${file}" repeats chunk ${index}`);
    seen.add(index);
  }
  return value as number[];
}

/**
 * Checks that an untrusted value (from a peer, the origin or disk) is a
 * well-formed manifest, and returns it typed. Never trusts any field.
 *
 * @throws {SnapmeshError} `invalid_body` naming the first problem found
 */
export function parseManifest(value: unknown): Manifest {
  if (!isPlainObject(value)) throw invalid("manifest must be a JSON object");
  const m = value as Record<string, unknown>;
  if (m.schema !== MANIFEST_SCHEMA) throw invalid(`manifest schema must be "${MANIFEST_SCHEMA}"`);
  if (typeof m.name !== "string" || !isValidName(m.name)) {
    throw invalid(`manifest name must match ${NAME_PATTERN.source}`);
  }
  if (typeof m.createdAt !== "string" || Number.isNaN(Date.parse(m.createdAt))) {
    throw invalid("manifest createdAt must be an ISO 8601 date");
  }
  const chunkSize = m.chunkSize;
  if (
    typeof chunkSize !== "number" || !Number.isSafeInteger(chunkSize) ||
    chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE
  ) {
    throw invalid(`manifest chunkSize must be an integer in ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE}`);
  }
  const labels = validateLabels(m.labels);
  if (!Array.isArray(m.files) || m.files.length === 0 || m.files.length > MAX_FILES) {
    throw invalid(`manifest files must be an array of 1..${MAX_FILES} files`);
  }
  const files: ManifestFile[] = [];
  let previous = "";
  for (const raw of m.files) {
    const file = parseFile(raw, chunkSize);
    if (file.name <= previous) throw invalid("manifest files must be sorted by unique name");
    previous = file.name;
    files.push(file);
  }
  return {
    schema: MANIFEST_SCHEMA,
    name: m.name,
    createdAt: m.createdAt,
    chunkSize,
    labels,
    files,
  };
}

function parseFile(value: unknown, chunkSize: number): ManifestFile {
  if (!isPlainObject(value)) throw invalid("each manifest file must be an object");
  const f = value as Record<string, unknown>;
  if (typeof f.name !== "string" || !isValidName(f.name)) {
    throw invalid(`file names must match ${NAME_PATTERN.source}`);
  }
  const size = f.size;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
    throw invalid(`size of "${f.name}" must be a non-negative integer`);
  }
  if (typeof f.sha256 !== "string" || !HEX64.test(f.sha256)) {
    throw invalid(`sha256 of "${f.name}" must be 64 lowercase hex digits`);
  }
  const count = chunkCount(size, chunkSize);
  if (!Array.isArray(f.chunks) || f.chunks.length !== count) {
    throw invalid(`"${f.name}" must list ${count} chunks`);
  }
  for (const c of f.chunks) {
    if (typeof c !== "string" || (c !== ZERO_CHUNK && !HEX64.test(c))) {
      throw invalid(`chunks of "${f.name}" must be sha256 hex digests or "${ZERO_CHUNK}"`);
    }
  }
  const file: ManifestFile = {
    name: f.name,
    size,
    sha256: f.sha256,
    chunks: f.chunks as string[],
  };
  if (f.hot !== undefined) file.hot = validateHot(f.name, f.hot, count);
  return file;
}

/** Parses manifest bytes and checks them against an expected digest. */
export function decodeManifest(bytes: Uint8Array, expectedDigest?: string): ManifestWithDigest {
  const digest = sha256Hex(bytes);
  if (expectedDigest !== undefined && digest !== expectedDigest) {
    throw new SnapmeshError(
      "verification_failed",
      `Manifest digest ${digest} does not match the expected ${expectedDigest}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw invalid(`manifest is not JSON: ${(err as Error).message}`);
  }
  const manifest = parseManifest(json);
  if (manifestDigest(manifest) !== digest) {
    throw invalid("manifest bytes are not in canonical form");
  }
  return { ...manifest, digest };
}

/** File identities compared by {@linkcode sameContent}. */
export interface ContentFiles {
  files: readonly Pick<ManifestFile, "name" | "size" | "sha256">[];
}

/** True when two manifests describe the same file contents (names, sizes, hashes). */
export function sameContent(a: ContentFiles, b: ContentFiles): boolean {
  if (a.files.length !== b.files.length) return false;
  return a.files.every((f, i) => {
    const g = b.files[i]!;
    return f.name === g.name && f.size === g.size && f.sha256 === g.sha256;
  });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function invalidBody(message: string): SnapmeshError {
  return new SnapmeshError("invalid_body", message);
}

function invalid(message: string): SnapmeshError {
  return new SnapmeshError("invalid_body", `Invalid manifest: ${message}`);
}
