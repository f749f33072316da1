/**
 * Making the snapshot files agree with the replayed index at start. The
 * rule: recovery never deletes a committed snapshot's files because the
 * index lost track of them.
 *
 * - A snapshot directory the index does not know (a commit or pull that
 *   crashed between its rename and its journal record, never acknowledged;
 *   or files the journal lost track of) is moved to `quarantine/`, never
 *   listed or served. An indexed snapshot whose files are missing or the
 *   wrong size is dropped from the index and its files moved there too.
 * - With no journal state at all next to snapshot directories, or on
 *   `--rebuild-index`, the index is rebuilt from a verified scan of the
 *   files: what verifies is indexed again, the rest is moved aside. Pins and
 *   access times come from what can still be read of the old journal; what
 *   cannot is reported, not guessed.
 *
 * @module
 */

import { errorMessage } from "../errors.ts";
import { decodeCheckpoint, salvageJournal } from "../journal/mod.ts";
import type { Logger } from "../log/mod.ts";
import { type ManifestWithDigest, storedBytes } from "../manifest/mod.ts";
import { type SnapshotStore, verifyStoredFile } from "../store/mod.ts";
import { type Clock, systemClock } from "../util/clock.ts";
import { mapLimit } from "../util/concurrency.ts";
import type { Catalog } from "./catalog.ts";
import { type CacheEntry, SnapshotIndex } from "./index.ts";

/** How the index was rebuilt from the files at start, when it was. */
export interface RebuildReport {
  /** `requested`: --rebuild-index; `journal_empty`: no journal state, yet snapshot directories. */
  reason: "requested" | "journal_empty";
  /** Snapshots verified in full and indexed again. */
  adopted: string[];
  /** Directories that did not verify, moved to `quarantine/`. */
  quarantined: string[];
  /** Pins taken from the readable part of the old journal. */
  pinsRestored: string[];
  /** Damaged regions of the old journal that were skipped. */
  damagedRegions: number;
  /** What could not be known, in words. */
  unknown: string;
}

/** Pins, access times and sources that could be read from a damaged journal. */
export interface SalvagedState {
  entries: Map<string, CacheEntry>;
  damagedRegions: number;
}

/** Snapshots checked at once after start. */
const PARALLEL_CHECKS = 8;

/**
 * Reads what can still be read of the journal before a rebuild: the
 * checkpoint when it is intact, then every valid record of the journal file,
 * skipping damage. Null when nothing is readable.
 */
export async function salvageJournalState(
  store: SnapshotStore,
  log: Logger,
): Promise<SalvagedState | null> {
  const fs = store.fs;
  const index = new SnapshotIndex(log);
  let readable = false;
  let damagedRegions = 0;
  const checkpoint = await fs.readFile(`${store.journalDir}/checkpoint`).catch(() => null);
  if (checkpoint !== null) {
    const decoded = decodeCheckpoint(checkpoint);
    try {
      if (typeof decoded === "string") throw new Error(decoded);
      index.restore(decoded.payload);
      readable = true;
    } catch (err) {
      damagedRegions++;
      log.error("rebuild-index: the old checkpoint is unreadable", { error: err });
    }
  }
  const wal = await fs.readFile(`${store.journalDir}/wal`).catch(() => null);
  if (wal !== null) {
    const salvage = salvageJournal(wal, { isKnownType: (t) => index.isKnownType(t) });
    if (salvage === null) {
      damagedRegions++;
    } else {
      damagedRegions += salvage.damagedAt.length;
      for (const record of salvage.records) {
        try {
          index.apply(record);
          readable = true;
        } catch {
          damagedRegions++;
        }
      }
    }
  }
  if (!readable) return null;
  index.goLive();
  return { entries: new Map(index.entries().map((e) => [e.name, e])), damagedRegions };
}

/** Renames the journal directory to `journal.broken-<time>` and starts an empty one. */
export async function moveJournalAside(
  store: SnapshotStore,
  options: { log: Logger; clock: Clock },
): Promise<void> {
  const fs = store.fs;
  if (await fs.statOrNull(store.journalDir) === null) return;
  const stamp = new Date(options.clock.now()).toISOString().replace(/[:.]/g, "-");
  const aside = `${store.journalDir}.broken-${stamp}`;
  await fs.rename(store.journalDir, aside);
  await fs.mkdir(store.journalDir);
  await fs.syncDir(store.root);
  options.log.warn("rebuild-index: moved the old journal aside", { path: aside });
}

