/**
 * What this node answers its peers (`/v1/peer/*`, or an in-memory transport
 * in tests): who it is, its manifest of a snapshot and which chunks it
 * holds, chunk reads (whole chunks, verified before they are sent, paced by
 * `--max-egress`), and reports of chunks a peer found bad.
 *
 * @module
 */

import type { Catalog } from "../cache/mod.ts";
import { notLocal } from "../cache/mod.ts";
import {
  type AnnounceAnswer,
  type AnnounceRequest,
  type Availability,
  decodeBitmap,
  type HaveHandler,
  type PeerEndpoint,
  type PeerManifest,
  type Subscription,
} from "../cluster/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import { hasCode, SnapmeshError } from "../errors.ts";
import type { FileHandle } from "../fs/mod.ts";
import { type Puller, pullingFileStream } from "../fetch/mod.ts";
import type { Logger } from "../log/mod.ts";
import { encodeManifest, findFile } from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import {
  CorruptChunkError,
  parseRange,
  readVerifiedChunk,
  verifiedRangeStream,
} from "../store/mod.ts";
import type { Clock } from "../util/clock.ts";
import type { RateLimiter } from "../util/rate.ts";
import {
  type FirstCopies,
  serveComplete,
  serveHaves,
  type SwarmPeer,
  type Tracker,
  type UploadSlots,
} from "../swarm/mod.ts";
import type { Reads } from "./local_reads.ts";

/** Who a node is, for peers' probes. */
export interface Hello {
  nodeId: string;
  version: string;
  advertise: string | null;
}

/** Bytes of a file for a peer. */
export interface PeerRead {
  size: number;
  start: number;
  end: number;
  stream: ReadableStream<Uint8Array>;
}

/** Options for {@linkcode PeerService}. */
export interface PeerServiceOptions {
  config: ServeConfig;
  version: string;
  catalog: Catalog;
  puller: Puller;
  /** Quarantines a local copy that failed verification (and refetches it). */
  reads: Reads;
  /** Paces what this node serves to peers (`--max-egress`). */
  egress: RateLimiter;
  /** The swarms this node tracks (the snapshots it owns). */
  tracker: Tracker;
  /** Bounds the chunk reads this node serves at once. */
  uploads: UploadSlots;
  /** While this node reads the origin for a pull, each new chunk goes to one peer first. */
  firstCopies: FirstCopies;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
}

const decoder = new TextDecoder();

/** The answer with the publishers' signatures, when there are any (unsigned answers are unchanged). */
function withSignatures(
  answer: PeerManifest,
  signatures: { keyId: string; signature: string }[],
): PeerManifest {
  return signatures.length > 0 ? { ...answer, signatures } : answer;
}

/** Answers peers (but working sets, which the restore room answers). Names are validated by the caller. */
export class PeerService implements Omit<PeerEndpoint, "workingSet" | "probe"> {
  readonly #o: PeerServiceOptions;
  #advertise: string | null = null;
  #checkingSuspect = false;

  constructor(options: PeerServiceOptions) {
    this.#o = options;
  }

  /** Sets the URL peers reach this node at (known once listening). */
  setAdvertise(url: string | null): void {
    this.#advertise = url;
  }

