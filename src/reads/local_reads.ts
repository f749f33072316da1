/**
 * What clients read: the list of local snapshots, manifests (read through
 * peers and the origin when not local), file bytes (local, or streamed while
 * a pull runs), pulls, and verification. No byte of a local file is served
 * before its chunk was verified in this process's lifetime; a chunk that
 * fails takes the snapshot out of the cache and fetches a good copy again.
 *
 * @module
 */

import type { Catalog, Source } from "../cache/mod.ts";
import { notLocal } from "../cache/mod.ts";
import { SnapmeshError } from "../errors.ts";
import type { FileHandle } from "../fs/mod.ts";
import { type Puller, pullingFileStream } from "../fetch/mod.ts";
import { findFile, type Manifest, type ManifestWithDigest, storedBytes } from "../manifest/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import { type FileVerification, verifyStoredFile } from "../store/mod.ts";
import type { Clock } from "../util/clock.ts";
import { LocalFile } from "./_local_file.ts";

/** One row of `GET /v1/snapshots`. */
export interface SnapshotSummary {
  name: string;
  digest: string;
  /** Sum of file sizes. */
  size: number;
  /** Bytes on disk (zero chunks are holes). */
  storedBytes: number;
  files: string[];
  pinned: boolean;
  lastAccess: string;
  createdAt: string;
  state: "ready";
}

/** An open file of a local snapshot, ready to stream. */
export interface OpenedFile {
  name: string;
  file: string;
  size: number;
  sha256: string;
  source: Source;
  /**
   * Resolves once byte `start` can be sent (for a local file, once its first
   * chunk verified; during a pull, once that chunk arrived), so a failure
   * still gets an error status instead of a cut body.
   */
  ready(start: number, end: number): Promise<void>;
  /** Streams bytes `start..end` (inclusive) and closes the file afterwards. */
  stream(start: number, end: number): ReadableStream<Uint8Array>;
  /**
   * Waits like {@linkcode OpenedFile.ready}, then answers bytes
   * `start..end` (inclusive): a small range of a local file as one buffer
   * read at once, anything else as {@linkcode OpenedFile.stream}. Closes
   * the file afterwards; on failure too.
   */
  body(start: number, end: number): Promise<Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>>;
  /** Closes the file without streaming. */
  close(): void;
}

/** Answer of a pull. */
export interface PullResult {
  name: string;
  digest: string;
  source: Source;
  bytes: Record<Source, number>;
  ms: number;
  /** Where the files are (or will be, while `complete` is false). */
  paths: Record<string, string>;
  /** False when `?hot=true` answered before the whole snapshot was local. */
  complete: boolean;
}

/** Options of {@linkcode Reads.pull}. */
export interface PullOptions {
  /** Wait for the pull to finish. @default true */
  wait?: boolean;
  /** Answer once the hot chunks are local. @default false */
  hot?: boolean;
}

/** A pull accepted with `?wait=false`. */
export interface PullAccepted {
  name: string;
  digest: string | null;
  state: "pulling";
}

/** Size, hash and source of a file, without reading it. */
export interface FileInfo {
  size: number;
  sha256: string;
  source: Source;
}

/** Answer of a verify. */
export interface VerifyResult {
  name: string;
  digest: string;
  ok: boolean;
  files: FileVerification[];
}

export { SMALL_RANGE_BYTES } from "./_local_file.ts";

/** Options for {@linkcode Reads}. */
export interface ReadsOptions {
  catalog: Catalog;
  puller: Puller;
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  /** True when a snapshot missing everywhere else may still be adopted from the origin. */
  hasOrigin: boolean;
}

/** Client reads of snapshots. Names are validated by the caller. */
export class Reads {
  readonly counters = { hits: 0, misses: 0 };
  readonly #o: ReadsOptions;

  constructor(options: ReadsOptions) {
    this.#o = options;
  }

  get catalog(): Catalog {
    return this.#o.catalog;
  }

  get metrics(): Metrics {
    return this.#o.metrics;
  }

  /** Local snapshots with their file lists (reads manifests not yet cached). */
  async list(): Promise<SnapshotSummary[]> {
    const { catalog } = this.#o;
    const entries = catalog.entries().sort((a, b) => (a.name < b.name ? -1 : 1));
    const out: SnapshotSummary[] = [];
    for (const e of entries) {
      let manifest: ManifestWithDigest | undefined;
      try {
        manifest = await catalog.manifestOf(e);
      } catch {
        // Evicted meanwhile: list what the index knew.
      }
      out.push({
        name: e.name,
        digest: e.digest,
        size: e.size,
        storedBytes: e.bytes,
        files: manifest ? manifest.files.map((f) => f.name) : [],
        pinned: e.pinned,
        lastAccess: new Date(e.lastAccess).toISOString(),
        createdAt: manifest?.createdAt ?? new Date(e.addedAt).toISOString(),
        state: "ready",
      });
    }
    return out;
  }

