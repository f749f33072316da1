/**
 * The agent: the domain service behind the HTTP API. It owns the store, the
 * journal and the index, and keeps them consistent:
 *
 * - every state change is a journal record, applied to the index once
 *   written; the ones a client waits for are fsynced first;
 * - file bytes and directories are durable before the record that makes
 *   them visible is written;
 * - one metadata lock serializes index changes (commit, delete, pin,
 *   eviction); the bulk of the work (streaming, hashing, fsyncing files)
 *   happens outside it.
 *
 * @module
 */

import { LRUCache } from "lru-cache";
import { createHash } from "node:crypto";
import {
  type CacheEntry,
  encodeStateRecord,
  SnapshotIndex,
  type Source,
  type StateRecord,
} from "../cache/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import { formatSize, normalizePath } from "../config/mod.ts";
import { errorMessage, hasCode, SnapmeshError } from "../errors.ts";
import { type FileHandle, type FileSystem, isNoSpace } from "../fs/mod.ts";
import { Journal, type RecoveryReport } from "../journal/mod.ts";
import type { Logger } from "../log/mod.ts";
import {
  assertName,
  chunkCount,
  chunkLength,
  encodeManifest,
  findFile,
  logicalSize,
  type Manifest,
  MANIFEST_SCHEMA,
  manifestDigest,
  type ManifestFile,
  type ManifestWithDigest,
  MAX_FILES,
  sameContent,
  storedBytes,
  validateHot,
  validateLabels,
  ZERO_CHUNK,
} from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import {
  type ByteSource,
  type ChunkedFile,
  type DraftFile,
  emptySource,
  fileRangeStream,
  fileSource,
  isAllZero,
  parseRange,
  SnapshotStore,
  streamSource,
  verifiedChunkStream,
  writeChunked,
} from "../store/mod.ts";
import { type Availability, Membership, type PeerManifest } from "../cluster/mod.ts";
import { type ChunkLocation, pullingFileStream, type PullReport } from "../fetch/mod.ts";
import { RateLimiter } from "../util/rate.ts";
import { S3Origin } from "../origin/mod.ts";
import { KeyedMutex, Mutex } from "../util/mutex.ts";
import { type PublishRequest, Puller } from "./_pull.ts";
import { Pusher, type PushStatus } from "./_push.ts";

/** Dependencies of {@linkcode Agent.open}. */
export interface AgentOptions {
  config: ServeConfig;
  fs: FileSystem;
  log: Logger;
  metrics: Metrics;
  version: string;
  /** Milliseconds since the epoch. @default Date.now */
  now?: () => number;
  /** Delay before access times are journaled. @default 100 */
  touchFlushMs?: number;
}

/** Answer of a staged upload. */
export interface StageResult {
  file: string;
  size: number;
  sha256: string;
}

/** Body of a commit. */
export interface CommitRequest {
  labels?: unknown;
  hot?: unknown;
}

/** Answer of a commit; `created` is false when the same content was already committed. */
export interface CommitResult {
  manifest: ManifestWithDigest;
  created: boolean;
}

/** One row of `GET /v1/snapshots`. */
export interface SnapshotSummary {
  name: string;
  digest: string;
  /** Sum of file sizes. */
  size: number;
  /** Bytes on disk (zero chunks are holes). */
  storedBytes: number;
  files: string[];
  pinned: boolean;
  lastAccess: string;
  createdAt: string;
  state: "ready";
}

/** An open file of a local snapshot, ready to stream. */
export interface OpenedFile {
  name: string;
  file: string;
  size: number;
  sha256: string;
  source: Source;
  /**
   * Resolves once byte `start` can be sent (at once for a local file; after
   * its chunk arrived during a pull), so a failing pull still gets an error
   * status instead of a cut body.
   */
  ready(start: number, end: number): Promise<void>;
  /** Streams bytes `start..end` (inclusive) and closes the file afterwards. */
  stream(start: number, end: number): ReadableStream<Uint8Array>;
  /** Closes the file without streaming. */
  close(): void;
}

/** Answer of a pull. */
export interface PullResult {
  name: string;
  digest: string;
  source: Source;
  bytes: Record<Source, number>;
  ms: number;
  /** Where the files are (or will be, while `complete` is false). */
  paths: Record<string, string>;
  /** False when `?hot=true` answered before the whole snapshot was local. */
  complete: boolean;
}

/** Options of {@linkcode Agent.pull}. */
export interface PullOptions {
  /** Wait for the pull to finish. @default true */
  wait?: boolean;
  /** Answer once the hot chunks are local. @default false */
  hot?: boolean;
}

/** A pull accepted with `?wait=false`. */
export interface PullAccepted {
  name: string;
  digest: string | null;
  state: "pulling";
}

/** Size, hash and source of a file, without reading it. */
export interface FileInfo {
  size: number;
  sha256: string;
  source: Source;
}

/** Result of verifying one file. */
export interface FileVerification {
  file: string;
  ok: boolean;
  size: number;
  badChunks: number[];
  problem?: string;
}

/** Answer of a verify. */
export interface VerifyResult {
  name: string;
  digest: string;
  ok: boolean;
  files: FileVerification[];
}

const MANIFEST_CACHE_ENTRIES = 256;

/** The snapmesh agent of one data directory. */
export class Agent {
  readonly config: ServeConfig;
  readonly version: string;
  readonly startedAt: number;
  readonly #fs: FileSystem;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #store: SnapshotStore;
  readonly #index: SnapshotIndex;
  readonly #journal: Journal;
  readonly #now: () => number;
  readonly #touchFlushMs: number;
  readonly #meta = new Mutex();
  readonly #drafts = new KeyedMutex();
  /** Files being uploaded, by snapshot name. */
  readonly #uploads = new Map<string, Map<string, number>>();
  /** Names whose commit is running: no new file may be staged into them. */
  readonly #committing = new Set<string>();
  /** Committed bytes of staged files, by snapshot name. */
  readonly #draftBytes = new Map<string, number>();
  readonly #manifests = new LRUCache<string, ManifestWithDigest>({ max: MANIFEST_CACHE_ENTRIES });
  readonly #origin: S3Origin | null;
  readonly #puller: Puller;
  readonly #pusher: Pusher | null;
  readonly #membership: Membership | null;
  /** Bytes this node serves to peers (`--max-egress`). */
  readonly #egress: RateLimiter;
  /** Where each chunk digest lives locally: for deduplication across snapshots. */
  readonly #chunks = new Map<string, { name: string; file: string; offset: number }[]>();
  #advertise: string | null = null;
  /** Bytes held outside the index: drafts and uploads in progress. */
  #reserved = 0;
  /** Accesses not yet journaled: name → time, in access order. */
  #touched = new Map<string, number>();
  #touchTimer: ReturnType<typeof setTimeout> | null = null;
  #sweepTimer: ReturnType<typeof setInterval> | null = null;
  #closed = false;
  readonly recovery: RecoveryReport & { removedTemp: number; removedDirs: number };
  readonly counters = { hits: 0, misses: 0, evictions: 0 };

  private constructor(
    options: AgentOptions,
    store: SnapshotStore,
    index: SnapshotIndex,
    journal: Journal,
    recovery: RecoveryReport & { removedTemp: number; removedDirs: number },
    origin: S3Origin | null,
  ) {
    this.config = options.config;
    this.version = options.version;
    this.#fs = options.fs;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#now = options.now ?? Date.now;
    this.#touchFlushMs = options.touchFlushMs ?? 100;
    this.#store = store;
    this.#index = index;
    this.#journal = journal;
    this.recovery = recovery;
    this.startedAt = this.#now();
    this.#origin = origin;
    this.#egress = new RateLimiter(this.config.maxEgress);
    const config = this.config;
    this.#membership =
      config.peers.length > 0 || config.peersFile !== null || config.peersDns !== null
        ? new Membership({
          nodeId: config.nodeId,
          token: config.token,
          peers: config.peers,
          peersFile: config.peersFile,
          peersDns: config.peersDns,
          // A peer that sends nothing for this long is given up on (a
          // waiting read, for an owner still fetching, gets six times more).
          peerStallMs: Math.min(config.originStallTimeoutMs, 10_000),
          log: this.#log.child({ component: "cluster" }),
        })
        : null;
    this.#puller = new Puller({
      config: this.config,
      store,
      log: this.#log,
      metrics: this.#metrics,
      origin,
      membership: this.#membership,
      locator: { locate: (digest) => this.#locate(digest) },
      originRate: new RateLimiter(config.maxOriginRate),
      reserve: (bytes) => this.#reserve(bytes, new Set()),
      holdReserved: (bytes) => (this.#reserved += bytes),
      release: (bytes) => this.#release(bytes),
      publish: (request) => this.#publishPull(request),
    });
    this.#pusher = origin
      ? new Pusher({
        origin,
        store,
        index,
        log: this.#log,
        metrics: this.#metrics,
        markDone: (name, digest) =>
          this.#meta.run(() => this.#record({ t: "push_done", name, digest })),
        quarantine: (name, digest, why) => this.#quarantine(name, digest, why),
      })
      : null;
  }

