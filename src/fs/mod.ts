/**
 * All file I/O of the agent goes through {@linkcode FileSystem}, so tests can
 * wrap it with a fault-injecting implementation (torn writes, failed fsyncs,
 * ENOSPC, dropped unsynced data).
 *
 * @module
 */

/**
 * An open file. Offsets are explicit; run one operation at a time per handle
 * (the real implementation positions the file before each read or write),
 * except {@linkcode FileHandle.readAtSync}, which is safe on a shared handle.
 */
export interface FileHandle {
  /** Reads up to `buffer.length` bytes at `offset`; returns 0 at end of file. */
  readAt(buffer: Uint8Array, offset: number): Promise<number>;
  /**
   * Reads like {@linkcode FileHandle.readAt}, on the calling thread. Nothing
   * else runs between positioning and reading, so handles shared by
   * concurrent readers use only this. It blocks the event loop for as long
   * as the read takes: meant for small reads of files in the page cache.
   */
  readAtSync(buffer: Uint8Array, offset: number): number;
  /** Writes all of `data` at `offset`. */
  writeAt(data: Uint8Array, offset: number): Promise<void>;
  /** Sets the file length (extending makes a hole). */
  truncate(length: number): Promise<void>;
  /**
   * Flushes data (and the metadata needed to read it) to stable storage;
   * with `metadata`, every inode change too (mode, times): fsync, not fdatasync.
   */
  sync(options?: { metadata?: boolean }): Promise<void>;
  /** Current length in bytes. */
  size(): Promise<number>;
  /** Metadata of the open file itself (not of whatever its path names now). */
  stat(): Promise<FileStat>;
  close(): void;
}

/** True when `err` says the disk is full (ENOSPC). */
export function isNoSpace(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return /ENOSPC|No space left on device|os error 28/.test(message);
}

/** How {@linkcode FileSystem.open} opens a file. */
export interface OpenOptions {
  /** Open for writing. @default false */
  write?: boolean;
  /** Create the file if missing. @default false */
  create?: boolean;
  /** Fail if the file exists. @default false */
  createNew?: boolean;
  /** Truncate to zero length. @default false */
  truncate?: boolean;
  /** Mode for a created file. @default 0o644 */
  mode?: number;
}

/** Metadata of a path. */
export interface FileStat {
  isFile: boolean;
  isDirectory: boolean;
  size: number;
  mode: number | null;
  /** 512-byte blocks allocated, where the platform reports them. */
  blocks: number | null;
  mtimeMs: number | null;
  /** Device and inode: together, the identity of a file (null where unknown). */
  dev: number | null;
  ino: number | null;
}

/** The file operations the agent needs, and nothing more. */
export interface FileSystem {
  open(path: string, options?: OpenOptions): Promise<FileHandle>;
  readFile(path: string): Promise<Uint8Array>;
  stat(path: string): Promise<FileStat>;
  /** Like {@linkcode FileSystem.stat}, but null when the path does not exist. */
  statOrNull(path: string): Promise<FileStat | null>;
  readDir(path: string): Promise<string[]>;
  mkdir(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  /** Removes a file or a directory tree; a missing path is not an error. */
  remove(path: string): Promise<void>;
  link(existing: string, created: string): Promise<void>;
  chmod(path: string, mode: number): Promise<void>;
  realPath(path: string): Promise<string>;
  /** Makes the entries of a directory (creations, renames, removals) durable. */
  syncDir(path: string): Promise<void>;
}

class DenoFileHandle implements FileHandle {
  #file: Deno.FsFile;

  constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  // lseek never blocks, so it runs inline: an async seek would cost a trip
  // through Deno's I/O thread pool per read (measured: ~20% of GET throughput).
  async readAt(buffer: Uint8Array, offset: number): Promise<number> {
    this.#file.seekSync(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < buffer.length) {
      const n = await this.#file.read(buffer.subarray(done));
      if (n === null) break;
      done += n;
    }
    return done;
  }

  readAtSync(buffer: Uint8Array, offset: number): number {
    this.#file.seekSync(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < buffer.length) {
      const n = this.#file.readSync(buffer.subarray(done));
      if (n === null) break;
      done += n;
    }
    return done;
  }

  async writeAt(data: Uint8Array, offset: number): Promise<void> {
    this.#file.seekSync(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < data.length) done += await this.#file.write(data.subarray(done));
  }

  truncate(length: number): Promise<void> {
    return this.#file.truncate(length);
  }

  sync(options: { metadata?: boolean } = {}): Promise<void> {
    return options.metadata ? this.#file.sync() : this.#file.syncData();
  }

  async size(): Promise<number> {
    return (await this.#file.stat()).size;
  }

  async stat(): Promise<FileStat> {
    return toStat(await this.#file.stat());
  }

  close(): void {
    try {
      this.#file.close();
    } catch (err) {
      if (!(err instanceof Deno.errors.BadResource)) throw err;
    }
  }
}

function toStat(info: Deno.FileInfo): FileStat {
  return {
    isFile: info.isFile,
    isDirectory: info.isDirectory,
    size: info.size,
    mode: info.mode,
    blocks: info.blocks,
    mtimeMs: info.mtime?.getTime() ?? null,
    dev: info.dev,
    ino: info.ino,
  };
}

/** The real file system, through `Deno.*`. */
export class DenoFileSystem implements FileSystem {
  async open(path: string, options: OpenOptions = {}): Promise<FileHandle> {
    const file = await Deno.open(path, {
      read: true,
      write: options.write ?? false,
      create: options.create ?? false,
      createNew: options.createNew ?? false,
      truncate: options.truncate ?? false,
      mode: options.mode ?? 0o644,
    });
    return new DenoFileHandle(file);
  }

  readFile(path: string): Promise<Uint8Array> {
    return Deno.readFile(path);
  }

  async stat(path: string): Promise<FileStat> {
    return toStat(await Deno.stat(path));
  }

  async statOrNull(path: string): Promise<FileStat | null> {
    try {
      return toStat(await Deno.stat(path));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
  }

  // Synchronous: the async iterator costs one trip to Rust per entry, 3x the
  // main-thread time of reading the whole directory at once (measured on
  // the 10,000 snapshot directories a restart lists).
  readDir(path: string): Promise<string[]> {
    try {
      const names: string[] = [];
      for (const entry of Deno.readDirSync(path)) names.push(entry.name);
      return Promise.resolve(names.sort());
    } catch (err) {
      return Promise.reject(err);
    }
  }

  mkdir(path: string): Promise<void> {
    return Deno.mkdir(path, { recursive: true });
  }

  rename(from: string, to: string): Promise<void> {
    return Deno.rename(from, to);
  }

  async remove(path: string): Promise<void> {
    try {
      await Deno.remove(path, { recursive: true });
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }

  link(existing: string, created: string): Promise<void> {
    return Deno.link(existing, created);
  }

  chmod(path: string, mode: number): Promise<void> {
    return Deno.chmod(path, mode);
  }

  realPath(path: string): Promise<string> {
    return Deno.realPath(path);
  }

  async syncDir(path: string): Promise<void> {
    const dir = await Deno.open(path, { read: true });
    try {
      await dir.sync();
    } finally {
      dir.close();
    }
  }
}