/**
 * Moves the snapshot directories the index does not know to `quarantine/`
 * (one directory listing; nothing is read per snapshot). Runs before the
 * agent is ready, so no publish can race it. Returns how many were moved.
 */
export async function moveOrphans(catalog: Catalog, log: Logger): Promise<number> {
  const store = catalog.store;
  let moved = 0;
  for (const name of await store.listSnapshotDirs()) {
    if (catalog.has(name)) continue;
    const where = await store.quarantine(name, "orphan");
    log.warn(
      "recovery: a snapshot directory the journal has no record of was moved aside " +
        "(never listed or served; if it was acknowledged, restart with --rebuild-index " +
        "after moving it back into snapshots/)",
      { name, movedTo: where },
    );
    moved++;
  }
  return moved;
}

/** Options for {@linkcode checkSnapshots}. */
export interface CheckSnapshotsOptions {
  log: Logger;
  /** Ends the check early (at shutdown). */
  signal?: AbortSignal;
  /** Snapshots checked at once. @default 8 */
  concurrency?: number;
  /** Waits this long before the first check (with `clock`). @default 0 */
  delayMs?: number;
  /** @default systemClock */
  clock?: Clock;
}

/**
 * Checks every indexed snapshot cheaply (its manifest against the digest
 * the journal holds, its file sizes), concurrently, and learns its chunks
 * for deduplication; one found damaged is dropped from the index (journaled
 * as missing) and its files moved to `quarantine/`, never deleted.
 *
 * The agent runs this in the background once it is ready: the checkpointed
 * index is trusted meanwhile, which is safe because no byte of a local file
 * is served before its chunk verified in this process (a missing or short
 * file fails that check too), and the scrub re-reads everything later.
 * Returns the number of directories moved aside.
 */
export async function checkSnapshots(
  catalog: Catalog,
  options: CheckSnapshotsOptions,
): Promise<number> {
  const { log, signal } = options;
  const store = catalog.store;
  if (options.delayMs) {
    await (options.clock ?? systemClock).sleep(options.delayMs, { signal, ref: false });
  }
  const current = (entry: CacheEntry) => catalog.get(entry.name)?.digest === entry.digest;
  // Independent files, checked concurrently: the check waits on the disk,
  // not on one file operation after another.
  const damaged = await mapLimit(
    catalog.entries(),
    options.concurrency ?? PARALLEL_CHECKS,
    async (entry) => {
      if (signal?.aborted || !current(entry)) return null;
      const checked = await checkOnDisk(store, entry);
      if (!current(entry)) return null; // removed meanwhile: nothing to learn
      if (typeof checked !== "string") {
        catalog.adopt(entry.name, checked);
        return null;
      }
      return { entry, problem: checked };
    },
  );
  let moved = 0;
  for (const found of damaged) {
    if (found === null || signal?.aborted) continue;
    const { entry, problem } = found;
    // Checked again under the catalog lock: the snapshot may have been
    // removed and published again since.
    const dropped = await catalog.dropDamaged(
      entry.name,
      entry.digest,
      async () => typeof await checkOnDisk(store, entry) === "string",
    );
    if (dropped === null) continue;
    log.error("recovery: an acknowledged snapshot is damaged on disk; moved aside", {
      name: entry.name,
      digest: entry.digest,
      problem,
      movedTo: dropped,
    });
    if (dropped !== "") moved++;
  }
  return moved;
}

/**
 * Moves unknown snapshot directories aside, then checks every indexed
 * snapshot (see {@linkcode checkSnapshots}), waiting for both. Returns the
 * number of directories moved to `quarantine/`.
 */
export async function reconcileSnapshots(catalog: Catalog, log: Logger): Promise<number> {
  return await moveOrphans(catalog, log) + await checkSnapshots(catalog, { log });
}

