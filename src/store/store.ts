/**
 * The on-disk layout of a data directory and every operation on it:
 *
 * ```
 * <data>/LOCK                            one agent per data directory
 * <data>/journal/{wal,checkpoint}        the write-ahead journal
 * <data>/snapshots/<name>/manifest.json  committed, immutable, mode 0444
 * <data>/snapshots/<name>/manifest.sig   publishers' signatures of its digest (when signed)
 * <data>/snapshots/<name>/files/<file>   sparse: zero chunks are holes
 * <data>/drafts/<name>/meta/<file>.json  staged file descriptions (the commit point of a PUT)
 * <data>/drafts/<name>/blobs/<id>        staged file bytes
 * <data>/partial/<key>/                 a pull in progress, keyed by snapshot digest
 *                                        (or "adopt-<name>"): plan.json, manifest.json
 *                                        once known, files/<file> (sparse, filled chunk by chunk)
 * <data>/tmp/                            publish staging and trash; emptied at start
 * ```
 *
 * Names reaching this module are validated already; every path is built from
 * validated segments under the data directory.
 *
 * @module
 */

import type { FileHandle, FileSystem } from "../fs/mod.ts";
import {
  decodeManifest,
  encodeManifest,
  type Manifest,
  type ManifestWithDigest,
} from "../manifest/mod.ts";
import {
  decodeSignatureFile,
  encodeSignatureFile,
  SIGNATURE_FILE,
  type SnapshotSignature,
} from "../security/snapshot_signing.ts";
import { DraftArea } from "./draft_area.ts";
import { ensureDir, newestMtime, randomId, writeDurably } from "../fs/durable.ts";

export type { DraftFile } from "./draft_area.ts";

/** What a partial pull will produce, written before any chunk is fetched. */
export interface PartialPlan {
  name: string;
  /** Snapshot digest, or null while adopting (the manifest is built at the end). */
  digest: string | null;
  /** The manifest's canonical JSON, when known. */
  manifest: string | null;
  files: { name: string; size: number }[];
  /** Bytes the pull may write (reserved in the cache budget). */
  reservedBytes: number;
}

/** A snapshot directory prepared in `tmp/`, ready to be renamed into place. */
export interface PreparedPublish {
  name: string;
  dir: string;
  manifestBytes: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Files and directories of one data directory. */
export class SnapshotStore {
  readonly root: string;
  /** Uploads staged into drafts: blobs and their meta files. */
  readonly drafts: DraftArea;
  readonly #fs: FileSystem;

  constructor(fs: FileSystem, root: string) {
    this.#fs = fs;
    this.root = root;
    this.drafts = new DraftArea({ fs, root, trash: (path) => this.moveToTrash(path) });
  }

  get fs(): FileSystem {
    return this.#fs;
  }

  get journalDir(): string {
    return `${this.root}/journal`;
  }

  get tmpDir(): string {
    return `${this.root}/tmp`;
  }

  snapshotDir(name: string): string {
    return `${this.root}/snapshots/${name}`;
  }

  filePath(name: string, file: string): string {
    return `${this.root}/snapshots/${name}/files/${file}`;
  }

  /** A fresh unique path under `tmp/`. */
  tmpPath(prefix: string): string {
    return `${this.tmpDir}/${prefix}-${randomId()}`;
  }

  /** Creates the layout and empties `tmp/` (leftovers of a crash). */
  async init(): Promise<{ removedTemp: number }> {
    const fs = this.#fs;
    for (const dir of ["snapshots", "drafts", "partial", "tmp", "journal"]) {
      await fs.mkdir(`${this.root}/${dir}`);
    }
    const leftovers = await fs.readDir(this.tmpDir);
    for (const name of leftovers) await fs.remove(`${this.tmpDir}/${name}`);
    await fs.syncDir(this.root);
    return { removedTemp: leftovers.length };
  }

  // --- committed snapshots -------------------------------------------------

  /** Names of the snapshot directories present on disk. */
  listSnapshotDirs(): Promise<string[]> {
    return this.#fs.readDir(`${this.root}/snapshots`);
  }

  /** Reads and checks a committed manifest (against `digest` when given). */
  async readManifest(name: string, digest?: string): Promise<ManifestWithDigest> {
    const bytes = await this.#fs.readFile(`${this.snapshotDir(name)}/manifest.json`);
    return decodeManifest(bytes, digest);
  }

  /** The signatures kept beside a committed manifest (empty when unsigned or not for `digest`). */
  async readSignatures(name: string, digest: string): Promise<SnapshotSignature[]> {
    try {
      const bytes = await this.#fs.readFile(`${this.snapshotDir(name)}/${SIGNATURE_FILE}`);
      return decodeSignatureFile(bytes, digest);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      throw err;
    }
  }

