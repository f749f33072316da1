/**
 * Commit: a draft becomes an immutable snapshot. The manifest is built from
 * the staged files' chunk digests (rechunked when the origin uses another
 * chunk size), the snapshot directory is prepared in `tmp/` from hard links
 * to the staged bytes, and the catalog publishes it durably. The name is
 * the snapshot's identity cluster-wide, so the origin has a say: the same
 * files there are taken with the origin's manifest, other content is 409.
 *
 * @module
 */

import type { CacheBudget, Catalog } from "../cache/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import { errorMessage, SnapmeshError } from "../errors.ts";
import type { FileSystem } from "../fs/mod.ts";
import type { Logger } from "../log/mod.ts";
import {
  chunkCount,
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
} from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { PushQueue, RemoteManifests } from "../origin/mod.ts";
import {
  type ChunkedFile,
  type DraftFile,
  fileSource,
  type SnapshotStore,
  writeChunked,
} from "../store/mod.ts";
import type { Clock } from "../util/clock.ts";
import { described, type Drafts } from "./drafts.ts";

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

/** Options for {@linkcode Committer}. */
export interface CommitterOptions {
  config: ServeConfig;
  fs: FileSystem;
  store: SnapshotStore;
  catalog: Catalog;
  budget: CacheBudget;
  drafts: Drafts;
  /** The origin's manifests, or null without an origin. */
  remote: RemoteManifests | null;
  /** Uploads to the origin, or null without an origin. */
  pushes: PushQueue | null;
  log: Logger;
  metrics: Metrics;
  clock: Clock;
}

/** Turns drafts into snapshots. */
export class Committer {
  readonly #o: CommitterOptions;

  constructor(options: CommitterOptions) {
    this.#o = options;
  }

  /**
   * Commits the draft of `name`: builds the manifest, publishes the snapshot
   * atomically and durably, and journals it. Same content again answers the
   * existing manifest with `created: false`.
   */
  async commit(name: string, request: CommitRequest = {}): Promise<CommitResult> {
    const { metrics, budget, log } = this.#o;
    try {
      const result = await this.#o.drafts.committing(name, () => this.#commit(name, request));
      metrics.commits.inc({ result: result.created ? "created" : "unchanged" });
      await budget.enforce(new Set([name])).catch((err) => {
        log.warn("cache over budget after commit", { error: err });
      });
      return result;
    } catch (err) {
      metrics.commits.inc({ result: "failed" });
      throw err;
    }
  }

  async #commit(name: string, request: CommitRequest): Promise<CommitResult> {
    const { store, catalog, budget, config, log } = this.#o;
    const drafts = await store.drafts.read(name);
    if (drafts.length === 0) {
      throw new SnapmeshError(
        "draft_not_found",
        `Snapshot "${name}" has no staged files to commit: PUT them first`,
      );
    }
    if (drafts.length > MAX_FILES) {
      throw new SnapmeshError("invalid_body", `A snapshot holds at most ${MAX_FILES} files`);
    }
    const asked: CommitMetadata = {
      labels: request.labels === undefined ? {} : validateLabels(request.labels),
      hot: parseHotRequest(request.hot, drafts),
      request,
    };
    if (catalog.has(name)) return await this.#commitExisting(name, drafts, asked);
    const stale = drafts.find((d) => d.blob === null);
    if (stale) {
      throw new SnapmeshError(
        "snapshot_exists",
        `Snapshot "${name}" changed since "${stale.file}" was staged; stage it again`,
      );
    }

