/**
 * The files of a restore next to its socket: the socket path (inside
 * `--restore-dir`), its directory, and every file but the memory file made
 * local, verified and linked there. Private to `src/restore/`.
 *
 * @module
 */

import type { Catalog } from "../cache/mod.ts";
import { normalizePath } from "../config/mod.ts";
import { errorMessage, SnapmeshError } from "../errors.ts";
import type { PullReady } from "../fetch/mod.ts";
import type { FileSystem } from "../fs/mod.ts";
import { type ManifestWithDigest, ZERO_CHUNK } from "../manifest/mod.ts";
import { CorruptChunkError, readVerifiedChunk } from "../store/mod.ts";
import { MAX_SOCKET_PATH } from "./unix_socket.ts";

/** What {@linkcode RestoreFiles} works with. */
export interface RestoreFilesOptions {
  /** The resolved `--restore-dir`. */
  restoreDir: string;
  catalog: Catalog;
  fs: FileSystem;
  /** Takes a damaged local copy out of the cache (and refetches it). */
  quarantine(name: string, digest: string, why: string): Promise<void>;
}

/** The snapshot a restore serves, and where its files are. */
export interface RestoreTarget {
  name: string;
  manifest: ManifestWithDigest;
  /** The file served page by page (the others are made local and linked). */
  memoryFile: string;
  /** The pull in progress when the snapshot was not local, else null. */
  pull: PullReady | null;
}

/** Prepares the files of restores. */
export class RestoreFiles {
  readonly #o: RestoreFilesOptions;

  constructor(options: RestoreFilesOptions) {
    this.#o = options;
  }

  /** The socket path of session `id`: the one given (checked) or one of its own. */
  socketPath(given: unknown, id: string): string {
    const root = this.#o.restoreDir;
    if (given === undefined || given === null) return `${root}/${id}/uffd.sock`;
    if (typeof given !== "string" || !given.startsWith("/")) {
      throw new SnapmeshError("invalid_body", "socket must be an absolute path");
    }
    const normal = normalizePath(given);
    if (normal !== given || !normal.startsWith(`${root}/`)) {
      throw new SnapmeshError(
        "path_not_allowed",
        `Socket path ${given} is not inside the restore directory ${root} (--restore-dir)`,
      );
    }
    if (new TextEncoder().encode(normal).length > MAX_SOCKET_PATH) {
      throw new SnapmeshError(
        "invalid_body",
        `Socket path ${given} is longer than ${MAX_SOCKET_PATH} bytes (a Unix socket limit)`,
      );
    }
    return normal;
  }

  /** Every file but the memory file: local and verified (fetched first when pulling). */
  async otherFilesReady({ name, manifest, memoryFile, pull }: RestoreTarget): Promise<void> {
    const { catalog } = this.#o;
    for (const info of manifest.files) {
      if (info.name === memoryFile) continue;
      if (pull) {
        const fi = pull.job.fileIndex(info.name);
        await Promise.all(info.chunks.map((_, i) => pull.job.waitChunk(fi, i)));
        continue;
      }
      const trust = catalog.trust.file(manifest.digest, info.name, info.chunks.length);
      const handle = await catalog.store.openFile(name, info.name);
      try {
        for (let i = 0; i < info.chunks.length; i++) {
          if (info.chunks[i] === ZERO_CHUNK || trust.has(i)) continue;
          await readVerifiedChunk(handle, info, manifest.chunkSize, i, trust);
        }
      } catch (err) {
        if (!(err instanceof CorruptChunkError)) throw err;
        await this.#o.quarantine(name, manifest.digest, `restore: ${err.message}`);
        throw new SnapmeshError(
          "verification_failed",
          `Snapshot "${name}" is damaged on this node (${err.message}); it was quarantined, ` +
            `and a restore again fetches a good copy`,
        );
      } finally {
        handle.close();
      }
    }
  }

  /** Creates the socket's directory when missing; refuses one that leads outside. */
  async prepareDir(dir: string, id: string): Promise<string | null> {
    const { fs, restoreDir } = this.#o;
    let created: string | null = null;
    if (!(await fs.statOrNull(dir))) {
      await fs.mkdir(dir);
      created = dir === `${restoreDir}/${id}` ? dir : null;
    }
    // A symbolic link inside the restore directory must not lead out of it.
    const [real, root] = await Promise.all([fs.realPath(dir), fs.realPath(restoreDir)]);
    if (real !== root && !real.startsWith(`${root}/`)) {
      if (created) await fs.remove(created).catch(() => {});
      throw new SnapmeshError(
        "path_not_allowed",
        `Socket directory ${dir} leads to ${real}, outside the restore directory ${root}`,
      );
    }
    return created;
  }

  /**
   * Links the other files into `into.dir` (a copy across file systems),
   * named as in the snapshot, adding each to `into.links`. Returns their paths.
   */
  async link(
    { name, manifest, memoryFile, pull }: RestoreTarget,
    into: { dir: string; links: string[] },
  ): Promise<Record<string, string>> {
    const { dir, links } = into;
    const { fs, catalog } = this.#o;
    const paths: Record<string, string> = {};
    for (const info of manifest.files) {
      if (info.name === memoryFile) continue;
      const target = `${dir}/${info.name}`;
      if (await fs.statOrNull(target)) {
        throw new SnapmeshError(
          "invalid_body",
          `${target} exists already: give each restore its own socket directory`,
        );
      }
      let source = pull
        ? catalog.store.partialFilePath(pull.key, info.name)
        : catalog.store.filePath(name, info.name);
      if (pull && !(await fs.statOrNull(source))) source = catalog.store.filePath(name, info.name);
      try {
        await fs.link(source, target);
      } catch (err) {
        if (!/EXDEV|cross-device|os error 18/i.test(errorMessage(err))) throw err;
        await copyFile(fs, source, target);
      }
      links.push(target);
      paths[info.name] = target;
    }
    return paths;
  }

  /** Removes `paths`, ignoring the ones already gone. */
  async removeAll(paths: string[]): Promise<void> {
    for (const path of paths) await this.#o.fs.remove(path).catch(() => {});
  }
}

/** Copies `from` to a new read-only file `to`, synced. */
async function copyFile(fs: FileSystem, from: string, to: string): Promise<void> {
  const source = await fs.open(from);
  try {
    const target = await fs.open(to, { write: true, createNew: true, mode: 0o444 });
    try {
      const buffer = new Uint8Array(1024 * 1024);
      for (let at = 0;;) {
        const n = await source.readAt(buffer, at);
        if (n <= 0) break;
        await target.writeAt(buffer.subarray(0, n), at);
        at += n;
      }
      await target.sync();
    } finally {
      target.close();
    }
  } finally {
    source.close();
  }
}