  /**
   * The manifest of a snapshot: local, from a peer that holds it, or read
   * through from the origin (without pulling the files; an adopted upload
   * is pulled whole, since its manifest only exists once its files were
   * hashed).
   */
  async findManifest(name: string): Promise<{ manifest: ManifestWithDigest; source: Source }> {
    const { catalog, puller } = this.#o;
    const entry = catalog.get(name);
    if (entry) {
      this.#hit();
      return { manifest: await catalog.manifestOf(entry), source: "local" };
    }
    this.#miss();
    const pulling = puller.readyNow(name);
    if (pulling?.manifest) return { manifest: pulling.manifest, source: pulling.source };
    const fromPeer = await puller.peerManifest(name);
    if (fromPeer) return { manifest: fromPeer, source: "peer" };
    const remote = await puller.remoteManifest(name);
    if (remote) return { manifest: remote, source: "origin" };
    if (!this.#o.hasOrigin) throw notLocal(name);
    const outcome = await puller.start(name).done;
    return { manifest: outcome.manifest, source: outcome.source };
  }

  /** Size, sha256 and source of a file, without reading it (for HEAD). */
  async describeFile(name: string, file: string): Promise<FileInfo> {
    const { manifest, source } = await this.findManifest(name);
    const info = findFile(manifest, file);
    if (!info) throw noFile(name, file);
    const local = this.#o.catalog.get(name)?.digest === manifest.digest;
    return { size: info.size, sha256: info.sha256, source: local ? "local" : source };
  }

  /**
   * Opens a file for streaming; counts as a use. A snapshot that is not
   * local is pulled, and the file streams while the pull runs.
   */
  /** Opens a file of a cached snapshot; null when the snapshot is not cached here. */
  async openCached(name: string, file: string): Promise<OpenedFile | null> {
    if (!this.#o.catalog.has(name)) return null;
    return await this.#openLocal(name, file);
  }

  async openFile(name: string, file: string): Promise<OpenedFile> {
    if (this.#o.catalog.has(name)) return await this.#openLocal(name, file);
    this.#miss();
    return await this.#openPulling(name, file);
  }

  async #openLocal(name: string, file: string): Promise<OpenedFile> {
    const { catalog } = this.#o;
    const entry = catalog.get(name);
    if (!entry) throw notLocal(name);
    const { digest } = entry;
    const manifest = catalog.cachedManifest(digest) ?? await catalog.manifestOf(entry);
    const info = findFile(manifest, file);
    if (!info) throw noFile(name, file);
    const key = `${digest}/${file}`;
    let lease = catalog.handles.lease(key);
    try {
      lease ??= await catalog.handles.acquire(
        key,
        digest,
        () => catalog.store.openFile(name, file),
      );
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw notLocal(name); // evicted meanwhile
      throw err;
    }
    if (catalog.get(name)?.digest !== digest) {
      // Removed (and maybe published again) while the file was opening: the
      // handle may be of another snapshot's file. Drop it.
      lease.release();
      catalog.handles.forget(digest);
      throw notLocal(name);
    }
    this.#hit();
    catalog.touch(name);
    return new LocalFile(this, { name, digest, info, chunkSize: manifest.chunkSize, lease });
  }

  async #openPulling(name: string, file: string): Promise<OpenedFile> {
    const { puller, catalog, metrics } = this.#o;
    const pull = puller.start(name);
    const ready = await pull.ready;
    if (!ready.manifest) {
      // Adopting: the file's hash is known only at the end.
      await pull.done;
      return await this.#openLocal(name, file);
    }
    const { job, key, manifest, source } = ready;
    const index = job.fileIndex(file);
    if (index < 0) throw noFile(name, file);
    let handle: FileHandle;
    try {
      handle = await catalog.store.openPartialRead(key, file);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      await pull.done; // published meanwhile
      return await this.#openLocal(name, file);
    }
    const info = manifest.files[index]!;
    let used = false;
    const opened: OpenedFile = {
      name,
      file,
      size: info.size,
      sha256: info.sha256,
      source,
      async ready(start, end) {
        if (end >= start) await job.waitChunk(index, Math.floor(start / job.chunkSize));
      },
      stream(start, end) {
        used = true;
        return pullingFileStream(job, index, handle, start, end, {
          onClose: (sent) => metrics.servedBytes.inc(sent),
        });
      },
      async body(start, end) {
        try {
          await opened.ready(start, end);
        } catch (err) {
          opened.close();
          throw err;
        }
        return opened.stream(start, end);
      },
      close() {
        if (!used) handle.close();
        used = true;
      },
    };
    return opened;
  }

  /**
   * Makes a snapshot local and verified, from the origin when needed, and
   * answers its paths. With `wait: false` it answers at once; with `hot`,
   * once the hot chunks are local (`complete: false` until the rest is).
   */
  async pull(name: string, options: PullOptions = {}): Promise<PullResult | PullAccepted> {
    const { catalog, puller, clock } = this.#o;
    const started = clock.monotonic();
    const ms = () => Math.round(clock.monotonic() - started);
    const entry = catalog.get(name);
    if (entry) {
      const manifest = await catalog.manifestOf(entry);
      this.#hit();
      catalog.touch(name);
      return {
        name,
        digest: entry.digest,
        source: "local",
        bytes: {
          local: manifest.files.reduce((n, f) => n + storedBytes(f, manifest.chunkSize), 0),
          peer: 0,
          origin: 0,
        },
        ms: ms(),
        paths: this.paths(name, manifest),
        complete: true,
      };
    }
    this.#miss();
    const pull = puller.start(name);
    if (options.wait === false) {
      const ready = await pull.ready;
      return { name, digest: ready.manifest?.digest ?? null, state: "pulling" };
    }
    if (options.hot) {
      const ready = await pull.ready;
      if (ready.manifest) {
        const first = await Promise.race([
          ready.job.hotReady.then(() => "hot" as const),
          pull.done.then(() => "done" as const),
        ]);
        if (first === "hot") {
          return {
            name,
            digest: ready.manifest.digest,
            source: ready.source,
            bytes: { ...ready.job.progress.bySource },
            ms: ms(),
            paths: this.paths(name, ready.manifest),
            complete: false,
          };
        }
      }
    }
    const outcome = await pull.done;
    return {
      name,
      digest: outcome.digest,
      source: outcome.source,
      bytes: outcome.bytes,
      ms: ms(),
      paths: this.paths(name, outcome.manifest),
      complete: true,
    };
  }

  /** Absolute local paths of a snapshot's files. */
  paths(name: string, manifest: Manifest): Record<string, string> {
    const paths: Record<string, string> = {};
    for (const f of manifest.files) paths[f.name] = this.#o.catalog.store.filePath(name, f.name);
    return paths;
  }

  /** Rehashes the local files of `name` against its manifest; a bad copy is quarantined. */
  async verify(name: string): Promise<VerifyResult> {
    const { catalog } = this.#o;
    const entry = catalog.get(name);
    if (!entry) throw notLocal(name);
    let manifest: ManifestWithDigest;
    try {
      manifest = await catalog.store.readManifest(name, entry.digest);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw notLocal(name); // evicted meanwhile
      throw err;
    }
    const files: FileVerification[] = [];
    for (const file of manifest.files) {
      files.push(
        await verifyStoredFile(
          () => catalog.store.openFile(name, file.name),
          file,
          manifest.chunkSize,
        ),
      );
    }
    const ok = files.every((f) => f.ok);
    if (ok) catalog.trust.trustAll(entry.digest, manifest.files);
    // A snapshot evicted or deleted during the check is gone, not damaged.
    if (!ok && catalog.get(name)?.digest !== entry.digest) throw notLocal(name);
    if (!ok) {
      // No wrong byte is served: the snapshot leaves the cache (a later read
      // pulls a good copy from a peer or the origin).
      const bad = files.filter((f) => !f.ok).map((f) => f.file).join(", ");
      await this.quarantine(name, entry.digest, `verify: ${bad} differ from the manifest`);
    }
    return { name, digest: entry.digest, ok, files };
  }

  /**
   * A local copy failed verification: the snapshot leaves the cache (its
   * files go to `quarantine/`), and a good copy is fetched again in the
   * background when a peer or the origin may have it.
   */
  async quarantine(name: string, digest: string, why: string): Promise<void> {
    try {
      await this.#o.catalog.quarantine(name, digest, why);
    } catch (err) {
      this.#o.log.error("quarantine failed", { name, error: err });
      return;
    }
    this.#o.puller.refetch(name);
  }

  #hit(): void {
    this.counters.hits++;
    this.#o.metrics.cacheHits.inc();
  }

  #miss(): void {
    this.counters.misses++;
    this.#o.metrics.cacheMisses.inc();
  }
}

function noFile(name: string, file: string): SnapmeshError {
  return new SnapmeshError("file_not_found", `Snapshot "${name}" has no file "${file}"`);
}
