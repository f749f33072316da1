/**
 * Durable-write helpers over any {@linkcode FileSystem}: atomic replace, directory creation
 * that survives a crash, the newest entry of a directory.
 *
 * @module
 */

import type { FileSystem } from "./mod.ts";

/** A short random id for temp files, blobs and trash entries. */
export function randomId(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 16);
}

/** Writes `bytes` to a temp file beside `path`, fsyncs, renames it over `path`, fsyncs the directory. */
export async function writeDurably(fs: FileSystem, path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.${randomId()}.tmp`;
  const handle = await fs.open(tmp, { write: true, createNew: true });
  try {
    await handle.writeAt(bytes, 0);
    await handle.sync();
  } finally {
    handle.close();
  }
  await fs.rename(tmp, path);
  await fs.syncDir(path.slice(0, path.lastIndexOf("/")));
}

/**
 * Creates a directory (and parents) under `root` and makes its creation
 * durable: each new directory's parent is fsynced, up to `root`.
 */
export async function ensureDir(fs: FileSystem, root: string, path: string): Promise<void> {
  if (await fs.statOrNull(path) !== null) return;
  await fs.mkdir(path);
  let dir = path;
  while (dir.length > root.length) {
    const parent = dir.slice(0, dir.lastIndexOf("/"));
    await fs.syncDir(parent);
    dir = parent;
  }
}

/** The newest mtime (ms) of the entries of `dir`, or null when it is missing or empty. */
export async function newestMtime(fs: FileSystem, dir: string): Promise<number | null> {
  if (await fs.statOrNull(dir) === null) return null;
  let latest: number | null = null;
  for (const entry of await fs.readDir(dir)) {
    const stat = await fs.statOrNull(`${dir}/${entry}`);
    if (stat?.mtimeMs != null && (latest === null || stat.mtimeMs > latest)) latest = stat.mtimeMs;
  }
  return latest;
}
