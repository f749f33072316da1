/**
 * The agent: a facade that wires the services of one data directory and
 * hands each request to the service that owns it. It validates names and
 * refuses work once closing; everything else lives in the rooms:
 *
 * - `cache/`: the catalog of committed snapshots (the one durable publish
 *   path, removal, quarantine, the journal), the budget and eviction,
 *   recovery, the scrub;
 * - `drafts/`: staging uploads and imports, and commit;
 * - `reads/`: client reads and pulls, and what peers are answered;
 * - `fetch/`: pulls from local copies, peers and the origin;
 * - `origin/`: the S3 origin, its manifests, the push queue;
 * - `cluster/`: membership and the peer client.
 *
 * @module
 */

import type {
  AnnounceAnswer,
  AnnounceRequest,
  Availability,
  HaveHandler,
  Membership,
  PeerEndpoint,
  PeerManifest,
  Subscription,
} from "../cluster/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import type { CommitRequest, CommitResult, StageResult } from "../drafts/mod.ts";
import { checkSnapshots } from "../cache/mod.ts";
import { SnapmeshError } from "../errors.ts";
import type { PullReport } from "../fetch/mod.ts";
import type { Logger } from "../log/mod.ts";
import { assertName, type ManifestWithDigest } from "../manifest/mod.ts";
import type { PushStatus } from "../origin/mod.ts";
import type {
  FileInfo,
  Hello,
  OpenedFile,
  PeerRead,
  PullAccepted,
  PullOptions,
  PullResult,
  SnapshotSummary,
  VerifyResult,
} from "../reads/mod.ts";
import type { RestoreCreated, RestoreInfo, WorkingSet } from "../restore/mod.ts";
import { systemClock, type Timer } from "../util/clock.ts";
import { systemRandom } from "../util/random.ts";
import { type RemoveResult, removeSnapshot } from "./removal.ts";
import { peerEndpointOf } from "./peer_endpoint.ts";
import {
  type AgentOptions,
  type AgentRecovery,
  bindAgentGauges,
  logRecovered,
  type Recovered,
  recoverServices,
  startBackground,
} from "./startup.ts";
import { cacheStatus, journalStatus, originStatus } from "./status.ts";
import type { Services } from "./wiring.ts";

export type { AgentOptions } from "./startup.ts";

/** How long after start the background check of the snapshots begins. */
const CHECK_DELAY_MS = 500;

/** The snapmesh agent of one data directory. */
export class Agent {
  readonly config: ServeConfig;
  readonly version: string;
  readonly startedAt: number;
  readonly recovery: AgentRecovery;
  readonly #s: Services;
  readonly #log: Logger;
  #sweepTimer: Timer | null = null;
  #closed = false;
  readonly #checkAbort = new AbortController();
  /**
   * Resolves once the background check of the snapshots found at start is
   * over (damaged ones dropped and moved aside, counted in
   * `recovery.quarantinedDirs`); it never rejects.
   */
  checked: Promise<void> = Promise.resolve();

  private constructor(
    options: AgentOptions,
    { services, recovery, wiredAt }: Recovered,
  ) {
    this.config = options.config;
    this.version = options.version;
    this.#log = options.log;
    this.startedAt = wiredAt;
    this.#s = services;
    this.recovery = recovery;
  }

  /**
   * Opens the data directory: replays the journal, reconciles the files with
   * it (never deleting what was acknowledged), and returns a ready agent.
   * The caller holds the data-directory lock.
   */
  static async open(options: AgentOptions): Promise<Agent> {
    const { config, log, metrics } = options;
    const clock = options.clock ?? systemClock;
    const random = options.random ?? systemRandom;
    const started = clock.monotonic();
    const agent = new Agent(options, await recoverServices({ ...options, clock, random }));
    const { recovery } = agent;
    await agent.sweepDrafts();
    await startBackground(agent.#s, log);
    agent.checked = checkSnapshots(agent.#s.catalog, {
      log,
      clock,
      // The first requests after a restart go before the check's burst of reads.
      delayMs: CHECK_DELAY_MS,
      signal: agent.#checkAbort.signal,
    }).then(
      (moved) => {
        recovery.quarantinedDirs += moved;
      },
      (err) => log.error("recovery: the check of the snapshots failed", { error: err }),
    );
    agent.#sweepTimer = clock.setInterval(
      () => agent.sweepDrafts().catch((err) => log.warn("draft sweep failed", { error: err })),
      Math.min(config.draftTtlMs / 4, 3_600_000),
      { ref: false },
    );
    recovery.ms = Math.round(clock.monotonic() - started);
    metrics.recoverySeconds.set(recovery.ms / 1000);
    bindAgentGauges(metrics, agent.#s, { config, ready: () => !agent.#closed });
    logRecovered(log, agent.#s, recovery);
    await agent.#s.budget.enforce().catch((err) => {
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
    this.#s.puller.abortAll(new SnapmeshError("shutting_down", "The agent is shutting down"));
  }

  /**
   * Stops pulls, gives uploads in flight `pushGraceMs` to finish (then
   * aborts them; they stay queued), flushes access times, checkpoints the
   * journal and closes it.
   */
  async close(options: { pushGraceMs?: number } = {}): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#sweepTimer?.cancel();
    // Live restores first: a VM whose memory is all here gets every page
    // and runs on; the others are stopped (see src/restore/restores.ts).
    await this.#s.restores.shutdown();
    this.stopTransfers();
    this.#s.membership?.stop();
    this.#checkAbort.abort();
    await this.checked;
    await this.#s.scrubber?.stop();
    await this.#s.pusher?.stop(options.pushGraceMs);
    await this.#s.catalog.close();
  }

