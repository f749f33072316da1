/**
 * One simulated node: the agent's real swarm code — its `Membership`
 * (probes, indirect probes, ranking), `Tracker`, `UploadSlots`, and per
 * pull a real `PullJob` (with its `ChunkScheduler`) driven by a real
 * `SwarmSession` — with a simulated data plane in place of files and
 * sockets. Control messages (probes, announces, have streams) travel over
 * the in-memory transport; chunk bytes cost time on the simulated network
 * ({@linkcode Network}) and are never materialised.
 *
 * @module
 */

import {
  type AnnounceAnswer,
  type AnnounceRequest,
  decodeBitmap,
  type HaveHandler,
  type Hello,
  Membership,
  type MemoryTransport,
  type PeerEndpoint,
  PeerError,
  StaticDiscovery,
  type Subscription,
} from "../cluster/mod.ts";
import { SnapmeshError } from "../errors.ts";
import {
  type ChunkFetch,
  type ChunkIO,
  classifyFailure,
  type FetchResult,
  type PullFile,
  PullJob,
} from "../fetch/mod.ts";
import type { Logger } from "../log/mod.ts";
import { chunkLength } from "../manifest/mod.ts";
import {
  FirstCopies,
  type OwnerCandidate,
  serveComplete,
  serveHaves,
  SwarmSession,
  Tracker,
  UploadSlots,
} from "../swarm/mod.ts";
import type { VirtualClock } from "../util/clock.ts";
import type { Random } from "../util/random.ts";
import type { Network, Place, Transfer } from "./network.ts";

/** The snapshot every node pulls: one memory file. */
export interface SimSnapshot {
  name: string;
  digest: string;
  chunkSize: number;
  files: PullFile[];
  /** Bytes of the non-zero chunks (what has to move). */
  nonZeroBytes: number;
}

/** What every node of a fleet shares. */
export interface SimWorld {
  clock: VirtualClock;
  network: Network;
  transport: MemoryTransport;
  log: Logger;
  snapshot: SimSnapshot;
  /** Nodes by id. */
  nodes: Map<string, SimNode>;
  /** Bytes each origin read delivered (cancelled reads count what arrived). */
  counters: { originBytes: number; peerBytes: number; badChunks: number };
}

/** Options for {@linkcode SimNode}. */
export interface SimNodeOptions {
  id: string;
  url: string;
  place: Place;
  world: SimWorld;
  /** Peer URLs this node's discovery lists (its view of the fleet). */
  view: string[];
  random: Random;
  /** Flips a byte of every chunk it sends (caught by the receivers' verification). */
  corrupt?: boolean;
}

/** A node of the simulated fleet. */
export class SimNode implements PeerEndpoint {
  readonly id: string;
  readonly url: string;
  readonly zone: string;
  /** Its rack label, or null when the fleet's nodes are not told theirs (`--rack`). */
  readonly rack: string | null;
  readonly place: Place;
  readonly membership: Membership;
  readonly tracker: Tracker;
  readonly uploads: UploadSlots;
  readonly firstCopies: FirstCopies;
  readonly corrupt: boolean;
  alive = true;
  job: PullJob | null = null;
  session: SwarmSession | null = null;
  /** Virtual ms at which its pull started and ended (done or failed). */
  startedAt: number | null = null;
  endedAt: number | null = null;
  failure: string | null = null;
  readonly #o: SimNodeOptions;
  /** Uploads in progress, cut when the node dies. */
  readonly #serving = new Set<AbortController>();

  constructor(options: SimNodeOptions) {
    this.#o = options;
    this.id = options.id;
    this.url = options.url;
    this.place = options.place;
    this.zone = `zone-${options.place.zone}`;
    this.rack = options.world.network.spec.rackLabels === false
      ? null
      : `rack-${options.place.rack}`;
    this.corrupt = options.corrupt ?? false;
    const { clock, transport, log } = options.world;
    this.tracker = new Tracker({ random: options.random.fork("tracker") });
    this.uploads = new UploadSlots({ clock });
    this.firstCopies = new FirstCopies({ clock });
    this.membership = new Membership({
      nodeId: this.id,
      discovery: [new StaticDiscovery(options.view)],
      transport,
      clock,
      random: options.random.fork("membership"),
      log,
    });
    this.membership.setAdvertise(this.url);
    transport.attach(this.url, this);
  }

  /** Bytes this node sent to peers. */
  get uploaded(): number {
    return this.#o.world.network.uploaded(this.place);
  }

  /** Starts probing peers (before the pull, as a node that has been up a while). */
  async join(): Promise<void> {
    await this.membership.start();
  }

