/**
 * An agent's start, up to the moment it can serve: the store and the
 * journal are opened, the services wired, and the files reconciled with the
 * journal (never deleting what was acknowledged). Then the gauges that
 * `/metrics` reads are bound to the services.
 *
 * @module
 */

import {
  moveJournalAside,
  moveOrphans,
  rebuildIndex,
  type RebuildReport,
  type SalvagedState,
  salvageJournalState,
  SnapshotIndex,
} from "../cache/mod.ts";
import type { Discovery, PeerTransport } from "../cluster/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import type { FileSystem } from "../fs/mod.ts";
import { Journal, type RecoveryReport } from "../journal/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { Origin } from "../origin/mod.ts";
import type { SnapshotTrust } from "../security/mod.ts";
import { SnapshotStore } from "../store/mod.ts";
import type { Clock } from "../util/clock.ts";
import type { Random } from "../util/random.ts";
import { type PeerCredentials, type Services, wire, type WireOptions } from "./wiring.ts";

/** What the agent's start found and did. */
export interface AgentRecovery extends RecoveryReport {
  removedTemp: number;
  /** Snapshot directories moved to `quarantine/` (never deleted). */
  quarantinedDirs: number;
  rebuild: RebuildReport | null;
}

/** Dependencies of `Agent.open`. */
export interface AgentOptions {
  config: ServeConfig;
  fs: FileSystem;
  log: Logger;
  metrics: Metrics;
  version: string;
  /** The origin (`openOrigin(config)`), or null for none. */
  origin: Origin | null;
  /** @default systemClock */
  clock?: Clock;
  /** @default systemRandom */
  random?: Random;
  /** Delay before access times are journaled. @default 100 */
  touchFlushMs?: number;
  /** Where peers come from. @default from `--peers`, `--peers-file`, `--peers-dns` */
  discovery?: readonly Discovery[];
  /** How peers are asked. @default HTTP with `--token` */
  transport?: PeerTransport;
  /** Signature policy. @default none: snapshots need no signature */
  trust?: SnapshotTrust;
  /** What requests to peers carry. @default the bearer token */
  peerCredentials?: PeerCredentials;
}

/** What {@linkcode recoverServices} starts from: the agent's options, clock and randomness set. */
export type StartupOptions = Omit<WireOptions, "store" | "index" | "journal">;

/** The services of a recovered data directory. */
export interface Recovered {
  services: Services;
  recovery: AgentRecovery;
  /** When the services were wired (the agent's start, for its uptime). */
  wiredAt: number;
}

/**
 * Opens the data directory: replays the journal, wires the services,
 * rebuilds the index when asked or when the journal is gone but snapshots
 * are not, reconciles the snapshot directories, recovers drafts, partial
 * pulls and restores, and lets the index go live. On failure the journal
 * is closed again. The caller holds the data-directory lock.
 */
export async function recoverServices(options: StartupOptions): Promise<Recovered> {
  const { config, fs, log, clock } = options;
  const store = new SnapshotStore(fs, config.dataDir);
  const { removedTemp } = await store.init();
  let salvaged: SalvagedState | null = null;
  if (config.rebuildIndex) {
    salvaged = await salvageJournalState(store, log);
    await moveJournalAside(store, { log, clock });
  }
  const index = new SnapshotIndex(log);
  const { journal, recovery } = await Journal.open(index, { fs, dir: store.journalDir, log });
  const services = wire({ ...options, store, index, journal });
  const wiredAt = clock.now();
  const report: AgentRecovery = { ...recovery, removedTemp, quarantinedDirs: 0, rebuild: null };
  const { catalog, drafts, puller } = services;
  try {
    // The index never loses track of snapshots silently: with no journal
    // state at all but snapshot directories on disk (a deleted or emptied
    // journal), it is rebuilt from a verified scan, loudly.
    let reason: RebuildReport["reason"] | null = config.rebuildIndex ? "requested" : null;
    if (reason === null && recovery.empty && (await store.listSnapshotDirs()).length > 0) {
      reason = "journal_empty";
    }
    if (reason !== null) {
      report.rebuild = await rebuildIndex(catalog, { reason, salvaged, log, clock });
    }
    // Only the directory listing is waited for: each snapshot is checked
    // after the agent is ready (checkSnapshots, started by the agent).
    report.quarantinedDirs = await moveOrphans(catalog, log);
    await drafts.recover();
    await puller.recover();
    await services.restores.init();
  } catch (err) {
    await journal.close();
    throw err;
  }
  index.goLive();
  return { services, recovery: report, wiredAt };
}

/** Starts what runs in the background: pushes, membership, the scrub, a first look at the origin. */
export async function startBackground(services: Services, log: Logger): Promise<void> {
  const { pusher, membership, scrubber, origin } = services;
  pusher?.start();
  await membership?.start();
  scrubber?.start();
  origin?.probe().then((ok) => {
    if (!ok) log.warn("origin does not answer yet", { endpoint: origin.endpoint });
  });
}

/** Logs what the start found and did. */
export function logRecovered(log: Logger, services: Services, recovery: AgentRecovery): void {
  log.info("recovered", {
    snapshots: services.catalog.index.count,
    replayed: recovery.replayed,
    checkpointSeq: recovery.checkpointSeq,
    truncatedBytes: recovery.truncatedBytes,
    removedTemp: recovery.removedTemp,
    quarantinedDirs: recovery.quarantinedDirs,
    rebuilt: recovery.rebuild?.reason ?? null,
    ms: recovery.ms,
  });
}

/** Binds the gauges `/metrics` reads to the services; `ready` is false once closing. */
export function bindAgentGauges(
  metrics: Metrics,
  services: Services,
  agent: { config: ServeConfig; ready(): boolean },
): void {
  const { catalog, budget, drafts, puller, membership } = services;
  const { index, journal } = catalog;
  metrics.bindGauges({
    cacheBytes: () => index.totalBytes,
    cacheCapacityBytes: () => agent.config.cacheSize,
    cacheEntries: () => index.count,
    cacheReservedBytes: () => budget.reserved,
    pinnedEntries: () => index.entries().filter((e) => e.pinned).length,
    draftBytes: () => drafts.totalBytes,
    journalBytes: () => journal.size,
    ready: () => agent.ready() && journal.broken === null,
    pushQueued: () => index.pushQueue().length,
    pullsActive: () => puller.activeCount,
    peersUp: () => membership?.healthy().length ?? 0,
    peersKnown: () => membership?.peers().length ?? 0,
  });
}