  // --- drafts and commits ------------------------------------------------------

  /** Streams `body` into the draft of `name` as `file`. */
  async stageFile(
    name: string,
    file: string,
    body: ReadableStream<Uint8Array> | null,
    options: { contentLength?: number | null } = {},
  ): Promise<StageResult> {
    this.#check(name, file);
    return await this.#s.drafts.stage(name, file, body, options);
  }

  /** Ingests a local file under `--import-root` without piping it through HTTP. */
  async importFile(name: string, file: string, path: unknown): Promise<StageResult> {
    this.#check(name, file);
    return await this.#s.drafts.importFile(name, file, path);
  }

  /** Drops abandoned drafts and partial pulls (`--draft-ttl`); returns the drafts dropped. */
  async sweepDrafts(): Promise<string[]> {
    for (const key of await this.#s.puller.sweep(this.config.draftTtlMs)) {
      this.#log.info("dropped an abandoned partial pull", { key });
    }
    return await this.#s.drafts.sweep();
  }

  /** Drops the uncommitted draft of `name`. */
  async dropDraft(name: string): Promise<{ name: string; files: string[] }> {
    this.#check(name);
    return await this.#s.drafts.drop(name);
  }

  /** Commits the draft of `name` (same content again: `created: false`). */
  async commit(name: string, request: CommitRequest = {}): Promise<CommitResult> {
    this.#check(name);
    return await this.#s.committer.commit(name, request);
  }

  // --- reads and pulls ---------------------------------------------------------

  /** Local snapshots with their file lists. */
  async listDetailed(): Promise<SnapshotSummary[]> {
    return await this.#s.reads.list();
  }

