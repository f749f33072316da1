/**
 * A snapshot's memory file as a restore session reads it: from the local
 * copy (each chunk verified before its first use in this process, as local
 * reads do), or from the partial file of the pull in progress (chunks count
 * once the pull verified them; a missing one is fetched at top priority).
 * Reads go through one descriptor opened at the start, which survives the
 * pull's final rename into `snapshots/`.
 *
 * A local chunk that fails verification quarantines the snapshot (as every
 * read does) and the image goes on from a fresh pull of the same digest.
 *
 * @module
 */

import type { Catalog, Source } from "../cache/mod.ts";
import { SnapmeshError } from "../errors.ts";
import type { Puller, PullReady } from "../fetch/mod.ts";
import type { Logger } from "../log/mod.ts";
import {
  chunkLength,
  type ManifestFile,
  type ManifestWithDigest,
  verifyChunk,
  ZERO_CHUNK,
} from "../manifest/mod.ts";
import type { FileTrust } from "../store/mod.ts";
import { cString, EINTR, ENOENT, errno, libc, O_CLOEXEC, O_RDONLY, SysError } from "./libc.ts";
import type { ChunkState, FaultSource, MemoryImage } from "./session.ts";

/** Options for {@linkcode SnapshotMemory.open}. */
export interface SnapshotMemoryOptions {
  name: string;
  manifest: ManifestWithDigest;
  file: string;
  catalog: Catalog;
  puller: Puller;
  log: Logger;
  /** Takes a damaged local copy out of the cache (and refetches it). */
  quarantine(why: string): Promise<void>;
  /** The pull in progress, when the snapshot is not local. */
  pull?: PullReady | null;
}

type Mode =
  | { kind: "local"; trust: FileTrust }
  | { kind: "pull"; ready: PullReady; fileIndex: number };

/** The memory file of one restore session. */
export class SnapshotMemory implements MemoryImage {
  readonly size: number;
  readonly chunkSize: number;
  readonly chunks: number;
  readonly #o: SnapshotMemoryOptions;
  readonly #info: ManifestFile;
  #fd: number;
  #mode: Mode;
  /** Set while a damaged local copy is replaced by a pull. */
  #switching: Promise<void> | null = null;
  /** Why a damaged local copy could not be replaced. */
  #broken: Error | null = null;
  #scratch: Uint8Array | null = null;
  #closed = false;

  private constructor(options: SnapshotMemoryOptions, info: ManifestFile, fd: number, mode: Mode) {
    this.#o = options;
    this.#info = info;
    this.#fd = fd;
    this.#mode = mode;
    this.size = info.size;
    this.chunkSize = options.manifest.chunkSize;
    this.chunks = info.chunks.length;
  }

  /** Opens the memory file: the local copy, or the pull's partial file. */
  static open(options: SnapshotMemoryOptions): SnapshotMemory {
    const { manifest, file, catalog, name } = options;
    const info = manifest.files.find((f) => f.name === file);
    if (!info) {
      throw new SnapmeshError("file_not_found", `Snapshot "${name}" has no file "${file}"`);
    }
    const pull = options.pull ?? null;
    if (pull) {
      const fileIndex = pull.job.fileIndex(file);
      const fd = openRead(catalog.store.partialFilePath(pull.key, file));
      if (fd !== null) {
        return new SnapshotMemory(options, info, fd, { kind: "pull", ready: pull, fileIndex });
      }
      // Published meanwhile: the local copy.
    }
    const fd = openRead(catalog.store.filePath(name, file));
    if (fd === null) {
      throw new SnapmeshError("snapshot_not_found", `Snapshot "${name}" is not on this node`);
    }
    const trust = catalog.trust.file(manifest.digest, file, info.chunks.length);
    return new SnapshotMemory(options, info, fd, { kind: "local", trust });
  }

  /** Where chunks that were missing come from. */
  get source(): Source {
    return this.#mode.kind === "pull" ? this.#mode.ready.source : "local";
  }

  state(index: number): ChunkState {
    const expected = this.#info.chunks[index];
    if (expected === ZERO_CHUNK) return "zero";
    if (this.#switching || this.#broken) return "missing";
    const mode = this.#mode;
    if (mode.kind === "pull") {
      return mode.ready.job.isDone(mode.fileIndex, index) ? "ready" : "missing";
    }
    if (mode.trust.has(index)) return "ready";
    const length = chunkLength(this.size, this.chunkSize, index);
    if (!this.#scratch || this.#scratch.length < this.chunkSize) {
      this.#scratch = new Uint8Array(this.chunkSize);
    }
    const bytes = this.#scratch.subarray(0, length);
    this.read(bytes, index * this.chunkSize);
    if (verifyChunk(bytes, expected ?? null) !== null) {
      mode.trust.add(index);
      return "ready";
    }
    this.#replace(`chunk ${index} of "${this.#info.name}" failed verification during a restore`);
    return "missing";
  }

  async fetch(index: number): Promise<FaultSource> {
    if (this.state(index) !== "missing") return "local";
    if (this.#switching) await this.#switching;
    if (this.#broken) throw this.#broken;
    const mode = this.#mode;
    if (mode.kind !== "pull") throw new Error(`chunk ${index} is neither local nor being pulled`);
    await mode.ready.job.waitChunk(mode.fileIndex, index);
    return mode.ready.source === "local" ? "peer" : mode.ready.source;
  }

  read(buffer: Uint8Array, offset: number): void {
    let at = 0;
    while (at < buffer.length) {
      const view = buffer.subarray(at);
      const n = Number(libc().pread64(this.#fd, view, BigInt(view.length), BigInt(offset + at)));
      if (n < 0) {
        const code = errno();
        if (code === EINTR) continue;
        throw new SysError(`pread(${this.#info.name})`, code);
      }
      if (n === 0) break; // past the end: zeros
      at += n;
    }
    buffer.fill(0, at);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().close(this.#fd);
  }

  /** Quarantines the local copy and goes on from a pull of the same digest. */
  #replace(why: string): void {
    const { name, manifest, puller, catalog, log } = this.#o;
    log.error("restore: local memory file is damaged; fetching a good copy", { name, why });
    this.#switching = (async () => {
      await this.#o.quarantine(why);
      const ready = await puller.start(name).ready;
      if (ready.manifest?.digest !== manifest.digest) {
        throw new SnapmeshError(
          "upstream_failed",
          `Snapshot "${name}" changed while restoring it (now ${ready.manifest?.digest ?? "?"})`,
        );
      }
      const fd = openRead(catalog.store.partialFilePath(ready.key, this.#info.name));
      if (fd === null) throw new Error(`the pull of "${name}" has no partial file`);
      if (!this.#closed) libc().close(this.#fd);
      this.#fd = fd;
      this.#mode = { kind: "pull", ready, fileIndex: ready.job.fileIndex(this.#info.name) };
    })();
    this.#switching.catch((err) => (this.#broken = err)).finally(() => (this.#switching = null));
  }
}

/** Opens `path` read-only through libc (the descriptor is read with pread), or null when missing. */
function openRead(path: string): number | null {
  const fd = libc().open(cString(path), O_RDONLY | O_CLOEXEC, 0);
  if (fd >= 0) return fd;
  const code = errno();
  if (code === ENOENT) return null;
  throw new SysError(`open(${path})`, code);
}
