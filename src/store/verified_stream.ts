/**
 * Streams whole chunks of a local file, each checked against its manifest
 * digest before a byte of it is sent: what a node serves to its peers is
 * never worse than what it would accept itself.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { FileHandle } from "../fs/mod.ts";
import { type ManifestFile, ZERO_CHUNK } from "../manifest/mod.ts";
import { noteTransientBytes } from "../util/gc.ts";
import { isAllZero } from "./chunk_writer.ts";

/** Options for {@linkcode verifiedChunkStream}. */
export interface VerifiedChunkStreamOptions {
  /** Waits until `bytes` may be sent (a rate limit). */
  pace?: (bytes: number) => Promise<void>;
  /** Called once when a chunk does not match the manifest; the stream then fails. */
  onCorrupt?: (index: number) => void;
  /** Called when the stream ends, with the bytes sent. */
  onSent?: (bytes: number) => void;
}

/** Chunks covering `start..end` (chunk-aligned) of `file`, verified, then the handle closed. */
export function verifiedChunkStream(
  handle: FileHandle,
  file: ManifestFile,
  chunkSize: number,
  start: number,
  end: number,
  options: VerifiedChunkStreamOptions = {},
): ReadableStream<Uint8Array> {
  let index = Math.floor(start / chunkSize);
  const last = Math.floor(end / chunkSize);
  let sent = 0;
  let closed = false;
  const finish = () => {
    if (closed) return;
    closed = true;
    handle.close();
    options.onSent?.(sent);
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (index > last || end < start) {
        finish();
        controller.close();
        return;
      }
      try {
        const offset = index * chunkSize;
        const length = Math.min(chunkSize, file.size - offset);
        const bytes = new Uint8Array(length);
        const n = await handle.readAt(bytes, offset);
        const expected = file.chunks[index];
        const good = n === length &&
          (expected === ZERO_CHUNK
            ? isAllZero(bytes)
            : createHash("sha256").update(bytes).digest("hex") === expected);
        if (!good) {
          options.onCorrupt?.(index);
          throw new Error(`chunk ${index} of "${file.name}" does not match the manifest`);
        }
        await options.pace?.(length);
        controller.enqueue(bytes);
        noteTransientBytes(length);
        sent += length;
        index++;
      } catch (err) {
        finish();
        controller.error(err);
      }
    },
    cancel() {
      finish();
    },
  }, { highWaterMark: 1 });
}
