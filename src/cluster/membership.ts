/**
 * Who the peers are and whether they answer. The list comes from one or
 * more discovery sources (a static list, a file, DNS). No consensus: peers
 * are a list, and rendezvous hashing over the members not known to be down
 * picks owners.
 *
 * Probing scales with the fleet, not its square: peers this node transfers
 * with are known alive from the transfers (and known dead the moment one
 * cannot connect); the others are probed within a budget per interval, in
 * a shuffled round, so each is checked every `peers / budget` intervals. A
 * failed probe is confirmed by asking a couple of other peers to probe the
 * same peer (indirect probes, as SWIM does): only when none reaches it does
 * it count, and a peer is down after `downAfter` such failures in a row, so
 * a single lost packet or a path broken only from here does not make views
 * flap. A node ignores itself, known by its advertised URL or by the node
 * id a probe returns.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import type { Clock, Timer } from "../util/clock.ts";
import type { Random } from "../util/random.ts";
import type { Discovery } from "./discovery.ts";
import { rank } from "./hrw.ts";
import { PeerError, type PeerTransport } from "./transport.ts";

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
}

/** A member in a ranking: this node or a peer. */
export type Member = { self: true; id: string } | { self: false; id: string; peer: Peer };

/** Options for {@linkcode Membership}. */
export interface MembershipOptions {
  nodeId: string;
  /** Where the peer list comes from. */
  discovery: readonly Discovery[];
  /** How peers are asked (probes here; transfers elsewhere). */
  transport: PeerTransport;
  clock: Clock;
  random: Random;
  log: Logger;
  /** @default 1000 */
  probeIntervalMs?: number;
  /** Peers probed per interval, at most. @default 4 */
  probeBudget?: number;
  /** Peers asked to probe a peer this node could not reach. @default 2 */
  indirectProbes?: number;
  /** @default 1000 */
  probeTimeoutMs?: number;
  /** Failed probes in a row before a peer is down. @default 2 */
  downAfter?: number;
}

/** The peer list and its health. */
export class Membership {
  readonly nodeId: string;
  readonly transport: PeerTransport;
  readonly #options: MembershipOptions;
  readonly #log: Logger;
  #advertise: string | null = null;
  readonly #peers = new Map<string, Peer & { failures: number }>();
  /** URLs found to be this node. */
  readonly #self = new Set<string>();
  /** The last list each discovery source gave. */
  readonly #found = new Map<Discovery, string[]>();
  #timers: Timer[] = [];
  #stopped = false;
  /** The probe round: peer URLs in a shuffled order, taken from the front. */
  #round: string[] = [];

  constructor(options: MembershipOptions) {
    this.nodeId = options.nodeId;
    this.transport = options.transport;
    this.#options = options;
    this.#log = options.log;
  }

  /** True when some source of peers is configured. */
  get configured(): boolean {
    return this.#options.discovery.length > 0;
  }

  /** The URL peers reach this node at, once known. */
  get advertise(): string | null {
    return this.#advertise;
  }

  /** Sets the URL peers reach this node at (known once listening). */
  setAdvertise(url: string): void {
    this.#advertise = normalize(url);
    this.#peers.delete(this.#advertise);
  }

