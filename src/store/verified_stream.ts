/**
 * Streams a byte range of a local file such that no byte is sent before the
 * chunk holding it matched its manifest digest in this process's lifetime:
 * an untrusted chunk is read whole and verified first (then trusted), a
 * trusted one is read straight from the range. A chunk that fails stops the
 * stream with an error, so the response is cut short, never completed as if
 * whole.
 *
 * @module
 */

import type { FileHandle } from "../fs/mod.ts";
import { chunkLength, type ManifestFile, verifyChunk } from "../manifest/mod.ts";
import { noteTransientBytes } from "../util/gc.ts";
import type { FileTrust } from "./chunk_trust.ts";

/** Largest read of a trusted range. */
const PIECE_BYTES = 1024 * 1024;

/** Options for {@linkcode verifiedRangeStream}. */
export interface VerifiedRangeStreamOptions {
  /** Chunks verified earlier; without it every chunk is verified. */
  trust?: FileTrust;
  /** Waits until `bytes` may be sent (a rate limit). */
  pace?: (bytes: number) => Promise<void>;
  /**
   * Called once when a chunk does not match the manifest (the caller takes
   * the snapshot out of the cache); the stream fails once it has settled.
   */
  onCorrupt?: (index: number) => void | Promise<void>;
  /** Called once when the stream ends for any reason, with the bytes sent. */
  onClose?: (bytesSent: number, error?: unknown) => void;
}

/** Thrown when a local chunk does not match its manifest digest. */
export class CorruptChunkError extends Error {
  readonly index: number;
  constructor(file: string, index: number) {
    super(`Chunk ${index} of "${file}" does not match the manifest`);
    this.name = "CorruptChunkError";
    this.index = index;
  }
}

/**
 * Reads chunk `index` of `file` whole and checks it against the manifest.
 * Returns its bytes (and trusts it), or throws {@linkcode CorruptChunkError}.
 */
export async function readVerifiedChunk(
  handle: Pick<FileHandle, "readAt">,
  file: ManifestFile,
  chunkSize: number,
  index: number,
  trust?: FileTrust,
): Promise<Uint8Array> {
  const length = chunkLength(file.size, chunkSize, index);
  const bytes = new Uint8Array(length);
  const n = await handle.readAt(bytes, index * chunkSize);
  if (n !== length || verifyChunk(bytes, file.chunks[index] ?? null) === null) {
    throw new CorruptChunkError(file.name, index);
  }
  trust?.add(index);
  noteTransientBytes(length);
  return bytes;
}

/** What {@linkcode readVerifiedRangeSync} reads with. */
export type SyncReadable = Pick<FileHandle, "readAtSync">;

/**
 * Bytes `start..end` (inclusive) of `file` in one buffer, read on the
 * calling thread; a chunk not yet trusted is read whole and verified first
 * (then trusted). Throws {@linkcode CorruptChunkError} before returning any
 * byte of a chunk that does not match. For small ranges of files in the
 * page cache: no stream, no trip through the I/O thread pool.
 */
export function readVerifiedRangeSync(
  handle: SyncReadable,
  file: ManifestFile,
  chunkSize: number,
  range: { start: number; end: number },
  trust?: FileTrust,
): Uint8Array<ArrayBuffer> {
  const { start, end } = range;
  const out = new Uint8Array(end - start + 1);
  let position = start;
  while (position <= end) {
    const index = Math.floor(position / chunkSize);
    const chunkStart = index * chunkSize;
    const length = chunkLength(file.size, chunkSize, index);
    const pieceEnd = Math.min(end, chunkStart + length - 1);
    const at = position - start;
    if (trust?.has(index)) {
      const piece = out.subarray(at, pieceEnd - start + 1);
      const n = handle.readAtSync(piece, position);
      if (n !== piece.length) throw new Error(`File ended at byte ${position + n}`);
    } else {
      const chunk = new Uint8Array(length);
      const n = handle.readAtSync(chunk, chunkStart);
      if (n !== length || verifyChunk(chunk, file.chunks[index] ?? null) === null) {
        throw new CorruptChunkError(file.name, index);
      }
      trust?.add(index);
      noteTransientBytes(length);
      out.set(chunk.subarray(position - chunkStart, pieceEnd - chunkStart + 1), at);
    }
    position = pieceEnd + 1;
  }
  return out;
}

/** Bytes `start..end` (inclusive) of `file`, each chunk verified before it is sent; closes `handle`. */
export function verifiedRangeStream(
  handle: Pick<FileHandle, "readAt" | "close">,
  file: ManifestFile,
  chunkSize: number,
  range: { start: number; end: number },
  options: VerifiedRangeStreamOptions = {},
): ReadableStream<Uint8Array> {
  const { start, end } = range;
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
      if (position > end) {
        finish();
        controller.close();
        return;
      }
      try {
        const index = Math.floor(position / chunkSize);
        const chunkStart = index * chunkSize;
        const pieceEnd = Math.min(end, chunkStart + chunkLength(file.size, chunkSize, index) - 1);
        let piece: Uint8Array;
        if (options.trust?.has(index)) {
          piece = new Uint8Array(Math.min(PIECE_BYTES, pieceEnd - position + 1));
          const n = await handle.readAt(piece, position);
          if (n !== piece.length) throw new Error(`File ended at byte ${position + n}`);
          noteTransientBytes(n);
        } else {
          try {
            const chunk = await readVerifiedChunk(handle, file, chunkSize, index, options.trust);
            piece = chunk.subarray(position - chunkStart, pieceEnd - chunkStart + 1);
          } catch (err) {
            if (err instanceof CorruptChunkError) await options.onCorrupt?.(index);
            throw err;
          }
        }
        await options.pace?.(piece.length);
        position += piece.length;
        controller.enqueue(piece);
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
