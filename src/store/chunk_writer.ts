/**
 * Streams bytes into a file chunk by chunk: sha256 per chunk and for the
 * whole file, all-zero chunks detected and left as holes. Memory use is one
 * chunk buffer, whatever the file size.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { SnapmeshError } from "../errors.ts";
import { ZERO_CHUNK } from "../manifest/mod.ts";

/** Where chunk bytes go; null sinks only hash. */
export interface ChunkSink {
  writeAt(data: Uint8Array, offset: number): Promise<void>;
  truncate(length: number): Promise<void>;
}

/** Options for {@linkcode writeChunked}. */
export interface WriteChunkedOptions {
  chunkSize: number;
  /** Largest accepted size; more bytes fail with `too_large`. */
  maxSize: number;
  /**
   * Called before each non-zero chunk is written, with its length; may wait
   * (to make room) or throw (to abort the write).
   */
  beforeWrite?: (bytes: number) => Promise<void> | void;
  /** Called after each chunk with the bytes consumed so far. */
  onProgress?: (bytes: number) => void;
}

/** What {@linkcode writeChunked} wrote. */
export interface ChunkedFile {
  size: number;
  sha256: string;
  /** Chunk digests, {@linkcode ZERO_CHUNK} for all-zero chunks. */
  chunks: string[];
  /** Bytes actually written (the non-zero chunks). */
  storedBytes: number;
  chunkSize: number;
}

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

/**
 * Consumes `source` into `sink` (or only hashes it when `sink` is null).
 * The sink is truncated to the final size so trailing zero chunks are holes.
 */
export async function writeChunked(
  source: AsyncIterable<Uint8Array>,
  sink: ChunkSink | null,
  options: WriteChunkedOptions,
): Promise<ChunkedFile> {
  const { chunkSize, maxSize } = options;
  const fileHash = createHash("sha256");
  const chunks: string[] = [];
  let buffer = new Uint8Array(chunkSize);
  let filled = 0;
  let size = 0;
  let storedBytes = 0;

  async function flush(bytes: Uint8Array): Promise<void> {
    const offset = chunks.length * chunkSize;
    fileHash.update(bytes);
    if (isAllZero(bytes)) {
      chunks.push(ZERO_CHUNK);
    } else {
      chunks.push(createHash("sha256").update(bytes).digest("hex"));
      if (sink) {
        await options.beforeWrite?.(bytes.length);
        await sink.writeAt(bytes, offset);
      }
      storedBytes += bytes.length;
    }
    options.onProgress?.(offset + bytes.length);
  }

  for await (const piece of source) {
    size += piece.length;
    if (size > maxSize) {
      throw new SnapmeshError(
        "too_large",
        `File is larger than the ${maxSize}-byte limit (--max-file-size)`,
        { limit: maxSize },
      );
    }
    let at = 0;
    while (at < piece.length) {
      if (filled === 0 && piece.length - at >= chunkSize) {
        // Whole chunk available in the piece: hash and write it in place.
        await flush(piece.subarray(at, at + chunkSize));
        at += chunkSize;
        continue;
      }
      const take = Math.min(chunkSize - filled, piece.length - at);
      buffer.set(piece.subarray(at, at + take), filled);
      filled += take;
      at += take;
      if (filled === chunkSize) {
        await flush(buffer);
        // The sink may still hold a reference (async writes): use a new buffer.
        buffer = new Uint8Array(chunkSize);
        filled = 0;
      }
    }
  }
  if (filled > 0) await flush(buffer.subarray(0, filled));
  if (sink) await sink.truncate(size);
  return { size, sha256: fileHash.digest("hex"), chunks, storedBytes, chunkSize };
}