  /** Pulls the snapshot through the real job and session; resolves when it ends. */
  async pull(): Promise<void> {
    const { world } = this.#o;
    const { clock, snapshot, log } = world;
    this.startedAt = clock.monotonic();
    const io = new SimChunkIO(this, world);
    const job = new PullJob({
      name: snapshot.name,
      files: snapshot.files,
      chunkSize: snapshot.chunkSize,
      io,
      log,
      clock,
      random: this.#o.random.fork("pull"),
      zone: this.zone,
      rack: this.rack,
    });
    this.job = job;
    const session = new SwarmSession({
      name: snapshot.name,
      digest: snapshot.digest,
      self: { id: this.id, url: this.url, zone: this.zone, rack: this.rack },
      job,
      links: {
        transport: world.transport,
        addPeer: (peer) => io.peers.add(`peer:${peer.id}`),
        removePeer: (id) => io.peers.delete(`peer:${id}`),
        origin: { add: () => io.peers.add("origin"), remove: () => io.peers.delete("origin") },
        track: (request) => this.announce(snapshot.name, request),
        swarmHeld: () => this.tracker.held(snapshot.digest),
      },
      owners: () => this.owners(),
      unreachable: (peer, err) => {
        const known = this.membership.peers().find((p) => p.url === peer.url);
        if (known && err instanceof TypeError) this.membership.markDown(known, String(err));
      },
      clock,
      log,
    });
    this.session = session;
    const running = job.run();
    await session.start();
    try {
      await running;
      await session.finish();
    } catch (err) {
      session.stop();
      if (this.alive) this.failure = err instanceof Error ? err.message : String(err);
    } finally {
      this.endedAt = clock.monotonic();
    }
  }

  /** The owner candidates for the snapshot, best first, as this node sees them. */
  owners(): OwnerCandidate[] {
    return this.membership.rank(this.#o.world.snapshot.name).map((m) =>
      m.self
        ? { self: true as const, id: m.id }
        : { self: false as const, id: m.id, url: m.peer.url }
    );
  }

  /** The node dies at once (SIGKILL): peers see refused connections and broken streams. */
  kill(): void {
    if (!this.alive) return;
    this.alive = false;
    this.#o.world.transport.detach(this.url);
    this.membership.stop();
    this.session?.stop();
    this.job?.abort(new SnapmeshError("shutting_down", "killed"));
    for (const upload of this.#serving) {
      upload.abort(new TypeError(`connection reset: ${this.url}`));
    }
  }

  // --- what peers ask (the control plane, over the in-memory transport) ------

  hello(): Hello {
    return { nodeId: this.id, version: "sim", advertise: this.url };
  }

  probe(target: string): Promise<boolean> {
    return this.membership.probeFor(target);
  }

  announce(_name: string, request: AnnounceRequest): AnnounceAnswer {
    const { clock, snapshot } = this.#o.world;
    const self = this.job && this.job.progress.state !== "failed" &&
        request.digest === snapshot.digest
      ? {
        id: this.id,
        url: this.url,
        zone: this.zone,
        rack: this.rack,
        complete: this.job.progress.state === "done",
      }
      : null;
    const { have, ...peer } = request.peer;
    return {
      peers: this.tracker.announce({
        digest: request.digest,
        peer,
        now: clock.monotonic(),
        self,
        have: have === undefined ? null : decodeBitmap(have),
      }),
    };
  }

  subscribe(_name: string, digest: string, handler: HaveHandler): Subscription | null {
    if (digest !== this.#o.world.snapshot.digest || !this.job) return null;
    if (this.job.progress.state === "done") return serveComplete(handler);
    if (this.job.progress.state === "failed") return null;
    return serveHaves(this.job, handler);
  }

  manifest(): Promise<null> {
    return Promise.resolve(null);
  }

  availability(): null {
    return null;
  }

  read(): Promise<never> {
    return Promise.reject(new Error("the simulation moves chunks through SimChunkIO"));
  }

  suspect(): void {}

  workingSet(): Promise<null> {
    return Promise.resolve(null);
  }

  // --- what this node sends (the data plane) ----------------------------------

  /**
   * Serves `count` chunks from `index` of `file` to `to`: an upload slot
   * (busy beyond the queue), the chunks held (waited for when asked to
   * wait), then the transfer through the network. Throws as a peer would
   * answer over HTTP (TypeError for a refused connection, PeerError 503
   * busy, 409 not here yet).
   */
  async serve(
    to: SimNode,
    request: { file: number; index: number; count: number; wait: boolean },
    signal: AbortSignal,
  ): Promise<{ bytes: number; corrupt: boolean }> {
    const { clock, network, snapshot } = this.#o.world;
    const rtt = 2 * network.latency(to.place, this.place);
    await pause(clock, rtt / 2, signal);
    if (!this.alive) throw new TypeError(`connection refused: ${this.url}`);
    let release: () => void;
    try {
      release = await this.uploads.acquire({
        peer: to.id,
        signal,
      });
    } catch (err) {
      if (signal.aborted) throw err;
      await pause(clock, rtt / 2, signal);
      // As HTTP carries it: busy is 503, a declined chunk 409.
      const declined = err instanceof SnapmeshError && err.code === "chunk_unavailable";
      throw new PeerError(declined ? 409 : 503, `peer ${this.url}: ${(err as Error).message}`);
    }
    const controller = new AbortController();
    const cut = () => controller.abort(signal.reason);
    signal.addEventListener("abort", cut, { once: true });
    this.#serving.add(controller);
    let transfer: Transfer | null = null;
    const keys: string[] = [];
    try {
      const job = this.job;
      const file = snapshot.files[request.file]!;
      // As the peer service does: the owner sends each new chunk to one peer first.
      if (job && job.progress.state !== "done" && job.hasSource("origin")) {
        for (let i = request.index; i < request.index + request.count; i++) {
          keys.push(`${request.file}/${i}`);
        }
        if (!this.firstCopies.admit(keys, to.id)) {
          throw new PeerError(409, `peer ${this.url}: chunk ${request.index} went to another peer`);
        }
      }
      let bytes = 0;
      for (let i = request.index; i < request.index + request.count; i++) {
        if (!job || !(job.progress.state === "done" || job.isDone(request.file, i))) {
          if (!request.wait || !job) {
            throw new PeerError(409, `peer ${this.url}: chunk ${i} is not here yet`);
          }
          await abortable(job.waitChunk(request.file, i), controller.signal);
        }
        bytes += chunkLength(file.size, snapshot.chunkSize, i);
      }
      if (!this.alive) throw new TypeError(`connection reset: ${this.url}`);
      transfer = network.peerTransfer(this.place, to.place, bytes, clock.monotonic());
      await pause(clock, transfer.end - clock.monotonic(), controller.signal);
      transfer = null;
      return { bytes, corrupt: this.corrupt };
    } catch (err) {
      transfer?.cancel(clock.monotonic());
      throw controller.signal.reason instanceof TypeError ? controller.signal.reason : err;
    } finally {
      if (keys.length > 0) this.firstCopies.arrived(keys, to.id);
      signal.removeEventListener("abort", cut);
      this.#serving.delete(controller);
      release();
    }
  }
}

/** The data plane of a simulated pull: chunks cost network time; digests come from the manifest. */
export class SimChunkIO implements ChunkIO {
  /** Sources the session registered (`peer:<id>`, `origin`). */
  readonly peers = new Set<string>();
  readonly #node: SimNode;
  readonly #world: SimWorld;

