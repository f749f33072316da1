/**
 * The catalog of committed snapshots: what is local, durably. It owns the
 * index (the journal's state machine), the journal, the manifests, the
 * chunk locations used for deduplication and the chunk trust, and it is
 * the only way a snapshot enters or leaves the cache:
 *
 * - {@linkcode Catalog.publish} is the one durable publish path (commit,
 *   pull and adoption): a directory already durable under `tmp/` or
 *   `partial/` gets its signatures (`manifest.sig`, fsynced) and is renamed
 *   into `snapshots/`, the rename fsynced, then the journal record fsynced;
 *   only then is it visible. A node that enforces signatures refuses here
 *   whatever no trusted key signed, whichever path led to it;
 * - removal (delete, eviction) journals first, then moves the directory to
 *   the trash; quarantine moves it to `quarantine/`, never deleting it;
 * - one lock serialises these index changes; streaming and hashing happen
 *   outside it.
 *
 * @module
 */

import { LRUCache } from "lru-cache";
import { errorMessage, SnapmeshError } from "../errors.ts";
import { isNoSpace } from "../fs/mod.ts";
import type { Journal } from "../journal/mod.ts";
import type { Logger } from "../log/mod.ts";
import {
  logicalSize,
  type Manifest,
  type ManifestWithDigest,
  ZERO_CHUNK,
} from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import { type SnapshotSignature, SnapshotTrust } from "../security/mod.ts";
import { ChunkTrust, HandleCache, type PreparedPublish, type SnapshotStore } from "../store/mod.ts";
import type { Clock, Timer } from "../util/clock.ts";
import { Mutex } from "../util/mutex.ts";
import type { CacheEntry, SnapshotIndex } from "./index.ts";
import { encodeStateRecord, type Source, type StateRecord } from "./records.ts";

/** Where a local copy of a chunk is, for deduplication across snapshots. */
export interface ChunkLocation {
  path: string;
  offset: number;
}

/** Where the bytes of a snapshot being published are, ready to be renamed into place. */
export type PublishFrom =
  | { kind: "prepared"; prepared: PreparedPublish }
  | { kind: "partial"; key: string };

/** A snapshot to publish. */
export interface PublishRequest {
  name: string;
  manifest: Manifest;
  digest: string;
  /** Bytes on disk (non-zero chunks plus the manifest). */
  bytes: number;
  source: Source;
  /** Queue an upload to the origin in the same journal record. */
  push: boolean;
  from: PublishFrom;
  /**
   * Runs under the catalog lock once the snapshot is journaled: the place to
   * hand its reservation back, so nobody sees its bytes counted twice.
   */
  onPublished?: () => void;
}

/** Options for {@linkcode Catalog}. */
export interface CatalogOptions {
  store: SnapshotStore;
  index: SnapshotIndex;
  journal: Journal;
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  /** Signature policy. @default none: unsigned snapshots are fine */
  trust?: SnapshotTrust;
  /** Delay before access times are journaled. @default 100 */
  touchFlushMs?: number;
  /** Read handles of local files kept open for reuse. @default 256 */
  openHandles?: number;
}

const MANIFEST_CACHE_ENTRIES = 256;
/** How often a journal that refuses writes is repaired again. */
const JOURNAL_REPAIR_MS = 1000;

/** Committed local snapshots. */
export class Catalog {
  readonly store: SnapshotStore;
  readonly index: SnapshotIndex;
  readonly journal: Journal;
  /** Local chunks verified in this process's lifetime (never re-hashed on serve). */
  readonly trust = new ChunkTrust();
  /**
   * Open read handles of local files, by snapshot digest and file: closed
   * when their snapshot leaves the cache (once their readers finish).
   */
  readonly handles: HandleCache;
  /** Serialises index changes (publish, remove, pin, eviction). */
  readonly lock = new Mutex();
  readonly counters = { evictions: 0 };
  /** Signature policy: what may be published, and the signatures that go with it. */
  readonly snapshotTrust: SnapshotTrust;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #clock: Clock;
  readonly #touchFlushMs: number;
  readonly #manifests = new LRUCache<string, ManifestWithDigest>({ max: MANIFEST_CACHE_ENTRIES });
  /** Where each chunk digest lives locally: snapshot name → its first copy there. */
  readonly #chunks = new Map<string, Map<string, { file: string; offset: number }>>();
  /** The chunk digests each snapshot added to `#chunks` (so forgetting it is cheap). */
  readonly #chunksOf = new Map<string, string[]>();
  /** Accesses not yet journaled: name → time, in access order. */
  readonly #touched = new Map<string, number>();
  #touchTimer: Timer | null = null;
  #repairTimer: Timer | null = null;
  #lastCheckpoints = 0;
  #closed = false;