  /**
   * Writes the signatures of `digest` into a directory about to be
   * published (a prepared or finished partial one), fsynced with the
   * directory: the rename that publishes it publishes them too.
   */
  async writeSignatures(
    dir: string,
    digest: string,
    signatures: readonly SnapshotSignature[],
  ): Promise<void> {
    const path = `${dir}/${SIGNATURE_FILE}`;
    // A crash between this write and the rename leaves one behind; replace it.
    await this.#fs.remove(path);
    const handle = await this.#fs.open(path, { write: true, createNew: true, mode: 0o444 });
    try {
      await handle.writeAt(encodeSignatureFile(digest, signatures), 0);
      await handle.sync();
    } finally {
      handle.close();
    }
    await this.#fs.syncDir(dir);
  }

  /** Opens a committed file for reading. */
  openFile(name: string, file: string): Promise<FileHandle> {
    return this.#fs.open(this.filePath(name, file));
  }

  /**
   * Builds a complete snapshot directory in `tmp/` from files that are
   * already durable (hard links, no copy), makes it read-only and durable.
   * Nothing is visible until {@linkcode SnapshotStore.install}.
   */
  async preparePublish(
    manifest: Manifest,
    sources: ReadonlyMap<string, string>,
  ): Promise<PreparedPublish> {
    const fs = this.#fs;
    const dir = this.tmpPath("publish");
    const filesDir = `${dir}/files`;
    await fs.mkdir(filesDir);
    try {
      for (const file of manifest.files) {
        const source = sources.get(file.name);
        if (source === undefined) throw new Error(`No staged bytes for file "${file.name}"`);
        const target = `${filesDir}/${file.name}`;
        await fs.link(source, target);
        await fs.chmod(target, 0o444);
        // The mode is inode metadata, which no directory fsync covers.
        const handle = await fs.open(target);
        try {
          await handle.sync({ metadata: true });
        } finally {
          handle.close();
        }
      }
      const manifestBytes = encodeManifest(manifest);
      const manifestPath = `${dir}/manifest.json`;
      const handle = await fs.open(manifestPath, { write: true, createNew: true, mode: 0o444 });
      try {
        await handle.writeAt(manifestBytes, 0);
        await handle.sync();
      } finally {
        handle.close();
      }
      await fs.syncDir(filesDir);
      await fs.syncDir(dir);
      return { name: manifest.name, dir, manifestBytes };
    } catch (err) {
      await fs.remove(dir);
      throw err;
    }
  }

