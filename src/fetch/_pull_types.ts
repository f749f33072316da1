// The types of pulls, re-exported from `puller.ts`: what the puller works
// with, and what a pull promises its readers.

import type { CacheBudget, Catalog, Source } from "../cache/mod.ts";
import type { Membership } from "../cluster/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { ManifestWithDigest } from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { Origin, PushQueue, RemoteManifests } from "../origin/mod.ts";
import type { SnapshotTrust } from "../security/mod.ts";
import type { Tracker, UploadSlots } from "../swarm/mod.ts";
import type { Clock } from "../util/clock.ts";
import type { Random } from "../util/random.ts";
import type { RateLimiter } from "../util/rate.ts";
import type { PullJob } from "./pull_job.ts";

/** What the puller works with. */
export interface PullerDeps {
  config: ServeConfig;
  /** Local snapshots: the one publish path, and chunk locations for deduplication. */
  catalog: Catalog;
  /** Reservations for the bytes a pull writes. */
  budget: CacheBudget;
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  origin: Origin | null;
  /** The origin's manifests, or null without an origin. */
  remote: RemoteManifests | null;
  /** Uploads adopted snapshots in snapmesh's layout (null without an origin). */
  pushes: PushQueue | null;
  membership: Membership | null;
  /** Paces reads from the origin (`--max-origin-rate`). */
  originRate: RateLimiter;
  random: Random;
  /** This node's tracker (for the snapshots it owns). */
  tracker: Tracker;
  /** This node's upload slots (chunks received count as reciprocation). */
  uploads?: UploadSlots;
  /** Recorded working sets (lazy restore): a file's recorded order is its hot order. */
  workingSets?: {
    hotOrder(name: string, manifest: ManifestWithDigest): Promise<Record<string, number[]> | null>;
  } | null;
  /** Checks manifests from peers against the trusted keys. @default none */
  trust?: SnapshotTrust;
}

/** A pull whose plan is known and whose job exists. */
export interface PullReady {
  job: PullJob;
  key: string;
  /** The manifest, or null while adopting (built when the pull completes). */
  manifest: ManifestWithDigest | null;
  /** Where most bytes are expected from. */
  source: Source;
}

/** Who asked for a pull: a local client, or a peer asking this node, an owner, to fetch. */
export type PullMode = "client" | "owner";

/** A published pull. */
export interface PullOutcome {
  name: string;
  digest: string;
  manifest: ManifestWithDigest;
  bytes: Record<Source, number>;
  source: Source;
  ms: number;
}

/** A pull in progress; every request for the name shares it. */
export interface ActivePull {
  name: string;
  ready: Promise<PullReady>;
  done: Promise<PullOutcome>;
}
