/**
 * Drafts: files staged under a snapshot name before its commit, by upload
 * (`PUT`) or by import from a local path. Each staged file is durable when
 * acknowledged (bytes, directory entry and meta fsynced) and counts against
 * the cache budget; nothing is left behind when staging fails.
 *
 * @module
 */

import type { CacheBudget, Catalog } from "../cache/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import { normalizePath } from "../config/mod.ts";
import { errorMessage, SnapmeshError } from "../errors.ts";
import { type FileHandle, type FileSystem, isNoSpace } from "../fs/mod.ts";
import type { Logger } from "../log/mod.ts";
import { findFile, sameContent } from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import {
  type ByteSource,
  type DraftFile,
  emptySource,
  fileSource,
  type SnapshotStore,
  streamSource,
  writeChunked,
} from "../store/mod.ts";
import type { Clock } from "../util/clock.ts";
import { KeyedMutex } from "../util/mutex.ts";

/** Answer of a staged upload. */
export interface StageResult {
  file: string;
  size: number;
  sha256: string;
}

/** Options for {@linkcode Drafts}. */
export interface DraftsOptions {
  config: ServeConfig;
  fs: FileSystem;
  store: SnapshotStore;
  catalog: Catalog;
  budget: CacheBudget;
  log: Logger;
  metrics: Metrics;
  clock: Clock;
}

/** Staged files, by snapshot name. */
export class Drafts {
  readonly #config: ServeConfig;
  readonly #fs: FileSystem;
  readonly #store: SnapshotStore;
  readonly #catalog: Catalog;
  readonly #budget: CacheBudget;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #clock: Clock;
  readonly #locks = new KeyedMutex();
  /** Files being uploaded, by snapshot name. */
  readonly #uploads = new Map<string, Map<string, number>>();
  /** Names whose commit is running: no new file may be staged into them. */
  readonly #committing = new Set<string>();
  /** Committed bytes of staged files, by snapshot name. */
  readonly #bytes = new Map<string, number>();

  constructor(options: DraftsOptions) {
    this.#config = options.config;
    this.#fs = options.fs;
    this.#store = options.store;
    this.#catalog = options.catalog;
    this.#budget = options.budget;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#clock = options.clock;
  }

