/**
 * Streams a byte range of a file while its pull is still running: each
 * chunk is read from the partial file as soon as it is verified (a reader
 * waiting on a chunk moves it to the front of the pull).
 *
 * @module
 */

import type { FileHandle } from "../fs/mod.ts";
import { noteTransientBytes } from "../util/gc.ts";
import type { PullJob } from "./pull_job.ts";

const PIECE = 1024 * 1024;

/** Options for {@linkcode pullingFileStream}. */
export interface PullingFileStreamOptions {
  /** Waits until `bytes` may be sent (a rate limit). */
  pace?: (bytes: number) => Promise<void>;
  /** Called once when the stream ends, with the bytes sent. */
  onClose?: (bytes: number) => void;
}

/** Bytes `start..end` (inclusive) of file `file` of `job`, read through `handle` (closed at the end). */
export function pullingFileStream(
  job: PullJob,
  file: number,
  handle: FileHandle,
  start: number,
  end: number,
  options: PullingFileStreamOptions = {},
): ReadableStream<Uint8Array> {
  const onClose = options.onClose;
  let position = start;
  let closed = false;
  const finish = () => {
    if (closed) return;
    closed = true;
    handle.close();
    onClose?.(position - start);
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (position > end) {
        finish();
        controller.close();
        return;
      }
      try {
        const index = Math.floor(position / job.chunkSize);
        await job.waitChunk(file, index);
        const chunkEnd = Math.min(end, (index + 1) * job.chunkSize - 1);
        const length = Math.min(PIECE, chunkEnd - position + 1);
        const buffer = new Uint8Array(length);
        const n = await handle.readAt(buffer, position);
        if (n !== length) throw new Error(`Partial file ended at byte ${position + n}`);
        await options.pace?.(n);
        position += n;
        controller.enqueue(buffer);
        noteTransientBytes(n);
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
