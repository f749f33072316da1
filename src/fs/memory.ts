/**
 * An in-memory {@linkcode FileSystem} for tests and in-process clusters.
 *
 * Every operation completes without real I/O (its promise settles in
 * microtasks), so code using it stays deterministic under a VirtualClock.
 * Semantics follow POSIX (Linux) where the agent relies on them: inodes
 * with link counts, files that stay readable while open after being
 * unlinked or renamed over, atomic renames, sparse files. Errors are the
 * classes, codes and messages `Deno.*` gives for the same mistake.
 *
 * Not modelled: permissions (modes are stored and reported, never enforced;
 * no umask), symlinks, timestamps other than mtime, and durability (`sync`
 * and `syncDir` only count; nothing is lost on a "crash").
 *
 * It imports only types from `./mod.ts`, and `./mod.ts` does not re-export
 * it: import it from this file.
 *
 * @module
 */

// Every method is async so that errors reject (as Deno's do) and results
// arrive in a microtask; none awaits anything, as there is no I/O.
// deno-lint-ignore-file require-await

import { type Context, context, fsError } from "./_memory_errors.ts";
import { MemoryFileHandle } from "./_memory_handle.ts";
import {
  type DirNode,
  type MemoryFileSystemCounters,
  type MemoryFileSystemOptions,
  type Node,
  statOf,
  Volume,
} from "./_memory_volume.ts";
import type { FileHandle, FileStat, FileSystem, OpenOptions } from "./mod.ts";

export {
  MEMORY_DEV,
  MEMORY_PAGE_SIZE,
  type MemoryFileSystemCounters,
  type MemoryFileSystemOptions,
} from "./_memory_volume.ts";

/** Where a path leads: its parent directory, its last name and what that names (if anything). */
interface Location {
  /** null for the root. */
  parent: DirNode | null;
  name: string;
  node: Node | undefined;
  /** The normalised absolute path. */
  path: string;
  /** The last component is `.` or `..`. */
  dotted: boolean;
}

/**
 * A {@linkcode FileSystem} held in memory (see the module documentation for
 * what it models). Paths must be absolute. `readDir` lists names sorted
 * (UTF-16 code unit order), like `DenoFileSystem`, so runs are
 * deterministic; inode numbers are allocated in order and never reused.
 */
export class MemoryFileSystem implements FileSystem {
  readonly #volume: Volume;
  readonly #root: DirNode;

  constructor(options: MemoryFileSystemOptions = {}) {
    this.#volume = new Volume(options);
    this.#root = this.#volume.newDir();
    this.capacityBytes = options.capacityBytes ?? Infinity;
  }

  /** Bytes the files may hold (settable, to fill or free the disk in a test). */
  get capacityBytes(): number {
    return this.#volume.capacityBytes;
  }

  set capacityBytes(bytes: number) {
    if (!(bytes >= 0)) {
      throw new RangeError(`Cannot set capacityBytes to ${bytes}: not a number of bytes >= 0`);
    }
    this.#volume.capacityBytes = bytes;
  }

  /** Bytes held by files, including unlinked files still open. */
  get usedBytes(): number {
    return this.#volume.usedBytes;
  }

  /** Handles opened and not yet closed. */
  get openHandles(): number {
    return this.#volume.openHandles;
  }

  /** Operations counted since creation (the object is live; reset its fields at will). */
  get counters(): MemoryFileSystemCounters {
    return this.#volume.counters;
  }

  /** True when `path` names a file or directory. */
  exists(path: string): boolean {
    checkAbsolute(path);
    try {
      return this.#find(path, "stat") !== undefined;
    } catch {
      return false;
    }
  }