  /**
   * Opens the data directory: replays the journal, reconciles the files with
   * it (removing what was never acknowledged), and returns a ready agent.
   * The caller holds the data-directory lock.
   */
  static async open(options: AgentOptions): Promise<Agent> {
    const started = performance.now();
    const { config, fs, log } = options;
    const store = new SnapshotStore(fs, config.dataDir);
    const { removedTemp } = await store.init();
    if (config.rebuildIndex) await moveJournalAside(store, log);
    const index = new SnapshotIndex(log);
    const { journal, recovery } = await Journal.open(index, {
      fs,
      dir: store.journalDir,
      log,
    });
    let origin: S3Origin | null = null;
    if (config.originEndpoint !== null && config.originBucket !== null) {
      origin = await S3Origin.create({
        endpoint: config.originEndpoint,
        bucket: config.originBucket,
        prefix: config.originPrefix,
        region: config.originRegion,
        stallTimeoutMs: config.originStallTimeoutMs,
        log: log.child({ component: "origin" }),
        createBucket: config.originCreateBucket,
      });
      const { metrics } = options;
      origin.observer = {
        request: () => metrics.originRequests.inc(),
        retry: () => metrics.originRetries.inc(),
        error: () => metrics.originErrors.inc(),
      };
    }
    const agent = new Agent(options, store, index, journal, {
      ...recovery,
      removedTemp,
      removedDirs: 0,
    }, origin);
    try {
      if (config.rebuildIndex) await agent.#rebuildIndex();
      agent.recovery.removedDirs = await agent.#reconcile();
      await agent.#puller.recover();
    } catch (err) {
      await journal.close();
      throw err;
    }
    index.goLive();
    await agent.sweepDrafts();
    agent.#pusher?.start();
    await agent.#membership?.start();
    if (origin) {
      origin.probe().then((ok) => {
        if (!ok) log.warn("origin does not answer yet", { endpoint: origin!.endpoint });
      });
    }
    agent.#sweepTimer = setInterval(
      () => agent.sweepDrafts().catch((err) => log.warn("draft sweep failed", { error: err })),
      Math.min(config.draftTtlMs / 4, 3_600_000),
    );
    Deno.unrefTimer(agent.#sweepTimer);
    agent.recovery.ms = Math.round(performance.now() - started);
    options.metrics.recoverySeconds.set(agent.recovery.ms / 1000);
    options.metrics.bindGauges({
      cacheBytes: () => index.totalBytes,
      cacheCapacityBytes: () => config.cacheSize,
      cacheEntries: () => index.count,
      cacheReservedBytes: () => agent.#reserved,
      pinnedEntries: () => index.entries().filter((e) => e.pinned).length,
      draftBytes: () => [...agent.#draftBytes.values()].reduce((a, b) => a + b, 0),
      journalBytes: () => journal.size,
      ready: () => !agent.#closed,
      pushQueued: () => index.pushQueue().length,
      pullsActive: () => agent.#puller.activeCount,
      peersUp: () => agent.#membership?.healthy().length ?? 0,
      peersKnown: () => agent.#membership?.peers().length ?? 0,
    });
    log.info("recovered", {
      snapshots: index.count,
      replayed: recovery.replayed,
      checkpointSeq: recovery.checkpointSeq,
      truncatedBytes: recovery.truncatedBytes,
      removedTemp,
      removedDirs: agent.recovery.removedDirs,
      ms: agent.recovery.ms,
    });
    await agent.#enforceBudget().catch((err) => {
      log.warn("cache is over budget and nothing more can be evicted", { error: err });
    });
    return agent;
  }

  /**
   * First step of a shutdown: pulls in flight are aborted (their verified
   * chunks stay for a resume), so requests waiting on them end now rather
   * than at the end of the grace time.
   */
  stopTransfers(): void {
    this.#puller.abortAll(new SnapmeshError("shutting_down", "The agent is shutting down"));
  }

  /**
   * Stops pulls, gives uploads in flight `pushGraceMs` to finish (then
   * aborts them; they stay queued), flushes access times, checkpoints the
   * journal and closes it.
   */
  async close(options: { pushGraceMs?: number } = {}): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#touchTimer !== null) clearTimeout(this.#touchTimer);
    if (this.#sweepTimer !== null) clearInterval(this.#sweepTimer);
    this.stopTransfers();
    this.#membership?.stop();
    await this.#pusher?.stop(options.pushGraceMs);
    this.#flushTouches();
    await this.#meta.run(() => this.#journal.close({ checkpoint: true }));
  }

  // --- uploads and commits ----------------------------------------------------

  /**
   * Streams `body` into the draft of `name` as `file`, replacing a staged
   * file of the same name. Nothing is left behind if it fails.
   */
  async stageFile(
    name: string,
    file: string,
    body: ReadableStream<Uint8Array> | null,
    options: { contentLength?: number | null } = {},
  ): Promise<StageResult> {
    assertName("snapshot", name);
    assertName("file", file);
    this.#assertOpen();
    const length = options.contentLength ?? null;
    if (length !== null && length > this.config.maxFileSize) throw this.#tooLarge(length);
    return await this.#stage(name, file, body ? streamSource(body) : emptySource, length);
  }

  /** Ingests a local file under `--import-root` without piping it through HTTP. */
  async importFile(name: string, file: string, path: unknown): Promise<StageResult> {
    assertName("snapshot", name);
    assertName("file", file);
    this.#assertOpen();
    const root = this.config.importRoot;
    if (root === null) {
      throw new SnapmeshError(
        "path_not_allowed",
        "Import by path is disabled on this node: start it with --import-root DIR",
      );
    }
    if (typeof path !== "string" || !path.startsWith("/") || path.includes("\0")) {
      throw new SnapmeshError("invalid_body", 'Body must be {"path": "/absolute/path"}');
    }
    const denied = () =>
      new SnapmeshError(
        "path_not_allowed",
        `Cannot import ${path}: only files under the import root ${root} may be imported`,
      );
    // Lexically first, so the answer for a path outside the root never
    // depends on whether it exists.
    if (!isUnder(normalizePath(path), normalizePath(root))) throw denied();
    let realRoot: string;
    try {
      realRoot = await this.#fs.realPath(root);
    } catch {
      throw new SnapmeshError("path_not_allowed", `The import root ${root} does not exist`);
    }
    // Resolve, check, open, then prove that the opened file is the one under
    // the root: a check alone could be raced by swapping a directory for a
    // symlink before the open. The open file's device and inode must match
    // what the path resolves to, before and after the open. (Checking the
    // type before opening keeps a FIFO from ever being opened; at worst a
    // perfectly timed swap can stall one request, never leak a byte.)
    const resolve = async () => {
      let real: string;
      let stat;
      try {
        real = await this.#fs.realPath(path);
        stat = await this.#fs.stat(real);
      } catch (err) {
        throw importError(path, err);
      }
      if (!isUnder(real, realRoot)) throw denied();
      if (!stat.isFile) {
        throw new SnapmeshError("invalid_body", `Cannot import ${path}: not a regular file`);
      }
      return { real, stat };
    };
    const before = await resolve();
    if (before.stat.size > this.config.maxFileSize) throw this.#tooLarge(before.stat.size);
    let handle: FileHandle;
    try {
      handle = await this.#fs.open(before.real);
    } catch (err) {
      throw importError(path, err);
    }
    try {
      const opened = await handle.stat();
      const after = await resolve();
      for (const seen of [before.stat, after.stat]) {
        if (!opened.isFile || seen.dev !== opened.dev || seen.ino !== opened.ino) {
          throw new SnapmeshError(
            "path_not_allowed",
            `Cannot import ${path}: it changed while it was being opened`,
          );
        }
      }
      return await this.#stage(name, file, fileSource(handle), opened.size);
    } finally {
      handle.close();
    }
  }

  async #stage(
    name: string,
    file: string,
    source: ByteSource,
    expectedSize: number | null,
  ): Promise<StageResult> {
    const committed = this.#index.get(name);
    if (committed) return await this.#stageAgainstCommitted(committed, file, source, expectedSize);
    if (this.#committing.has(name)) throw this.#beingCommitted(name);

    const uploads = this.#uploads.get(name) ?? new Map<string, number>();
    this.#uploads.set(name, uploads);
    uploads.set(file, (uploads.get(file) ?? 0) + 1);
    let reserved = 0;
    let blob: { id: string; path: string; handle: FileHandle } | null = null;
    let syncer: FileHandle | null = null;
    try {
      blob = await this.#store.createBlob(name);
      const flusher = syncer = await this.#fs.open(blob.path);
      const written = await writeChunked(source, blob.handle, {
        chunkSize: this.config.chunkSize,
        maxSize: this.config.maxFileSize,
        beforeWrite: async (bytes) => {
          await this.#reserve(bytes, new Set());
          reserved += bytes;
        },
        backgroundSync: () => flusher.sync(),
      });
      if (expectedSize !== null && written.size !== expectedSize) {
        throw new SnapmeshError(
          "invalid_body",
          `Body ended after ${written.size} of ${expectedSize} bytes`,
        );
      }
      await blob.handle.sync();
      blob.handle.close();
      await this.#store.syncBlobs(name); // the blob's name, before the meta that points at it
      const draft: DraftFile = { ...written, file, blob: blob.id };
      await this.#drafts.run(name, async () => {
        // The name may have been committed (or pulled) while the bytes streamed.
        if (this.#index.has(name) || this.#committing.has(name)) throw this.#beingCommitted(name);
        const previous = await this.#store.writeDraftFile(name, draft);
        this.#draftBytes.set(name, (this.#draftBytes.get(name) ?? 0) + written.storedBytes);
        if (previous?.blob) {
          await this.#store.removeBlob(name, previous.blob);
          this.#draftBytes.set(name, this.#draftBytes.get(name)! - previous.storedBytes);
          this.#release(previous.storedBytes);
        }
      });
      blob = null;
      reserved = 0;
      this.#metrics.ingestedBytes.inc({ source: "local" }, written.storedBytes);
      return { file, size: written.size, sha256: written.sha256 };
    } catch (err) {
      if (isNoSpace(err)) {
        throw new SnapmeshError(
          "insufficient_storage",
          `The disk under ${this.config.dataDir} is full: ${errorMessage(err)}`,
        );
      }
      throw err;
    } finally {
      syncer?.close();
      if (blob) {
        blob.handle.close();
        await this.#store.removeBlob(name, blob.id).catch(() => {});
        await this.#drafts.run(name, () => this.#store.dropDraftIfEmpty(name)).catch(() => {});
      }
      if (reserved > 0) this.#release(reserved);
      const left = (uploads.get(file) ?? 1) - 1;
      if (left > 0) uploads.set(file, left);
      else uploads.delete(file);
      if (uploads.size === 0) this.#uploads.delete(name);
    }
  }

  /**
   * Staging a file of an already committed snapshot: accepted only when the
   * bytes are identical (so a retried `put` succeeds); nothing is written.
   */
  async #stageAgainstCommitted(
    entry: CacheEntry,
    file: string,
    source: ByteSource,
    expectedSize: number | null,
  ): Promise<StageResult> {
    const manifest = await this.#manifestOf(entry);
    const existing = findFile(manifest, file);
    const conflict = (why: string) =>
      new SnapmeshError(
        "snapshot_exists",
        `Snapshot "${entry.name}" is already committed with other content: ${why}`,
        { digest: entry.digest },
      );
    if (!existing) throw conflict(`it has no file "${file}"`);
    if (expectedSize !== null && expectedSize !== existing.size) {
      throw conflict(`"${file}" has ${existing.size} bytes, not ${expectedSize}`);
    }
    const hashed = await writeChunked(source, null, {
      chunkSize: manifest.chunkSize,
      maxSize: this.config.maxFileSize,
    });
    if (hashed.sha256 !== existing.sha256) throw conflict(`"${file}" differs`);
    await this.#drafts.run(entry.name, async () => {
      await this.#store.writeDraftFile(entry.name, { ...hashed, file, blob: null });
    });
    return { file, size: hashed.size, sha256: hashed.sha256 };
  }

  /**
   * Drops drafts nobody staged a file into for `--draft-ttl`: an abandoned
   * upload must not hold cache space forever. Returns the names dropped.
   */
  async sweepDrafts(): Promise<string[]> {
    const dropped: string[] = [];
    for (const key of await this.#puller.sweep(this.config.draftTtlMs)) {
      this.#log.info("dropped an abandoned partial pull", { key });
    }
    const cutoff = this.#now() - this.config.draftTtlMs;
    for (const name of await this.#store.listDrafts()) {
      if (this.#uploads.has(name)) continue;
      await this.#drafts.run(name, async () => {
        const touched = await this.#store.draftTouchedAt(name);
        if (touched === null || touched > cutoff || this.#uploads.has(name)) return;
        await this.#store.dropDraft(name);
        this.#release(this.#draftBytes.get(name) ?? 0);
        this.#draftBytes.delete(name);
        dropped.push(name);
        this.#log.info("dropped an abandoned draft", { name, idleMs: this.#now() - touched });
      });
    }
    return dropped;
  }

  /** Drops the uncommitted draft of `name`. */
  async dropDraft(name: string): Promise<{ name: string; files: string[] }> {
    assertName("snapshot", name);
    this.#assertOpen();
    return await this.#drafts.run(name, async () => {
      const busy = this.#uploads.get(name);
      if (busy && busy.size > 0) throw this.#uploadBusy(name, busy);
      const files = await this.#store.readDraft(name);
      if (files.length === 0) {
        throw new SnapmeshError("draft_not_found", `Snapshot "${name}" has no draft`);
      }
      await this.#store.dropDraft(name);
      this.#release(this.#draftBytes.get(name) ?? 0);
      this.#draftBytes.delete(name);
      return { name, files: files.map((f) => f.file) };
    });
  }

  /**
   * Commits the draft of `name`: builds the manifest, publishes the snapshot
   * atomically and durably, and journals it. Same content again answers the
   * existing manifest with `created: false`.
   */
  async commit(name: string, request: CommitRequest = {}): Promise<CommitResult> {
    assertName("snapshot", name);
    this.#assertOpen();
    try {
      const result = await this.#drafts.run(name, () => this.#commitLocked(name, request));
      this.#metrics.commits.inc({ result: result.created ? "created" : "unchanged" });
      await this.#enforceBudget(new Set([name])).catch((err) => {
        this.#log.warn("cache over budget after commit", { error: err });
      });
      return result;
    } catch (err) {
      this.#metrics.commits.inc({ result: "failed" });
      throw err;
    }
  }

  async #commitLocked(name: string, request: CommitRequest): Promise<CommitResult> {
    const busy = this.#uploads.get(name);
    if (busy && busy.size > 0) throw this.#uploadBusy(name, busy);
    // From here until the commit ends, a new upload into the name is refused.
    this.#committing.add(name);
    try {
      return await this.#commitStaged(name, request);
    } finally {
      this.#committing.delete(name);
    }
  }

  async #commitStaged(name: string, request: CommitRequest): Promise<CommitResult> {
    const drafts = await this.#store.readDraft(name);
    if (drafts.length === 0) {
      throw new SnapmeshError(
        "draft_not_found",
        `Snapshot "${name}" has no staged files to commit: PUT them first`,
      );
    }
    if (drafts.length > MAX_FILES) {
      throw new SnapmeshError("invalid_body", `A snapshot holds at most ${MAX_FILES} files`);
    }
    const labels = request.labels === undefined ? {} : validateLabels(request.labels);
    const hot = parseHotRequest(request.hot, drafts);

    const existing = this.#index.get(name);
    if (existing) return await this.#commitExisting(existing, drafts);
    const stale = drafts.find((d) => d.blob === null);
    if (stale) {
      throw new SnapmeshError(
        "snapshot_exists",
        `Snapshot "${name}" changed since "${stale.file}" was staged; stage it again`,
      );
    }

    // The name is the snapshot's identity cluster-wide: the origin has a say.
    const remote = await this.#puller.remoteManifest(name).catch((err) => {
      this.#log.warn("commit: cannot check the origin; committing locally", { name, error: err });
      return null;
    });
    const staged = { files: drafts.map((d) => ({ name: d.file, size: d.size, sha256: d.sha256 })) };
    if (remote && !sameContent(staged, remote)) {
      throw new SnapmeshError(
        "snapshot_exists",
        `Snapshot "${name}" already exists in the origin with other content (digest ${remote.digest})`,
        { digest: remote.digest },
      );
    }

    const chunkSize = remote?.chunkSize ?? this.config.chunkSize;
    const files: ManifestFile[] = [];
    const sources = new Map<string, string>();
    for (const draft of drafts) {
      const path = this.#store.blobPath(name, draft.blob!);
      if (remote) {
        sources.set(draft.file, path);
        continue;
      }
      const chunked = draft.chunkSize === chunkSize ? draft : await this.#rechunk(path, chunkSize);
      const entry: ManifestFile = {
        name: draft.file,
        size: chunked.size,
        sha256: chunked.sha256,
        chunks: chunked.chunks,
      };
      const order = hot.get(draft.file);
      if (order) entry.hot = validateHot(draft.file, order, chunked.chunks.length);
      files.push(entry);
      sources.set(draft.file, path);
    }
    // Same files already in the origin: take its manifest, so the digest
    // agrees everywhere (labels and hot lists of this request are ignored).
    const manifest: Manifest = remote ? withoutDigest(remote) : {
      schema: MANIFEST_SCHEMA,
      name,
      createdAt: new Date(this.#now()).toISOString(),
      chunkSize,
      labels,
      files,
    };
    const digest = manifestDigest(manifest);
    const prepared = await this.#store.preparePublish(manifest, sources);
    const bytes = manifest.files.reduce((n, f) => n + storedBytes(f, chunkSize), 0) +
      prepared.manifestBytes.length;
    const push = this.#pusher !== null && this.config.push !== "off" && remote === null;
    // The staged bytes are reserved already; the manifest is new.
    try {
      await this.#reserve(prepared.manifestBytes.length, new Set([name]));
    } catch (err) {
      await this.#store.discard(prepared).catch(() => {});
      throw err;
    }

    await this.#meta.run(async () => {
      try {
        await this.#store.install(prepared);
      } catch (err) {
        await this.#store.discard(prepared).catch(() => {});
        throw err;
      }
      try {
        await this.#record({
          t: "add",
          name,
          digest,
          bytes,
          size: logicalSize(manifest),
          files: manifest.files.length,
          source: "local",
          at: this.#now(),
          push,
        });
      } catch (err) {
        // Not acknowledged: take the directory back out (recovery would too).
        await this.#store.removeSnapshot(name).catch(() => {});
        throw err;
      }
      this.#release((this.#draftBytes.get(name) ?? 0) + prepared.manifestBytes.length);
      this.#draftBytes.delete(name);
    }).catch((err) => {
      if (!this.#index.has(name)) this.#release(prepared.manifestBytes.length);
      throw err;
    });
    const withDigest = { ...manifest, digest };
    this.#manifests.set(digest, withDigest);
    this.#indexChunks(name, withDigest);
    // The snapshot holds its own links to the bytes; the draft can go. A
    // crash before this line leaves a draft that recovery recognizes and drops.
    await this.#store.dropDraft(name).catch((err) => {
      this.#log.warn("could not remove a committed draft", { name, error: err });
    });
    this.#log.info("committed", { name, digest, files: manifest.files.length, bytes, push });
    if (push && this.config.push === "sync") {
      try {
        await this.#pusher!.push(name, digest);
      } catch (err) {
        throw new SnapmeshError(
          "upstream_failed",
          `Snapshot "${name}" is committed locally (digest ${digest}), but its upload to the ` +
            `origin failed: ${errorMessage(err)}. It stays queued and is retried.`,
          { digest },
        );
      }
    } else if (push) {
      this.#pusher!.kick();
    }
    return { manifest: withDigest, created: true };
  }

  async #commitExisting(entry: CacheEntry, drafts: DraftFile[]): Promise<CommitResult> {
    const manifest = await this.#manifestOf(entry);
    const staged = { files: drafts.map((d) => ({ name: d.file, size: d.size, sha256: d.sha256 })) };
    if (!sameContent(staged, manifest)) {
      throw new SnapmeshError(
        "snapshot_exists",
        `Snapshot "${entry.name}" is already committed with other content (digest ${entry.digest})`,
        { digest: entry.digest },
      );
    }
    await this.#store.dropDraft(entry.name);
    this.#release(this.#draftBytes.get(entry.name) ?? 0);
    this.#draftBytes.delete(entry.name);
    return { manifest, created: false };
  }

  async #rechunk(path: string, chunkSize: number): Promise<ChunkedFile> {
    const handle = await this.#fs.open(path);
    try {
      return await writeChunked(fileSource(handle), null, {
        chunkSize,
        maxSize: Number.MAX_SAFE_INTEGER,
      });
    } finally {
      handle.close();
    }
  }

  // --- reads ----------------------------------------------------------------

  /** Local snapshots, by name. */
  list(): SnapshotSummary[] {
    return this.#index.entries()
      .sort((a, b) => (a.name < b.name ? -1 : 1))
      .map((e) => this.#summary(e));
  }

  #summary(e: CacheEntry): SnapshotSummary {
    const manifest = this.#manifests.get(e.digest);
    return {
      name: e.name,
      digest: e.digest,
      size: e.size,
      storedBytes: e.bytes,
      files: manifest ? manifest.files.map((f) => f.name) : [],
      pinned: e.pinned,
      lastAccess: new Date(e.lastAccess).toISOString(),
      createdAt: manifest?.createdAt ?? new Date(e.addedAt).toISOString(),
      state: "ready",
    };
  }

  /** Local snapshots with their file lists (reads manifests not yet cached). */
  async listDetailed(): Promise<SnapshotSummary[]> {
    const entries = this.#index.entries().sort((a, b) => (a.name < b.name ? -1 : 1));
    const out: SnapshotSummary[] = [];
    for (const entry of entries) {
      try {
        await this.#manifestOf(entry);
      } catch {
        // Evicted meanwhile: list what the index knew.
      }
      out.push(this.#summary(entry));
    }
    return out;
  }

  /**
   * The manifest of a snapshot: local, from a peer that holds it, or read
   * through from the origin (without pulling the files; an adopted upload
   * is pulled whole, since its manifest only exists once its files were
   * hashed).
   */
  async manifest(name: string): Promise<ManifestWithDigest> {
    return (await this.#findManifest(name)).manifest;
  }

  async #findManifest(name: string): Promise<{ manifest: ManifestWithDigest; source: Source }> {
    assertName("snapshot", name);
    this.#assertOpen();
    const entry = this.#index.get(name);
    if (entry) {
      this.#hit();
      return { manifest: await this.#manifestOf(entry), source: "local" };
    }
    this.#miss();
    const pulling = this.#puller.readyNow(name);
    if (pulling?.manifest) return { manifest: pulling.manifest, source: pulling.source };
    const fromPeer = await this.#puller.peerManifest(name);
    if (fromPeer) return { manifest: fromPeer, source: "peer" };
    const remote = await this.#puller.remoteManifest(name);
    if (remote) return { manifest: remote, source: "origin" };
    if (!this.#origin) throw notFound(name);
    const outcome = await this.#puller.start(name).done;
    return { manifest: outcome.manifest, source: outcome.source };
  }

  /** Size, sha256 and source of a file, without reading it (for HEAD). */
  async describeFile(name: string, file: string): Promise<FileInfo> {
    assertName("snapshot", name);
    assertName("file", file);
    this.#assertOpen();
    const { manifest, source } = await this.#findManifest(name);
    const info = findFile(manifest, file);
    if (!info) {
      throw new SnapmeshError("file_not_found", `Snapshot "${name}" has no file "${file}"`);
    }
    const local = this.#index.get(name)?.digest === manifest.digest;
    return { size: info.size, sha256: info.sha256, source: local ? "local" : source };
  }

  /**
   * Opens a file for streaming; counts as a use. A snapshot that is not
   * local is pulled, and the file streams while the pull runs.
   */
  async openFile(name: string, file: string): Promise<OpenedFile> {
    assertName("snapshot", name);
    assertName("file", file);
    this.#assertOpen();
    if (this.#index.has(name)) return await this.#openLocal(name, file);
    this.#miss();
    return await this.#openPulling(name, file);
  }

  async #openLocal(name: string, file: string): Promise<OpenedFile> {
    const entry = this.#index.get(name);
    if (!entry) throw notFound(name);
    const manifest = await this.#manifestOf(entry);
    const info = findFile(manifest, file);
    if (!info) {
      throw new SnapmeshError("file_not_found", `Snapshot "${name}" has no file "${file}"`);
    }
    let handle: FileHandle;
    try {
      handle = await this.#store.openFile(name, file);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw notFound(name); // evicted meanwhile
      throw err;
    }
    this.#hit();
    this.#touch(name);
    const metrics = this.#metrics;
    let used = false;
    return {
      name,
      file,
      size: info.size,
      sha256: info.sha256,
      source: "local",
      ready: () => Promise.resolve(),
      stream(start, end) {
        used = true;
        return fileRangeStream(handle, start, end, {
          onClose: (sent) => metrics.servedBytes.inc(sent),
        });
      },
      close() {
        if (!used) handle.close();
      },
    };
  }

  async #openPulling(name: string, file: string): Promise<OpenedFile> {
    const pull = this.#puller.start(name);
    const ready = await pull.ready;
    if (!ready.manifest) {
      // Adopting: the file's hash is known only at the end.
      await pull.done;
      return await this.#openLocal(name, file);
    }
    const { job, key, manifest, source } = ready;
    const index = job.fileIndex(file);
    if (index < 0) {
      throw new SnapmeshError("file_not_found", `Snapshot "${name}" has no file "${file}"`);
    }
    let handle: FileHandle;
    try {
      handle = await this.#store.openPartialRead(key, file);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      await pull.done; // published meanwhile
      return await this.#openLocal(name, file);
    }
    const info = manifest.files[index]!;
    const metrics = this.#metrics;
    let used = false;
    return {
      name,
      file,
      size: info.size,
      sha256: info.sha256,
      source,
      async ready(start, end) {
        if (end >= start) await job.waitChunk(index, Math.floor(start / job.chunkSize));
      },
      stream(start, end) {
        used = true;
        return pullingFileStream(job, index, handle, start, end, {
          onClose: (sent) => metrics.servedBytes.inc(sent),
        });
      },
      close() {
        if (!used) handle.close();
      },
    };
  }

  /**
   * Makes a snapshot local and verified, from the origin when needed, and
   * answers its paths. With `wait: false` it answers at once; with `hot`,
   * once the hot chunks are local (`complete: false` until the rest is).
   */
  async pull(name: string, options: PullOptions = {}): Promise<PullResult | PullAccepted> {
    assertName("snapshot", name);
    this.#assertOpen();
    const started = performance.now();
    const entry = this.#index.get(name);
    if (entry) {
      const manifest = await this.#manifestOf(entry);
      this.#hit();
      this.#touch(name);
      return {
        name,
        digest: entry.digest,
        source: "local",
        bytes: {
          local: manifest.files.reduce((n, f) => n + storedBytes(f, manifest.chunkSize), 0),
          peer: 0,
          origin: 0,
        },
        ms: Math.round(performance.now() - started),
        paths: this.#paths(name, manifest),
        complete: true,
      };
    }
    this.#miss();
    const pull = this.#puller.start(name);
    if (options.wait === false) {
      const ready = await pull.ready;
      return { name, digest: ready.manifest?.digest ?? null, state: "pulling" };
    }
    if (options.hot) {
      const ready = await pull.ready;
      if (ready.manifest) {
        const first = await Promise.race([
          ready.job.hotReady.then(() => "hot" as const),
          pull.done.then(() => "done" as const),
        ]);
        if (first === "hot") {
          const progress = ready.job.progress;
          return {
            name,
            digest: ready.manifest.digest,
            source: ready.source,
            bytes: { ...progress.bySource },
            ms: Math.round(performance.now() - started),
            paths: this.#paths(name, ready.manifest),
            complete: false,
          };
        }
      }
    }
    const outcome = await pull.done;
    return {
      name,
      digest: outcome.digest,
      source: outcome.source,
      bytes: outcome.bytes,
      ms: Math.round(performance.now() - started),
      paths: this.#paths(name, outcome.manifest),
      complete: true,
    };
  }

  #paths(name: string, manifest: Manifest): Record<string, string> {
    const paths: Record<string, string> = {};
    for (const f of manifest.files) paths[f.name] = this.#store.filePath(name, f.name);
    return paths;
  }

  /** Publishes a finished pull: install, journal, release its reservation. */
  async #publishPull(request: PublishRequest): Promise<void> {
    const { name, key, digest, manifest } = request;
    await this.#meta.run(async () => {
      if (this.#index.has(name)) {
        // Committed or pulled by another path meanwhile: keep that one.
        await this.#store.removePartial(key);
        this.#release(request.reservedBytes);
        return;
      }
      await this.#store.installPartial(key, name);
      try {
        await this.#record({
          t: "add",
          name,
          digest,
          bytes: request.bytes,
          size: logicalSize(manifest),
          files: manifest.files.length,
          source: request.source,
          at: this.#now(),
          push: request.push,
        });
      } catch (err) {
        await this.#store.removeSnapshot(name).catch(() => {});
        throw err;
      }
      this.#release(request.reservedBytes);
    });
    this.#manifests.set(digest, { ...manifest, digest });
    this.#indexChunks(name, { ...manifest, digest });
    this.#log.info("pulled", { name, digest, source: request.source, bytes: request.bytes });
    if (request.push) this.#pusher?.kick();
    await this.#enforceBudget(new Set([name])).catch((err) => {
      this.#log.warn("cache over budget after a pull", { error: err });
    });
  }

  /** Rehashes the local files of `name` against its manifest. */
  async verify(name: string): Promise<VerifyResult> {
    assertName("snapshot", name);
    this.#assertOpen();
    const entry = this.#index.get(name);
    if (!entry) throw notFound(name);
    let manifest: ManifestWithDigest;
    try {
      manifest = await this.#store.readManifest(name, entry.digest);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw notFound(name); // evicted meanwhile
      throw err;
    }
    const files: FileVerification[] = [];
    for (const file of manifest.files) {
      files.push(await this.#verifyFile(name, manifest, file));
    }
    const ok = files.every((f) => f.ok);
    // A snapshot evicted or deleted during the check is gone, not damaged.
    if (!ok && this.#index.get(name)?.digest !== entry.digest) throw notFound(name);
    if (!ok) {
      // No wrong byte is served: the snapshot leaves the cache (a later read
      // pulls a good copy from a peer or the origin).
      await this.#quarantine(
        name,
        entry.digest,
        `verify: ${
          files.filter((f) => !f.ok).map((f) => f.file).join(", ")
        } differ from the manifest`,
      );
    }
    return { name, digest: entry.digest, ok, files };
  }

  async #verifyFile(
    name: string,
    manifest: Manifest,
    file: ManifestFile,
  ): Promise<FileVerification> {
    const result: FileVerification = { file: file.name, ok: true, size: file.size, badChunks: [] };
    let handle: FileHandle;
    try {
      handle = await this.#store.openFile(name, file.name);
    } catch (err) {
      return { ...result, ok: false, problem: errorMessage(err) };
    }
    try {
      const actual = await handle.size();
      if (actual !== file.size) {
        return { ...result, ok: false, problem: `size is ${actual}, expected ${file.size}` };
      }
      const whole = createHash("sha256");
      const buffer = new Uint8Array(manifest.chunkSize);
      for (let i = 0; i < file.chunks.length; i++) {
        const length = chunkLength(file.size, manifest.chunkSize, i);
        const view = buffer.subarray(0, length);
        const n = await handle.readAt(view, i * manifest.chunkSize);
        whole.update(view.subarray(0, n));
        const expected = file.chunks[i];
        const good = n === length &&
          (expected === ZERO_CHUNK
            ? isAllZero(view)
            : createHash("sha256").update(view).digest("hex") === expected);
        if (!good) result.badChunks.push(i);
      }
      if (whole.digest("hex") !== file.sha256) result.ok = false;
      if (result.badChunks.length > 0) result.ok = false;
      if (!result.ok) {
        result.problem = result.badChunks.length > 0
          ? `${result.badChunks.length} chunk(s) differ from the manifest`
          : "whole-file sha256 differs from the manifest";
      }
      return result;
    } finally {
      handle.close();
    }
  }

  // --- eviction, deletion, pins --------------------------------------------

  /**
   * Deletes a local snapshot (`force` also deletes a pinned one); with
   * `origin`, deletes it from the origin too (manifest first, then files).
   */
  async remove(
    name: string,
    options: { force?: boolean; origin?: boolean } = {},
  ): Promise<{ name: string; digest: string | null; local: boolean; origin: boolean }> {
    assertName("snapshot", name);
    this.#assertOpen();
    if (options.origin && !this.#origin) {
      throw new SnapmeshError("invalid_body", "This node has no origin (--origin-endpoint)");
    }
    // A pull of the name in flight stops first (its partial goes too); one
    // that published just before is deleted below like any snapshot.
    if (!this.#index.get(name)?.pinned || options.force) {
      await this.#puller.cancel(
        name,
        new SnapmeshError("snapshot_not_found", `Snapshot "${name}" was deleted while pulling`),
      );
    }
    const local = await this.#meta.run(async () => {
      const entry = this.#index.get(name);
      if (!entry) return null;
      if (entry.pinned && !options.force) {
        throw new SnapmeshError(
          "snapshot_pinned",
          `Snapshot "${name}" is pinned: unpin it first, or delete with ?force=true`,
        );
      }
      await this.#removeLocked(entry, "delete");
      return entry.digest;
    });
    let remoteDigest: string | null = null;
    let inOrigin = false;
    if (options.origin) {
      const origin = this.#origin!;
      await this.#pusher?.settle(name);
      try {
        remoteDigest = (await this.#puller.remoteManifest(name).catch(() => null))?.digest ?? null;
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
      this.#puller.forget(name);
      this.#log.info("deleted from the origin", { name, objects: inOrigin });
    }
    if (local === null && !inOrigin) throw notFound(name);
    return { name, digest: local ?? remoteDigest, local: local !== null, origin: inOrigin };
  }

  /** Pins or unpins a local snapshot; pinned snapshots are never evicted. */
  async setPinned(name: string, pinned: boolean): Promise<{ name: string; pinned: boolean }> {
    assertName("snapshot", name);
    this.#assertOpen();
    return await this.#meta.run(async () => {
      const entry = this.#index.get(name);
      if (!entry) throw notFound(name);
      if (entry.pinned !== pinned) await this.#record({ t: pinned ? "pin" : "unpin", name });
      return { name, pinned };
    });
  }

  /** Must run under the metadata lock. */
  async #removeLocked(entry: CacheEntry, reason: "delete" | "evict"): Promise<void> {
    // Logged before and after the record: between the two lines the outcome
    // of a crash is either, which the crash tests rely on.
    this.#log.debug(reason === "evict" ? "evicting" : "deleting", { name: entry.name });
    await this.#record({ t: "remove", name: entry.name, digest: entry.digest, reason });
    this.#manifests.delete(entry.digest);
    this.#unindexChunks(entry.name);
    this.counters.evictions++;
    this.#metrics.evictions.inc({ reason: reason === "evict" ? "lru" : "delete" });
    this.#log.info(reason === "evict" ? "evicted" : "deleted", {
      name: entry.name,
      digest: entry.digest,
      bytes: entry.bytes,
    });
    try {
      await this.#store.removeSnapshot(entry.name);
    } catch (err) {
      // The journal already says it is gone; recovery finishes the job.
      this.#log.error("could not remove snapshot files", { name: entry.name, error: err });
    }
  }

  /** Bytes in use: cached snapshots, drafts and uploads in progress. */
  get usedBytes(): number {
    return this.#index.totalBytes + this.#reserved;
  }

  get reservedBytes(): number {
    return this.#reserved;
  }

  /**
   * Reserves `bytes` of the budget, evicting least recently used unpinned
   * snapshots (never those in `keep`) when needed.
   *
   * @throws {SnapmeshError} `insufficient_storage` when not enough can be evicted
   */
  async #reserve(bytes: number, keep: ReadonlySet<string>): Promise<void> {
    if (this.usedBytes + bytes <= this.config.cacheSize) {
      this.#reserved += bytes;
      return;
    }
    await this.#meta.run(async () => {
      while (this.usedBytes + bytes > this.config.cacheSize) {
        const deficit = this.usedBytes + bytes - this.config.cacheSize;
        const victims = this.#index.planEviction(deficit, keep);
        if (victims === null) throw this.#insufficient(bytes);
        for (const victim of victims) await this.#removeLocked(victim, "evict");
      }
      this.#reserved += bytes;
    });
  }

  #release(bytes: number): void {
    this.#reserved = Math.max(0, this.#reserved - bytes);
  }

  /**
   * Evicts until the cache fits its budget again (after a commit, a pull or
   * a restart), never the snapshots in `keep`.
   */
  async #enforceBudget(keep: ReadonlySet<string> = new Set()): Promise<void> {
    if (this.usedBytes <= this.config.cacheSize) return;
    await this.#meta.run(async () => {
      while (this.usedBytes > this.config.cacheSize) {
        const victims = this.#index.planEviction(this.usedBytes - this.config.cacheSize, keep);
        if (victims === null) throw this.#insufficient(0);
        for (const victim of victims) await this.#removeLocked(victim, "evict");
      }
    });
  }

  #insufficient(bytes: number): SnapmeshError {
    const pinned = this.#index.entries().filter((e) => e.pinned).reduce((n, e) => n + e.bytes, 0);
    return new SnapmeshError(
      "insufficient_storage",
      `Cannot make room for ${formatSize(bytes)} in the cache ` +
        `(${formatSize(this.usedBytes)} of ${formatSize(this.config.cacheSize)} used, ` +
        `${formatSize(pinned)} pinned, ${formatSize(this.#reserved)} in drafts and transfers): ` +
        `everything left is pinned or in use`,
      { capacityBytes: this.config.cacheSize, usedBytes: this.usedBytes },
    );
  }

  // --- status ---------------------------------------------------------------

  /** Cache figures for `/v1/status`. */
  cacheStatus(): Record<string, number> {
    return {
      bytes: this.#index.totalBytes,
      capacityBytes: this.config.cacheSize,
      reservedBytes: this.#reserved,
      entries: this.#index.count,
      pinned: this.#index.entries().filter((e) => e.pinned).length,
      hits: this.counters.hits,
      misses: this.counters.misses,
      evictions: this.counters.evictions,
    };
  }

  /** Journal figures for `/v1/status`. */
  journalStatus(): Record<string, unknown> {
    return {
      seq: this.#journal.lastSeq,
      bytes: this.#journal.size,
      checkpoints: this.#journal.stats.checkpoints,
      healthy: this.#journal.broken === null,
      recoveryMs: this.recovery.ms,
      /** Records replayed after the last checkpoint at start (0 after a clean shutdown). */
      replayedRecords: this.recovery.replayed,
      truncatedBytes: this.recovery.truncatedBytes,
    };
  }

  /** Origin health and push queue for `/v1/status` (null without an origin). */
  originStatus(): (Record<string, unknown> & { push: PushStatus & { mode: string } }) | null {
    if (!this.#origin || !this.#pusher) return null;
    return { ...this.#origin.health(), push: { mode: this.config.push, ...this.#pusher.status() } };
  }

  /** Peers and their health, for `/v1/status`. */
  peerStatus(): ReturnType<Membership["status"]> {
    return this.#membership?.status() ?? [];
  }

  /** Sets the URL peers reach this node at (known once listening). */
  setAdvertise(url: string): void {
    this.#advertise = this.config.advertise ?? url;
    this.#membership?.setAdvertise(this.#advertise);
  }

  // --- what peers ask (/v1/peer/*) -------------------------------------------

  /** Who this node is, for peers' probes. */
  peerHello(): { nodeId: string; version: string; advertise: string | null } {
    return { nodeId: this.config.nodeId, version: this.version, advertise: this.#advertise };
  }

  /**
   * This node's manifest of `name` and which chunks it holds, or null. With
   * `fetch` (a peer asks this node, an owner, to get it), a miss starts a
   * pull in owner mode and answers once the manifest is known.
   */
  async peerManifest(name: string, fetch: boolean): Promise<PeerManifest | null> {
    assertName("snapshot", name);
    this.#assertOpen();
    const entry = this.#index.get(name);
    if (entry) {
      const manifest = await this.#manifestOf(entry);
      return {
        manifest: new TextDecoder().decode(encodeManifest(manifest)),
        digest: entry.digest,
        complete: true,
        have: {},
      };
    }
    let ready = this.#puller.readyNow(name);
    if (!ready || !ready.manifest) {
      if (!fetch) return null;
      const pull = this.#puller.start(name, "owner");
      try {
        ready = await pull.ready;
        if (!ready.manifest) {
          await pull.done; // adopting: the manifest exists once the files are hashed
          return await this.peerManifest(name, false);
        }
      } catch (err) {
        if (hasCode(err, "snapshot_not_found")) return null;
        throw err;
      }
    }
    return {
      manifest: new TextDecoder().decode(encodeManifest(ready.manifest!)),
      digest: ready.manifest!.digest,
      ...ready.job.availability(),
    };
  }

  /** Which chunks of `name` at `digest` this node has verified, or null. */
  peerAvailability(name: string, digest: string): Availability | null {
    assertName("snapshot", name);
    if (this.#index.get(name)?.digest === digest) return { digest, complete: true, have: {} };
    const ready = this.#puller.readyNow(name);
    if (ready?.manifest?.digest === digest) return { digest, ...ready.job.availability() };
    return null;
  }

  /**
   * Bytes of a file for a peer: whole chunks only (the range starts and ends
   * on chunk boundaries), each verified before it is sent. From a local
   * snapshot, a chunk that fails verification quarantines the snapshot; from
   * a pull in progress, only chunks already verified are sent (with `wait`,
   * the others are waited for).
   */
  async peerRead(
    name: string,
    digest: string,
    file: string,
    rangeHeader: string | undefined,
    wait: boolean,
  ): Promise<{ size: number; start: number; end: number; stream: ReadableStream<Uint8Array> }> {
    assertName("snapshot", name);
    assertName("file", file);
    this.#assertOpen();
    const pace = (bytes: number) => this.#egress.take(bytes);
    const entry = this.#index.get(name);
    if (entry?.digest === digest) {
      const manifest = await this.#manifestOf(entry);
      const info = findFile(manifest, file);
      if (!info) {
        throw new SnapmeshError("file_not_found", `Snapshot "${name}" has no file "${file}"`);
      }
      const { start, end } = chunkAlignedRange(rangeHeader, info.size, manifest.chunkSize);
      let handle: FileHandle;
      try {
        handle = await this.#store.openFile(name, file);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) throw notFound(name);
        throw err;
      }
      this.#touch(name);
      const stream = verifiedChunkStream(handle, info, manifest.chunkSize, start, end, {
        pace,
        onCorrupt: (index) => {
          this.#quarantine(
            name,
            digest,
            `chunk ${index} of "${file}" failed verification while serving a peer`,
          )
            .catch((err) => this.#log.error("quarantine failed", { name, error: err }));
        },
        onSent: (bytes) => this.#metrics.servedBytes.inc(bytes),
      });
      return { size: info.size, start, end, stream };
    }
    const ready = this.#puller.readyNow(name);
    if (ready?.manifest?.digest === digest) {
      const { job, key } = ready;
      const index = job.fileIndex(file);
      if (index < 0) {
        throw new SnapmeshError("file_not_found", `Snapshot "${name}" has no file "${file}"`);
      }
      const info = ready.manifest.files[index]!;
      const { start, end } = chunkAlignedRange(rangeHeader, info.size, job.chunkSize);
      if (!wait) {
        for (let i = Math.floor(start / job.chunkSize); i <= Math.floor(end / job.chunkSize); i++) {
          if (!job.isDone(index, i)) {
            throw new SnapmeshError("chunk_unavailable", `Chunk ${i} of "${file}" is not here yet`);
          }
        }
      }
      let handle: FileHandle;
      try {
        handle = await this.#store.openPartialRead(key, file);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
        // Published (or given up) meanwhile: look again once the pull has ended.
        await this.#puller.settled(name);
        if (this.#puller.readyNow(name) === ready) throw notFound(name);
        return await this.peerRead(name, digest, file, rangeHeader, wait);
      }
      const stream = pullingFileStream(job, index, handle, start, end, {
        pace,
        onClose: (bytes) => this.#metrics.servedBytes.inc(bytes),
      });
      return { size: info.size, start, end, stream };
    }
    throw notFound(name);
  }

  /**
   * Takes a snapshot whose bytes do not match its manifest out of the cache
   * and moves its files to `quarantine/` for inspection.
   */
  async #quarantine(name: string, digest: string, why: string): Promise<void> {
    await this.#meta.run(async () => {
      const entry = this.#index.get(name);
      if (!entry || entry.digest !== digest) return;
      await this.#record({ t: "remove", name, digest, reason: "quarantine" });
      this.#manifests.delete(digest);
      this.#unindexChunks(name);
      const where = await this.#store.quarantine(name);
      this.#metrics.verifyFailures.inc({ source: "local" });
      this.#log.error("quarantined a snapshot whose bytes do not match its manifest", {
        name,
        digest,
        why,
        movedTo: where,
      });
    });
  }

  #indexChunks(name: string, manifest: ManifestWithDigest): void {
    for (const file of manifest.files) {
      file.chunks.forEach((digest, i) => {
        if (digest === ZERO_CHUNK) return;
        const list = this.#chunks.get(digest) ?? [];
        if (!list.some((l) => l.name === name)) {
          list.push({ name, file: file.name, offset: i * manifest.chunkSize });
        }
        this.#chunks.set(digest, list);
      });
    }
  }

  #unindexChunks(name: string): void {
    for (const [digest, list] of this.#chunks) {
      const kept = list.filter((l) => l.name !== name);
      if (kept.length === 0) this.#chunks.delete(digest);
      else if (kept.length !== list.length) this.#chunks.set(digest, kept);
    }
  }

  #locate(digest: string): ChunkLocation | undefined {
    const where = this.#chunks.get(digest)?.[0];
    return where && { path: this.#store.filePath(where.name, where.file), offset: where.offset };
  }

  /** Pulls in progress, for `/v1/status`. */
  pullStatus(): PullReport[] {
    return this.#puller.active();
  }

  /** Absolute local path of a committed file. */
  filePath(name: string, file: string): string {
    return this.#store.filePath(name, file);
  }

  // --- internals ------------------------------------------------------------

  async #record(record: StateRecord, sync = true): Promise<void> {
    const { type, payload } = encodeStateRecord(record);
    try {
      await this.#journal.append(type, payload, { sync });
    } catch (err) {
      throw new SnapmeshError("journal_failed", `Journal write failed: ${errorMessage(err)}`);
    }
    this.#metrics.journalRecords.inc();
    this.#metrics.journalCheckpoints.inc(
      this.#journal.stats.checkpoints - (this.#lastCheckpoints ?? 0),
    );
    this.#lastCheckpoints = this.#journal.stats.checkpoints;
  }
  #lastCheckpoints = 0;

  async #manifestOf(entry: CacheEntry): Promise<ManifestWithDigest> {
    const cached = this.#manifests.get(entry.digest);
    if (cached) return cached;
    let manifest: ManifestWithDigest;
    try {
      manifest = await this.#store.readManifest(entry.name, entry.digest);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw notFound(entry.name);
      throw err;
    }
    this.#manifests.set(entry.digest, manifest);
    return manifest;
  }

  #touch(name: string): void {
    const at = this.#now();
    this.#index.touch(name, at);
    this.#touched.delete(name);
    this.#touched.set(name, at);
    if (this.#touchTimer === null) {
      this.#touchTimer = setTimeout(() => {
        this.#touchTimer = null;
        this.#flushTouches();
      }, this.#touchFlushMs);
    }
  }

  /** Journals access order without fsync (batched, per DESIGN.md §5). */
  #flushTouches(): void {
    if (this.#touched.size === 0) return;
    const touched = [...this.#touched];
    this.#touched.clear();
    // Batches of 500 names keep every record far below the journal's size limit.
    for (let k = 0; k < touched.length; k += 500) {
      const batch = touched.slice(k, k + 500);
      this.#record(
        { t: "touch", names: batch.map(([n]) => n), times: batch.map(([, t]) => t) },
        false,
      ).catch((err) => {
        this.#log.warn("could not journal access times", { error: err });
      });
    }
  }

  #hit(): void {
    this.counters.hits++;
    this.#metrics.cacheHits.inc();
  }

  #miss(): void {
    this.counters.misses++;
    this.#metrics.cacheMisses.inc();
  }

  #assertOpen(): void {
    if (this.#closed) throw new SnapmeshError("shutting_down", "The agent is shutting down");
  }

  #tooLarge(size: number): SnapmeshError {
    return new SnapmeshError(
      "too_large",
      `File of ${size} bytes is larger than the ${this.config.maxFileSize}-byte limit ` +
        `(--max-file-size)`,
      { limit: this.config.maxFileSize },
    );
  }

  #beingCommitted(name: string): SnapmeshError {
    return new SnapmeshError(
      "snapshot_exists",
      `Snapshot "${name}" is committed or being committed: files cannot be staged into it`,
    );
  }

  #uploadBusy(name: string, busy: Map<string, number>): SnapmeshError {
    const file = [...busy.keys()][0];
    return new SnapmeshError(
      "upload_in_progress",
      `Cannot commit snapshot "${name}": file "${file}" is still being written`,
    );
  }

  /**
   * Makes the files agree with the replayed index: snapshot directories the
   * journal never acknowledged are removed, acknowledged ones are checked,
   * draft leftovers are repaired. Returns the number of directories removed.
   */
  async #reconcile(): Promise<number> {
    let removed = 0;
    for (const name of await this.#store.listSnapshotDirs()) {
      if (this.#index.has(name)) continue;
      this.#log.info("recovery: removing a snapshot directory that was never acknowledged", {
        name,
      });
      await this.#store.removeSnapshot(name);
      removed++;
    }
    for (const entry of this.#index.entries()) {
      const problem = await this.#checkOnDisk(entry);
      if (problem === null) continue;
      this.#log.error("recovery: an acknowledged snapshot is damaged on disk; dropping it", {
        name: entry.name,
        digest: entry.digest,
        problem,
      });
      await this.#meta.run(() =>
        this.#record({
          t: "remove",
          name: entry.name,
          digest: entry.digest,
          reason: "missing",
        })
      );
      await this.#store.removeSnapshot(entry.name);
    }
    for (const name of await this.#store.listDrafts()) {
      const files = await this.#store.repairDraft(name);
      if (files.length === 0) continue;
      const committed = this.#index.get(name);
      if (committed && await this.#isLeftoverOfCommit(committed, files)) {
        await this.#store.dropDraft(name);
        continue;
      }
      const bytes = files.reduce((n, f) => n + (f.blob ? f.storedBytes : 0), 0);
      this.#draftBytes.set(name, bytes);
      this.#reserved += bytes;
    }
    return removed;
  }

  async #isLeftoverOfCommit(entry: CacheEntry, files: DraftFile[]): Promise<boolean> {
    const manifest = await this.#manifestOf(entry);
    return sameContent(
      { files: files.map((f) => ({ name: f.file, size: f.size, sha256: f.sha256 })) },
      manifest,
    );
  }

  /** Cheap check of an acknowledged snapshot: manifest digest and file sizes. */
  async #checkOnDisk(entry: CacheEntry): Promise<string | null> {
    let manifest: ManifestWithDigest;
    try {
      manifest = await this.#store.readManifest(entry.name, entry.digest);
    } catch (err) {
      return `manifest: ${errorMessage(err)}`;
    }
    for (const file of manifest.files) {
      const stat = await this.#fs.statOrNull(this.#store.filePath(entry.name, file.name));
      if (stat === null) return `file "${file.name}" is missing`;
      if (stat.size !== file.size) {
        return `file "${file.name}" has ${stat.size} bytes, expected ${file.size}`;
      }
    }
    this.#manifests.set(entry.digest, manifest);
    this.#indexChunks(entry.name, manifest);
    return null;
  }

  /**
   * `--rebuild-index`: every snapshot directory is verified in full; the
   * good ones are journaled again, the others moved out of the cache.
   */
  async #rebuildIndex(): Promise<void> {
    this.#log.warn("rebuild-index: rebuilding the index from a verified scan of the files");
    for (const name of await this.#store.listSnapshotDirs()) {
      try {
        const manifest = await this.#store.readManifest(name);
        if (manifest.name !== name) throw new Error(`manifest names "${manifest.name}"`);
        for (const file of manifest.files) {
          const check = await this.#verifyFile(name, manifest, file);
          if (!check.ok) throw new Error(`file "${file.name}": ${check.problem}`);
        }
        const stat = await this.#fs.stat(`${this.#store.snapshotDir(name)}/manifest.json`);
        await this.#record({
          t: "add",
          name,
          digest: manifest.digest,
          bytes: manifest.files.reduce((n, f) => n + storedBytes(f, manifest.chunkSize), 0) +
            stat.size,
          size: logicalSize(manifest),
          files: manifest.files.length,
          source: "local",
          at: stat.mtimeMs ?? this.#now(),
        });
        this.#log.warn("rebuild-index: kept a verified snapshot", {
          name,
          digest: manifest.digest,
        });
      } catch (err) {
        this.#log.error("rebuild-index: dropping a snapshot that does not verify", {
          name,
          error: err,
        });
        await this.#store.removeSnapshot(name);
      }
    }
  }
}

