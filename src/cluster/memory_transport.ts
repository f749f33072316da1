/**
 * The in-memory peer transport: agents of one process ask each other
 * directly (tests, the in-process cluster, the simulation). A request costs
 * no real I/O, so under a virtual clock a whole cluster runs
 * deterministically. Optionally each node's uplink has a bandwidth: the
 * chunks it sends queue behind each other, so a popular holder is slow,
 * as on a network. Faults per node: down (connection refused), slow, or
 * sending corrupted chunks.
 *
 * @module
 */

import { hasCode, SnapmeshError } from "../errors.ts";
import type { Clock } from "../util/clock.ts";
import {
  type AnnounceAnswer,
  type AnnounceRequest,
  type Availability,
  type HaveHandler,
  type Hello,
  type PeerEndpoint,
  PeerError,
  type PeerManifest,
  type PeerReadRequest,
  type PeerTransport,
  type PeerWorkingSet,
  type Subscription,
  type SuspectReport,
} from "./transport.ts";

/** Faults of one node, as its peers see it. */
export interface MemoryPeerFaults {
  /** Every request fails as a refused connection. */
  down?: boolean;
  /** Extra latency per request, in ms of the transport's clock. */
  delayMs?: number;
  /** Flip one byte of every chunk read this node sends. */
  corrupt?: boolean;
}

/** Options for {@linkcode MemoryTransport}. */
export interface MemoryTransportOptions {
  clock: Clock;
  /** Latency of every request, in ms. @default 0 */
  latencyMs?: number;
  /** Bytes per second each node sends chunks at, one after another. @default unlimited */
  uplinkBytesPerSecond?: number;
}

/** Connects the agents of one process. */
export class MemoryTransport implements PeerTransport {
  readonly #endpoints = new Map<string, PeerEndpoint>();
  readonly #faults = new Map<string, MemoryPeerFaults>();
  readonly #options: MemoryTransportOptions;
  /** Bytes each node sent in chunk reads, by URL. */
  readonly servedBytes = new Map<string, number>();
  /** Requests each node answered, by URL. */
  readonly requests = new Map<string, number>();
  /** When each node's uplink is free again (transport clock, ms). */
  readonly #uplinkFreeAt = new Map<string, number>();

  constructor(options: MemoryTransportOptions) {
    this.#options = options;
  }

  /** Makes `endpoint` reachable at `url`. */
  attach(url: string, endpoint: PeerEndpoint): void {
    this.#endpoints.set(url, endpoint);
  }

  /** Makes `url` unreachable (the node is gone): its have streams break. */
  detach(url: string): void {
    this.#endpoints.delete(url);
    this.#breakStreams(url);
  }

  /** Sets (or clears, with `{}`) the faults of the node at `url`. */
  setFaults(url: string, faults: MemoryPeerFaults): void {
    this.#faults.set(url, faults);
    if (faults.down) this.#breakStreams(url);
  }

  /** Have streams open to each node, to break when it goes away. */
  readonly #streams = new Map<string, Set<{ inner: Subscription | null; end(err: Error): void }>>();

