/**
 * Wiring: builds the services of one agent over its opened journal, each
 * given exactly the rooms it works with.
 *
 * @module
 */

import {
  CacheBudget,
  Catalog,
  Scrubber,
  type ScrubTarget,
  type SnapshotIndex,
} from "../cache/mod.ts";
import {
  type Discovery,
  DnsDiscovery,
  FileDiscovery,
  HttpPeerTransport,
  HttpsDiscovery,
  Membership,
  StaticDiscovery,
} from "../cluster/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import { Committer, Drafts } from "../drafts/mod.ts";
import { Puller } from "../fetch/mod.ts";
import type { FileSystem } from "../fs/mod.ts";
import type { Journal } from "../journal/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { ManifestWithDigest } from "../manifest/mod.ts";
import { type Origin, Pusher, RemoteManifests } from "../origin/mod.ts";
import { PeerService, Reads } from "../reads/mod.ts";
import { Restores, WorkingSets } from "../restore/mod.ts";
import { SnapshotTrust } from "../security/mod.ts";
import type { SnapshotStore } from "../store/mod.ts";
import type { Clock } from "../util/clock.ts";
import type { Random } from "../util/random.ts";
import { RateLimiter } from "../util/rate.ts";
import { FirstCopies, Tracker, UploadSlots } from "../swarm/mod.ts";
import type { AgentOptions } from "./startup.ts";

/** What {@linkcode wire} builds on: the agent's options over an opened store and journal. */
export interface WireOptions extends Omit<AgentOptions, "clock" | "random"> {
  store: SnapshotStore;
  index: SnapshotIndex;
  journal: Journal;
  clock: Clock;
  random: Random;
}

/** What this node's requests to its peers carry (src/serve.ts builds it). */
export interface PeerCredentials {
  /** Bearer token (only when peers have no credentials of their own). */
  token: string | null;
  /** Signs a request with the cluster key, or null. */
  sign: ((method: string, url: string, body?: Uint8Array | null) => Record<string, string>) | null;
  /** The HTTP client now: the cluster CA and, with mutual TLS, this node's certificate. */
  client: (() => Deno.HttpClient) | null;
}

/** The discovery sources a configuration names. */
export function discoveryOf(
  config: ServeConfig,
  options: { fs: FileSystem; log: Logger },
): Discovery[] {
  const out: Discovery[] = [];
  if (config.peers.length > 0) out.push(new StaticDiscovery(config.peers));
  if (config.peersFile !== null) out.push(new FileDiscovery(config.peersFile, options));
  if (config.peersDns !== null) out.push(new DnsDiscovery(config.peersDns, { log: options.log }));
  // With the cluster CA, every peer is reached over https, however it was listed.
  return config.tlsCa === null ? out : out.map((source) => new HttpsDiscovery(source));
}

/** The services of one agent, wired. */
export interface Services {
  store: SnapshotStore;
  catalog: Catalog;
  budget: CacheBudget;
  drafts: Drafts;
  committer: Committer;
  puller: Puller;
  reads: Reads;
  peers: PeerService;
  origin: Origin | null;
  remote: RemoteManifests | null;
  pusher: Pusher | null;
  membership: Membership | null;
  scrubber: Scrubber | null;
  workingSets: WorkingSets;
  restores: Restores;
}

