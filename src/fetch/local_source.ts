/**
 * Chunks this node already holds in other snapshots (the same function's
 * earlier snapshots share most of their chunks): copied from disk instead of
 * fetched. Every copy is still verified by the pull.
 *
 * @module
 */

import type { ChunkLocation } from "../cache/mod.ts";
import type { FileSystem } from "../fs/mod.ts";
import type { ChunkRequest, ChunkSource } from "./source.ts";

/** Finds local copies of chunks by digest. */
export interface ChunkLocator {
  locate(digest: string): ChunkLocation | undefined;
}

/** Reads chunks from other local snapshots. */
export class LocalSource implements ChunkSource {
  readonly id = "local";
  readonly kind = "local" as const;
  readonly #fs: FileSystem;
  readonly #locator: ChunkLocator;
  /** Expected chunk digests per file of the snapshot being pulled. */
  readonly #digests: ReadonlyMap<string, readonly (string | null)[]>;
  readonly #chunkSize: number;

  constructor(
    fs: FileSystem,
    locator: ChunkLocator,
    digests: ReadonlyMap<string, readonly (string | null)[]>,
    chunkSize: number,
  ) {
    this.#fs = fs;
    this.#locator = locator;
    this.#digests = digests;
    this.#chunkSize = chunkSize;
  }

  /** True when chunk `index` of `file` has a local copy. */
  holds(file: string, index: number): boolean {
    const digest = this.#digests.get(file)?.[index];
    return digest !== undefined && digest !== null && this.#locator.locate(digest) !== undefined;
  }

  async read(request: ChunkRequest): Promise<Uint8Array> {
    const out = new Uint8Array(request.end - request.start + 1);
    const digests = this.#digests.get(request.file)!;
    let at = 0;
    for (let i = request.index; i < request.index + request.count; i++) {
      const where = this.#locator.locate(digests[i]!);
      if (!where) throw new Error(`no local copy of chunk ${i} any more`);
      const length = Math.min(this.#chunkSize, out.length - at);
      const handle = await this.#fs.open(where.path);
      try {
        const n = await handle.readAt(out.subarray(at, at + length), where.offset);
        if (n !== length) throw new Error(`local copy of chunk ${i} is short`);
      } finally {
        handle.close();
      }
      at += length;
    }
    return out;
  }
}
