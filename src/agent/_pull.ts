/**
 * Pulls of snapshots that are not local: one per name at a time (every
 * reader of the name joins it), from the origin for now. A pull keeps its
 * progress in `partial/<digest>/`, so a pull cut short (failure, restart)
 * resumes from the chunks already verified.
 *
 * A name whose origin prefix holds files but no manifest (a vHive-style
 * upload: `<name>/mem_file`, `<name>/snap_file`, …) is adopted: its files are
 * pulled, the manifest is built from what arrived, and, when pushing is on,
 * the snapshot is queued for upload in snapmesh's layout.
 *
 * @module
 */

import { LRUCache } from "lru-cache";
import { createHash } from "node:crypto";
import type { Source } from "../cache/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import { errorMessage, SnapmeshError } from "../errors.ts";
import {
  OriginSource,
  type PullFile,
  PullJob,
  type PullProgress,
  verifyChunk,
} from "../fetch/mod.ts";
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
  ZERO_CHUNK,
} from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { S3Origin } from "../origin/mod.ts";
import type { SnapshotStore } from "../store/mod.ts";

/** What the puller needs from the agent. */
export interface PullerDeps {
  config: ServeConfig;
  store: SnapshotStore;
  log: Logger;
  metrics: Metrics;
  origin: S3Origin | null;
  /** Reserves cache budget, evicting as needed; throws `insufficient_storage`. */
  reserve(bytes: number): Promise<void>;
  /** Counts bytes as reserved without evicting (partials found at start). */
  holdReserved(bytes: number): void;
  release(bytes: number): void;
  /** Installs a finished partial, journals it and releases its reservation. */
  publish(request: PublishRequest): Promise<void>;
}

/** A finished pull, ready to become a local snapshot. */
export interface PublishRequest {
  name: string;
  key: string;
  digest: string;
  manifest: Manifest;
  /** Bytes on disk of the published snapshot. */
  bytes: number;
  /** The reservation the pull held, released when the snapshot is indexed. */
  reservedBytes: number;
  source: Source;
  /** Queue an upload in snapmesh's layout (adopted snapshots). */
  push: boolean;
}

