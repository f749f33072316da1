/**
 * The data plane of a real pull: reads chunks from their source, verifies
 * each against the manifest (or computes its digest when adopting), writes
 * the good ones into the partial file at their offset, and classifies
 * failures for the scheduler (busy, gone, error). Nothing unverified is
 * ever written where a reader could see it as good.
 *
 * @module
 */

import { isConnectionError, PeerError } from "../cluster/mod.ts";
import type { FileHandle } from "../fs/mod.ts";
import { chunkLength, isAllZero, verifyChunk } from "../manifest/mod.ts";
import { Mutex } from "../util/mutex.ts";
import type { ChunkFetch, ChunkIO, FetchResult, PullFile } from "./pull_job.ts";
import type { ChunkSource } from "./source.ts";

/** Options for {@linkcode SourcesIO}. */
export interface SourcesIOOptions {
  files: PullFile[];
  chunkSize: number;
  /** Opens the partial file of `file` for writing. */
  openFile(file: string): Promise<FileHandle>;
  /** A source delivered verified chunks (its id). */
  onReceived?: (source: string) => void;
}

/** Fetches chunks from a set of sources into partial files. */
export class SourcesIO implements ChunkIO {
  readonly #o: SourcesIOOptions;
  readonly #sources = new Map<string, ChunkSource>();
  /** Open partial files (the promise, so two writers never open one twice). */
  readonly #handles = new Map<number, Promise<{ handle: FileHandle; lock: Mutex }>>();

  constructor(options: SourcesIOOptions) {
    this.#o = options;
  }

  /** Makes `source` available to fetches (by its id). */
  add(source: ChunkSource): void {
    this.#sources.set(source.id, source);
  }

  remove(id: string): void {
    this.#sources.delete(id);
  }

  get(id: string): ChunkSource | undefined {
    return this.#sources.get(id);
  }

  async fetch(request: ChunkFetch, signal: AbortSignal): Promise<FetchResult> {
    const source = this.#sources.get(request.source);
    if (!source) return { good: [], bad: [], bytes: 0, failure: "gone" };
    const file = this.#o.files[request.file]!;
    const size = this.#o.chunkSize;
    const start = request.index * size;
    const end = Math.min(file.size, (request.index + request.count) * size) - 1;
    let bytes: Uint8Array;
    try {
      bytes = await source.read(
        { file: file.name, index: request.index, count: request.count, start, end },
        { signal, wait: request.wait },
      );
      if (bytes.length !== end - start + 1) {
        throw new Error(`sent ${bytes.length} bytes instead of ${end - start + 1}`);
      }
    } catch (err) {
      return { good: [], bad: [], bytes: 0, failure: classifyFailure(err), error: err };
    }
    const result: FetchResult = { good: [], bad: [], bytes: bytes.length };
    for (let i = 0; i < request.count; i++) {
      const index = request.index + i;
      const length = chunkLength(file.size, size, index);
      const chunk = bytes.subarray(i * size, i * size + length);
      const digest = verifyChunk(chunk, file.chunks[index] ?? null);
      if (digest === null) {
        result.bad.push(index);
        source.suspect?.(file.name, index);
        continue;
      }
      try {
        await this.#write(request.file, chunk, index * size);
      } catch (err) {
        // A full disk is this node's problem, not the source's.
        return { ...result, failure: "error", error: err };
      }
      result.good.push({ index, digest });
    }
    if (result.good.length > 0) this.#o.onReceived?.(request.source);
    return result;
  }

  async close(): Promise<void> {
    for (const slot of this.#handles.values()) {
      await slot.then(({ handle }) => handle.close(), () => {});
    }
    this.#handles.clear();
  }

  async #write(file: number, bytes: Uint8Array, offset: number): Promise<void> {
    let slot = this.#handles.get(file);
    if (!slot) {
      slot = this.#o.openFile(this.#o.files[file]!.name).then((handle) => ({
        handle,
        lock: new Mutex(),
      }));
      this.#handles.set(file, slot);
    }
    const { handle, lock } = await slot;
    // An all-zero chunk of an adopted file stays a hole.
    if (isAllZero(bytes)) return;
    await lock.run(() => handle.writeAt(bytes, offset));
  }
}

/**
 * How a failed read counts for the scheduler: a refused connection is
 * `gone`, a peer's 503 (every upload slot taken) `busy`, its 409 (these
 * chunks not there yet, or sent often enough lately) `declined`, anything
 * else an `error`.
 */
export function classifyFailure(err: unknown): "busy" | "declined" | "gone" | "error" {
  if (isConnectionError(err)) return "gone";
  if (err instanceof PeerError && err.status === 503) return "busy";
  if (err instanceof PeerError && err.status === 409) return "declined";
  return "error";
}
