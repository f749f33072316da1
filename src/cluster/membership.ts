/**
 * Who the peers are and whether they answer. Peers come from a static list,
 * a file (reread when it changes) and DNS (re-resolved); each is probed with
 * `/v1/peer/hello` and marked up or down. A node ignores itself, known by its
 * advertised URL or by the node id a probe returns. No consensus: peers are
 * a list, and rendezvous hashing over the healthy ones picks owners.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import { rank } from "./hrw.ts";
import { PeerClient, PeerError } from "./peer_client.ts";

/** One peer as this node sees it. */
export interface Peer {
  url: string;
  /** Node id once a probe answered; the URL before. */
  id: string;
  healthy: boolean;
  /** When a probe or transfer last succeeded (ms since epoch), or null. */
  lastSeen: number | null;
  /** Why it is down, when it is. */
  lastError: string | null;
  client: PeerClient;
}

/** A member in a ranking: this node or a peer. */
export type Member = { self: true; id: string } | { self: false; id: string; peer: Peer };

/** Options for {@linkcode Membership}. */
export interface MembershipOptions {
  nodeId: string;
  token: string | null;
  peers: string[];
  peersFile: string | null;
  peersDns: string | null;
  log: Logger;
  /** A peer request or body idle this long is aborted. @default 10000 */
  peerStallMs?: number;
  /** @default 1000 */
  probeIntervalMs?: number;
  /** @default 1000 */
  probeTimeoutMs?: number;
  /** Failed probes in a row before a peer is down. @default 2 */
  downAfter?: number;
  /** @default 2000 */
  fileCheckMs?: number;
  /** @default 15000 */
  dnsIntervalMs?: number;
}

/** The peer list and its health. */
export class Membership {
  readonly nodeId: string;
  readonly #options: MembershipOptions;
  readonly #log: Logger;
  #advertise: string | null = null;
  readonly #peers = new Map<string, Peer & { failures: number }>();
  #fromFile: string[] = [];
  #fromDns: string[] = [];
  #fileText: string | null = null;
  #timers: ReturnType<typeof setInterval>[] = [];
  #stopped = false;

  constructor(options: MembershipOptions) {
    this.nodeId = options.nodeId;
    this.#options = options;
    this.#log = options.log;
  }

  /** True when some source of peers is configured. */
  get configured(): boolean {
    const o = this.#options;
    return o.peers.length > 0 || o.peersFile !== null || o.peersDns !== null;
  }

  /** Sets the URL peers reach this node at (known once listening). */
  setAdvertise(url: string): void {
    this.#advertise = normalize(url);
    this.#peers.delete(this.#advertise);
  }