  /** Loads the peer list, probes every peer once, then keeps probing. */
  async start(): Promise<void> {
    for (const source of this.#options.discovery) await this.#refresh(source);
    this.#sync();
    await this.probeSome();
    const { clock } = this.#options;
    const every = (ms: number, task: () => Promise<void>) => {
      this.#timers.push(clock.setInterval(
        () => {
          if (!this.#stopped) {
            task().catch((err) => this.#log.warn("membership task failed", { error: err }));
          }
        },
        ms,
        { ref: false },
      ));
    };
    every(this.#options.probeIntervalMs ?? 1000, () => this.probeSome());
    for (const source of this.#options.discovery) {
      if (source.refreshMs > 0) {
        every(source.refreshMs, () => this.#refresh(source).then(() => this.#sync()));
      }
    }
  }

  stop(): void {
    this.#stopped = true;
    for (const timer of this.#timers) timer.cancel();
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

  /**
   * This node and the peers not known to be down (answered, or not probed
   * yet), ranked for `key` by rendezvous hashing over their URLs: every node
   * knows every URL from discovery before any probe answers, so views agree
   * from the start, and a dead owner moves ownership to the next member only
   * once this node has seen it fail.
   */
  rank(key: string): Member[] {
    const members: Member[] = [
      { self: true, id: this.nodeId },
      ...this.peers()
        .filter((peer) => !this.#isDown(peer.url))
        .map((peer) => ({ self: false as const, id: peer.id, peer })),
    ];
    const self = this.#advertise ?? `self:${this.nodeId}`;
    return rank(members, key, (m) => (m.self ? self : m.peer.url));
  }

  /** True once a peer failed `downAfter` probes in a row, or a transfer could not reach it. */
  #isDown(url: string): boolean {
    const state = this.#peers.get(url);
    return state !== undefined && !state.healthy &&
      state.failures >= (this.#options.downAfter ?? 2);
  }

  /** Marks a peer down after a failed transfer (the next good probe brings it back). */
  markDown(peer: Peer, reason: string): void {
    const state = this.#peers.get(peer.url);
    if (!state || this.#isDown(peer.url)) return;
    state.healthy = false;
    state.failures = this.#options.downAfter ?? 2;
    state.lastError = reason;
    this.#log.warn("peer marked down", { peer: state.id, url: state.url, reason });
  }

  /** Notes a successful exchange with a peer. */
  markSeen(peer: Peer): void {
    const state = this.#peers.get(peer.url);
    if (state) state.lastSeen = this.#options.clock.now();
  }

  /** `/v1/status` view. */
  status(): {
    id: string;
    url: string;
    healthy: boolean;
    lastSeenMs: number | null;
    lastError: string | null;
  }[] {
    const now = this.#options.clock.now();
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

  /**
   * Probes the next peers of the round, within the budget, skipping those a
   * transfer or announce showed alive since the last interval.
   */
  async probeSome(): Promise<void> {
    const budget = this.#options.probeBudget ?? 4;
    const fresh = this.#options.clock.now() - (this.#options.probeIntervalMs ?? 1000);
    const chosen: string[] = [];
    let looked = 0;
    while (chosen.length < budget && looked < this.#peers.size) {
      if (this.#round.length === 0) {
        this.#round = this.#options.random.shuffle([...this.#peers.keys()]);
        if (this.#round.length === 0) break;
      }
      const url = this.#round.shift()!;
      looked++;
      const state = this.#peers.get(url);
      if (!state || chosen.includes(url)) continue;
      if (state.healthy && (state.lastSeen ?? 0) > fresh) continue; // seen in a transfer
      chosen.push(url);
    }
    await Promise.all(chosen.map((url) => this.#probe(url)));
  }

  /**
   * Asks up to `indirectProbes` other healthy peers whether they reach
   * `url`; true when one does.
   */
  async #reachedByOthers(url: string): Promise<boolean> {
    const k = this.#options.indirectProbes ?? 2;
    const helpers = this.#options.random.sample(
      this.healthy().filter((p) => p.url !== url),
      k,
    );
    if (helpers.length === 0) return false;
    const answers = await Promise.all(
      helpers.map((helper) =>
        this.transport.probe(helper.url, url, {
          timeoutMs: (this.#options.probeTimeoutMs ?? 1000) * 2,
        }).catch(() => false)
      ),
    );
    return answers.some((ok) => ok);
  }

  /**
   * Probes `url` for another node that could not reach it (an indirect
   * probe): only a configured peer is contacted, never an arbitrary URL.
   */
  async probeFor(url: string): Promise<boolean> {
    const state = this.#peers.get(url);
    if (!state) return false;
    try {
      await this.transport.hello(url, { timeoutMs: this.#options.probeTimeoutMs ?? 1000 });
      return true;
    } catch {
      return false;
    }
  }

  async #probe(url: string): Promise<void> {
    const state = this.#peers.get(url);
    if (!state) return;
    try {
      const hello = await this.transport.hello(url, {
        timeoutMs: this.#options.probeTimeoutMs ?? 1000,
      });
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
      state.lastSeen = this.#options.clock.now();
      state.lastError = null;
    } catch (err) {
      const refused = err instanceof PeerError && err.status === 401;
      // A path broken only from here is not the peer down: others may reach it.
      if (!refused && state.healthy && await this.#reachedByOthers(url)) {
        state.lastError = `unreachable from this node (others reach it): ${(err as Error).message}`;
        return;
      }
      state.failures++;
      // A peer that refuses our credentials is down at once (another cluster).
      if (refused) state.failures = Math.max(state.failures, this.#options.downAfter ?? 2);
      state.lastError = refused
        ? "refused our credentials (401): it belongs to another cluster or has another --token"
        : (err as Error).message;
      if (state.healthy && (refused || state.failures >= (this.#options.downAfter ?? 2))) {
        state.healthy = false;
        this.#log.warn("peer down", { peer: state.id, url, reason: state.lastError });
      }
    }
  }

  async #refresh(source: Discovery): Promise<void> {
    try {
      this.#found.set(source, await source.peers());
    } catch (err) {
      this.#log.warn("peer discovery failed; keeping the last list", {
        source: source.label,
        error: err,
      });
    }
  }

  #sync(): void {
    const wanted = new Set<string>();
    for (const urls of this.#found.values()) for (const url of urls) wanted.add(normalize(url));
    for (const url of wanted) {
      if (url === this.#advertise || this.#self.has(url) || this.#peers.has(url)) continue;
      this.#peers.set(url, {
        url,
        id: url,
        healthy: false,
        lastSeen: null,
        lastError: "not probed yet",
        failures: 0,
      });
    }
    for (const url of [...this.#peers.keys()]) {
      if (!wanted.has(url)) {
        this.#peers.delete(url);
        this.#log.info("peer removed from the list", { url });
      }
    }
  }
}

function normalize(url: string): string {
  return new URL(url).origin;
}
