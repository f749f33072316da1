/**
 * Pulls of snapshots that are not local: one per name at a time (every
 * reader of the name joins it). A pull keeps its progress in
 * `partial/<digest>/`, so a pull cut short (failure, restart) resumes from
 * the chunks already verified.
 *
 * Lookup on a miss: the name's owners (the top two of a rendezvous ranking
 * of this node and its healthy peers) ranked above this node are asked to
 * fetch it; then a few other healthy peers are asked whether they hold it;
 * then the origin. An owner asked by a peer pulls in "owner" mode, which
 * never asks owners in turn, so the origin sends each snapshot about once
 * per cluster. Chunks then come from wherever they are: other local
 * snapshots, every peer that holds them (availability is polled), the owner
 * (which waits for its own pull), the origin last.
 *
 * A name whose origin prefix holds files but no manifest (a vHive-style
 * upload: `<name>/mem_file`, `<name>/snap_file`, …) is adopted: its files are
 * pulled, the manifest is built from what arrived, and, when pushing is on,
 * the snapshot is queued for upload in snapmesh's layout.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { CacheBudget, Catalog, Source } from "../cache/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import { errorMessage, hasCode, SnapmeshError } from "../errors.ts";
import type { Membership, Peer, PeerManifest, PeerTransport } from "../cluster/mod.ts";
import { isConnectionError } from "../cluster/mod.ts";
import type { Logger } from "../log/mod.ts";
import {
  chunkCount,
  chunkLength,
  decodeManifest,
  encodeManifest,
  isValidName,
  type Manifest,
  MANIFEST_SCHEMA,
  type ManifestWithDigest,
  MAX_FILES,
  sha256Hex,
  storedBytes,
  verifyChunk,
  ZERO_CHUNK,
} from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { Origin, PushQueue, RemoteManifests } from "../origin/mod.ts";
import { SIGNATURE_FILE, type SnapshotTrust } from "../security/mod.ts";
import type { SnapshotStore } from "../store/mod.ts";
import type { Clock } from "../util/clock.ts";
import type { Random } from "../util/random.ts";
import type { RateLimiter } from "../util/rate.ts";
import { SwarmSession, type Tracker, type UploadSlots } from "../swarm/mod.ts";
import { LocalSource } from "./local_source.ts";
import { OriginSource } from "./origin_source.ts";
import { PeerSource } from "./peer_source.ts";
import { type PullFile, PullJob, type PullReport } from "./pull_job.ts";
import { SourcesIO } from "./sources_io.ts";

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

interface Adoption {
  createdAt: number;
}

/** Starts, shares and resumes pulls. */
export class Puller {
  readonly #deps: PullerDeps;
  readonly #active = new Map<string, ActivePull>();
  readonly #jobs = new Map<string, PullJob>();
  readonly #sessions = new Map<string, SwarmSession>();
  /** Budget held by each partial pull, by partial key. */
  readonly #reserved = new Map<string, number>();

  constructor(deps: PullerDeps) {
    this.#deps = deps;
  }