  constructor(options: CatalogOptions) {
    this.store = options.store;
    this.index = options.index;
    this.journal = options.journal;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#clock = options.clock;
    this.#touchFlushMs = options.touchFlushMs ?? 100;
    this.handles = new HandleCache({ max: options.openHandles ?? 256 });
    this.snapshotTrust = options.trust ?? SnapshotTrust.none(options.log, options.clock);
  }

  get(name: string): CacheEntry | undefined {
    return this.index.get(name);
  }

  has(name: string): boolean {
    return this.index.has(name);
  }

  /** Entries, least recently used first. */
  entries(): CacheEntry[] {
    return this.index.entries();
  }

  /** The manifest of a local snapshot (read once, then cached). */
  async manifestOf(entry: CacheEntry): Promise<ManifestWithDigest> {
    const cached = this.#manifests.get(entry.digest);
    if (cached) return cached;
    let manifest: ManifestWithDigest;
    try {
      manifest = await this.store.readManifest(entry.name, entry.digest);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw notLocal(entry.name);
      throw err;
    }
    this.#manifests.set(entry.digest, manifest);
    return manifest;
  }

  /** The publishers' signatures of a local snapshot (empty when unsigned). */
  async signaturesOf(entry: CacheEntry): Promise<SnapshotSignature[]> {
    const known = this.snapshotTrust.signaturesOf(entry.digest);
    if (known.length > 0) return known;
    const stored = await this.store.readSignatures(entry.name, entry.digest);
    this.snapshotTrust.remember(entry.digest, stored);
    return stored;
  }

  /** A manifest already read, by snapshot digest. */
  cachedManifest(digest: string): ManifestWithDigest | undefined {
    return this.#manifests.get(digest);
  }

  /**
   * Learns a snapshot found on disk at start (its manifest checked): its
   * chunks become available for deduplication.
   */
  adopt(name: string, manifest: ManifestWithDigest): void {
    this.#manifests.set(manifest.digest, manifest);
    this.#indexChunks(name, manifest);
  }

  /**
   * The one durable publish path. Renames the snapshot's directory into
   * place, makes the rename durable, journals the snapshot (fsynced), and
   * only then makes it visible. Resolves false, discarding the new
   * directory, when the name became local meanwhile (the caller decides
   * whether that is the same content).
   */
  async publish(request: PublishRequest): Promise<boolean> {
    const { name, from } = request;
    const discard = () =>
      from.kind === "prepared"
        ? this.store.discard(from.prepared)
        : this.store.removePartial(from.key);
    const published = await this.lock.run(async () => {
      if (this.index.has(name)) {
        await discard().catch(() => {});
        return false;
      }
      try {
        // Refused (and its bytes dropped) when this node enforces signatures
        // and no trusted key signed it.
        const signatures = await this.snapshotTrust.forPublish(
          name,
          request.digest,
          request.source,
        );
        if (signatures.length > 0) {
          const dir = from.kind === "prepared"
            ? from.prepared.dir
            : this.store.partialDir(from.key);
          await this.store.writeSignatures(dir, request.digest, signatures);
        }
        if (from.kind === "prepared") await this.store.install(from.prepared);
        else await this.store.installPartial(from.key, name);
      } catch (err) {
        await discard().catch(() => {});
        throw err;
      }
      try {
        await this.record({
          t: "add",
          name,
          digest: request.digest,
          bytes: request.bytes,
          size: logicalSize(request.manifest),
          files: request.manifest.files.length,
          source: request.source,
          at: this.#clock.now(),
          push: request.push,
        });
      } catch (err) {
        // Not acknowledged: take the directory back out (recovery would too).
        await this.store.removeSnapshot(name).catch(() => {});
        throw err;
      }
      request.onPublished?.();
      return true;
    });
    if (!published) return false;
    const withDigest = { ...request.manifest, digest: request.digest };
    this.#manifests.set(request.digest, withDigest);
    this.#indexChunks(name, withDigest);
    // Every chunk was hashed as it was written or verified as it arrived.
    this.trust.trustAll(request.digest, request.manifest.files);
    return true;
  }