  /** Loads the peer list, probes every peer once, then keeps probing. */
  async start(): Promise<void> {
    await this.#reloadFile();
    await this.#resolveDns();
    this.#sync();
    await this.probeAll();
    const o = this.#options;
    const every = (ms: number, task: () => Promise<void>) => {
      const timer = setInterval(() => {
        if (!this.#stopped) {
          task().catch((err) => this.#log.warn("membership task failed", { error: err }));
        }
      }, ms);
      Deno.unrefTimer(timer);
      this.#timers.push(timer);
    };
    every(o.probeIntervalMs ?? 1000, () => this.probeAll());
    if (o.peersFile) {
      every(o.fileCheckMs ?? 2000, () => this.#reloadFile().then(() => this.#sync()));
    }
    if (o.peersDns) {
      every(o.dnsIntervalMs ?? 15_000, () => this.#resolveDns().then(() => this.#sync()));
    }
  }

  stop(): void {
    this.#stopped = true;
    for (const timer of this.#timers) clearInterval(timer);
    this.#timers = [];
  }

  /** Every known peer (not this node). */
  peers(): Peer[] {
    return [...this.#peers.values()];
  }

  /** Peers that answered their last probe. */
  healthy(): Peer[] {
    return this.peers().filter((p) => p.healthy);
  }

  /** This node and the healthy peers, ranked for `key` by rendezvous hashing. */
  rank(key: string): Member[] {
    const members: Member[] = [
      { self: true, id: this.nodeId },
      ...this.healthy().map((peer) => ({ self: false as const, id: peer.id, peer })),
    ];
    return rank(members, key, (m) => m.id);
  }

  /** Marks a peer down after a failed transfer (the next good probe brings it back). */
  markDown(peer: Peer, reason: string): void {
    const state = this.#peers.get(peer.url);
    if (!state || !state.healthy) return;
    state.healthy = false;
    state.failures = this.#options.downAfter ?? 2;
    state.lastError = reason;
    this.#log.warn("peer marked down", { peer: state.id, url: state.url, reason });
  }

  /** Notes a successful exchange with a peer. */
  markSeen(peer: Peer): void {
    const state = this.#peers.get(peer.url);
    if (state) state.lastSeen = Date.now();
  }

  /** `/v1/status` view. */
  status(): {
    id: string;
    url: string;
    healthy: boolean;
    lastSeenMs: number | null;
    lastError: string | null;
  }[] {
    const now = Date.now();
    return this.peers().map((p) => ({
      id: p.id,
      url: p.url,
      healthy: p.healthy,
      lastSeenMs: p.lastSeen === null ? null : now - p.lastSeen,
      lastError: p.healthy ? null : p.lastError,
    }));
  }

  /** Probes every peer now. */
  async probeAll(): Promise<void> {
    await Promise.all(this.peers().map((peer) => this.#probe(peer.url)));
  }

  async #probe(url: string): Promise<void> {
    const state = this.#peers.get(url);
    if (!state) return;
    try {
      const hello = await state.client.hello(this.#options.probeTimeoutMs ?? 1000);
      if (hello.nodeId === this.nodeId) {
        // Our own URL under another name: ignore it from now on.
        this.#log.info("ignoring a peer entry that is this node", { url });
        this.#peers.delete(url);
        this.#self.add(url);
        return;
      }
      if (!state.healthy) this.#log.info("peer up", { peer: hello.nodeId, url });
      state.id = hello.nodeId;
      state.healthy = true;
      state.failures = 0;
      state.lastSeen = Date.now();
      state.lastError = null;
    } catch (err) {
      const refused = err instanceof PeerError && err.status === 401;
      state.failures++;
      state.lastError = refused
        ? "refused our token (401): it belongs to another cluster or has another --token"
        : (err as Error).message;
      if (state.healthy && (refused || state.failures >= (this.#options.downAfter ?? 2))) {
        state.healthy = false;
        this.#log.warn("peer down", { peer: state.id, url, reason: state.lastError });
      }
    }
  }

  /** URLs found to be this node. */
  readonly #self = new Set<string>();

  #sync(): void {
    const wanted = new Set(
      [...this.#options.peers, ...this.#fromFile, ...this.#fromDns].map(normalize),
    );
    for (const url of wanted) {
      if (url === this.#advertise || this.#self.has(url) || this.#peers.has(url)) continue;
      this.#peers.set(url, {
        url,
        id: url,
        healthy: false,
        lastSeen: null,
        lastError: "not probed yet",
        failures: 0,
        client: new PeerClient(url, {
          token: this.#options.token,
          stallMs: this.#options.peerStallMs,
        }),
      });
    }
    for (const url of [...this.#peers.keys()]) {
      if (!wanted.has(url)) {
        this.#peers.delete(url);
        this.#log.info("peer removed from the list", { url });
      }
    }
  }

  async #reloadFile(): Promise<void> {
    const path = this.#options.peersFile;
    if (!path) return;
    let text;
    try {
      text = await Deno.readTextFile(path);
    } catch {
      if (this.#fromFile.length > 0) {
        this.#log.warn("peers file is gone; keeping no peers from it", { path });
      }
      this.#fromFile = [];
      this.#fileText = null;
      return;
    }
    // Compared by content, not mtime: coarse timestamps would hide a quick rewrite.
    if (text === this.#fileText) return;
    this.#fileText = text;
    const urls: string[] = [];
    for (const raw of text.split("\n")) {
      const line = raw.replace(/#.*$/, "").trim();
      if (line === "") continue;
      try {
        const url = new URL(line);
        if (url.protocol === "http:" || url.protocol === "https:") urls.push(url.href);
        else throw new Error("not http(s)");
      } catch {
        this.#log.warn("peers file: ignoring a line that is not an http(s) URL", { path, line });
      }
    }
    this.#fromFile = urls;
    this.#log.info("peers file loaded", { path, peers: urls.length });
  }

  async #resolveDns(): Promise<void> {
    const spec = this.#options.peersDns;
    if (!spec) return;
    const match = /^(.+):(\d+)$/.exec(spec);
    if (!match) return;
    const [, name, port] = match as unknown as [string, string, string];
    const urls: string[] = [];
    for (const type of ["A", "AAAA"] as const) {
      try {
        for (const ip of await Deno.resolveDns(name, type)) {
          urls.push(type === "A" ? `http://${ip}:${port}` : `http://[${ip}]:${port}`);
        }
      } catch {
        // No records of this type.
      }
    }
    if (urls.length === 0) this.#log.warn("peers DNS name resolved to nothing", { name });
    this.#fromDns = urls;
  }
}

function normalize(url: string): string {
  return new URL(url).href.replace(/\/+$/, "");
}
