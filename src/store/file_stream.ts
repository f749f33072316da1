/**
 * A byte range of an open file as a web stream, read in 1 MiB pieces. The
 * stream owns the handle and closes it when done, failed or cancelled; an
 * open handle keeps an evicted (unlinked) file readable to the end.
 *
 * @module
 */

import type { FileHandle, FileSystem } from "../fs/mod.ts";
import { noteTransientBytes } from "../util/gc.ts";

/** Size of each read. */
export const READ_PIECE_BYTES = 1024 * 1024;

/** Options for {@linkcode fileRangeStream}. */
export interface FileRangeStreamOptions {
  /** Called once when the stream ends for any reason, with the bytes sent. */
  onClose?: (bytesSent: number, error?: unknown) => void;
  /** Size of each read. @default READ_PIECE_BYTES */
  pieceBytes?: number;
}

/** Streams bytes `start..end` (inclusive) of `handle`, then closes it. */
export function fileRangeStream(
  handle: FileHandle,
  start: number,
  end: number,
  options: FileRangeStreamOptions = {},
): ReadableStream<Uint8Array> {
  const pieceBytes = options.pieceBytes ?? READ_PIECE_BYTES;
  let position = start;
  let closed = false;
  function finish(error?: unknown): void {
    if (closed) return;
    closed = true;
    handle.close();
    options.onClose?.(position - start, error);
  }
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const remaining = end + 1 - position;
      if (remaining <= 0) {
        finish();
        controller.close();
        return;
      }
      const buffer = new Uint8Array(Math.min(pieceBytes, remaining));
      try {
        const n = await handle.readAt(buffer, position);
        if (n === 0) throw new Error(`File ended at byte ${position}, before byte ${end}`);
        position += n;
        controller.enqueue(n === buffer.length ? buffer : buffer.subarray(0, n));
        noteTransientBytes(n);
      } catch (err) {
        finish(err);
        controller.error(err);
      }
    },
    cancel(reason) {
      finish(reason);
    },
  }, { highWaterMark: 1 });
}

/**
 * Streams bytes `start..end` (inclusive) of the file at `path`, opening it on
 * the first read (so a stream that is never read holds no file open).
 */
export function lazyFileStream(
  fs: FileSystem,
  path: string,
  start: number,
  end: number,
): ReadableStream<Uint8Array> {
  let inner: ReadableStreamDefaultReader<Uint8Array> | null = null;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      inner ??= fileRangeStream(await fs.open(path), start, end).getReader();
      const { done, value } = await inner.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel(reason) {
      return inner?.cancel(reason);
    },
  });
}