  /** The manifest of a snapshot: local, from a peer, or read through from the origin. */
  async manifest(name: string): Promise<ManifestWithDigest> {
    this.#check(name);
    return (await this.#s.reads.findManifest(name)).manifest;
  }

  /** Size, sha256 and source of a file, without reading it (for HEAD). */
  async describeFile(name: string, file: string): Promise<FileInfo> {
    this.#check(name, file);
    return await this.#s.reads.describeFile(name, file);
  }

  /** Opens a file for streaming (pulling it when not local); counts as a use. */
  async openFile(name: string, file: string): Promise<OpenedFile> {
    this.#check(name, file);
    return await this.#s.reads.openFile(name, file);
  }

  /** Opens a file of a snapshot cached here (a use), or null: never starts a pull. */
  async openCachedFile(name: string, file: string): Promise<OpenedFile | null> {
    this.#check(name, file);
    return await this.#s.reads.openCached(name, file);
  }

  /** Makes a snapshot local and verified, and answers its paths. */
  async pull(name: string, options: PullOptions = {}): Promise<PullResult | PullAccepted> {
    this.#check(name);
    return await this.#s.reads.pull(name, options);
  }

  /** Rehashes the local files of `name` against its manifest. */
  async verify(name: string): Promise<VerifyResult> {
    this.#check(name);
    return await this.#s.reads.verify(name);
  }

  /** Deletes a snapshot locally (and with `origin`, from the origin too). */
  async remove(
    name: string,
    options: { force?: boolean; origin?: boolean } = {},
  ): Promise<RemoveResult> {
    this.#check(name);
    return await removeSnapshot({ ...this.#s, log: this.#log }, name, options);
  }

  /** Pins or unpins a local snapshot; pinned snapshots are never evicted. */
  async setPinned(name: string, pinned: boolean): Promise<{ name: string; pinned: boolean }> {
    this.#check(name);
    return await this.#s.catalog.setPinned(name, pinned);
  }

  /** Absolute local path of a committed file. */
  filePath(name: string, file: string): string {
    return this.#s.store.filePath(name, file);
  }

  // --- what peers ask (/v1/peer/*) ---------------------------------------------

  /** Sets the URL peers reach this node at (known once listening). */
  setAdvertise(url: string): void {
    const advertise = this.config.advertise ?? url;
    this.#s.peers.setAdvertise(advertise);
    this.#s.membership?.setAdvertise(advertise);
  }

  /** What this node answers peers, for an in-memory transport. */
  get peerEndpoint(): PeerEndpoint {
    return peerEndpointOf(this.#s);
  }

  peerHello(): Hello {
    return this.#s.peers.hello();
  }

  /** Whether this node reaches `target`, for a peer that could not (only configured peers are probed). */
  async peerProbe(target: string): Promise<boolean> {
    return await this.#s.membership?.probeFor(target) ?? false;
  }

  async peerManifest(name: string, fetch: boolean): Promise<PeerManifest | null> {
    this.#check(name);
    return await this.#s.peers.manifest(name, fetch);
  }

  peerAvailability(name: string, digest: string): Availability | null {
    assertName("snapshot", name);
    return this.#s.peers.availability(name, digest);
  }

  async peerRead(
    name: string,
    request: {
      digest: string;
      file: string;
      range: string | undefined;
      wait: boolean;
      from?: string | null;
    },
  ): Promise<PeerRead> {
    this.#check(name, request.file);
    return await this.#s.peers.read(name, request);
  }

  peerAnnounce(name: string, request: AnnounceRequest): AnnounceAnswer {
    this.#check(name);
    return this.#s.peers.announce(name, request);
  }

  peerSubscribe(name: string, digest: string, handler: HaveHandler): Subscription | null {
    this.#check(name);
    return this.#s.peers.subscribe(name, digest, handler);
  }

  peerSuspect(name: string, request: { digest: string; file: string; index: number }): void {
    this.#check(name, request.file);
    this.#s.peers.suspect(name, request);
  }

  /** This node's working set of `name` at `digest`, or null. */
  async peerWorkingSet(name: string, digest: string): Promise<WorkingSet | null> {
    this.#check(name);
    return await this.#s.workingSets.local(digest);
  }

  // --- lazy restore (src/restore) ------------------------------------------------

  /** Starts a restore session: a socket for Firecracker's `Uffd` memory backend. */
  async restore(
    name: string,
    body: { file?: unknown; socket?: unknown },
  ): Promise<RestoreCreated> {
    this.#check(name);
    return await this.#s.restores.open(name, body);
  }

  /** Live restore sessions. */
  restoreStatus(): RestoreInfo[] {
    return this.#s.restores.list();
  }

  /** Ends a restore session (its VM is stopped). */
  async endRestore(id: string): Promise<{ id: string; ended: true; outcome: string }> {
    return await this.#s.restores.end(id);
  }

  /** The recorded working set of a snapshot (404 when none). */
  async workingSet(name: string): Promise<WorkingSet> {
    this.#check(name);
    return await this.#s.restores.workingSet(name);
  }

  /** Sets the working set of a snapshot. */
  async setWorkingSet(name: string, body: Record<string, unknown>): Promise<WorkingSet> {
    this.#check(name);
    return await this.#s.restores.setWorkingSet(name, body);
  }

  // --- status --------------------------------------------------------------------

  /** Bytes in use: cached snapshots, drafts and transfers in progress. */
  get usedBytes(): number {
    return this.#s.budget.used;
  }

  get reservedBytes(): number {
    return this.#s.budget.reserved;
  }

  /** Why this node cannot take changes right now, or null. */
  unhealthyReason(): string | null {
    return this.#s.catalog.unhealthyReason();
  }

  /** Cache figures for `/v1/status`. */
  cacheStatus(): Record<string, number> {
    return cacheStatus(this.#s);
  }

  /** Journal figures for `/v1/status`. */
  journalStatus(): Record<string, unknown> {
    return journalStatus(this.#s, this.recovery);
  }

  /** Origin health and push queue for `/v1/status` (null without an origin). */
  originStatus(): (Record<string, unknown> & { push: PushStatus & { mode: string } }) | null {
    return originStatus(this.#s, this.config.push);
  }

  /** Peers and their health, for `/v1/status`. */
  peerStatus(): ReturnType<Membership["status"]> {
    return this.#s.membership?.status() ?? [];
  }

  /** Pulls in progress, for `/v1/status`. */
  pullStatus(): PullReport[] {
    return this.#s.puller.active();
  }

  /** Validates names and refuses work once closing. */
  #check(name: string, file?: string): void {
    assertName("snapshot", name);
    if (file !== undefined) assertName("file", file);
    if (this.#closed) throw new SnapmeshError("shutting_down", "The agent is shutting down");
  }
}
