/**
 * An open file of a local snapshot, as `Reads.openFile` hands it out: small
 * ranges read at once from a leased shared handle, larger ones streamed
 * through a handle of their own, every chunk verified before its first serve.
 *
 * @module
 */

import type { Catalog } from "../cache/mod.ts";
import { SnapmeshError } from "../errors.ts";
import type { FileHandle } from "../fs/mod.ts";
import type { ManifestFile } from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import {
  CorruptChunkError,
  type FileTrust,
  type HandleLease,
  readVerifiedRangeSync,
  verifiedRangeStream,
} from "../store/mod.ts";
import type { OpenedFile, Reads } from "./local_reads.ts";

/**
 * Ranges up to this size are read at once, on the main thread, from the
 * shared open handle of their file; larger ones stream through their own
 * handle with reads on Deno's I/O threads. A 64 KiB read from the page cache
 * takes a few microseconds: far less than a trip through the thread pool.
 */
export const SMALL_RANGE_BYTES = 64 * 1024;

/**
 * An open file of a local snapshot: small ranges are read at once from the
 * shared handle of the file (leased from the catalog's handle cache), larger
 * ones stream through a handle of their own.
 */
export class LocalFile implements OpenedFile {
  readonly source = "local" as const;
  readonly name: string;
  readonly file: string;
  readonly size: number;
  readonly sha256: string;
  readonly #reads: Reads;
  readonly #catalog: Catalog;
  readonly #metrics: Metrics;
  readonly #digest: string;
  readonly #info: ManifestFile;
  readonly #chunkSize: number;
  readonly #trust: FileTrust;
  readonly #shared: FileHandle;
  #lease: HandleLease | null;
  #own: Promise<FileHandle> | null = null;

  constructor(
    reads: Reads,
    opened: {
      name: string;
      digest: string;
      info: ManifestFile;
      chunkSize: number;
      lease: HandleLease;
    },
  ) {
    const { name, digest, info, chunkSize, lease } = opened;
    this.name = name;
    this.file = info.name;
    this.size = info.size;
    this.sha256 = info.sha256;
    this.#reads = reads;
    this.#catalog = reads.catalog;
    this.#metrics = reads.metrics;
    this.#digest = digest;
    this.#info = info;
    this.#chunkSize = chunkSize;
    this.#trust = this.#catalog.trust.file(digest, info.name, info.chunks.length);
    this.#lease = lease;
    this.#shared = lease.handle;
  }

  // The first chunk is checked before the status line goes out: a damaged
  // one fails here, where the request can still be served from another
  // source.
  async ready(start: number, end: number): Promise<void> {
    if (end < start || this.#trust.has(Math.floor(start / this.#chunkSize))) return;
    try {
      // Reading its first byte reads and verifies the whole chunk.
      readVerifiedRangeSync(
        this.#shared,
        this.#info,
        this.#chunkSize,
        { start, end: start },
        this.#trust,
      );
    } catch (err) {
      await this.#damaged(err);
    }
  }

  stream(start: number, end: number): ReadableStream<Uint8Array> {
    // Reads on Deno's I/O threads must not share a file position: the
    // stream opens a handle of its own on its first read. The shared one
    // stays leased until the stream ends, so a file removed meanwhile is
    // still read whole, through it.
    let handle: FileHandle | null = null;
    const openOwn = () => this.#openOwn();
    const done = () => {
      if (handle) handle.close();
      else this.#own?.then((h) => h.close(), () => {});
      this.close();
    };
    return verifiedRangeStream(
      {
        async readAt(buffer, offset) {
          handle ??= await openOwn();
          return await handle.readAt(buffer, offset);
        },
        close: done,
      },
      this.#info,
      this.#chunkSize,
      { start, end },
      {
        trust: this.#trust,
        onCorrupt: (index) =>
          this.#damaged(new CorruptChunkError(this.file, index)).catch(() => {}),
        onClose: (sent) => this.#metrics.servedBytes.inc(sent),
      },
    );
  }

  async body(
    start: number,
    end: number,
  ): Promise<Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>> {
    if (end - start + 1 > SMALL_RANGE_BYTES) {
      try {
        await this.ready(start, end);
      } catch (err) {
        this.close();
        throw err;
      }
      return this.stream(start, end);
    }
    try {
      const range = { start, end };
      const bytes = readVerifiedRangeSync(
        this.#shared,
        this.#info,
        this.#chunkSize,
        range,
        this.#trust,
      );
      this.#metrics.servedBytes.inc(bytes.length);
      return bytes;
    } catch (err) {
      return await this.#damaged(err);
    } finally {
      this.close();
    }
  }

  close(): void {
    this.#lease?.release();
    this.#lease = null;
  }

  #openOwn(): Promise<FileHandle> {
    this.#own ??= this.#catalog.store.openFile(this.name, this.file).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      return syncReads(this.#shared);
    });
    return this.#own;
  }

  async #damaged(err: unknown): Promise<never> {
    if (err instanceof CorruptChunkError) {
      await this.#reads.quarantine(
        this.name,
        this.#digest,
        `chunk ${err.index} of "${this.file}" failed verification`,
      );
      throw new SnapmeshError(
        "verification_failed",
        `Snapshot "${this.name}" is damaged on this node (${err.message}); it was quarantined`,
      );
    }
    throw err;
  }
}

/** A shared handle read synchronously, behind the async interface streams use. */
function syncReads(shared: FileHandle): FileHandle {
  return {
    readAt: (buffer, offset) => Promise.resolve(shared.readAtSync(buffer, offset)),
    readAtSync: (buffer, offset) => shared.readAtSync(buffer, offset),
    writeAt: () => Promise.reject(new TypeError("A shared read handle cannot write")),
    truncate: () => Promise.reject(new TypeError("A shared read handle cannot truncate")),
    sync: () => Promise.resolve(),
    size: () => shared.size(),
    stat: () => shared.stat(),
    close: () => {},
  };
}