async function moveJournalAside(store: SnapshotStore, log: Logger): Promise<void> {
  const fs = store.fs;
  if (await fs.statOrNull(store.journalDir) === null) return;
  const aside = `${store.journalDir}.broken-${new Date().toISOString().replace(/[:.]/g, "-")}`;
  await fs.rename(store.journalDir, aside);
  await fs.mkdir(store.journalDir);
  await fs.syncDir(store.root);
  log.warn("rebuild-index: moved the old journal aside", { path: aside });
}

/** True when absolute path `path` is strictly inside directory `root`. */
function isUnder(path: string, root: string): boolean {
  return path.startsWith(root.endsWith("/") ? root : `${root}/`);
}

function importError(path: string, err: unknown): SnapmeshError {
  if (err instanceof SnapmeshError) return err;
  if (err instanceof Deno.errors.NotFound) {
    return new SnapmeshError("invalid_body", `Cannot import ${path}: no such file`);
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return new SnapmeshError("path_not_allowed", `Cannot import ${path}: permission denied`);
  }
  return new SnapmeshError("invalid_body", `Cannot import ${path}: ${errorMessage(err)}`);
}

/** A peer's range: required, single, starting and ending on chunk boundaries. */
function chunkAlignedRange(
  header: string | undefined,
  size: number,
  chunkSize: number,
): { start: number; end: number } {
  const range = parseRange(header ?? null, size) ?? { start: 0, end: size - 1 };
  if (
    range.start % chunkSize !== 0 || ((range.end + 1) % chunkSize !== 0 && range.end !== size - 1)
  ) {
    throw new SnapmeshError("invalid_range", "Peer reads must cover whole chunks");
  }
  return range;
}

function withoutDigest(manifest: ManifestWithDigest): Manifest {
  const { digest: _, ...rest } = manifest;
  return rest;
}

function parseHotRequest(value: unknown, drafts: DraftFile[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (value === undefined) return out;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SnapmeshError("invalid_body", 'hot must be an object: {"<file>": [chunk indexes]}');
  }
  for (const [file, order] of Object.entries(value)) {
    const draft = drafts.find((d) => d.file === file);
    if (!draft) throw new SnapmeshError("invalid_body", `hot names "${file}", which is not staged`);
    validateHot(file, order, chunkCount(draft.size, draft.chunkSize));
    out.set(file, order);
  }
  return out;
}

function notFound(name: string): SnapmeshError {
  return new SnapmeshError("snapshot_not_found", `Snapshot "${name}" is not on this node`);
}