  get #store(): SnapshotStore {
    return this.#deps.catalog.store;
  }

  /** Takes over partial pulls left by an earlier run: their bytes stay reserved. */
  async recover(): Promise<number> {
    const { log } = this.#deps;
    const store = this.#store;
    let kept = 0;
    for (const key of await store.listPartials()) {
      await store.cleanPartial(key);
      const plan = await store.readPartialPlan(key);
      if (plan === null) {
        log.info("recovery: removing a partial pull without a plan", { key });
        await store.removePartial(key);
        continue;
      }
      this.#deps.budget.hold(plan.reservedBytes);
      this.#reserved.set(key, plan.reservedBytes);
      kept++;
    }
    return kept;
  }

  /** Progress of the pulls in flight. */
  active(): PullReport[] {
    return [...this.#jobs.values()].map((job) => job.report());
  }

  get activeCount(): number {
    return this.#active.size;
  }

  /** The pull of `name` in flight, when its plan is known already. */
  readyNow(name: string): PullReady | null {
    return this.#readyNow.get(name) ?? null;
  }

  /** True when a pull of `name` is in flight. */
  isActive(name: string): boolean {
    return this.#active.has(name);
  }

  readonly #readyNow = new Map<string, PullReady>();
  /** Set by abortAll (shutdown): pulls in flight end and no new one starts. */
  #stopped: SnapmeshError | null = null;

  /** Starts a pull of `name`, or joins the one in flight. */
  start(name: string, mode: PullMode = "client"): ActivePull {
    const existing = this.#active.get(name);
    if (existing) return existing;
    if (this.#stopped) {
      // Shutting down: no new pull starts.
      const refused = Promise.reject(this.#stopped);
      refused.catch(() => {});
      return { name, ready: refused, done: refused };
    }
    const { clock } = this.#deps;
    const started = clock.monotonic();
    const ready = this.#prepare(name, mode);
    ready.then((r) => this.#readyNow.set(name, r), () => {});
    const done = ready.then((r) => this.#complete(name, r, started));
    const pull: ActivePull = { name, ready, done };
    this.#active.set(name, pull);
    ready.catch(() => {});
    const seconds = () => (clock.monotonic() - started) / 1000;
    done.then(
      () => {
        this.#deps.metrics.pulls.inc({ result: "done" });
        this.#deps.metrics.pullDuration.observe({ result: "done" }, seconds());
      },
      (err) => {
        this.#deps.metrics.pulls.inc({ result: "failed" });
        this.#deps.metrics.pullDuration.observe({ result: "failed" }, seconds());
        this.#deps.log.warn("pull failed", { name, error: err });
      },
    ).finally(() => {
      if (this.#active.get(name) === pull) this.#active.delete(name);
      this.#jobs.delete(name);
      this.#readyNow.delete(name);
    });
    return pull;
  }

  /**
   * After a local copy was quarantined: fetches a good one again in the
   * background, when a peer or the origin may have it.
   */
  refetch(name: string): void {
    if (this.#stopped || (this.#deps.membership === null && this.#deps.origin === null)) return;
    this.start(name).done.catch(() => {});
  }

  /** Aborts every pull in flight (their partials stay for a later resume). */
  abortAll(reason: SnapmeshError): void {
    this.#stopped = reason;
    for (const job of this.#jobs.values()) job.abort(reason);
  }

  /** The origin's manifest of `name`, or null when it has none (or there is no origin). */
  async remoteManifest(name: string): Promise<ManifestWithDigest | null> {
    return await (this.#deps.remote?.get(name) ?? null);
  }

  /** Resolves once the pull of `name` in flight (if any) has ended, either way. */
  async settled(name: string): Promise<void> {
    await this.#active.get(name)?.done.catch(() => {});
  }

  /**
   * Stops the pull of `name` (a delete): its job is aborted, its partial
   * removed and its reservation released. Resolves once it has ended; a
   * pull that published just before is then an ordinary local snapshot.
   */
  async cancel(name: string, reason: SnapmeshError): Promise<void> {
    this.#deps.remote?.forget(name);
    const pull = this.#active.get(name);
    if (!pull) return;
    const ready = await pull.ready.catch(() => null);
    ready?.job.abort(reason);
    await pull.done.catch(() => {});
    if (!ready || this.#active.has(name)) return; // a new pull took over the partial
    await this.#store.removePartial(ready.key);
    this.#deps.budget.release(this.#reserved.get(ready.key) ?? 0);
    this.#reserved.delete(ready.key);
    this.#adoptions.delete(ready.key);
  }

  /**
   * The manifest of `name` from a peer that holds it (or is pulling it),
   * without asking anyone to fetch it: the owners and a few other healthy
   * peers are asked at once. Null when none has it.
   */
  async peerManifest(name: string): Promise<ManifestWithDigest | null> {
    const membership = this.#deps.membership;
    if (!membership || !membership.configured) return null;
    const asked = membership.rank(name).filter((m) => !m.self).slice(0, 6);
    const answers = await Promise.all(
      asked.map((m) => m.self ? null : this.#askPeer(m.peer, name, false, 2_000)),
    );
    return answers.find((a) => a !== null)?.manifest ?? null;
  }

  /** Drops partial pulls idle for longer than `ttlMs`; returns their keys. */
  async sweep(ttlMs: number): Promise<string[]> {
    const store = this.#store;
    const busy = new Set(this.#active.keys());
    const dropped: string[] = [];
    for (const key of await store.listPartials()) {
      const plan = await store.readPartialPlan(key);
      if (plan && busy.has(plan.name)) continue;
      const touched = await store.partialTouchedAt(key);
      if (touched !== null && this.#deps.clock.now() - touched < ttlMs) continue;
      await store.removePartial(key);
      this.#deps.budget.release(this.#reserved.get(key) ?? 0);
      this.#reserved.delete(key);
      dropped.push(key);
    }
    return dropped;
  }

  /**
   * Finds the manifest among peers: owners ranked above this node (asked to
   * fetch, in client mode), then up to four other healthy peers (asked what
   * they hold). Null when no peer has it.
   */
  async #fromPeers(
    name: string,
    mode: PullMode,
  ): Promise<
    { manifest: ManifestWithDigest; primary: Peer | null; seen: Map<Peer, PeerManifest> } | null
  > {
    const membership = this.#deps.membership;
    if (!membership || !membership.configured) return null;
    const ranking = membership.rank(name);
    const asked = new Set<string>();
    const seen = new Map<Peer, PeerManifest>();
    if (mode === "client") {
      for (const member of ranking.slice(0, 2)) {
        if (member.self) break; // this node is an owner: nobody above it to ask
        asked.add(member.id);
        const answer = await this.#askPeer(member.peer, name, true, 30_000);
        if (answer) {
          seen.set(member.peer, answer.raw);
          return { manifest: answer.manifest, primary: member.peer, seen };
        }
      }
    }
    const others = ranking.filter((m) => !m.self && !asked.has(m.id)).slice(0, 4);
    const answers = await Promise.all(
      others.map(async (m) =>
        m.self ? null : { peer: m.peer, answer: await this.#askPeer(m.peer, name, false, 2_000) }
      ),
    );
    let manifest: ManifestWithDigest | null = null;
    for (const a of answers) {
      if (!a?.answer) continue;
      manifest ??= a.answer.manifest;
      if (a.answer.manifest.digest === manifest.digest) seen.set(a.peer, a.answer.raw);
    }
    return manifest ? { manifest, primary: null, seen } : null;
  }

  async #askPeer(
    peer: Peer,
    name: string,
    fetch: boolean,
    timeoutMs: number,
  ): Promise<{ manifest: ManifestWithDigest; raw: PeerManifest } | null> {
    let answer: PeerManifest | null;
    try {
      answer = await this.#deps.membership!.transport.manifest(peer.url, name, {
        fetch,
        timeoutMs,
      });
    } catch (err) {
      // Only a peer that cannot be reached is down; a slow or odd answer
      // (an owner still fetching, a 5xx) says nothing about its health.
      if (isConnectionError(err)) this.#deps.membership?.markDown(peer, errorMessage(err));
      this.#deps.log.debug("pull: peer could not answer", { name, peer: peer.id, error: err });
      return null;
    }
    if (answer === null) return null;
    this.#deps.membership?.markSeen(peer);
    try {
      // Never trust what a peer says the digest is: it is the hash of these bytes.
      const manifest = decodeManifest(new TextEncoder().encode(answer.manifest));
      if (manifest.name !== name) throw new Error(`it describes "${manifest.name}"`);
      await this.#deps.trust?.accept(manifest, answer.signatures, {
        source: "peer",
        who: `peer ${peer.id}`,
      });
      // Availability is keyed by the digest computed here, not the one it reported.
      return { manifest, raw: { ...answer, digest: manifest.digest } };
    } catch (err) {
      this.#deps.log.warn("pull: a peer sent an invalid manifest; ignoring it", {
        name,
        peer: peer.id,
        error: err,
      });
      return null;
    }
  }

  async #prepare(name: string, mode: PullMode): Promise<PullReady> {
    const { config, origin, log, metrics } = this.#deps;
    const store = this.#store;
    const found = await this.#fromPeers(name, mode);
    const manifest = found?.manifest ?? (origin ? await this.remoteManifest(name) : null);
    let files: PullFile[];
    let key: string;
    let reservedBytes: number;
    let chunkSize: number;
    const keys = new Map<string, string>();
    let adoption: Adoption | null = null;
    if (manifest) {
      key = manifest.digest;
      chunkSize = manifest.chunkSize;
      // A recorded working set (lazy restore) is the hot order of its file.
      const recorded = await this.#deps.workingSets?.hotOrder(name, manifest) ?? null;
      files = manifest.files.map((f) => ({
        name: f.name,
        size: f.size,
        chunks: f.chunks,
        hot: recorded?.[f.name] ?? f.hot,
      }));
      if (origin) {
        for (const f of manifest.files) keys.set(f.name, origin.fileKey(name, f.name));
      }
      reservedBytes = manifest.files.reduce((n, f) => n + storedBytes(f, chunkSize), 0) +
        encodeManifest(manifest).length;
    } else {
      this.#deps.trust?.assertNotRefused(name);
      if (!origin) throw notFound(name);
      const prefix = origin.snapshotPrefix(name);
      let objects;
      try {
        objects = await origin.list(prefix);
      } catch (err) {
        throw upstream(
          `Cannot list ${prefix} at the origin ${origin.endpoint}: ${errorMessage(err)}`,
        );
      }
      const direct = objects.filter((o) =>
        !o.key.slice(prefix.length).includes("/") && o.key.slice(prefix.length) !== SIGNATURE_FILE
      );
      if (direct.length === 0) {
        if (objects.length > 0) {
          log.warn("origin holds files but no manifest: an unfinished push; not adopting", {
            name,
          });
        }
        throw notFound(name);
      }
      if (direct.length > MAX_FILES) {
        throw upstream(
          `Cannot adopt ${prefix}: it holds ${direct.length} files, more than ${MAX_FILES}`,
        );
      }
      this.#deps.trust?.assertAdoptable(name);
      key = `adopt-${name}`;
      chunkSize = config.chunkSize;
      files = direct.map((o) => {
        const file = o.key.slice(prefix.length);
        if (!isValidName(file)) {
          throw upstream(`Cannot adopt ${prefix}: object "${file}" is not a valid file name`);
        }
        keys.set(file, o.key);
        return {
          name: file,
          size: o.size,
          chunks: new Array(chunkCount(o.size, chunkSize)).fill(null),
        };
      }).sort((a, b) => (a.name < b.name ? -1 : 1));
      reservedBytes = files.reduce((n, f) => n + f.size, 0) + 64 * 1024;
      adoption = { createdAt: Math.max(...direct.map((o) => o.lastModified)) };
      log.info("adopting a snapshot uploaded without a manifest", { name, files: files.length });
    }

    // A pull that failed earlier kept only the bytes of its verified chunks
    // reserved: top the reservation up again.
    const held = this.#reserved.get(key) ?? 0;
    if (held < reservedBytes) {
      await this.#deps.budget.reserve(reservedBytes - held);
      this.#reserved.set(key, reservedBytes);
    }
    const resuming = (await store.readPartialPlan(key)) !== null;

    const { clock, catalog } = this.#deps;
    const io = new SourcesIO({
      files,
      chunkSize,
      openFile: (file) => store.openPartialFile(key, file),
      onReceived: (source) => this.#deps.uploads?.received(source.replace(/^peer:/, "")),
    });
    const job = new PullJob({
      name,
      files,
      chunkSize,
      io,
      log,
      clock,
      random: this.#deps.random.fork(`pull ${name}`),
      zone: config.zone,
      onBytes: (kind, bytes) => metrics.ingestedBytes.inc({ source: kind }, bytes),
      onVerifyFailure: (_, kind) => metrics.verifyFailures.inc({ source: kind }),
    });
    if (manifest) {
      // Chunks this node already holds in other snapshots: copied, not fetched.
      const digests = new Map(manifest.files.map((f) => [f.name, f.chunks] as const));
      const local = new LocalSource(store.fs, catalog, digests, chunkSize);
      const bits = new Uint8Array(Math.ceil(job.chunkTotal / 8));
      let any = false;
      files.forEach((f, fi) => {
        f.chunks.forEach((_, i) => {
          if (!local.holds(f.name, i)) return;
          const c = job.chunkOf(fi, i);
          bits[c >> 3]! |= 1 << (c & 7);
          any = true;
        });
      });
      if (any) {
        io.add(local);
        job.addSource({ id: "local", kind: "local", maxInFlight: 4 }, bits);
      }
    }
    const originSource = origin && keys.size > 0
      ? new OriginSource(origin, keys, this.#deps.originRate)
      : null;
    try {
      await store.preparePartial(key, {
        name,
        digest: manifest?.digest ?? null,
        manifest: manifest ? new TextDecoder().decode(encodeManifest(manifest)) : null,
        files: files.map((f) => ({ name: f.name, size: f.size })),
        reservedBytes,
      });
      if (resuming && manifest) await this.#resume(job, key);
    } catch (err) {
      await store.removePartial(key).catch(() => {});
      this.#deps.budget.release(this.#reserved.get(key) ?? 0);
      this.#reserved.delete(key);
      throw err;
    }
    this.#jobs.set(name, job);
    if (this.#stopped) job.abort(this.#stopped); // prepared while shutdown began
    if (adoption) this.#adoptions.set(key, adoption);
    let session: SwarmSession | null = null;
    if (manifest) {
      session = this.#session(name, manifest.digest, { job, io, origin: originSource });
      this.#sessions.set(name, session);
      // Peers that answered the manifest question hold it, or pull it:
      // followed from the start (and known to the tracker when this node is it).
      const known = [...(found?.seen ?? [])].map(([peer, answer]) => ({
        id: peer.id,
        url: peer.url,
        zone: null,
        complete: answer.complete,
      }));
      for (const peer of known.filter((p) => p.complete)) {
        this.#deps.tracker.announce({
          digest: manifest.digest,
          peer,
          now: this.#deps.clock.monotonic(),
        });
      }
      await session.start(known);
    } else if (originSource) {
      // Adopting: the manifest exists once the files are hashed; only the origin has them.
      io.add(originSource);
      job.addSource({ id: "origin", kind: "origin", maxInFlight: 8 }, "all");
    }
    log.info("pull started", {
      name,
      mode,
      digest: manifest?.digest ?? null,
      primary: found?.primary?.id ?? null,
      owner: session?.owner ?? null,
      origin: session?.originMode ?? (adoption ? "adopting" : "none"),
      neighbors: session?.neighbors().length ?? 0,
    });
    return { job, key, manifest, source: found ? "peer" : "origin" };
  }

  /** The swarm session of a pull: its owner, its neighbors, its origin rights. */
  #session(
    name: string,
    digest: string,
    parts: { job: PullJob; io: SourcesIO; origin: OriginSource | null },
  ): SwarmSession {
    const { config, membership, log, clock } = this.#deps;
    const { job, io, origin } = parts;
    const transport = membership?.transport ?? noTransport;
    const self = { id: config.nodeId, url: membership?.advertise ?? "", zone: config.zone };
    return new SwarmSession({
      name,
      digest,
      self,
      job,
      links: {
        transport,
        addPeer: (peer) => {
          io.add(
            new PeerSource({
              transport,
              url: peer.url,
              nodeId: peer.id,
              name,
              digest,
              onFailure: (err) => {
                const known = membership?.peers().find((p) => p.url === peer.url);
                if (known && isConnectionError(err)) membership!.markDown(known, errorMessage(err));
              },
            }),
          );
        },
        removePeer: (id) => io.remove(`peer:${id}`),
        origin: origin ? { add: () => io.add(origin), remove: () => io.remove(origin.id) } : null,
        track: (request) => ({
          peers: this.#deps.tracker.announce({
            digest: request.digest,
            peer: request.peer,
            now: clock.monotonic(),
          }),
        }),
      },
      owners: () =>
        (membership?.rank(name) ?? [{ self: true as const, id: config.nodeId }]).map((m) =>
          m.self
            ? { self: true as const, id: m.id }
            : { self: false as const, id: m.id, url: m.peer.url }
        ),
      unreachable: (peer, err) => {
        const known = membership?.peers().find((p) => p.url === peer.url);
        if (known && isConnectionError(err)) membership!.markDown(known, errorMessage(err));
      },
      clock,
      log,
    });
  }

  readonly #adoptions = new Map<string, Adoption>();

  /** Marks the chunks a cut-short pull already verified. */
  async #resume(job: PullJob, key: string): Promise<void> {
    const { log } = this.#deps;
    const store = this.#store;
    let reused = 0;
    for (let fi = 0; fi < job.files.length; fi++) {
      const file = job.files[fi]!;
      const handle = await store.openPartialFile(key, file.name);
      try {
        const buffer = new Uint8Array(job.chunkSize);
        for (let i = 0; i < file.chunks.length; i++) {
          const expected = file.chunks[i];
          if (expected === ZERO_CHUNK || expected === null || expected === undefined) continue;
          const length = chunkLength(file.size, job.chunkSize, i);
          const view = buffer.subarray(0, length);
          const n = await handle.readAt(view, i * job.chunkSize);
          if (n === length && verifyChunk(view, expected) !== null) {
            job.markPresent(fi, i, length, expected);
            reused += length;
          }
        }
      } finally {
        handle.close();
      }
    }
    log.info("pull: resuming from verified chunks", { name: job.name, key, reusedBytes: reused });
  }

  /**
   * After a failed pull, the partial keeps its verified chunks for a resume,
   * but only their bytes stay reserved; on a full disk (or when even those
   * do not fit the budget) the partial goes, and with it its reservation.
   */
  async #afterFailure(ready: PullReady, err: unknown): Promise<void> {
    const { key, job } = ready;
    if (hasCode(err, "shutting_down") || !this.#reserved.has(key)) return;
    const reserved = this.#reserved.get(key)!;
    const held = Math.min(reserved, job.progress.bytesDone + 64 * 1024);
    if (hasCode(err, "insufficient_storage") || !this.#deps.budget.fits(0)) {
      await this.#store.removePartial(key).catch(() => {});
      this.#deps.budget.release(reserved);
      this.#reserved.delete(key);
      this.#adoptions.delete(key);
      this.#deps.log.info("pull failed: its partial was removed", { name: job.name, key });
      return;
    }
    this.#deps.budget.release(reserved - held);
    this.#reserved.set(key, held);
  }

  async #complete(name: string, ready: PullReady, started: number): Promise<PullOutcome> {
    try {
      return await this.#finish(name, ready, started);
    } catch (err) {
      await this.#afterFailure(ready, err);
      throw err;
    }
  }

  async #finish(name: string, ready: PullReady, started: number): Promise<PullOutcome> {
    const { config, clock, catalog, budget, log } = this.#deps;
    const store = this.#store;
    const { job, key } = ready;
    const fetchStarted = clock.monotonic();
    const session = this.#sessions.get(name);
    try {
      await job.run();
    } catch (err) {
      session?.stop();
      this.#sessions.delete(name);
      throw err;
    }
    // Still a holder for the others: the tracker hears so once; the
    // published copy then serves them.
    this.#sessions.delete(name);
    session?.finish().catch(() => {});
    const fetched = clock.monotonic();
    const manifest: Manifest = ready.manifest
      ? stripDigest(ready.manifest)
      : await this.#adoptedManifest(name, job, key);
    const bytes = await store.finishPartial(key, manifest);
    this.#deps.log.debug("pull: timings", {
      name,
      prepareMs: Math.round(fetchStarted - started),
      fetchMs: Math.round(fetched - fetchStarted),
      finishMs: Math.round(clock.monotonic() - fetched),
    });
    const digest = sha256Hex(bytes);
    if (ready.manifest && digest !== ready.manifest.digest) {
      throw new Error(`Re-encoded manifest of "${name}" changed its digest`);
    }
    const bySource = { ...job.progress.bySource };
    // Chunks a resumed pull found on disk came from the earlier attempt's
    // sources, not from this node: they do not make the pull "local".
    const source = dominantSource(
      { ...bySource, local: bySource.local - job.progress.resumedBytes },
      ready.source,
    );
    const stored = manifest.files.reduce((n, f) => n + storedBytes(f, manifest.chunkSize), 0) +
      bytes.length;
    const reserved = this.#reserved.get(key) ?? 0;
    const push = ready.manifest === null && config.push !== "off" && this.#deps.pushes !== null;
    const published = await catalog.publish({
      name,
      manifest,
      digest,
      bytes: stored,
      source,
      push,
      from: { kind: "partial", key },
      // The snapshot's bytes now count in the index: the pull's reservation
      // goes back in the same critical section.
      onPublished: () => budget.release(reserved),
    });
    // Committed or pulled by another path meanwhile: that one is kept.
    if (!published) budget.release(reserved);
    this.#reserved.delete(key);
    this.#adoptions.delete(key);
    if (published) {
      log.info("pulled", { name, digest, source, bytes: stored });
      if (push) this.#deps.pushes!.kick();
      await budget.enforce(new Set([name])).catch((err) => {
        log.warn("cache over budget after a pull", { error: err });
      });
    }
    return {
      name,
      digest,
      manifest: { ...manifest, digest },
      bytes: bySource,
      source,
      ms: Math.round(clock.monotonic() - started),
    };
  }

  /** Builds the manifest of an adopted snapshot from the bytes that arrived. */
  async #adoptedManifest(name: string, job: PullJob, key: string): Promise<Manifest> {
    const { origin } = this.#deps;
    const store = this.#store;
    const adoption = this.#adoptions.get(key);
    const files = [];
    for (let fi = 0; fi < job.files.length; fi++) {
      const file = job.files[fi]!;
      const handle = await store.openPartialFile(key, file.name);
      const hash = createHash("sha256");
      try {
        const buffer = new Uint8Array(1024 * 1024);
        for (let at = 0; at < file.size; at += buffer.length) {
          const n = await handle.readAt(
            buffer.subarray(0, Math.min(buffer.length, file.size - at)),
            at,
          );
          hash.update(buffer.subarray(0, n));
        }
      } finally {
        handle.close();
      }
      files.push({
        name: file.name,
        size: file.size,
        sha256: hash.digest("hex"),
        chunks: job.received[fi]!,
      });
    }
    // Deterministic (same listing, same manifest), so nodes adopting at the
    // same moment agree on the digest.
    return {
      schema: MANIFEST_SCHEMA,
      name,
      createdAt: new Date(adoption?.createdAt || 0).toISOString(),
      chunkSize: job.chunkSize,
      labels: { "snapmesh.adopted-from": `${origin!.bucket}/${origin!.snapshotPrefix(name)}` },
      files,
    };
  }
}

