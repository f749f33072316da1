/**
 * A fault-injecting FileSystem for tests: fails an fsync, tears a write,
 * runs out of space, or "loses power" (drops bytes appended since the last
 * fsync of each file).
 *
 * @module
 */

import {
  DenoFileSystem,
  type FileHandle,
  type FileStat,
  type FileSystem,
  type OpenOptions,
} from "../../src/fs/mod.ts";

/** Faults armed on a {@linkcode FaultFileSystem}. */
export interface Faults {
  /** Fail the Nth sync from now (1 = the next one). */
  failSyncIn?: number;
  /** The Nth write from now writes only `tearBytes` bytes, then throws. */
  tearWriteIn?: number;
  tearBytes?: number;
  /** Writes fail with ENOSPC once this many more bytes were written. */
  spaceLeft?: number;
  /** Paths whose operations are affected; all when unset. */
  match?: (path: string) => boolean;
  /** Fail the Nth rename from now. */
  failRenameIn?: number;
}

/** Counts of operations seen. */
export interface FaultCounters {
  syncs: number;
  writes: number;
  renames: number;
}

class FaultHandle implements FileHandle {
  #inner: FileHandle;
  #path: string;
  #fs: FaultFileSystem;

  constructor(inner: FileHandle, path: string, fs: FaultFileSystem) {
    this.#inner = inner;
    this.#path = path;
    this.#fs = fs;
  }

  readAt(buffer: Uint8Array, offset: number): Promise<number> {
    return this.#inner.readAt(buffer, offset);
  }

  readAtSync(buffer: Uint8Array, offset: number): number {
    return this.#inner.readAtSync(buffer, offset);
  }

  async writeAt(data: Uint8Array, offset: number): Promise<void> {
    const decision = this.#fs.beforeWrite(this.#path, data.length);
    if (decision.tear !== null) {
      await this.#inner.writeAt(data.subarray(0, decision.tear), offset);
      throw new Error(`injected torn write of ${this.#path}`);
    }
    if (decision.enospc) {
      throw new Error(`ENOSPC: no space left on device (injected) writing ${this.#path}`);
    }
    await this.#inner.writeAt(data, offset);
  }

  truncate(length: number): Promise<void> {
    return this.#inner.truncate(length);
  }

  async sync(options?: { metadata?: boolean }): Promise<void> {
    this.#fs.beforeSync(this.#path);
    await this.#inner.sync(options);
    this.#fs.synced(this.#path, await this.#inner.size());
  }

  size(): Promise<number> {
    return this.#inner.size();
  }

  stat(): Promise<FileStat> {
    return this.#inner.stat();
  }

  close(): void {
    this.#inner.close();
  }
}

/** Wraps the real file system with armed faults. */
export class FaultFileSystem implements FileSystem {
  readonly #inner = new DenoFileSystem();
  faults: Faults = {};
  readonly counters: FaultCounters = { syncs: 0, writes: 0, renames: 0 };
  /** Size of each file at its last fsync through this file system. */
  readonly #syncedSize = new Map<string, number>();

  #applies(path: string): boolean {
    return this.faults.match ? this.faults.match(path) : true;
  }

  beforeWrite(path: string, length: number): { tear: number | null; enospc: boolean } {
    if (!this.#applies(path)) return { tear: null, enospc: false };
    this.counters.writes++;
    if (this.faults.tearWriteIn !== undefined && --this.faults.tearWriteIn === 0) {
      delete this.faults.tearWriteIn;
      return { tear: Math.min(this.faults.tearBytes ?? 0, length), enospc: false };
    }
    if (this.faults.spaceLeft !== undefined) {
      if (length > this.faults.spaceLeft) return { tear: null, enospc: true };
      this.faults.spaceLeft -= length;
    }
    return { tear: null, enospc: false };
  }

  beforeSync(path: string): void {
    if (!this.#applies(path)) return;
    this.counters.syncs++;
    if (this.faults.failSyncIn !== undefined && --this.faults.failSyncIn === 0) {
      delete this.faults.failSyncIn;
      throw new Error(`EIO: injected fsync failure on ${path}`);
    }
  }

  synced(path: string, size: number): void {
    this.#syncedSize.set(path, size);
  }

  /**
   * Simulates power loss for append-only files: each file written through
   * this file system is cut back to its size at its last fsync.
   */
  async dropUnsyncedAppends(paths: string[]): Promise<void> {
    for (const path of paths) {
      const synced = this.#syncedSize.get(path);
      if (synced === undefined) continue;
      const stat = await this.#inner.statOrNull(path);
      if (stat && stat.size > synced) await Deno.truncate(path, synced);
    }
  }

  async open(path: string, options?: OpenOptions): Promise<FileHandle> {
    return new FaultHandle(await this.#inner.open(path, options), path, this);
  }
  readFile(path: string): Promise<Uint8Array> {
    return this.#inner.readFile(path);
  }
  stat(path: string): Promise<FileStat> {
    return this.#inner.stat(path);
  }
  statOrNull(path: string): Promise<FileStat | null> {
    return this.#inner.statOrNull(path);
  }
  readDir(path: string): Promise<string[]> {
    return this.#inner.readDir(path);
  }
  mkdir(path: string): Promise<void> {
    return this.#inner.mkdir(path);
  }
  rename(from: string, to: string): Promise<void> {
    if (this.#applies(to)) {
      this.counters.renames++;
      if (this.faults.failRenameIn !== undefined && --this.faults.failRenameIn === 0) {
        delete this.faults.failRenameIn;
        return Promise.reject(new Error(`EIO: injected rename failure ${from} -> ${to}`));
      }
    }
    return this.#inner.rename(from, to);
  }
  remove(path: string): Promise<void> {
    return this.#inner.remove(path);
  }
  link(existing: string, created: string): Promise<void> {
    return this.#inner.link(existing, created);
  }
  chmod(path: string, mode: number): Promise<void> {
    return this.#inner.chmod(path, mode);
  }
  realPath(path: string): Promise<string> {
    return this.#inner.realPath(path);
  }
  async syncDir(path: string): Promise<void> {
    this.beforeSync(path);
    await this.#inner.syncDir(path);
  }
}