/** Builds the services of an agent over an opened journal. */
export function wire(options: WireOptions): Services {
  const { config, fs, log, metrics, origin, store, index, journal, clock, random } = options;
  const trust = options.trust ?? SnapshotTrust.none(log, clock);
  const catalog = new Catalog({
    store,
    index,
    journal,
    log,
    metrics,
    clock,
    trust,
    ...(options.touchFlushMs === undefined ? {} : { touchFlushMs: options.touchFlushMs }),
  });
  const budget = new CacheBudget({ catalog, capacity: config.cacheSize });
  const clusterLog = log.child({ component: "cluster" });
  const discovery = options.discovery ?? discoveryOf(config, { fs, log: clusterLog });
  const credentials = options.peerCredentials ?? { token: config.token, sign: null, client: null };
  // Requests (and credentials) go to configured peers only.
  let membership: Membership | null = null;
  const isPeer = (url: string) => membership?.peers().some((p) => p.url === url) ?? false;
  membership = discovery.length > 0
    ? new Membership({
      nodeId: config.nodeId,
      discovery,
      transport: options.transport ?? new HttpPeerTransport({
        ...credentials,
        isPeer,
        nodeId: config.nodeId,
        // A peer that sends nothing for this long is given up on (a waiting
        // read, for an owner still fetching, gets six times more).
        stallMs: Math.min(config.originStallTimeoutMs, 10_000),
      }),
      clock,
      random: random.fork("membership"),
      log: clusterLog,
    })
    : null;
  const remote = origin ? new RemoteManifests(origin, trust) : null;
  const tracker = new Tracker({ random: random.fork("tracker") });
  const uploads = new UploadSlots({ clock });
  const workingSets = new WorkingSets({
    fs,
    dir: `${store.root}/workingsets`,
    origin,
    membership,
    log: log.child({ component: "restore" }),
    clock,
  });
  const pusher = origin ? new Pusher({ origin, catalog, log, metrics, clock, random }) : null;
  const puller = new Puller({
    config,
    catalog,
    budget,
    log,
    metrics,
    clock,
    origin,
    remote,
    pushes: pusher,
    membership,
    random,
    tracker,
    uploads,
    originRate: new RateLimiter(config.maxOriginRate, { clock }),
    workingSets,
    trust,
  });
  const drafts = new Drafts({ config, fs, store, catalog, budget, log, metrics, clock });
  const committer = new Committer({
    config,
    fs,
    store,
    catalog,
    budget,
    drafts,
    remote,
    pushes: pusher,
    log,
    metrics,
    clock,
  });
  const reads = new Reads({ catalog, puller, log, metrics, clock, hasOrigin: origin !== null });
  const peers = new PeerService({
    config,
    version: options.version,
    catalog,
    puller,
    reads,
    egress: new RateLimiter(config.maxEgress, { clock }),
    tracker,
    uploads,
    firstCopies: new FirstCopies({ clock }),
    clock,
    log,
    metrics,
  });
  const scrubber = config.scrubRate > 0
    ? new Scrubber({
      targets: () => scrubTargets(catalog),
      trust: catalog.trust,
      rate: new RateLimiter(config.scrubRate, { clock }),
      clock,
      onCorrupt: (target, why) => reads.quarantine(target.name, target.manifest.digest, why),
      log: log.child({ component: "scrub" }),
    })
    : null;
  const restores = new Restores({
    restoreDir: config.restoreDir,
    faultTimeoutMs: config.restoreFaultTimeoutMs,
    recordWindowMs: config.restoreRecordWindowMs,
    catalog,
    budget,
    puller,
    workingSets,
    findManifest: async (name) => (await reads.findManifest(name)).manifest,
    quarantine: (name, digest, why) => reads.quarantine(name, digest, why),
    fs,
    log: log.child({ component: "restore" }),
    metrics,
    clock,
  });
  return {
    store,
    catalog,
    budget,
    drafts,
    committer,
    puller,
    reads,
    peers,
    origin,
    remote,
    pusher,
    membership,
    scrubber,
    workingSets,
    restores,
  };
}

/** Local snapshots with their manifests, least recently used first (for the scrub). */
async function scrubTargets(catalog: Catalog): Promise<ScrubTarget[]> {
  const out: ScrubTarget[] = [];
  for (const entry of catalog.entries()) {
    let manifest: ManifestWithDigest;
    try {
      manifest = await catalog.manifestOf(entry);
    } catch {
      continue; // evicted meanwhile
    }
    out.push({
      name: entry.name,
      manifest,
      open: (file) => catalog.store.openFile(entry.name, file),
    });
  }
  return out;
}