  hello(): Hello {
    return { nodeId: this.#o.config.nodeId, version: this.#o.version, advertise: this.#advertise };
  }

  /**
   * This node's manifest of `name` and which chunks it holds, or null. With
   * `fetch` (a peer asks this node, an owner, to get it), a miss starts a
   * pull in owner mode and answers once the manifest is known.
   */
  async manifest(name: string, fetch: boolean): Promise<PeerManifest | null> {
    const { catalog, puller } = this.#o;
    const entry = catalog.get(name);
    if (entry) {
      const manifest = await catalog.manifestOf(entry);
      return withSignatures({
        manifest: decoder.decode(encodeManifest(manifest)),
        digest: entry.digest,
        complete: true,
        have: {},
      }, await catalog.signaturesOf(entry));
    }
    let ready = puller.readyNow(name);
    if (!ready || !ready.manifest) {
      if (!fetch) return null;
      const pull = puller.start(name, "owner");
      try {
        ready = await pull.ready;
        if (!ready.manifest) {
          await pull.done; // adopting: the manifest exists once the files are hashed
          return await this.manifest(name, false);
        }
      } catch (err) {
        if (hasCode(err, "snapshot_not_found")) return null;
        throw err;
      }
    }
    return withSignatures({
      manifest: decoder.decode(encodeManifest(ready.manifest!)),
      digest: ready.manifest!.digest,
      ...ready.job.availability(),
    }, catalog.snapshotTrust.signaturesOf(ready.manifest!.digest));
  }

  /**
   * A participant of the swarm of `name` announces itself: this node, its
   * owner, records it and answers other participants to trade with.
   */
  announce(name: string, request: AnnounceRequest): AnnounceAnswer {
    const peer = request.peer;
    if (
      typeof peer?.id !== "string" || typeof peer.url !== "string" ||
      !/^[0-9a-f]{64}$/.test(request.digest)
    ) {
      throw new SnapmeshError("invalid_body", "An announce names a digest, a peer id and a URL");
    }
    this.#o.log.debug("swarm: announce", { name, peer: peer.id });
    return {
      peers: this.#o.tracker.announce({
        digest: request.digest,
        peer: {
          id: peer.id,
          url: peer.url,
          zone: typeof peer.zone === "string" ? peer.zone : null,
          rack: typeof peer.rack === "string" ? peer.rack : null,
          complete: peer.complete === true,
        },
        now: this.#o.clock.monotonic(),
        self: this.#participant(name, request.digest),
        have: typeof peer.have === "string" ? decodeBitmap(peer.have) : null,
      }),
    };
  }

  /** This node as a participant of the swarm of `name` at `digest`, or null when it is not one. */
  #participant(name: string, digest: string): SwarmPeer | null {
    if (this.#advertise === null) return null;
    const { nodeId, zone, rack } = this.#o.config;
    const self = { id: nodeId, url: this.#advertise, zone, rack };
    if (this.#o.catalog.get(name)?.digest === digest) return { ...self, complete: true };
    const ready = this.#o.puller.readyNow(name);
    if (ready?.manifest?.digest === digest && ready.job.progress.state === "running") {
      return { ...self, complete: false };
    }
    return null;
  }

  /**
   * Starts a have stream: the chunks of `name` at `digest` this node holds,
   * then each chunk it verifies, until its pull ends (`complete` once it
   * holds everything). Null when it has neither a copy nor a pull of it.
   */
  subscribe(name: string, digest: string, handler: HaveHandler): Subscription | null {
    const { catalog, puller } = this.#o;
    if (catalog.get(name)?.digest === digest) return serveComplete(handler);
    const ready = puller.readyNow(name);
    if (ready?.manifest?.digest !== digest) return null;
    return serveHaves(ready.job, handler);
  }

  /** Which chunks of `name` at `digest` this node has verified, or null. */
  availability(name: string, digest: string): Availability | null {
    if (this.#o.catalog.get(name)?.digest === digest) return { digest, complete: true, have: {} };
    const ready = this.#o.puller.readyNow(name);
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
  async read(
    name: string,
    request: {
      digest: string;
      file: string;
      range: string | undefined;
      wait: boolean;
      /** The asking node's id, when it said (reciprocation only, never trust). */
      from?: string | null;
    },
  ): Promise<PeerRead> {
    const release = await this.#o.uploads.acquire({
      peer: request.from ?? null,
    });
    try {
      const read = await this.#read(name, request);
      return { ...read, stream: releasing(read.stream, release) };
    } catch (err) {
      release();
      throw err;
    }
  }

  async #read(
    name: string,
    request: {
      digest: string;
      file: string;
      range: string | undefined;
      wait: boolean;
      from?: string | null;
    },
  ): Promise<PeerRead> {
    const { catalog, puller, metrics } = this.#o;
    const { digest, file, range, wait } = request;
    const pace = (bytes: number) => this.#o.egress.take(bytes);
    const entry = catalog.get(name);
    if (entry?.digest === digest) {
      const manifest = await catalog.manifestOf(entry);
      const info = findFile(manifest, file);
      if (!info) throw noFile(name, file);
      const { start, end } = chunkAlignedRange(range, info.size, manifest.chunkSize);
      let handle: FileHandle;
      try {
        handle = await catalog.store.openFile(name, file);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) throw notLocal(name);
        throw err;
      }
      catalog.touch(name);
      const stream = verifiedRangeStream(handle, info, manifest.chunkSize, { start, end }, {
        trust: catalog.trust.file(digest, file, info.chunks.length),
        pace,
        onCorrupt: (index) =>
          this.#o.reads.quarantine(
            name,
            digest,
            `chunk ${index} of "${file}" failed verification while serving a peer`,
          ),
        onClose: (bytes) => metrics.servedBytes.inc(bytes),
      });
      return { size: info.size, start, end, stream };
    }
    const ready = puller.readyNow(name);
    if (ready?.manifest?.digest === digest) {
      const { job, key } = ready;
      const index = job.fileIndex(file);
      if (index < 0) throw noFile(name, file);
      const info = ready.manifest.files[index]!;
      const { start, end } = chunkAlignedRange(range, info.size, job.chunkSize);
      const first = Math.floor(start / job.chunkSize);
      const last = Math.floor(end / job.chunkSize);
      // The owner (reading the origin) sends each new chunk to one peer first.
      const from = request.from ?? null;
      const keys: string[] = [];
      if (job.hasSource("origin")) {
        for (let i = first; i <= last; i++) keys.push(`${digest}/${file}/${i}`);
        if (!this.#o.firstCopies.admit(keys, from)) {
          throw new SnapmeshError(
            "chunk_unavailable",
            `Chunk ${first} of "${file}" went to another peer just now; ask the peers that hold it`,
          );
        }
      }
      if (!wait) {
        for (let i = first; i <= last; i++) {
          if (!job.isDone(index, i)) {
            throw new SnapmeshError("chunk_unavailable", `Chunk ${i} of "${file}" is not here yet`);
          }
        }
      }
      let handle: FileHandle;
      try {
        handle = await catalog.store.openPartialRead(key, file);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
        // Published (or given up) meanwhile: look again once the pull has ended.
        await puller.settled(name);
        if (puller.readyNow(name) === ready) throw notLocal(name);
        return await this.#read(name, request);
      }
      const stream = pullingFileStream(job, index, handle, start, end, {
        pace,
        onClose: (bytes) => {
          metrics.servedBytes.inc(bytes);
          if (keys.length > 0) this.#o.firstCopies.arrived(keys, from);
        },
      });
      return { size: info.size, start, end, stream };
    }
    throw notLocal(name);
  }

  /**
   * A peer found chunk `index` of `file` it got from this node bad: check
   * this node's copy again, whatever its trust (one check at a time; others
   * are dropped, the scrub covers them). Never takes the peer's word for it.
   */
  suspect(name: string, request: { digest: string; file: string; index: number }): void {
    const { catalog } = this.#o;
    const { digest, file, index } = request;
    const entry = catalog.get(name);
    if (entry?.digest !== digest || this.#checkingSuspect) return;
    this.#checkingSuspect = true;
    (async () => {
      const manifest = await catalog.manifestOf(entry);
      const info = findFile(manifest, file);
      if (!info || index >= info.chunks.length) return;
      const handle = await catalog.store.openFile(name, file);
      try {
        await readVerifiedChunk(handle, info, manifest.chunkSize, index);
      } catch (err) {
        if (!(err instanceof CorruptChunkError)) throw err;
        await this.#o.reads.quarantine(
          name,
          digest,
          `chunk ${index} of "${file}" (a peer got it bad)`,
        );
      } finally {
        handle.close();
      }
    })().catch((err) => this.#o.log.debug("suspect check failed", { name, error: err }))
      .finally(() => (this.#checkingSuspect = false));
  }
}

/** `stream`, calling `release` once when it ends, fails or is cancelled. */
function releasing(
  stream: ReadableStream<Uint8Array>,
  release: () => void,
): ReadableStream<Uint8Array> {
  const reader = stream.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          release();
          controller.close();
        } else {
          controller.enqueue(value);
        }
      } catch (err) {
        release();
        controller.error(err);
      }
    },
    cancel(reason) {
      release();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
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

function noFile(name: string, file: string): SnapmeshError {
  return new SnapmeshError("file_not_found", `Snapshot "${name}" has no file "${file}"`);
}