  /**
   * Removes a local snapshot: journaled first, then its directory goes to
   * the trash (open readers keep their files). Must run under
   * {@linkcode Catalog.lock}.
   */
  async removeLocked(entry: CacheEntry, reason: "delete" | "evict"): Promise<void> {
    // Logged before and after the record: between the two lines the outcome
    // of a crash is either, which the crash tests rely on.
    this.#log.debug(reason === "evict" ? "evicting" : "deleting", { name: entry.name });
    await this.record({ t: "remove", name: entry.name, digest: entry.digest, reason });
    this.#forget(entry.name, entry.digest);
    this.counters.evictions++;
    this.#metrics.evictions.inc({ reason: reason === "evict" ? "lru" : "delete" });
    this.#log.info(reason === "evict" ? "evicted" : "deleted", {
      name: entry.name,
      digest: entry.digest,
      bytes: entry.bytes,
    });
    try {
      await this.store.removeSnapshot(entry.name);
    } catch (err) {
      // The journal already says it is gone; recovery finishes the job.
      this.#log.error("could not remove snapshot files", { name: entry.name, error: err });
    }
  }

  /**
   * Takes a snapshot whose bytes do not match its manifest out of the cache
   * and moves its files to `quarantine/` for inspection.
   */
  async quarantine(name: string, digest: string, why: string): Promise<void> {
    await this.lock.run(async () => {
      const entry = this.index.get(name);
      if (!entry || entry.digest !== digest) return;
      await this.record({ t: "remove", name, digest, reason: "quarantine" });
      this.#forget(name, digest);
      const where = await this.store.quarantine(name);
      this.#metrics.verifyFailures.inc({ source: "local" });
      this.#log.error("quarantined a snapshot whose bytes do not match its manifest", {
        name,
        digest,
        why,
        movedTo: where,
      });
    });
  }

  /**
   * Drops an indexed snapshot found damaged on disk (a file missing or of
   * the wrong size, an unreadable manifest), if it is still the snapshot at
   * `digest` and `stillDamaged()` confirms it under the catalog lock: the
   * removal is journaled (as missing), then what is left of its directory is
   * moved to `quarantine/`, never deleted. Answers where it went (`""` when
   * nothing was left to move), or null when it was not dropped.
   */
  async dropDamaged(
    name: string,
    digest: string,
    stillDamaged: () => Promise<boolean>,
  ): Promise<string | null> {
    return await this.lock.run(async () => {
      const entry = this.index.get(name);
      if (!entry || entry.digest !== digest || !(await stillDamaged())) return null;
      await this.record({ t: "remove", name, digest, reason: "missing" });
      this.#forget(name, digest);
      if (await this.store.fs.statOrNull(this.store.snapshotDir(name)) === null) return "";
      return await this.store.quarantine(name, "damaged");
    });
  }

  /** Pins or unpins a local snapshot. */
  async setPinned(name: string, pinned: boolean): Promise<{ name: string; pinned: boolean }> {
    return await this.lock.run(async () => {
      const entry = this.index.get(name);
      if (!entry) throw notLocal(name);
      if (entry.pinned !== pinned) await this.record({ t: pinned ? "pin" : "unpin", name });
      return { name, pinned };
    });
  }

  /** Where a chunk with this digest is stored locally, if anywhere. */
  locate(digest: string): ChunkLocation | undefined {
    const holders = this.#chunks.get(digest);
    if (holders === undefined) return undefined;
    for (const [name, where] of holders) {
      return { path: this.store.filePath(name, where.file), offset: where.offset };
    }
    return undefined;
  }

  /** Marks a snapshot as just used; the access time is journaled in a batch. */
  touch(name: string): void {
    const at = this.#clock.now();
    this.index.touch(name, at);
    this.#touched.delete(name);
    this.#touched.set(name, at);
    this.#touchTimer ??= this.#clock.setTimeout(() => {
      this.#touchTimer = null;
      this.#flushTouches();
    }, this.#touchFlushMs);
  }

  /**
   * Appends a state record (fsynced unless `sync` is false) and applies it.
   *
   * @throws {SnapmeshError} `insufficient_storage` on a full disk, else `journal_failed`
   */
  async record(record: StateRecord, sync = true): Promise<void> {
    const { type, payload } = encodeStateRecord(record);
    try {
      await this.journal.append(type, payload, { sync });
    } catch (err) {
      this.#repairJournalSoon();
      const cause = (err as { cause?: unknown }).cause ?? this.journal.broken;
      if (isNoSpace(err) || isNoSpace(cause)) {
        throw new SnapmeshError(
          "insufficient_storage",
          `The disk under ${this.store.root} is full: the journal cannot record the change ` +
            `(${errorMessage(cause ?? err)}); nothing was acknowledged`,
        );
      }
      throw new SnapmeshError("journal_failed", `Journal write failed: ${errorMessage(err)}`);
    }
    this.#metrics.journalRecords.inc();
    this.#metrics.journalCheckpoints.inc(this.journal.stats.checkpoints - this.#lastCheckpoints);
    this.#lastCheckpoints = this.journal.stats.checkpoints;
  }

  /**
   * Why this node cannot take changes right now (`/readyz` answers 503 with
   * it), or null when it can.
   */
  unhealthyReason(): string | null {
    const broken = this.journal.broken;
    if (broken === null) return null;
    this.#repairJournalSoon();
    return `the journal cannot write (${errorMessage(broken)}); it retries every ` +
      `${JOURNAL_REPAIR_MS / 1000} s`;
  }

  /** Journals pending access times, checkpoints the journal and closes it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#touchTimer?.cancel();
    this.#repairTimer?.cancel();
    this.#flushTouches();
    this.handles.close();
    await this.lock.run(() => this.journal.close({ checkpoint: true }));
  }

  /**
   * While the journal refuses writes (a failed write or fsync: a full disk,
   * say), tries to repair it every second; it takes writes again once a
   * fresh checkpoint and journal file could be written.
   */
  #repairJournalSoon(): void {
    if (this.#repairTimer !== null || this.#closed || this.journal.broken === null) return;
    this.#repairTimer = this.#clock.setTimeout(
      async () => {
        const healed = await this.journal.heal().catch(() => false);
        this.#repairTimer = null;
        if (!healed) this.#repairJournalSoon();
      },
      JOURNAL_REPAIR_MS,
      { ref: false },
    );
  }

  /** Journals access order without fsync (batched, per DESIGN.md §5). */
  #flushTouches(): void {
    if (this.#touched.size === 0) return;
    const touched = [...this.#touched];
    this.#touched.clear();
    // Batches of 500 names keep every record far below the journal's size limit.
    for (let k = 0; k < touched.length; k += 500) {
      const batch = touched.slice(k, k + 500);
      this.record(
        { t: "touch", names: batch.map(([n]) => n), times: batch.map(([, t]) => t) },
        false,
      ).catch((err) => {
        this.#log.warn("could not journal access times", { error: err });
      });
    }
  }

  #forget(name: string, digest: string): void {
    this.#manifests.delete(digest);
    this.trust.forget(digest);
    this.handles.forget(digest);
    for (const chunk of this.#chunksOf.get(name) ?? []) {
      const holders = this.#chunks.get(chunk);
      holders?.delete(name);
      if (holders?.size === 0) this.#chunks.delete(chunk);
    }
    this.#chunksOf.delete(name);
  }

  #indexChunks(name: string, manifest: ManifestWithDigest): void {
    const added: string[] = this.#chunksOf.get(name) ?? [];
    for (const file of manifest.files) {
      file.chunks.forEach((digest, i) => {
        if (digest === ZERO_CHUNK) return;
        let holders = this.#chunks.get(digest);
        if (holders === undefined) {
          holders = new Map();
          this.#chunks.set(digest, holders);
        }
        if (holders.has(name)) return;
        holders.set(name, { file: file.name, offset: i * manifest.chunkSize });
        added.push(digest);
      });
    }
    this.#chunksOf.set(name, added);
  }
}

/** The error of a snapshot that is not (or no longer) local. */
export function notLocal(name: string): SnapmeshError {
  return new SnapmeshError("snapshot_not_found", `Snapshot "${name}" is not on this node`);
}