    // The name is the snapshot's identity cluster-wide: the origin has a say.
    const remote = await (this.#o.remote?.get(name) ?? Promise.resolve(null)).catch((err) => {
      log.warn("commit: cannot check the origin; committing locally", { name, error: err });
      return null;
    });
    const otherMeta = remote ? otherMetadata(remote, asked) : null;
    if (remote && (!sameContent({ files: drafts.map(described) }, remote) || otherMeta !== null)) {
      throw new SnapmeshError(
        "snapshot_exists",
        `Snapshot "${name}" already exists in the origin with other content ` +
          `(${otherMeta ?? "other files"}; digest ${remote.digest})`,
        { digest: remote.digest },
      );
    }

    const chunkSize = remote?.chunkSize ?? config.chunkSize;
    const files: ManifestFile[] = [];
    const sources = new Map<string, string>();
    for (const draft of drafts) {
      const path = store.drafts.blobPath(name, draft.blob!);
      sources.set(draft.file, path);
      if (remote) continue;
      const chunked = draft.chunkSize === chunkSize ? draft : await this.#rechunk(path, chunkSize);
      const entry: ManifestFile = {
        name: draft.file,
        size: chunked.size,
        sha256: chunked.sha256,
        chunks: chunked.chunks,
      };
      const order = asked.hot.get(draft.file);
      if (order) entry.hot = validateHot(draft.file, order, chunked.chunks.length);
      files.push(entry);
    }
    // Same files already in the origin: take its manifest, so the digest
    // agrees everywhere.
    const manifest: Manifest = remote ? withoutDigest(remote) : {
      schema: MANIFEST_SCHEMA,
      name,
      createdAt: new Date(this.#o.clock.now()).toISOString(),
      chunkSize,
      labels: asked.labels,
      files,
    };
    const digest = manifestDigest(manifest);
    // Signed (--signing-key) before anything is written; a node that only
    // accepts signed snapshots and cannot sign refuses here.
    await catalog.snapshotTrust.signCommit(name, digest);
    const prepared = await store.preparePublish(manifest, sources);
    const manifestBytes = prepared.manifestBytes.length;
    const bytes = manifest.files.reduce((n, f) => n + storedBytes(f, chunkSize), 0) +
      manifestBytes;
    const push = this.#o.pushes !== null && config.push !== "off" && remote === null;
    // The staged bytes are reserved already; the manifest is new.
    try {
      await budget.reserve(manifestBytes, new Set([name]));
    } catch (err) {
      await store.discard(prepared).catch(() => {});
      throw err;
    }
    let published: boolean;
    try {
      published = await catalog.publish({
        name,
        manifest,
        digest,
        bytes,
        source: "local",
        push,
        from: { kind: "prepared", prepared },
        // The snapshot's bytes now count in the index: the draft's and the
        // manifest's reservations go back in the same critical section.
        onPublished: () => budget.release(this.#o.drafts.handOver(name) + manifestBytes),
      });
    } catch (err) {
      budget.release(manifestBytes);
      throw err;
    }
    // Pulled under the same name while this commit ran: same content or 409.
    if (!published) {
      budget.release(manifestBytes);
      return await this.#commitExisting(name, drafts, asked);
    }
    // The snapshot holds its own links to the bytes; the draft can go. A
    // crash before this line leaves a draft that recovery recognizes and drops.
    await store.drafts.drop(name).catch((err) => {
      log.warn("could not remove a committed draft", { name, error: err });
    });
    log.info("committed", { name, digest, files: manifest.files.length, bytes, push });
    if (push && config.push === "sync") {
      try {
        await this.#o.pushes!.push(name, digest);
      } catch (err) {
        throw new SnapmeshError(
          "upstream_failed",
          `Snapshot "${name}" is committed locally (digest ${digest}), but its upload to the ` +
            `origin failed: ${errorMessage(err)}. It stays queued and is retried.`,
          { digest },
        );
      }
    } else if (push) {
      this.#o.pushes!.kick();
    }
    return { manifest: { ...manifest, digest }, created: true };
  }

  async #commitExisting(
    name: string,
    drafts: DraftFile[],
    asked: CommitMetadata,
  ): Promise<CommitResult> {
    const entry = this.#o.catalog.get(name);
    if (!entry) throw new SnapmeshError("snapshot_exists", `Snapshot "${name}" changed meanwhile`);
    const manifest = await this.#o.catalog.manifestOf(entry);
    const other = sameContent({ files: drafts.map(described) }, manifest)
      ? otherMetadata(manifest, asked)
      : "other files";
    if (other !== null) {
      throw new SnapmeshError(
        "snapshot_exists",
        `Snapshot "${name}" is already committed with other content ` +
          `(${other}; digest ${entry.digest})`,
        { digest: entry.digest },
      );
    }
    await this.#o.drafts.discardLocked(name);
    return { manifest, created: false };
  }

  async #rechunk(path: string, chunkSize: number): Promise<ChunkedFile> {
    const handle = await this.#o.fs.open(path);
    try {
      return await writeChunked(fileSource(handle), null, {
        chunkSize,
        maxSize: Number.MAX_SAFE_INTEGER,
      });
    } finally {
      handle.close();
    }
  }
}

/** Labels and hot lists a commit asked for (each only when the request named it). */
interface CommitMetadata {
  labels: Record<string, string>;
  hot: Map<string, unknown>;
  request: CommitRequest;
}

/**
 * How a committed manifest differs from the labels and hot lists a commit
 * asks for, or null when it does not. Only what the request names counts: a
 * commit without `labels` accepts the committed ones (a retried `put`).
 */
function otherMetadata(manifest: Manifest, asked: CommitMetadata): string | null {
  if (asked.request.labels !== undefined && !sameJson(manifest.labels, asked.labels)) {
    return "other labels";
  }
  if (asked.request.hot !== undefined) {
    for (const file of manifest.files) {
      const want = asked.hot.get(file.name) ?? null;
      if (!sameJson(file.hot ?? null, want)) return `another hot list for "${file.name}"`;
    }
  }
  return null;
}

/** Deep equality of two JSON values, object keys in any order. */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) =>
    sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])
  );
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
