/**
 * The inode table of the in-memory file system: files (sparse pages, link
 * and open counts), directories, and the accounting of the bytes they hold.
 * Private to `src/fs/`.
 *
 * @module
 */

import { systemClock } from "../util/clock.ts";
import { context, fsError } from "./_memory_errors.ts";
import type { FileStat } from "./mod.ts";

/**
 * File data lives in pages of this size. A page never written costs nothing
 * and reads as zeros; a written page costs from its start to the last byte
 * written in it (so a dense file costs exactly its size).
 */
export const MEMORY_PAGE_SIZE = 64 * 1024;

/** The `dev` of every {@linkcode MemoryFileSystem} stat. */
export const MEMORY_DEV = 1;

/** Options for {@linkcode MemoryFileSystem}. */
export interface MemoryFileSystemOptions {
  /** Wall time for modification times, in ms since the epoch. @default systemClock.now */
  now?: () => number;
  /** Bytes the files may hold; a write beyond fails with ENOSPC. @default Infinity */
  capacityBytes?: number;
}

/** Operations counted by a {@linkcode MemoryFileSystem}. */
export interface MemoryFileSystemCounters {
  /** Successful `open` calls. */
  opens: number;
  /** `FileHandle.sync` calls. */
  syncs: number;
  /** `FileSystem.syncDir` calls. */
  syncDirs: number;
}

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
/** A page of file data. */
export interface Page {
  /** Grows up to MEMORY_PAGE_SIZE; bytes from `length` on are always zero. */
  data: Uint8Array;
  /** Bytes written (or kept by a truncate) from the page's start. */
  length: number;
}
/** A file's inode. */
export interface FileNode {
  kind: "file";
  ino: number;
  mode: number;
  mtimeMs: number;
  /** Names pointing at this inode. */
  nlink: number;
  /** Open handles. The data is freed when both counts reach 0. */
  opens: number;
  size: number;
  pages: Map<number, Page>;
  /** Sum of the pages' lengths: what counts toward `usedBytes`. */
  stored: number;
}
/** A directory's inode. */
export interface DirNode {
  kind: "dir";
  ino: number;
  mode: number;
  mtimeMs: number;
  entries: Map<string, Node>;
  /** The root's parent is itself. A directory has one name, so one parent. */
  parent: DirNode;
}
/** An inode. */
export type Node = FileNode | DirNode;
/** Shared by the file system and its handles: the inode table's accounting and clock. */
export class Volume {
  readonly now: () => number;
  capacityBytes: number;
  usedBytes = 0;
  openHandles = 0;
  readonly counters: MemoryFileSystemCounters = { opens: 0, syncs: 0, syncDirs: 0 };
  #nextIno = 1;

  constructor(options: MemoryFileSystemOptions) {
    this.now = options.now ?? systemClock.now;
    this.capacityBytes = options.capacityBytes ?? Infinity;
  }

  newFile(mode: number): FileNode {
    return {
      kind: "file",
      ino: this.#nextIno++,
      mode: mode & 0o7777,
      mtimeMs: this.now(),
      nlink: 0,
      opens: 0,
      size: 0,
      pages: new Map(),
      stored: 0,
    };
  }

  /** A directory under `parent`, or the root (its own parent) without one. */
  newDir(parent?: DirNode): DirNode {
    const ino = this.#nextIno++;
    const entries = new Map<string, Node>();
    const dir: DirNode = {
      kind: "dir",
      ino,
      mode: 0o755,
      mtimeMs: this.now(),
      entries,
      parent: parent!,
    };
    dir.parent = parent ?? dir;
    return dir;
  }

  /** Frees a file's data once no name and no handle refers to it. */
  release(file: FileNode): void {
    if (file.nlink > 0 || file.opens > 0) return;
    this.usedBytes -= file.stored;
    file.stored = 0;
    file.pages.clear();
  }