/** The transport of a node without peers: never used (it owns everything it pulls). */
const noTransport: PeerTransport = {
  hello: () => Promise.reject(new TypeError("no peers")),
  manifest: () => Promise.resolve(null),
  availability: () => Promise.resolve(null),
  read: () => Promise.reject(new TypeError("no peers")),
  suspect: () => Promise.resolve(),
  probe: () => Promise.resolve(false),
  announce: () => Promise.reject(new TypeError("no peers")),
  workingSet: () => Promise.resolve(null),
  subscribe: (_url, _name, { handler }) => {
    queueMicrotask(() => handler.end(new TypeError("no peers")));
    return { close() {} };
  },
};

function stripDigest(manifest: ManifestWithDigest): Manifest {
  const { digest: _, ...rest } = manifest;
  return rest;
}

function dominantSource(bytes: Record<Source, number>, fallback: Source): Source {
  const order: Source[] = ["origin", "peer", "local"];
  let best: Source = fallback;
  let most = 0;
  for (const kind of order) {
    if (bytes[kind] > most) {
      best = kind;
      most = bytes[kind];
    }
  }
  return best;
}

function notFound(name: string): SnapmeshError {
  return new SnapmeshError(
    "snapshot_not_found",
    `Snapshot "${name}" is not on this node, and no peer or origin has it`,
  );
}

function upstream(message: string): SnapmeshError {
  return new SnapmeshError("upstream_failed", message);
}
