/**
 * An open file of the in-memory file system. Private to `src/fs/`.
 *
 * @module
 */

// Every method is async so that errors reject (as Deno's do) and results
// arrive in a microtask; none awaits anything, as there is no I/O.
// deno-lint-ignore-file require-await

import { checkOffset, fsError } from "./_memory_errors.ts";
import { type FileNode, type Node, statOf, type Volume } from "./_memory_volume.ts";
import type { FileHandle, FileStat } from "./mod.ts";

/** How a handle was opened. */
export interface OpenedAs {
  node: Node;
  writable: boolean;
  /** The path it was opened by, for messages. */
  path: string;
}

/** A handle on an inode; the inode stays alive while it is open. */
export class MemoryFileHandle implements FileHandle {
  readonly #volume: Volume;
  readonly #node: Node;
  readonly #writable: boolean;
  readonly #path: string;
  #closed = false;

  constructor(volume: Volume, { node, writable, path }: OpenedAs) {
    this.#volume = volume;
    this.#node = node;
    this.#writable = writable;
    this.#path = path;
  }

  #open(): Node {
    if (this.#closed) throw new Deno.errors.BadResource("Bad resource ID");
    return this.#node;
  }

  #file(): FileNode {
    const node = this.#open();
    if (node.kind === "dir") throw fsError("EISDIR", undefined);
    return node;
  }

  async readAt(buffer: Uint8Array, offset: number): Promise<number> {
    return this.readAtSync(buffer, offset);
  }

  readAtSync(buffer: Uint8Array, offset: number): number {
    const file = this.#file();
    checkOffset(offset);
    return this.#volume.read(file, buffer, offset);
  }

  async writeAt(data: Uint8Array, offset: number): Promise<void> {
    const file = this.#file();
    if (!this.#writable) throw fsError("EBADF", undefined);
    checkOffset(offset);
    this.#volume.write(file, data, offset, this.#path);
  }

  async truncate(length: number): Promise<void> {
    const file = this.#file();
    // What Deno reports for ftruncate on a read-only descriptor.
    if (!this.#writable) throw fsError("EINVAL", undefined);
    checkOffset(length);
    this.#volume.truncate(file, length);
  }

  async sync(_options?: { metadata?: boolean }): Promise<void> {
    this.#open();
    this.#volume.counters.syncs++;
  }

  async size(): Promise<number> {
    const node = this.#open();
    return node.kind === "file" ? node.size : 0;
  }

  async stat(): Promise<FileStat> {
    return statOf(this.#open());
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#volume.openHandles--;
    if (this.#node.kind === "file") {
      this.#node.opens--;
      this.#volume.release(this.#node);
    }
  }
}