/** A pull whose plan is known and whose job exists. */
export interface PullReady {
  job: PullJob;
  key: string;
  /** The manifest, or null while adopting (built when the pull completes). */
  manifest: ManifestWithDigest | null;
}

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
  /** Budget held by each partial pull, by partial key. */
  readonly #reserved = new Map<string, number>();
  /** Recently fetched remote manifests (a manifest is immutable once written). */
  readonly #remote = new LRUCache<string, ManifestWithDigest>({ max: 512, ttl: 60_000 });

  constructor(deps: PullerDeps) {
    this.#deps = deps;
  }

  /** Takes over partial pulls left by an earlier run: their bytes stay reserved. */
  async recover(): Promise<number> {
    const { store, log } = this.#deps;
    let kept = 0;
    for (const key of await store.listPartials()) {
      await store.cleanPartial(key);
      const plan = await store.readPartialPlan(key);
      if (plan === null) {
        log.info("recovery: removing a partial pull without a plan", { key });
        await store.removePartial(key);
        continue;
      }
      this.#deps.holdReserved(plan.reservedBytes);
      this.#reserved.set(key, plan.reservedBytes);
      kept++;
    }
    return kept;
  }

  /** Progress of the pulls in flight. */
  active(): PullProgress[] {
    return [...this.#jobs.values()].map((job) => ({ ...job.progress }));
  }

  get activeCount(): number {
    return this.#active.size;
  }

  /** Starts a pull of `name`, or joins the one in flight. */
  start(name: string): ActivePull {
    const existing = this.#active.get(name);
    if (existing) return existing;
    const started = performance.now();
    const ready = this.#prepare(name);
    const done = ready.then((r) => this.#complete(name, r, started));
    const pull: ActivePull = { name, ready, done };
    this.#active.set(name, pull);
    ready.catch(() => {});
    done.then(
      () => this.#deps.metrics.pulls.inc({ result: "done" }),
      (err) => {
        this.#deps.metrics.pulls.inc({ result: "failed" });
        this.#deps.log.warn("pull failed", { name, error: err });
      },
    ).finally(() => {
      if (this.#active.get(name) === pull) this.#active.delete(name);
      this.#jobs.delete(name);
    });
    return pull;
  }

  /** Aborts every pull in flight (their partials stay for a later resume). */
  abortAll(reason: SnapmeshError): void {
    for (const job of this.#jobs.values()) job.abort(reason);
  }

  /** The origin's manifest of `name`, or null when it has none (or there is no origin). */
  async remoteManifest(name: string): Promise<ManifestWithDigest | null> {
    const origin = this.#deps.origin;
    if (!origin) return null;
    const cached = this.#remote.get(name);
    if (cached) return cached;
    const key = origin.manifestKey(name);
    let bytes: Uint8Array | null;
    try {
      bytes = await origin.getObject(key);
    } catch (err) {
      throw upstream(`Cannot read ${key} from the origin ${origin.endpoint}: ${errorMessage(err)}`);
    }
    if (bytes === null) return null;
    let manifest: ManifestWithDigest;
    try {
      manifest = decodeManifest(bytes);
    } catch (err) {
      throw upstream(`The origin's ${key} is not a valid manifest: ${errorMessage(err)}`);
    }
    if (manifest.name !== name) {
      throw upstream(`The origin's ${key} describes "${manifest.name}", not "${name}"`);
    }
    this.#remote.set(name, manifest);
    return manifest;
  }

  /** Forgets a cached remote manifest (after the origin deleted it). */
  forget(name: string): void {
    this.#remote.delete(name);
  }

  /** Drops partial pulls idle for longer than `ttlMs`; returns their keys. */
  async sweep(ttlMs: number): Promise<string[]> {
    const { store } = this.#deps;
    const busy = new Set(this.#active.keys());
    const dropped: string[] = [];
    for (const key of await store.listPartials()) {
      const plan = await store.readPartialPlan(key);
      if (plan && busy.has(plan.name)) continue;
      const touched = await store.partialTouchedAt(key);
      if (touched !== null && Date.now() - touched < ttlMs) continue;
      await store.removePartial(key);
      this.#deps.release(this.#reserved.get(key) ?? 0);
      this.#reserved.delete(key);
      dropped.push(key);
    }
    return dropped;
  }

  async #prepare(name: string): Promise<PullReady> {
    const { config, store, origin, log, metrics } = this.#deps;
    if (!origin) throw notFound(name);
    const manifest = await this.remoteManifest(name);
    let files: PullFile[];
    let key: string;
    let reservedBytes: number;
    let chunkSize: number;
    const keys = new Map<string, string>();
    let adoption: Adoption | null = null;
    if (manifest) {
      key = manifest.digest;
      chunkSize = manifest.chunkSize;
      files = manifest.files.map((f) => ({
        name: f.name,
        size: f.size,
        chunks: f.chunks,
        hot: f.hot,
      }));
      for (const f of manifest.files) keys.set(f.name, origin.fileKey(name, f.name));
      reservedBytes = manifest.files.reduce((n, f) => n + storedBytes(f, chunkSize), 0) +
        encodeManifest(manifest).length;
    } else {
      const prefix = origin.snapshotPrefix(name);
      let objects;
      try {
        objects = await origin.list(prefix);
      } catch (err) {
        throw upstream(
          `Cannot list ${prefix} at the origin ${origin.endpoint}: ${errorMessage(err)}`,
        );
      }
      const direct = objects.filter((o) => !o.key.slice(prefix.length).includes("/"));
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

    if (!this.#reserved.has(key)) {
      await this.#deps.reserve(reservedBytes);
      this.#reserved.set(key, reservedBytes);
    }
    const resuming = (await store.readPartialPlan(key)) !== null;
    const job = new PullJob({
      name,
      files,
      chunkSize,
      sources: [new OriginSource(origin, keys)],
      openFile: (file) => store.openPartialFile(key, file),
      concurrency: 8,
      log,
      onBytes: (kind, bytes) => metrics.ingestedBytes.inc({ source: kind }, bytes),
      onVerifyFailure: (source) => metrics.verifyFailures.inc({ source: source.kind }),
    });
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
      this.#deps.release(this.#reserved.get(key) ?? 0);
      this.#reserved.delete(key);
      throw err;
    }
    this.#jobs.set(name, job);
    if (adoption) this.#adoptions.set(key, adoption);
    return { job, key, manifest };
  }

  readonly #adoptions = new Map<string, Adoption>();

  /** Marks the chunks a cut-short pull already verified. */
  async #resume(job: PullJob, key: string): Promise<void> {
    const { store, log } = this.#deps;
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

  async #complete(name: string, ready: PullReady, started: number): Promise<PullOutcome> {
    const { store, config } = this.#deps;
    const { job, key } = ready;
    const fetchStarted = performance.now();
    await job.run();
    const fetched = performance.now();
    const manifest: Manifest = ready.manifest
      ? stripDigest(ready.manifest)
      : await this.#adoptedManifest(name, job, key);
    const bytes = await store.finishPartial(key, manifest);
    this.#deps.log.debug("pull: timings", {
      name,
      prepareMs: Math.round(fetchStarted - started),
      fetchMs: Math.round(fetched - fetchStarted),
      finishMs: Math.round(performance.now() - fetched),
    });
    const digest = sha256Hex(bytes);
    if (ready.manifest && digest !== ready.manifest.digest) {
      throw new Error(`Re-encoded manifest of "${name}" changed its digest`);
    }
    const bySource = { ...job.progress.bySource };
    const source = dominantSource(bySource);
    const stored = manifest.files.reduce((n, f) => n + storedBytes(f, manifest.chunkSize), 0) +
      bytes.length;
    await this.#deps.publish({
      name,
      key,
      digest,
      manifest,
      bytes: stored,
      reservedBytes: this.#reserved.get(key) ?? 0,
      source,
      push: ready.manifest === null && config.push !== "off",
    });
    this.#reserved.delete(key);
    this.#adoptions.delete(key);
    return {
      name,
      digest,
      manifest: { ...manifest, digest },
      bytes: bySource,
      source,
      ms: Math.round(performance.now() - started),
    };
  }

  /** Builds the manifest of an adopted snapshot from the bytes that arrived. */
  async #adoptedManifest(name: string, job: PullJob, key: string): Promise<Manifest> {
    const { store, origin } = this.#deps;
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

function stripDigest(manifest: ManifestWithDigest): Manifest {
  const { digest: _, ...rest } = manifest;
  return rest;
}

function dominantSource(bytes: Record<Source, number>): Source {
  const order: Source[] = ["origin", "peer", "local"];
  let best: Source = "local";
  let most = -1;
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
