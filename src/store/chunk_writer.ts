/**
 * Streams bytes into a file chunk by chunk: sha256 per chunk and for the
 * whole file, all-zero chunks detected and left as holes.
 *
 * Memory is two chunk buffers, whatever the file size: bytes are read
 * straight into a chunk buffer (BYOB reads where the stream allows), hashed,
 * and written while the other buffer fills.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { SnapmeshError } from "../errors.ts";
import type { FileHandle } from "../fs/mod.ts";
import { isAllZero, ZERO_CHUNK } from "../manifest/mod.ts";
import { noteTransientBytes } from "../util/gc.ts";

/** Where chunk bytes go; null sinks only hash. */
export interface ChunkSink {
  writeAt(data: Uint8Array, offset: number): Promise<void>;
  truncate(length: number): Promise<void>;
}

/** A source of bytes that fills caller-provided buffers. */
export interface ByteSource {
  /**
   * Reads up to `length` bytes into `buffer` at `offset`. Returns the buffer
   * now holding them (a BYOB read transfers it) and the count; 0 at the end.
   */
  read(buffer: ArrayBuffer, offset: number, length: number): Promise<{
    buffer: ArrayBuffer;
    bytes: number;
  }>;
  /** Stops reading early (on failure). */
  cancel(reason?: unknown): Promise<void>;
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
  /**
   * Starts writeback of what was written so far (an fsync on another handle),
   * called every `syncEveryBytes` without waiting: without it the kernel
   * buffers the whole file and the final fsync waits for all of it.
   */
  backgroundSync?: () => Promise<void>;
  /** @default 64 MiB */
  syncEveryBytes?: number;
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

/**
 * A {@linkcode ByteSource} over a web stream: BYOB reads into the caller's
 * buffer when it is a byte stream (Deno's request bodies are), otherwise
 * pieces are copied in.
 */
export function streamSource(stream: ReadableStream<Uint8Array>): ByteSource {
  let byob: ReadableStreamBYOBReader | null = null;
  try {
    byob = stream.getReader({ mode: "byob" });
  } catch {
    // Not a byte stream.
  }
  if (byob) {
    const reader = byob;
    return {
      async read(buffer, offset, length) {
        const { done, value } = await reader.read(new Uint8Array(buffer, offset, length));
        if (value === undefined) return { buffer: new ArrayBuffer(buffer.byteLength), bytes: 0 };
        return { buffer: value.buffer as ArrayBuffer, bytes: done ? 0 : value.byteLength };
      },
      cancel: (reason) => reader.cancel(reason).catch(() => {}),
    };
  }
  const reader = stream.getReader();
  let piece: Uint8Array | null = null;
  let at = 0;
  return {
    async read(buffer, offset, length) {
      while (piece === null || at >= piece.length) {
        const next = await reader.read();
        if (next.done) return { buffer, bytes: 0 };
        piece = next.value;
        at = 0;
      }
      const take = Math.min(length, piece.length - at);
      new Uint8Array(buffer, offset, take).set(piece.subarray(at, at + take));
      at += take;
      return { buffer, bytes: take };
    },
    cancel: (reason) => reader.cancel(reason).catch(() => {}),
  };
}

/** A {@linkcode ByteSource} over a whole open file, read sequentially. */
export function fileSource(handle: FileHandle): ByteSource {
  let position = 0;
  return {
    async read(buffer, offset, length) {
      const bytes = await handle.readAt(new Uint8Array(buffer, offset, length), position);
      position += bytes;
      return { buffer, bytes };
    },
    cancel: () => Promise.resolve(),
  };
}

/** A {@linkcode ByteSource} with no bytes. */
export const emptySource: ByteSource = {
  read: (buffer) => Promise.resolve({ buffer, bytes: 0 }),
  cancel: () => Promise.resolve(),
};

/**
 * Consumes `source` into `sink` (or only hashes it when `sink` is null).
 * The sink is truncated to the final size so trailing zero chunks are holes.
 */
export async function writeChunked(
  source: ByteSource,
  sink: ChunkSink | null,
  options: WriteChunkedOptions,
): Promise<ChunkedFile> {
  const { chunkSize, maxSize } = options;
  const syncEvery = options.syncEveryBytes ?? 64 * 1024 * 1024;
  const fileHash = createHash("sha256");
  const chunks: string[] = [];
  let size = 0;
  let storedBytes = 0;
  // Two buffers: one fills and is hashed while the other's write runs on
  // Deno's I/O threads. A buffer is refilled only once its write is done.
  const buffers = [new ArrayBuffer(chunkSize), new ArrayBuffer(chunkSize)];
  let turn = 0;
  let writing: Promise<void> | null = null;
  let writingTurn = -1;
  let syncing: Promise<void> | null = null;
  let unsynced = 0;

  async function flush(bytes: Uint8Array): Promise<void> {
    const offset = chunks.length * chunkSize;
    fileHash.update(bytes);
    if (isAllZero(bytes)) {
      chunks.push(ZERO_CHUNK);
    } else {
      chunks.push(createHash("sha256").update(bytes).digest("hex"));
      if (sink) {
        await options.beforeWrite?.(bytes.length);
        if (writing) await writing;
        writing = sink.writeAt(bytes, offset);
        writingTurn = turn;
        writing.catch(() => {}); // observed when awaited; never an unhandled rejection
        unsynced += bytes.length;
        if (options.backgroundSync && unsynced >= syncEvery && syncing === null) {
          unsynced = 0;
          syncing = writing.then(options.backgroundSync).catch(() => {
            // Only a head start: the caller's final fsync reports failures.
          }).finally(() => (syncing = null));
        }
      }
      storedBytes += bytes.length;
    }
    options.onProgress?.(offset + bytes.length);
  }

  async function consume(): Promise<void> {
    while (true) {
      if (writing && writingTurn === turn) await writing;
      let buffer = buffers[turn]!;
      let filled = 0;
      let ended = false;
      while (filled < chunkSize) {
        const result = await source.read(buffer, filled, chunkSize - filled);
        buffer = result.buffer;
        if (result.bytes === 0) {
          ended = true;
          break;
        }
        filled += result.bytes;
        size += result.bytes;
        noteTransientBytes(result.bytes);
        if (size > maxSize) {
          throw new SnapmeshError(
            "too_large",
            `File is larger than the ${maxSize}-byte limit (--max-file-size)`,
            { limit: maxSize },
          );
        }
      }
      buffers[turn] = buffer;
      if (filled > 0) await flush(new Uint8Array(buffer, 0, filled));
      turn = 1 - turn;
      if (ended) break;
    }
    await writing;
  }

  try {
    await consume();
  } catch (err) {
    await source.cancel(err);
    throw err;
  } finally {
    // Never leave a write running on a handle the caller is about to close.
    await (writing as Promise<void> | null)?.catch(() => {});
    await (syncing as Promise<void> | null);
  }
  if (sink) await sink.truncate(size);
  return { size, sha256: fileHash.digest("hex"), chunks, storedBytes, chunkSize };
}