  #breakStreams(url: string): void {
    for (const stream of this.#streams.get(url) ?? []) {
      stream.inner?.close();
      stream.end(new TypeError(`connection reset: ${url}`));
    }
    this.#streams.delete(url);
  }

  async announce(url: string, name: string, request: AnnounceRequest): Promise<AnnounceAnswer> {
    const endpoint = await this.#reach(url);
    const answer = await this.#answer(url, () => Promise.resolve(endpoint.announce(name, request)));
    if (answer === null) throw new PeerError(404, `peer ${url} does not track "${name}"`);
    return answer;
  }

  subscribe(
    url: string,
    name: string,
    options: { digest: string; handler: HaveHandler },
  ): Subscription {
    const { handler } = options;
    let ended = false;
    const entry: { inner: Subscription | null; end(err: Error): void } = {
      inner: null,
      end: (err) => {
        if (ended) return;
        ended = true;
        handler.end(err);
      },
    };
    const guarded: HaveHandler = {
      bitmap: (bits) => !ended && handler.bitmap(bits),
      have: (chunks) => !ended && handler.have(chunks),
      end: (reason) => {
        if (ended) return;
        ended = true;
        this.#streams.get(url)?.delete(entry);
        handler.end(reason);
      },
    };
    (async () => {
      let endpoint: PeerEndpoint;
      try {
        endpoint = await this.#reach(url);
      } catch (err) {
        guarded.end(err as Error);
        return;
      }
      if (ended) return;
      const streams = this.#streams.get(url) ?? new Set();
      streams.add(entry);
      this.#streams.set(url, streams);
      entry.inner = endpoint.subscribe(name, options.digest, guarded);
      if (entry.inner === null) guarded.end("closed");
    })();
    return {
      close: () => {
        if (ended) return;
        ended = true;
        this.#streams.get(url)?.delete(entry);
        entry.inner?.close();
      },
    };
  }

  async hello(url: string): Promise<Hello> {
    const endpoint = await this.#reach(url);
    return endpoint.hello();
  }

  async probe(url: string, target: string): Promise<boolean> {
    const endpoint = await this.#reach(url);
    return await endpoint.probe(target);
  }

  async manifest(
    url: string,
    name: string,
    options: { fetch: boolean },
  ): Promise<PeerManifest | null> {
    const endpoint = await this.#reach(url);
    return await this.#answer(url, () => endpoint.manifest(name, options.fetch));
  }

  async availability(
    url: string,
    name: string,
    options: { digest: string },
  ): Promise<Availability | null> {
    const endpoint = await this.#reach(url);
    return await this.#answer(
      url,
      () => Promise.resolve(endpoint.availability(name, options.digest)),
    );
  }

  /**
   * This transport as node `nodeId` uses it: its chunk reads name their
   * asker, as the HTTP transport's `X-Snapmesh-Node` header does.
   */
  as(nodeId: string): PeerTransport {
    return {
      hello: (url) => this.hello(url),
      manifest: (url, name, options) => this.manifest(url, name, options),
      availability: (url, name, options) => this.availability(url, name, options),
      read: (url, name, request) => this.#read(url, name, request, nodeId),
      suspect: (url, name, report) => this.suspect(url, name, report),
      probe: (url, target) => this.probe(url, target),
      announce: (url, name, request) => this.announce(url, name, request),
      subscribe: (url, name, options) => this.subscribe(url, name, options),
      workingSet: (url, name, options) => this.workingSet(url, name, options),
    };
  }

  read(url: string, name: string, request: PeerReadRequest): Promise<Uint8Array> {
    return this.#read(url, name, request, null);
  }

  async #read(
    url: string,
    name: string,
    request: PeerReadRequest,
    from: string | null,
  ): Promise<Uint8Array> {
    const endpoint = await this.#reach(url);
    request.signal.throwIfAborted();
    const answer = await this.#answer(url, () =>
      endpoint.read(name, {
        digest: request.digest,
        file: request.file,
        range: `bytes=${request.start}-${request.end}`,
        wait: request.wait,
        from,
      }));
    if (answer === null) throw new PeerError(404, `peer ${url} does not have "${name}"`);
    const out = new Uint8Array(request.end - request.start + 1);
    let at = 0;
    const reader = answer.stream.getReader();
    // The bytes cross the sender's uplink while its upload slot is held.
    await this.#send(url, out.length, request.signal).catch((err) => {
      reader.cancel(err).catch(() => {});
      throw err;
    });
    const abort = () => reader.cancel(request.signal.reason).catch(() => {});
    request.signal.addEventListener("abort", abort, { once: true });
    try {
      while (true) {
        const { done, value } = await reader.read();
        if (done) break;
        if (at + value.length > out.length) throw new Error(`peer ${url} sent too many bytes`);
        out.set(value, at);
        at += value.length;
      }
    } finally {
      request.signal.removeEventListener("abort", abort);
    }
    request.signal.throwIfAborted();
    if (at !== out.length) throw new Error(`peer ${url} sent ${at} of ${out.length} bytes`);
    if (this.#faults.get(url)?.corrupt && out.length > 0) out[out.length >> 1]! ^= 0xff;
    this.servedBytes.set(url, (this.servedBytes.get(url) ?? 0) + out.length);
    return out;
  }

  async workingSet(
    url: string,
    name: string,
    options: { digest: string },
  ): Promise<PeerWorkingSet | null> {
    const endpoint = await this.#reach(url);
    return await this.#answer(url, () => endpoint.workingSet(name, options.digest));
  }

  async suspect(url: string, name: string, report: SuspectReport): Promise<void> {
    const endpoint = await this.#reach(url);
    endpoint.suspect(name, report);
  }

  /** Waits while `bytes` go through the uplink of `url`, behind what it sends already. */
  async #send(url: string, bytes: number, signal: AbortSignal): Promise<void> {
    const rate = this.#options.uplinkBytesPerSecond;
    if (!rate) return;
    const { clock } = this.#options;
    const now = clock.monotonic();
    const done = Math.max(now, this.#uplinkFreeAt.get(url) ?? 0) + (bytes / rate) * 1000;
    this.#uplinkFreeAt.set(url, done);
    await clock.sleep(done - now, { signal });
  }

  /** The endpoint at `url` after the request's latency, or a refused connection. */
  async #reach(url: string): Promise<PeerEndpoint> {
    const delay = (this.#options.latencyMs ?? 0) + (this.#faults.get(url)?.delayMs ?? 0);
    if (delay > 0) await this.#options.clock.sleep(delay);
    const endpoint = this.#endpoints.get(url);
    if (!endpoint || this.#faults.get(url)?.down) {
      // The HTTP transport's fetch rejects with a TypeError when it cannot connect.
      throw new TypeError(`connection refused: ${url}`);
    }
    this.requests.set(url, (this.requests.get(url) ?? 0) + 1);
    return endpoint;
  }

  /** Runs a request against an endpoint, mapping its errors as HTTP would. */
  async #answer<T>(url: string, run: () => Promise<T>): Promise<T | null> {
    try {
      return await run();
    } catch (err) {
      if (hasCode(err, "snapshot_not_found")) return null;
      if (err instanceof SnapmeshError) {
        throw new PeerError(
          STATUS[err.code] ?? 500,
          `peer ${url} answered ${err.code}: ${err.message}`,
        );
      }
      throw new PeerError(500, `peer ${url} failed: ${(err as Error).message}`);
    }
  }
}

/** Status codes a peer answers for the errors peers see. */
const STATUS: Partial<Record<string, number>> = {
  file_not_found: 404,
  invalid_range: 400,
  invalid_name: 400,
  chunk_unavailable: 409,
  shutting_down: 503,
  busy: 503,
  upstream_failed: 502,
  insufficient_storage: 507,
};