  /** Every file path, sorted (a file with several links appears under each name). */
  files(): string[] {
    const paths: string[] = [];
    function walk(dir: DirNode, prefix: string): void {
      for (const [name, node] of dir.entries) {
        if (node.kind === "file") paths.push(`${prefix}/${name}`);
        else walk(node, `${prefix}/${name}`);
      }
    }
    walk(this.#root, "");
    return paths.sort();
  }

  /** How many names the file at `path` has (its hard link count). */
  linkCount(path: string): number {
    const { node } = this.#locate(path, "stat");
    if (!node) throw fsError("ENOENT", context("stat", path));
    return node.kind === "file" ? node.nlink : 2 + countDirs(node);
  }

  async open(path: string, options: OpenOptions = {}): Promise<FileHandle> {
    const write = options.write ?? false;
    if ((options.create || options.createNew) && !write) {
      throw new Error("'create' or 'createNew' options require 'write' or 'append' to be true");
    }
    if (options.truncate && !write) {
      throw new Error("'truncate' option requires 'write' to be true");
    }
    const where = this.#locate(path, "open");
    let node = where.node;
    if (node) {
      if (options.createNew) throw fsError("EEXIST", context("open", path));
      if (node.kind === "dir" && write) throw fsError("EISDIR", context("open", path));
      if (node.kind === "file" && options.truncate) this.#volume.truncate(node, 0);
    } else {
      if (!options.create && !options.createNew) throw fsError("ENOENT", context("open", path));
      if (where.dotted || path.endsWith("/")) throw fsError("EISDIR", context("open", path));
      const file = this.#volume.newFile(options.mode ?? 0o644);
      this.#attach(where.parent!, where.name, file);
      node = file;
    }
    this.#volume.counters.opens++;
    this.#volume.openHandles++;
    if (node.kind === "file") node.opens++;
    return new MemoryFileHandle(this.#volume, { node, writable: write, path: where.path });
  }

  async readFile(path: string): Promise<Uint8Array> {
    const node = this.#existing(path, "readfile");
    if (node.kind === "dir") throw fsError("EISDIR", context("readfile", path));
    const bytes = new Uint8Array(node.size);
    this.#volume.read(node, bytes, 0);
    return bytes;
  }

  async stat(path: string): Promise<FileStat> {
    return statOf(this.#existing(path, "stat"));
  }

  async statOrNull(path: string): Promise<FileStat | null> {
    const node = this.#find(path, "stat");
    return node ? statOf(node) : null;
  }

  async readDir(path: string): Promise<string[]> {
    const node = this.#existing(path, "readdir");
    if (node.kind === "file") throw fsError("ENOTDIR", context("readdir", path));
    return [...node.entries.keys()].sort();
  }

  /** Creates a directory and its missing parents; an existing directory is fine. */
  async mkdir(path: string): Promise<void> {
    checkAbsolute(path);
    let dir = this.#root;
    const names = components(path);
    names.forEach((name, i) => {
      if (name === "..") {
        dir = dir.parent;
        return;
      }
      const node = dir.entries.get(name);
      if (node?.kind === "dir") {
        dir = node;
      } else if (node) {
        throw fsError(i === names.length - 1 ? "EEXIST" : "ENOTDIR", context("mkdir", path));
      } else {
        const created = this.#volume.newDir(dir);
        this.#attach(dir, name, created);
        dir = created;
      }
    });
  }

  /**
   * Moves a file or directory atomically. Onto an existing file it replaces
   * it (open handles keep the old inode); onto an empty directory (when
   * moving a directory) it replaces it; onto a non-empty directory it fails
   * with ENOTEMPTY; into its own subtree with EINVAL.
   */
  async rename(from: string, to: string): Promise<void> {
    const where = context("rename", from, to);
    const source = this.#locate(from, "rename", where);
    const target = this.#locate(to, "rename", where);
    const node = source.node;
    if (!node) throw fsError("ENOENT", where);
    if (source.parent === null || target.parent === null || source.dotted || target.dotted) {
      throw fsError("EBUSY", where);
    }
    // POSIX: two names of one inode (or one name twice): nothing to do.
    if (target.node === node) return;
    if (node.kind === "dir") {
      for (let dir = target.parent;; dir = dir.parent) {
        if (dir === node) throw fsError("EINVAL", where);
        if (dir === this.#root) break;
      }
      if (target.node?.kind === "file") throw fsError("ENOTDIR", where);
      if (target.node?.kind === "dir" && target.node.entries.size > 0) {
        throw fsError("ENOTEMPTY", where);
      }
    } else {
      if (to.endsWith("/") || from.endsWith("/")) throw fsError("ENOTDIR", where);
      if (target.node?.kind === "dir") throw fsError("EISDIR", where);
    }
    if (target.node) this.#unlink(target.parent, target.name);
    source.parent.entries.delete(source.name);
    source.parent.mtimeMs = this.#volume.now();
    this.#attach(target.parent, target.name, node);
  }

  /** Removes a file or a directory tree; a missing path is not an error. */
  async remove(path: string): Promise<void> {
    if (!this.#find(path, "remove")) return;
    const where = this.#locate(path, "remove");
    if (where.parent === null || where.dotted) throw fsError("EBUSY", context("remove", path));
    this.#unlink(where.parent, where.name);
  }

  /** Makes `created` a second name of the file `existing` (a hard link). */
  async link(existing: string, created: string): Promise<void> {
    const where = context("link", existing, created);
    const source = this.#locate(existing, "link", where);
    const target = this.#locate(created, "link", where);
    if (!source.node) throw fsError("ENOENT", where);
    if (source.node.kind === "dir") throw fsError("EPERM", where);
    if (target.node || target.parent === null) throw fsError("EEXIST", where);
    this.#attach(target.parent, target.name, source.node);
  }

  /** Stores the mode (the permission bits); the fake never enforces it. */
  async chmod(path: string, mode: number): Promise<void> {
    this.#existing(path, "chmod").mode = mode & 0o7777;
  }

  /** The normalised absolute path (`.`, `..` and repeated slashes resolved); fails when missing. */
  async realPath(path: string): Promise<string> {
    const where = this.#locate(path, "realpath");
    if (!where.node) throw fsError("ENOENT", context("realpath", path));
    return where.path;
  }

  /** Counts the call (`counters.syncDirs`); entries are always "durable" here. */
  async syncDir(path: string): Promise<void> {
    this.#existing(path, "open");
    this.#volume.counters.syncDirs++;
  }

  /** What `path` names, or undefined when it or a directory on the way is missing. */
  #find(path: string, op: string): Node | undefined {
    try {
      return this.#locate(path, op).node;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    }
  }

  #existing(path: string, op: string): Node {
    const { node } = this.#locate(path, op);
    if (!node) throw fsError("ENOENT", context(op, path));
    return node;
  }

  /**
   * Walks `path` from the root. Every component but the last must be an
   * existing directory (ENOENT or ENOTDIR otherwise, as on Linux, even when
   * a later `..` would climb back out of it).
   */
  #locate(path: string, op: string, where: Context = context(op, path)): Location {
    checkAbsolute(path);
    const names = components(path);
    const stack: [DirNode, string][] = [];
    let dir = this.#root;
    for (const name of names.slice(0, -1)) {
      if (name === "..") {
        dir = stack.pop()?.[0] ?? this.#root;
        continue;
      }
      const node = dir.entries.get(name);
      if (!node) throw fsError("ENOENT", where);
      if (node.kind === "file") throw fsError("ENOTDIR", where);
      stack.push([dir, name]);
      dir = node;
    }
    let last = names.at(-1);
    const dotted = /(^|\/)\.\.?$/.test(path);
    if (last === "..") {
      dir = stack.pop()?.[0] ?? this.#root;
      last = undefined;
    }
    const prefix = stack.map(([, name]) => `/${name}`).join("");
    if (last === undefined) {
      // The path names a directory reached through the stack: `/`, `/a/..`.
      const parentEntry = stack.at(-1);
      const name = parentEntry?.[1] ?? "";
      const parent = parentEntry ? parentEntry[0] : null;
      return { parent, name, node: dir, path: prefix || "/", dotted };
    }
    const node = dir.entries.get(last);
    if (node?.kind === "file" && (path.endsWith("/") || dotted)) throw fsError("ENOTDIR", where);
    return { parent: dir, name: last, node, path: `${prefix}/${last}`, dotted };
  }

  #attach(dir: DirNode, name: string, node: Node): void {
    dir.entries.set(name, node);
    dir.mtimeMs = this.#volume.now();
    if (node.kind === "file") node.nlink++;
    else node.parent = dir;
  }

  /** Removes a name; a directory's whole tree goes with it. */
  #unlink(dir: DirNode, name: string): void {
    const node = dir.entries.get(name);
    if (!node) return;
    dir.entries.delete(name);
    dir.mtimeMs = this.#volume.now();
    if (node.kind === "file") {
      node.nlink--;
      this.#volume.release(node);
      return;
    }
    for (const child of [...node.entries.keys()]) this.#unlink(node, child);
  }
}

function checkAbsolute(path: string): void {
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw new TypeError(`MemoryFileSystem needs absolute paths, got ${JSON.stringify(path)}`);
  }
}

/** The names of an absolute path, without empty and `.` components (`..` kept). */
function components(path: string): string[] {
  return path.split("/").filter((name) => name !== "" && name !== ".");
}

function countDirs(dir: DirNode): number {
  let count = 0;
  for (const node of dir.entries.values()) if (node.kind === "dir") count++;
  return count;
}
