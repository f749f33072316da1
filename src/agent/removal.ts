/**
 * Deleting a snapshot: locally (a pull of the name in flight stops first),
 * and with `origin`, from the origin too (manifest first, then files).
 *
 * @module
 */

import type { Catalog } from "../cache/mod.ts";
import { notLocal } from "../cache/mod.ts";
import { errorMessage, SnapmeshError } from "../errors.ts";
import type { Puller } from "../fetch/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Origin, Pusher, RemoteManifests } from "../origin/mod.ts";

/** What a delete did. */
export interface RemoveResult {
  name: string;
  digest: string | null;
  local: boolean;
  origin: boolean;
}

/** What {@linkcode removeSnapshot} works with. */
export interface RemovalDeps {
  catalog: Catalog;
  puller: Puller;
  origin: Origin | null;
  remote: RemoteManifests | null;
  pusher: Pusher | null;
  log: Logger;
}

/**
 * Deletes snapshot `name` (`force` also deletes a pinned one); with
 * `origin`, deletes it from the origin too.
 */
export async function removeSnapshot(
  deps: RemovalDeps,
  name: string,
  options: { force?: boolean; origin?: boolean } = {},
): Promise<RemoveResult> {
  const { catalog, puller, log } = deps;
  if (options.origin && !deps.origin) {
    throw new SnapmeshError("invalid_body", "This node has no origin (--origin-endpoint)");
  }
  // A pull of the name in flight stops first (its partial goes too); one
  // that published just before is deleted below like any snapshot.
  if (!catalog.get(name)?.pinned || options.force) {
    await puller.cancel(
      name,
      new SnapmeshError("snapshot_not_found", `Snapshot "${name}" was deleted while pulling`),
    );
  }
  const local = await catalog.lock.run(async () => {
    const entry = catalog.get(name);
    if (!entry) return null;
    if (entry.pinned && !options.force) {
      throw new SnapmeshError(
        "snapshot_pinned",
        `Snapshot "${name}" is pinned: unpin it first, or delete with ?force=true`,
      );
    }
    await catalog.removeLocked(entry, "delete");
    return entry.digest;
  });
  let remoteDigest: string | null = null;
  let inOrigin = false;
  if (options.origin) {
    const origin = deps.origin!;
    await deps.pusher?.settle(name);
    try {
      remoteDigest = (await puller.remoteManifest(name).catch(() => null))?.digest ?? null;
      const keys = (await origin.list(origin.snapshotPrefix(name))).map((o) => o.key);
      const manifestKey = origin.manifestKey(name);
      inOrigin = keys.length > 0;
      // Manifest first: from then on no reader finds the snapshot, even
      // while its files are still being deleted.
      if (keys.includes(manifestKey)) await origin.deleteObject(manifestKey);
      await origin.deleteObjects(keys.filter((k) => k !== manifestKey));
    } catch (err) {
      throw new SnapmeshError(
        "upstream_failed",
        `Deleting "${name}" from the origin ${origin.endpoint} failed: ${errorMessage(err)}`,
      );
    }
    deps.remote?.forget(name);
    log.info("deleted from the origin", { name, objects: inOrigin });
  }
  if (local === null && !inOrigin) throw notLocal(name);
  return { name, digest: local ?? remoteDigest, local: local !== null, origin: inOrigin };
}