/** Cheap check of an acknowledged snapshot: its manifest (against the digest), file sizes. */
async function checkOnDisk(
  store: SnapshotStore,
  entry: CacheEntry,
): Promise<ManifestWithDigest | string> {
  let manifest: ManifestWithDigest;
  try {
    manifest = await store.readManifest(entry.name, entry.digest);
  } catch (err) {
    return `manifest: ${errorMessage(err)}`;
  }
  const stats = await Promise.all(
    manifest.files.map((file) => store.fs.statOrNull(store.filePath(entry.name, file.name))),
  );
  for (const [i, file] of manifest.files.entries()) {
    const stat = stats[i];
    if (!stat) return `file "${file.name}" is missing`;
    if (stat.size !== file.size) {
      return `file "${file.name}" has ${stat.size} bytes, expected ${file.size}`;
    }
  }
  return manifest;
}

/**
 * Rebuilds the index from a verified scan of the snapshot directories:
 * each is verified in full and journaled again, or moved to `quarantine/`
 * when it does not verify (never deleted). Pins and access times come from
 * what could still be read of the old journal (`salvaged`); what could not
 * is reported, not guessed.
 */
export async function rebuildIndex(
  catalog: Catalog,
  options: {
    reason: RebuildReport["reason"];
    salvaged: SalvagedState | null;
    log: Logger;
    clock: Clock;
  },
): Promise<RebuildReport> {
  const { reason, salvaged, log } = options;
  const store = catalog.store;
  const report: RebuildReport = {
    reason,
    adopted: [],
    quarantined: [],
    pinsRestored: [],
    damagedRegions: salvaged?.damagedRegions ?? 0,
    unknown: "",
  };
  log.error(
    reason === "requested"
      ? "rebuild-index: rebuilding the index from a verified scan of the files"
      : "recovery: the journal holds no state, yet snapshot directories exist (was the " +
        "journal deleted or emptied?): rebuilding the index from a verified scan of the files",
  );
  for (const name of (await store.listSnapshotDirs()).sort()) {
    let manifest: ManifestWithDigest;
    let manifestStat;
    try {
      manifest = await store.readManifest(name);
      if (manifest.name !== name) throw new Error(`manifest names "${manifest.name}"`);
      for (const file of manifest.files) {
        const check = await verifyStoredFile(
          () => store.openFile(name, file.name),
          file,
          manifest.chunkSize,
        );
        if (!check.ok) throw new Error(`file "${file.name}": ${check.problem}`);
      }
      manifestStat = await store.fs.stat(`${store.snapshotDir(name)}/manifest.json`);
    } catch (err) {
      const where = await store.quarantine(name, "unverified");
      log.error("rebuild-index: a snapshot directory does not verify; moved aside", {
        name,
        movedTo: where,
        error: err,
      });
      report.quarantined.push(name);
      continue;
    }
    const known = salvaged?.entries.get(name);
    const same = known?.digest === manifest.digest;
    await catalog.record({
      t: "add",
      name,
      digest: manifest.digest,
      bytes: manifest.files.reduce((n, f) => n + storedBytes(f, manifest.chunkSize), 0) +
        manifestStat.size,
      size: manifest.files.reduce((n, f) => n + f.size, 0),
      files: manifest.files.length,
      source: same ? known!.source : "local",
      at: same ? known!.lastAccess : manifestStat.mtimeMs ?? options.clock.now(),
    });
    if (same && known!.pinned) {
      await catalog.record({ t: "pin", name });
      report.pinsRestored.push(name);
    }
    catalog.trust.trustAll(manifest.digest, manifest.files);
    report.adopted.push(name);
    log.warn("rebuild-index: kept a verified snapshot", {
      name,
      digest: manifest.digest,
      pinned: same && known!.pinned,
    });
  }
  report.unknown = salvaged === null
    ? "no journal state was readable: every snapshot is unpinned and the LRU order " +
      "follows the manifests' modification times; pin again what must stay"
    : salvaged.damagedRegions > 0
    ? `${salvaged.damagedRegions} damaged region(s) of the old journal were skipped: a pin, ` +
      "unpin or delete recorded there is lost; check the pins"
    : "nothing: the old journal was read in full";
  log.error("rebuild-index: index rebuilt", {
    adopted: report.adopted.length,
    quarantined: report.quarantined.length,
    pinsRestored: report.pinsRestored.length,
    damagedRegions: report.damagedRegions,
    unknown: report.unknown,
  });
  return report;
}