  /** Renames a prepared directory into `snapshots/` and makes the rename durable. */
  async install(prepared: PreparedPublish): Promise<void> {
    const target = this.snapshotDir(prepared.name);
    // A leftover directory of the same name is never acknowledged (the
    // journal says the name is absent): move it out of the way first.
    if (await this.#fs.statOrNull(target) !== null) await this.moveToTrash(target);
    await this.#fs.rename(prepared.dir, target);
    await this.#fs.syncDir(`${this.root}/snapshots`);
  }

  /** Removes a prepared directory that will not be installed. */
  discard(prepared: PreparedPublish): Promise<void> {
    return this.#fs.remove(prepared.dir);
  }

  /**
   * Takes a snapshot directory out of `snapshots/` durably, then deletes it
   * in the background. Open readers keep their files until they close them.
   */
  async removeSnapshot(name: string): Promise<void> {
    const dir = this.snapshotDir(name);
    if (await this.#fs.statOrNull(dir) === null) return;
    await this.moveToTrash(dir);
    await this.#fs.syncDir(`${this.root}/snapshots`);
  }

  /**
   * Moves a snapshot directory to `quarantine/<name>.<time>[.<why>]` (kept
   * for inspection, outside the cache budget) and returns where it went.
   */
  async quarantine(name: string, why?: string): Promise<string> {
    const dir = `${this.root}/quarantine`;
    await this.#ensureDir(dir);
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    const target = `${dir}/${name}.${stamp}${why ? `.${why}` : ""}-${randomId().slice(0, 6)}`;
    await this.#fs.rename(this.snapshotDir(name), target);
    await this.#fs.syncDir(`${this.root}/snapshots`);
    await this.#fs.syncDir(dir);
    return target;
  }

  /** Renames `path` into `tmp/` and deletes it without waiting. */
  async moveToTrash(path: string): Promise<void> {
    const trash = this.tmpPath("trash");
    await this.#fs.rename(path, trash);
    this.#fs.remove(trash).catch(() => {});
  }

  // --- partial pulls ----------------------------------------------------------

  partialDir(key: string): string {
    return `${this.root}/partial/${key}`;
  }

  partialFilePath(key: string, file: string): string {
    return `${this.root}/partial/${key}/files/${file}`;
  }

  /** Keys of the partial pulls on disk. */
  listPartials(): Promise<string[]> {
    return this.#fs.readDir(`${this.root}/partial`);
  }

  /**
   * Creates (or reopens, keeping what it holds) the partial directory of a
   * pull: its plan and one sparse file per snapshot file, at full size.
   */
  async preparePartial(key: string, plan: PartialPlan): Promise<void> {
    const fs = this.#fs;
    const dir = this.partialDir(key);
    await this.#ensureDir(`${dir}/files`);
    for (const file of plan.files) {
      const path = this.partialFilePath(key, file.name);
      // A finished-but-unpublished pull left its files read-only.
      if (await fs.statOrNull(path) !== null) await fs.chmod(path, 0o644);
      const handle = await fs.open(path, { write: true, create: true });
      try {
        if (await handle.size() !== file.size) await handle.truncate(file.size);
      } finally {
        handle.close();
      }
    }
    await writeDurably(fs, `${dir}/plan.json`, encoder.encode(JSON.stringify(plan)));
    await fs.syncDir(`${dir}/files`);
  }

  /** The plan of a partial pull, or null when missing or unreadable. */
  async readPartialPlan(key: string): Promise<PartialPlan | null> {
    try {
      return JSON.parse(
        decoder.decode(await this.#fs.readFile(`${this.partialDir(key)}/plan.json`)),
      );
    } catch {
      return null;
    }
  }

  /** Opens a partial file for reading only. */
  openPartialRead(key: string, file: string): Promise<FileHandle> {
    return this.#fs.open(this.partialFilePath(key, file));
  }

  /** Opens a partial file for reading and writing. */
  openPartialFile(key: string, file: string): Promise<FileHandle> {
    return this.#fs.open(this.partialFilePath(key, file), { write: true });
  }

  /** When a partial pull last made progress (ms), or null. */
  partialTouchedAt(key: string): Promise<number | null> {
    return newestMtime(this.#fs, `${this.partialDir(key)}/files`);
  }

  /**
   * Makes a completed partial pull a snapshot directory, durably: files
   * fsynced and read-only, the manifest written and fsynced, directories
   * fsynced. Then {@linkcode SnapshotStore.installPartial} publishes it.
   */
  async finishPartial(key: string, manifest: Manifest): Promise<Uint8Array> {
    const fs = this.#fs;
    const dir = this.partialDir(key);
    for (const file of manifest.files) {
      const path = this.partialFilePath(key, file.name);
      await fs.chmod(path, 0o444);
      const handle = await fs.open(path);
      try {
        await handle.sync({ metadata: true });
      } finally {
        handle.close();
      }
    }
    const bytes = encodeManifest(manifest);
    await fs.remove(`${dir}/manifest.json`);
    const handle = await fs.open(`${dir}/manifest.json`, {
      write: true,
      createNew: true,
      mode: 0o444,
    });
    try {
      await handle.writeAt(bytes, 0);
      await handle.sync();
    } finally {
      handle.close();
    }
    await fs.syncDir(`${dir}/files`);
    await fs.syncDir(dir);
    return bytes;
  }

  /** Renames a finished partial directory into `snapshots/<name>`, durably. */
  async installPartial(key: string, name: string): Promise<void> {
    const target = this.snapshotDir(name);
    if (await this.#fs.statOrNull(target) !== null) await this.moveToTrash(target);
    await this.#fs.rename(this.partialDir(key), target);
    await this.#fs.syncDir(`${this.root}/snapshots`);
    await this.#fs.syncDir(`${this.root}/partial`);
    // The plan stayed until now so a crash before the rename could resume.
    await this.#fs.remove(`${target}/plan.json`);
  }

  /** Removes temp files a crash may have left in a partial directory. */
  async cleanPartial(key: string): Promise<void> {
    const dir = this.partialDir(key);
    for (const entry of await this.#fs.readDir(dir).catch(() => [] as string[])) {
      if (entry.endsWith(".tmp")) await this.#fs.remove(`${dir}/${entry}`);
    }
  }

  /** Deletes a partial pull. */
  async removePartial(key: string): Promise<void> {
    const dir = this.partialDir(key);
    if (await this.#fs.statOrNull(dir) === null) return;
    await this.moveToTrash(dir);
    await this.#fs.syncDir(`${this.root}/partial`);
  }

  #ensureDir(path: string): Promise<void> {
    return ensureDir(this.#fs, this.root, path);
  }
}
