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

import type { Source } from "../cache/mod.ts";
import { hasCode, type SnapmeshError } from "../errors.ts";
import {
  encodeManifest,
  type Manifest,
  type ManifestWithDigest,
  sha256Hex,
  storedBytes,
} from "../manifest/mod.ts";
import type { SnapshotStore } from "../store/mod.ts";
import type { SwarmSession } from "../swarm/mod.ts";
import { adoptedManifest, planAdoption } from "./_adopt.ts";
import { findOnPeers, peekOnPeers } from "./_peer_lookup.ts";
import { addLocalCopies, createPullSession } from "./_pull_sources.ts";
import { resumeVerified } from "./_resume.ts";
import { OriginSource } from "./origin_source.ts";
import { type PullFile, PullJob, type PullReport } from "./pull_job.ts";
import { SourcesIO } from "./sources_io.ts";
import type { ActivePull, PullerDeps, PullMode, PullOutcome, PullReady } from "./_pull_types.ts";

export type { ActivePull, PullerDeps, PullMode, PullOutcome, PullReady } from "./_pull_types.ts";

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
    return await peekOnPeers(name, this.#deps);
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

  async #prepare(name: string, mode: PullMode): Promise<PullReady> {
    const { config, origin, log, metrics } = this.#deps;
    const store = this.#store;
    const found = await findOnPeers(name, mode, this.#deps);
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
      const plan = await planAdoption(name, { ...this.#deps, chunkSize: config.chunkSize });
      ({ key, files, reservedBytes } = plan);
      for (const [file, objectKey] of plan.keys) keys.set(file, objectKey);
      chunkSize = config.chunkSize;
      adoption = { createdAt: plan.createdAt };
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
      rack: config.rack,
      // No chunk and nothing in flight for this long: the pull fails (502).
      // At least 5 s: an owner takeover or a ban waits through an announce.
      stallMs: Math.min(Math.max(config.originStallTimeoutMs, 5_000), 15_000),
      onBytes: (kind, bytes) => metrics.ingestedBytes.inc({ source: kind }, bytes),
      onVerifyFailure: (_, kind) => metrics.verifyFailures.inc({ source: kind }),
    });
    // Chunks this node already holds in other snapshots: copied, not fetched.
    if (manifest) addLocalCopies(job, { io, manifest, store, catalog });
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
      if (resuming && manifest) await resumeVerified(job, { key, store, log });
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
      const { membership, tracker } = this.#deps;
      session = createPullSession({
        name,
        digest: manifest.digest,
        job,
        io,
        origin: originSource,
        config,
        membership,
        tracker,
        clock,
        log,
      });
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

  readonly #adoptions = new Map<string, Adoption>();

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
      : await adoptedManifest(job, {
        key,
        store,
        origin: this.#deps.origin!,
        createdAt: this.#adoptions.get(key)?.createdAt,
      });
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
}

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
