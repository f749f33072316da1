/**
 * The background scrub: re-verifies every chunk of every cached snapshot
 * against its manifest, at a bounded rate, pass after pass. A chunk that
 * verifies is trusted (its first serve then costs no hash); one that fails
 * is reported, and the caller quarantines the snapshot. Serving trusts a
 * chunk once verified, so the scrub is what catches rot that appears later.
 *
 * @module
 */

import type { FileHandle } from "../fs/mod.ts";
import type { Logger } from "../log/mod.ts";
import { chunkCount, type ManifestWithDigest, ZERO_CHUNK } from "../manifest/mod.ts";
import { type ChunkTrust, CorruptChunkError, readVerifiedChunk } from "../store/mod.ts";
import type { Clock } from "../util/clock.ts";
import type { RateLimiter } from "../util/rate.ts";

/** A snapshot as the scrub sees it. */
export interface ScrubTarget {
  name: string;
  manifest: ManifestWithDigest;
  /** Opens a committed file; rejects with NotFound once the snapshot is gone. */
  open(file: string): Promise<FileHandle>;
}

/** Options for {@linkcode Scrubber}. */
export interface ScrubberOptions {
  /** The snapshots to check now (the cache changes between passes). */
  targets(): Promise<ScrubTarget[]>;
  trust: ChunkTrust;
  /** Paces the bytes read. */
  rate: RateLimiter;
  /** A chunk did not match: the snapshot must leave the cache. */
  onCorrupt(target: ScrubTarget, why: string): Promise<void>;
  log: Logger;
  clock: Clock;
  /** Pause between passes. @default 60000 */
  pauseMs?: number;
}

/** Counters for `/v1/status` and metrics. */
export interface ScrubStats {
  passes: number;
  chunks: number;
  bytes: number;
  corrupt: number;
}

/** Runs passes until stopped. */
export class Scrubber {
  readonly #options: ScrubberOptions;
  readonly #abort = new AbortController();
  #running: Promise<void> | null = null;
  readonly stats: ScrubStats = { passes: 0, chunks: 0, bytes: 0, corrupt: 0 };

  constructor(options: ScrubberOptions) {
    this.#options = options;
  }

  /** Starts the passes in the background. */
  start(): void {
    this.#running ??= this.#loop().catch((err) => {
      if (!this.#abort.signal.aborted) {
        this.#options.log.error("scrub stopped", { error: err });
      }
    });
  }

  /** Stops after the chunk in progress. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#running;
  }

  /** One full pass over the snapshots cached now. */
  async pass(): Promise<void> {
    for (const target of await this.#options.targets()) {
      if (this.#abort.signal.aborted) return;
      await this.#scrub(target);
    }
    this.stats.passes++;
  }

  async #loop(): Promise<void> {
    const pauseMs = this.#options.pauseMs ?? 60_000;
    while (!this.#abort.signal.aborted) {
      await this.pass();
      await this.#options.clock.sleep(pauseMs, { signal: this.#abort.signal, ref: false });
    }
  }

  async #scrub(target: ScrubTarget): Promise<void> {
    const { manifest } = target;
    for (const file of manifest.files) {
      let handle: FileHandle;
      try {
        handle = await target.open(file.name);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return; // evicted meanwhile
        throw err;
      }
      try {
        const trust = this.#options.trust.file(manifest.digest, file.name, file.chunks.length);
        const count = chunkCount(file.size, manifest.chunkSize);
        for (let index = 0; index < count; index++) {
          if (this.#abort.signal.aborted) return;
          if (file.chunks[index] === ZERO_CHUNK) continue;
          await this.#options.rate.take(manifest.chunkSize);
          try {
            const bytes = await readVerifiedChunk(handle, file, manifest.chunkSize, index, trust);
            this.stats.chunks++;
            this.stats.bytes += bytes.length;
          } catch (err) {
            if (!(err instanceof CorruptChunkError)) throw err;
            this.stats.corrupt++;
            await this.#options.onCorrupt(target, `scrub: ${err.message}`);
            return;
          }
        }
      } finally {
        handle.close();
      }
    }
  }
}