  read(file: FileNode, buffer: Uint8Array, offset: number): number {
    const end = Math.min(file.size, offset + buffer.length);
    for (let pos = offset; pos < end;) {
      const index = Math.floor(pos / MEMORY_PAGE_SIZE);
      const inPage = pos - index * MEMORY_PAGE_SIZE;
      const n = Math.min(end - pos, MEMORY_PAGE_SIZE - inPage);
      const target = buffer.subarray(pos - offset, pos - offset + n);
      const page = file.pages.get(index);
      const available = page ? Math.max(0, Math.min(n, page.length - inPage)) : 0;
      if (page && available > 0) target.set(page.data.subarray(inPage, inPage + available));
      target.fill(0, available);
      pos += n;
    }
    return Math.max(0, end - offset);
  }

  /** Writes all of `data` or, when it would not fit, nothing. */
  write(file: FileNode, data: Uint8Array, offset: number, path: string): void {
    if (data.length === 0) return;
    const end = offset + data.length;
    const first = Math.floor(offset / MEMORY_PAGE_SIZE);
    const last = Math.floor((end - 1) / MEMORY_PAGE_SIZE);
    let growth = 0;
    for (let index = first; index <= last; index++) {
      const pageEnd = Math.min(MEMORY_PAGE_SIZE, end - index * MEMORY_PAGE_SIZE);
      growth += Math.max(0, pageEnd - (file.pages.get(index)?.length ?? 0));
    }
    if (this.usedBytes + growth > this.capacityBytes) {
      throw fsError(
        "ENOSPC",
        context("write", path),
        `ENOSPC: ${this.usedBytes} of ${this.capacityBytes} bytes used, this write needs ${growth} more`,
      );
    }
    for (let index = first; index <= last; index++) {
      const base = index * MEMORY_PAGE_SIZE;
      const from = Math.max(offset, base) - base;
      const to = Math.min(end, base + MEMORY_PAGE_SIZE) - base;
      let page = file.pages.get(index);
      if (!page) {
        page = { data: new Uint8Array(to), length: 0 };
        file.pages.set(index, page);
      } else if (page.data.length < to) {
        // Grow geometrically, so appending in small writes stays linear.
        const grown = new Uint8Array(
          Math.min(MEMORY_PAGE_SIZE, Math.max(to, page.data.length * 2)),
        );
        grown.set(page.data);
        page.data = grown;
      }
      page.data.set(data.subarray(base + from - offset, base + to - offset), from);
      page.length = Math.max(page.length, to);
    }
    file.size = Math.max(file.size, end);
    file.stored += growth;
    this.usedBytes += growth;
    file.mtimeMs = this.now();
  }

  /** Sets the length: shrinking frees the pages past the end, extending makes a hole. */
  truncate(file: FileNode, length: number): void {
    if (length === file.size) return;
    if (length < file.size) {
      const firstDropped = Math.ceil(length / MEMORY_PAGE_SIZE);
      let freed = 0;
      for (const [index, page] of file.pages) {
        if (index >= firstDropped) {
          freed += page.length;
          file.pages.delete(index);
        }
      }
      const tail = file.pages.get(Math.floor(length / MEMORY_PAGE_SIZE));
      const keep = length % MEMORY_PAGE_SIZE;
      if (tail && tail.length > keep) {
        tail.data.fill(0, keep, tail.length);
        freed += tail.length - keep;
        tail.length = keep;
      }
      file.stored -= freed;
      this.usedBytes -= freed;
    }
    file.size = length;
    file.mtimeMs = this.now();
  }
}
/** `stat` of an inode. */
export function statOf(node: Node): FileStat {
  const file = node.kind === "file" ? node : null;
  return {
    isFile: file !== null,
    isDirectory: file === null,
    size: file?.size ?? 0,
    mode: (file ? S_IFREG : S_IFDIR) | node.mode,
    blocks: file ? Math.ceil(file.stored / 512) : 0,
    mtimeMs: node.mtimeMs,
    dev: MEMORY_DEV,
    ino: node.ino,
  };
}