  /** Bytes of all staged files. */
  get totalBytes(): number {
    let n = 0;
    for (const bytes of this.#bytes.values()) n += bytes;
    return n;
  }

  /**
   * Repairs what a crash left in the drafts (temp metas, unreferenced
   * blobs), drops drafts a finished commit left behind, and reserves the
   * bytes of the others.
   */
  async recover(): Promise<void> {
    for (const name of await this.#store.drafts.list()) {
      const files = await this.#store.drafts.repair(name);
      if (files.length === 0) continue;
      const committed = this.#catalog.get(name);
      if (committed) {
        const manifest = await this.#catalog.manifestOf(committed);
        if (sameContent({ files: files.map(described) }, manifest)) {
          await this.#store.drafts.drop(name);
          continue;
        }
      }
      const bytes = files.reduce((n, f) => n + (f.blob ? f.storedBytes : 0), 0);
      this.#bytes.set(name, bytes);
      this.#budget.hold(bytes);
    }
  }

  /**
   * Streams `body` into the draft of `name` as `file`, replacing a staged
   * file of the same name. Nothing is left behind if it fails.
   */
  async stage(
    name: string,
    file: string,
    body: ReadableStream<Uint8Array> | null,
    options: { contentLength?: number | null } = {},
  ): Promise<StageResult> {
    const length = options.contentLength ?? null;
    if (length !== null && length > this.#config.maxFileSize) throw this.#tooLarge(length);
    return await this.#stage(name, file, body ? streamSource(body) : emptySource, length);
  }

  /** Ingests a local file under `--import-root` without piping it through HTTP. */
  async importFile(name: string, file: string, path: unknown): Promise<StageResult> {
    const root = this.#config.importRoot;
    if (root === null) {
      throw new SnapmeshError(
        "path_not_allowed",
        "Import by path is disabled on this node: start it with --import-root DIR",
      );
    }
    if (typeof path !== "string" || !path.startsWith("/") || path.includes("\0")) {
      throw new SnapmeshError("invalid_body", 'Body must be {"path": "/absolute/path"}');
    }
    const denied = () =>
      new SnapmeshError(
        "path_not_allowed",
        `Cannot import ${path}: only files under the import root ${root} may be imported`,
      );
    // Lexically first, so the answer for a path outside the root never
    // depends on whether it exists.
    if (!isUnder(normalizePath(path), normalizePath(root))) throw denied();
    let realRoot: string;
    try {
      realRoot = await this.#fs.realPath(root);
    } catch {
      throw new SnapmeshError("path_not_allowed", `The import root ${root} does not exist`);
    }
    // Resolve, check, open, then prove that the opened file is the one under
    // the root: a check alone could be raced by swapping a directory for a
    // symlink before the open. The open file's device and inode must match
    // what the path resolves to, before and after the open. (Checking the
    // type before opening keeps a FIFO from ever being opened; at worst a
    // perfectly timed swap can stall one request, never leak a byte.)
    const resolve = async () => {
      let real: string;
      let stat;
      try {
        real = await this.#fs.realPath(path);
        stat = await this.#fs.stat(real);
      } catch (err) {
        throw importError(path, err);
      }
      if (!isUnder(real, realRoot)) throw denied();
      if (!stat.isFile) {
        throw new SnapmeshError("invalid_body", `Cannot import ${path}: not a regular file`);
      }
      return { real, stat };
    };
    const before = await resolve();
    if (before.stat.size > this.#config.maxFileSize) throw this.#tooLarge(before.stat.size);
    let handle: FileHandle;
    try {
      handle = await this.#fs.open(before.real);
    } catch (err) {
      throw importError(path, err);
    }
    try {
      const opened = await handle.stat();
      const after = await resolve();
      for (const seen of [before.stat, after.stat]) {
        if (!opened.isFile || seen.dev !== opened.dev || seen.ino !== opened.ino) {
          throw new SnapmeshError(
            "path_not_allowed",
            `Cannot import ${path}: it changed while it was being opened`,
          );
        }
      }
      return await this.#stage(name, file, fileSource(handle), opened.size);
    } finally {
      handle.close();
    }
  }

  /** Drops the uncommitted draft of `name`. */
  async drop(name: string): Promise<{ name: string; files: string[] }> {
    return await this.#locks.run(name, async () => {
      this.assertNoUpload(name);
      const files = await this.#store.drafts.read(name);
      if (files.length === 0) {
        throw new SnapmeshError("draft_not_found", `Snapshot "${name}" has no draft`);
      }
      await this.discardLocked(name);
      return { name, files: files.map((f) => f.file) };
    });
  }

  /**
   * Drops drafts nobody staged a file into for `--draft-ttl`: an abandoned
   * upload must not hold cache space forever. Returns the names dropped.
   */
  async sweep(): Promise<string[]> {
    const dropped: string[] = [];
    const cutoff = this.#clock.now() - this.#config.draftTtlMs;
    for (const name of await this.#store.drafts.list()) {
      if (this.#uploads.has(name)) continue;
      await this.#locks.run(name, async () => {
        const touched = await this.#store.drafts.touchedAt(name);
        if (touched === null || touched > cutoff || this.#uploads.has(name)) return;
        await this.discardLocked(name);
        dropped.push(name);
        this.#log.info("dropped an abandoned draft", {
          name,
          idleMs: this.#clock.now() - touched,
        });
      });
    }
    return dropped;
  }

  /**
   * Runs `fn` holding the lock of the draft of `name`, with new uploads into
   * the name refused meanwhile (a commit). Fails when an upload is running.
   */
  async committing<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return await this.#locks.run(name, async () => {
      this.assertNoUpload(name);
      // From here until the commit ends, a new upload into the name is refused.
      this.#committing.add(name);
      try {
        return await fn();
      } finally {
        this.#committing.delete(name);
      }
    });
  }

  /** Removes the draft of `name` and gives its bytes back; under its lock. */
  async discardLocked(name: string): Promise<void> {
    await this.#store.drafts.drop(name);
    this.#budget.release(this.#bytes.get(name) ?? 0);
    this.#bytes.delete(name);
  }

  /**
   * Forgets the bytes of a committed draft: they now belong to the snapshot
   * (its files are links to them). Returns how many bytes the draft held.
   */
  handOver(name: string): number {
    const bytes = this.#bytes.get(name) ?? 0;
    this.#bytes.delete(name);
    return bytes;
  }

  /** Throws `upload_in_progress` when a file of `name` is still being written. */
  assertNoUpload(name: string): void {
    const busy = this.#uploads.get(name);
    if (busy && busy.size > 0) {
      const file = [...busy.keys()][0];
      throw new SnapmeshError(
        "upload_in_progress",
        `Cannot commit snapshot "${name}": file "${file}" is still being written`,
      );
    }
  }

  async #stage(
    name: string,
    file: string,
    source: ByteSource,
    expectedSize: number | null,
  ): Promise<StageResult> {
    const committed = this.#catalog.get(name);
    if (committed) return await this.#stageAgainstCommitted(name, file, source, expectedSize);
    if (this.#committing.has(name)) throw beingCommitted(name);

    const uploads = this.#uploads.get(name) ?? new Map<string, number>();
    this.#uploads.set(name, uploads);
    uploads.set(file, (uploads.get(file) ?? 0) + 1);
    let reserved = 0;
    let blob: { id: string; path: string; handle: FileHandle } | null = null;
    let syncer: FileHandle | null = null;
    try {
      blob = await this.#store.drafts.createBlob(name);
      const flusher = syncer = await this.#fs.open(blob.path);
      const written = await writeChunked(source, blob.handle, {
        chunkSize: this.#config.chunkSize,
        maxSize: this.#config.maxFileSize,
        beforeWrite: async (bytes) => {
          await this.#budget.reserve(bytes);
          reserved += bytes;
        },
        backgroundSync: () => flusher.sync(),
      });
      if (expectedSize !== null && written.size !== expectedSize) {
        throw new SnapmeshError(
          "invalid_body",
          `Body ended after ${written.size} of ${expectedSize} bytes`,
        );
      }
      await blob.handle.sync();
      blob.handle.close();
      await this.#store.drafts.syncBlobs(name); // the blob's name, before the meta that points at it
      const draft: DraftFile = { ...written, file, blob: blob.id };
      await this.#locks.run(name, async () => {
        // The name may have been committed (or pulled) while the bytes streamed.
        if (this.#catalog.has(name) || this.#committing.has(name)) throw beingCommitted(name);
        const previous = await this.#store.drafts.writeFile(name, draft);
        this.#bytes.set(name, (this.#bytes.get(name) ?? 0) + written.storedBytes);
        if (previous?.blob) {
          await this.#store.drafts.removeBlob(name, previous.blob);
          this.#bytes.set(name, this.#bytes.get(name)! - previous.storedBytes);
          this.#budget.release(previous.storedBytes);
        }
      });
      blob = null;
      reserved = 0;
      this.#metrics.ingestedBytes.inc({ source: "local" }, written.storedBytes);
      return { file, size: written.size, sha256: written.sha256 };
    } catch (err) {
      if (isNoSpace(err)) {
        throw new SnapmeshError(
          "insufficient_storage",
          `The disk under ${this.#config.dataDir} is full: ${errorMessage(err)}`,
        );
      }
      throw err;
    } finally {
      syncer?.close();
      if (blob) {
        blob.handle.close();
        await this.#store.drafts.removeBlob(name, blob.id).catch(() => {});
        await this.#locks.run(name, () => this.#store.drafts.dropIfEmpty(name)).catch(() => {});
      }
      if (reserved > 0) this.#budget.release(reserved);
      const left = (uploads.get(file) ?? 1) - 1;
      if (left > 0) uploads.set(file, left);
      else uploads.delete(file);
      if (uploads.size === 0) this.#uploads.delete(name);
    }
  }

  /**
   * Staging a file of an already committed snapshot: accepted only when the
   * bytes are identical (so a retried `put` succeeds); nothing is written.
   */
  async #stageAgainstCommitted(
    name: string,
    file: string,
    source: ByteSource,
    expectedSize: number | null,
  ): Promise<StageResult> {
    const entry = this.#catalog.get(name)!;
    const manifest = await this.#catalog.manifestOf(entry);
    const existing = findFile(manifest, file);
    const conflict = (why: string) =>
      new SnapmeshError(
        "snapshot_exists",
        `Snapshot "${entry.name}" is already committed with other content: ${why}`,
        { digest: entry.digest },
      );
    if (!existing) throw conflict(`it has no file "${file}"`);
    if (expectedSize !== null && expectedSize !== existing.size) {
      throw conflict(`"${file}" has ${existing.size} bytes, not ${expectedSize}`);
    }
    const hashed = await writeChunked(source, null, {
      chunkSize: manifest.chunkSize,
      maxSize: this.#config.maxFileSize,
    });
    if (hashed.sha256 !== existing.sha256) throw conflict(`"${file}" differs`);
    await this.#locks.run(entry.name, async () => {
      await this.#store.drafts.writeFile(entry.name, { ...hashed, file, blob: null });
    });
    return { file, size: hashed.size, sha256: hashed.sha256 };
  }

  #tooLarge(size: number): SnapmeshError {
    return new SnapmeshError(
      "too_large",
      `File of ${size} bytes is larger than the ${this.#config.maxFileSize}-byte limit ` +
        `(--max-file-size)`,
      { limit: this.#config.maxFileSize },
    );
  }
}

/** A staged file as `sameContent` compares it. */
export function described(f: DraftFile): { name: string; size: number; sha256: string } {
  return { name: f.file, size: f.size, sha256: f.sha256 };
}

function beingCommitted(name: string): SnapmeshError {
  return new SnapmeshError(
    "snapshot_exists",
    `Snapshot "${name}" is committed or being committed: files cannot be staged into it`,
  );
}

/** True when absolute path `path` is strictly inside directory `root`. */
function isUnder(path: string, root: string): boolean {
  return path.startsWith(root.endsWith("/") ? root : `${root}/`);
}

function importError(path: string, err: unknown): SnapmeshError {
  if (err instanceof SnapmeshError) return err;
  if (err instanceof Deno.errors.NotFound) {
    return new SnapmeshError("invalid_body", `Cannot import ${path}: no such file`);
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return new SnapmeshError("path_not_allowed", `Cannot import ${path}: permission denied`);
  }
  return new SnapmeshError("invalid_body", `Cannot import ${path}: ${errorMessage(err)}`);
}
