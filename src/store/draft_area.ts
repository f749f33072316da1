/**
 * The drafts area of a data directory: uploads staged before a commit.
 *
 * ```
 * <data>/drafts/<name>/meta/<file>.json  staged file descriptions (the commit point of a PUT)
 * <data>/drafts/<name>/blobs/<id>        staged file bytes
 * ```
 *
 * @module
 */

import type { FileHandle, FileSystem } from "../fs/mod.ts";
import type { ChunkedFile } from "./chunk_writer.ts";
import { ensureDir, newestMtime, randomId, writeDurably } from "../fs/durable.ts";

/** A staged file of a draft, as recorded in its meta file. */
export interface DraftFile extends ChunkedFile {
  file: string;
  /** Blob id under `drafts/<name>/blobs/`, or null when the bytes equal the committed file. */
  blob: string | null;
}

/** What the drafts area needs from its data directory. */
export interface DraftAreaOptions {
  fs: FileSystem;
  /** The data directory. */
  root: string;
  /** Renames a path out of the way and deletes it in the background. */
  trash(path: string): Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Drafts and their blobs, under `<data>/drafts/`. */
export class DraftArea {
  readonly #fs: FileSystem;
  readonly #root: string;
  readonly #trash: (path: string) => Promise<void>;

  constructor(options: DraftAreaOptions) {
    this.#fs = options.fs;
    this.#root = options.root;
    this.#trash = options.trash;
  }

  dir(name: string): string {
    return `${this.#root}/drafts/${name}`;
  }

  /** Creates an empty blob for a new upload into the draft of `name`. */
  async createBlob(name: string): Promise<{ id: string; path: string; handle: FileHandle }> {
    const blobs = `${this.dir(name)}/blobs`;
    await ensureDir(this.#fs, this.#root, blobs);
    const id = randomId();
    const path = `${blobs}/${id}`;
    const handle = await this.#fs.open(path, { write: true, createNew: true, mode: 0o644 });
    return { id, path, handle };
  }

  /** Makes the directory entries of new blobs of `name` durable. */
  syncBlobs(name: string): Promise<void> {
    return this.#fs.syncDir(`${this.dir(name)}/blobs`);
  }

  blobPath(name: string, id: string): string {
    return `${this.dir(name)}/blobs/${id}`;
  }

  /** Deletes a blob (a failed or replaced upload). */
  removeBlob(name: string, id: string): Promise<void> {
    return this.#fs.remove(this.blobPath(name, id));
  }

  /**
   * Records a staged file durably: meta written to a temp file, fsynced and
   * renamed over the previous one. Returns the meta it replaced.
   */
  async writeFile(name: string, draft: DraftFile): Promise<DraftFile | null> {
    const metaDir = `${this.dir(name)}/meta`;
    await ensureDir(this.#fs, this.#root, metaDir);
    const target = `${metaDir}/${draft.file}.json`;
    const previous = await this.#readMeta(target);
    await writeDurably(this.#fs, target, encoder.encode(JSON.stringify(draft)));
    return previous;
  }

  /** The staged files of a draft, sorted by file name; empty when there is none. */
  async read(name: string): Promise<DraftFile[]> {
    const metaDir = `${this.dir(name)}/meta`;
    if (await this.#fs.statOrNull(metaDir) === null) return [];
    const out: DraftFile[] = [];
    for (const entry of await this.#fs.readDir(metaDir)) {
      if (!entry.endsWith(".json")) continue;
      const draft = await this.#readMeta(`${metaDir}/${entry}`);
      if (draft) out.push(draft);
    }
    return out.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  }

  /** Last time a file was staged into the draft of `name` (ms), or null. */
  touchedAt(name: string): Promise<number | null> {
    return newestMtime(this.#fs, `${this.dir(name)}/meta`);
  }

  /** Removes the draft directory of `name` when it holds no staged file. */
  async dropIfEmpty(name: string): Promise<void> {
    if ((await this.read(name)).length === 0) await this.drop(name);
  }

  /** Names that have a draft directory. */
  list(): Promise<string[]> {
    return this.#fs.readDir(`${this.#root}/drafts`);
  }

  /** Removes a whole draft durably. */
  async drop(name: string): Promise<void> {
    const dir = this.dir(name);
    if (await this.#fs.statOrNull(dir) === null) return;
    await this.#trash(dir);
    await this.#fs.syncDir(`${this.#root}/drafts`);
  }

  /**
   * Removes what a crash can leave in a draft: temp meta files, and blobs no
   * meta refers to. Returns the draft's files.
   */
  async repair(name: string): Promise<DraftFile[]> {
    const fs = this.#fs;
    const dir = this.dir(name);
    const metaDir = `${dir}/meta`;
    if (await fs.statOrNull(metaDir) !== null) {
      for (const entry of await fs.readDir(metaDir)) {
        if (entry.endsWith(".tmp")) await fs.remove(`${metaDir}/${entry}`);
      }
    }
    const files = await this.read(name);
    const referenced = new Set(files.map((f) => f.blob).filter((b) => b !== null));
    const blobsDir = `${dir}/blobs`;
    if (await fs.statOrNull(blobsDir) !== null) {
      for (const blob of await fs.readDir(blobsDir)) {
        if (!referenced.has(blob)) await fs.remove(`${blobsDir}/${blob}`);
      }
    }
    if (files.length === 0) await this.drop(name);
    return files;
  }

  async #readMeta(path: string): Promise<DraftFile | null> {
    let bytes: Uint8Array;
    try {
      bytes = await this.#fs.readFile(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
    return JSON.parse(decoder.decode(bytes)) as DraftFile;
  }
}