  constructor(node: SimNode, world: SimWorld) {
    this.#node = node;
    this.#world = world;
  }

  async fetch(request: ChunkFetch, signal: AbortSignal): Promise<FetchResult> {
    if (!this.peers.has(request.source)) return { good: [], bad: [], bytes: 0, failure: "gone" };
    try {
      const sent = request.source === "origin"
        ? await this.#fromOrigin(request, signal)
        : await this.#fromPeer(request, signal);
      return this.#verify(request, sent);
    } catch (err) {
      return { good: [], bad: [], bytes: 0, failure: classifyFailure(err), error: err };
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  async #fromPeer(
    request: ChunkFetch,
    signal: AbortSignal,
  ): Promise<{ bytes: number; corrupt: boolean }> {
    const id = request.source.slice("peer:".length);
    const peer = this.#world.nodes.get(id);
    if (!peer || !peer.alive) {
      const rtt = peer ? 2 * this.#world.network.latency(this.#node.place, peer.place) : 1;
      await pause(this.#world.clock, rtt, signal);
      throw new TypeError(`connection refused: ${id}`);
    }
    const sent = await peer.serve(this.#node, request, signal);
    this.#world.counters.peerBytes += sent.bytes;
    this.#node.uploads.received(id);
    return sent;
  }

  async #fromOrigin(
    request: ChunkFetch,
    signal: AbortSignal,
  ): Promise<{ bytes: number; corrupt: boolean }> {
    const { clock, network, snapshot } = this.#world;
    const file = snapshot.files[request.file]!;
    let bytes = 0;
    for (let i = request.index; i < request.index + request.count; i++) {
      bytes += chunkLength(file.size, snapshot.chunkSize, i);
    }
    const started = clock.monotonic();
    const transfer = network.originTransfer(this.#node.place, bytes, started);
    try {
      await pause(clock, transfer.end - started, signal);
    } catch (err) {
      // What arrived before the cancel was sent all the same.
      const now = clock.monotonic();
      this.#world.counters.originBytes += bytes *
        Math.min(1, (now - started) / (transfer.end - started));
      transfer.cancel(now);
      throw err;
    }
    this.#world.counters.originBytes += bytes;
    return { bytes, corrupt: false };
  }

  #verify(request: ChunkFetch, sent: { bytes: number; corrupt: boolean }): FetchResult {
    const file = this.#world.snapshot.files[request.file]!;
    const result: FetchResult = { good: [], bad: [], bytes: sent.bytes };
    for (let i = request.index; i < request.index + request.count; i++) {
      if (sent.corrupt) {
        result.bad.push(i);
        this.#world.counters.badChunks++;
      } else {
        result.good.push({ index: i, digest: file.chunks[i]! });
      }
    }
    return result;
  }
}

/** Sleeps `ms` of virtual time; rejects with the reason when `signal` aborts. */
async function pause(clock: VirtualClock, ms: number, signal: AbortSignal): Promise<void> {
  await clock.sleep(ms, { signal });
  signal.throwIfAborted();
}

/** `promise`, or a rejection when `signal` aborts first. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
