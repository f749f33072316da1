/**
 * The control plane of one pull: who to trade with, and whether this node
 * may read the origin.
 *
 * - Every two seconds (sooner while it has few neighbors) the node
 *   announces itself to the snapshot's owner —
 *   the first reachable member of the rendezvous ranking for its name — the
 *   tracker, which answers a bounded random set of other participants. The
 *   node keeps up to `maxNeighbors` of them, follows each one's have stream
 *   (what it holds, pushed as it changes), and registers it as a source.
 * - The owner reads the origin, and nobody else while an owner answers: the
 *   origin sends each chunk about once, and the swarm relays it. When the
 *   owner dies, the ranking moves to the next member, which takes over as
 *   tracker and origin reader (fetching only what no participant holds);
 *   a node whose stream from the owner breaks announces at once, so the
 *   takeover takes a round trip, not an announce period.
 *   Only when every owner candidate is unreachable does a node read the
 *   origin itself, with a small concurrency.
 * - A neighbor whose stream fails is dropped (its requests requeued) and
 *   replaced at the next announce.
 *
 * @module
 */

import {
  type AnnounceAnswer,
  encodeBytes,
  type HaveHandler,
  type PeerTransport,
  type Subscription,
} from "../cluster/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Clock, Timer } from "../util/clock.ts";
import type { SourceKind, SourceSpec } from "./scheduler.ts";

/** This node, as its peers see it. */
export interface SelfInfo {
  id: string;
  url: string;
  zone: string | null;
  /** Its rack, when known. */
  rack?: string | null;
}

/** A ranked owner candidate: this node, or a peer. */
export type OwnerCandidate = { self: true; id: string } | { self: false; id: string; url: string };

/** What the session drives: the pull's sources and what they hold (a `PullJob`). */
export interface SwarmJob {
  addSource(spec: SourceSpec, have: Uint8Array | "all" | "none"): void;
  removeSource(id: string): void;
  hasSource(id: string): boolean;
  setSourceHave(id: string, have: Uint8Array | "all"): void;
  /** A source holds a chunk now (global numbering). */
  sourceHasChunk(id: string, chunk: number): void;
  setMoreMayCome(value: boolean): void;
  /** Verified chunks, as one bitmap over global chunk numbers. */
  bitmap(): Uint8Array;
  /**
   * What other participants of the swarm hold (the tracker's union, looked
   * up when needed): an origin reader waits a while before reading those
   * chunks itself.
   */
  setHeldElsewhere(held: () => Uint8Array | "all" | null): void;
  /** Listens to sources the pull gave up on. */
  onSourceDropped(listener: (id: string) => void): void;
}

/** How the session reaches peers and the pull's data plane. */
export interface SwarmLinks {
  transport: PeerTransport;
  /** Makes the data plane able to read chunks from a peer (registers its source). */
  addPeer(peer: { id: string; url: string }): void;
  removePeer(id: string): void;
  /** Makes the data plane able to read the origin; null when there is no origin. */
  origin: { add(): void; remove(): void } | null;
  /** Answers announces when this node is the owner (its own tracker). */
  track(request: { digest: string; peer: SelfInfo & { complete: boolean } }): AnnounceAnswer;
  /** What the participants told this node, as their tracker, that they hold (or null). */
  swarmHeld(): Uint8Array | "all" | null;
}

/** Options for {@linkcode SwarmSession}. */
export interface SwarmSessionOptions {
  name: string;
  digest: string;
  self: SelfInfo;
  job: SwarmJob;
  links: SwarmLinks;
  /** The owner candidates for the name, best first (healthy members by rendezvous rank). */
  owners(): OwnerCandidate[];
  /** A peer did not answer (membership marks it suspect). */
  unreachable(peer: { id: string; url: string }, err: unknown): void;
  clock: Clock;
  log: Logger;
  /** Neighbors followed at once. @default 16 */
  maxNeighbors?: number;
  /** Requests in flight per neighbor. @default 3 */
  perPeer?: number;
  /** Requests in flight to the origin, for the owner. @default 8 */
  ownerOriginRequests?: number;
  /** Requests in flight to the origin when every owner is unreachable. @default 2 */
  fallbackOriginRequests?: number;
  /** Owner candidates tried before reading the origin directly. @default 3 */
  ownerCandidates?: number;
  /** Announce period, in ms. @default 2000 */
  announceMs?: number;
  /** How long a neighbor the pull gave up on is not followed again, in ms. @default 10000 */
  banMs?: number;
  /** How long origin reads wait for the first bitmaps of the neighbors, in ms. @default 1000 */
  originDelayMs?: number;
  /** After taking ownership over, how long origin reads wait for the others' announces, in ms. @default 300 */
  takeoverDelayMs?: number;
}

interface Neighbor {
  id: string;
  url: string;
  zone: string | null;
  subscription: Subscription | null;
  /** Its stream ended with "complete": a source for good. */
  complete: boolean;
}

/** The swarm side of one pull. */
export class SwarmSession {
  readonly #o: SwarmSessionOptions;
  readonly #neighbors = new Map<string, Neighbor>();
  #timer: Timer | null = null;
  #origin: "none" | "owner" | "fallback" = "none";
  #owner: string | null = null;
  #stopped = false;
  #announcing: Promise<void> | null = null;
  #complete = false;

  /** Neighbors dropped for failing, and until when they are not followed again. */
  readonly #banned = new Map<string, number>();

  constructor(options: SwarmSessionOptions) {
    this.#o = options;
    options.job.onSourceDropped((id) => {
      if (!id.startsWith("peer:")) return;
      const peer = id.slice("peer:".length);
      const neighbor = this.#neighbors.get(peer);
      if (!neighbor) return;
      // Given up on by the pull (bad bytes, failures): not followed again for a while.
      neighbor.subscription?.close();
      this.#neighbors.delete(peer);
      this.#o.links.removePeer(peer);
      this.#banned.set(peer, this.#o.clock.monotonic() + (this.#o.banMs ?? 10_000));
    });
  }

  /** Who the session sees as owner now (a node id), or null before the first announce. */
  get owner(): string | null {
    return this.#owner;
  }

  /** How this node may read the origin now. */
  get originMode(): "none" | "owner" | "fallback" {
    return this.#origin;
  }

  /** Node ids of the neighbors followed now. */
  neighbors(): string[] {
    return [...this.#neighbors.keys()];
  }

  /**
   * Follows `known` participants (holders found while looking for the
   * manifest), announces at once, then every `announceMs`, until
   * {@linkcode SwarmSession.stop}.
   */
  async start(known: { id: string; url: string; zone: string | null }[] = []): Promise<void> {
    this.#started = this.#o.clock.monotonic();
    for (const peer of known) {
      if (this.#neighbors.size >= (this.#o.maxNeighbors ?? 16)) break;
      if (peer.id !== this.#o.self.id && !this.#neighbors.has(peer.id)) this.#follow(peer, null);
    }
    await this.announce();
    this.#scheduleAnnounce();
  }

  /** Announce rounds after this many fast ones in a row (under-connected). */
  #quickRounds = 0;

  /**
   * The next announce: every `announceMs`, or sooner while this node
   * follows fewer than half its neighbors (it came early, when the tracker
   * knew few participants, or lost some): after 250 ms, then twice as long
   * each time.
   */
  #scheduleAnnounce(): void {
    if (this.#stopped) return;
    const period = this.#o.announceMs ?? 2000;
    const wanted = Math.ceil((this.#o.maxNeighbors ?? 16) / 2);
    let delay = period;
    if (this.#neighbors.size < wanted) {
      delay = Math.min(period, 250 * 2 ** this.#quickRounds);
      this.#quickRounds++;
    } else {
      this.#quickRounds = 0;
    }
    this.#timer = this.#o.clock.setTimeout(
      () => {
        this.announce()
          .catch((err) => this.#o.log.debug("swarm: announce failed", { error: err }))
          .finally(() => this.#scheduleAnnounce());
      },
      delay,
      { ref: false },
    );
  }

  /** The pull finished: tell the tracker once, then stop following peers. */
  async finish(): Promise<void> {
    this.#complete = true;
    await this.announce().catch(() => {});
    this.stop();
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#originTimer?.cancel();
    for (const n of this.#neighbors.values()) n.subscription?.close();
    this.#neighbors.clear();
    if (this.#origin !== "none") this.#o.links.origin?.remove();
    this.#origin = "none";
  }

  /** One announce round (at most one runs at a time). */
  announce(): Promise<void> {
    this.#announcing ??= this.#announceOnce().finally(() => (this.#announcing = null));
    return this.#announcing;
  }

  async #announceOnce(): Promise<void> {
    if (this.#stopped) return;
    const { self, digest, name, links } = this.#o;
    // While pulling, say what this node holds: the tracker's union of these
    // tells a new owner which chunks the swarm has already.
    const have = this.#complete ? undefined : encodeBytes(this.#o.job.bitmap());
    const request = { digest, peer: { ...self, complete: this.#complete, have } };
    const candidates = this.#o.owners().slice(0, this.#o.ownerCandidates ?? 3);
    let answer: AnnounceAnswer | null = null;
    let owner: OwnerCandidate | null = null;
    const now = this.#o.clock.monotonic();
    for (const candidate of candidates) {
      // An owner that sent bad bytes is no owner for this pull (for a while).
      if (!candidate.self && (this.#banned.get(candidate.id) ?? 0) > now) continue;
      if (candidate.self) {
        answer = links.track(request);
        owner = candidate;
        this.#o.job.setHeldElsewhere(() => links.swarmHeld());
        // Taking over from another owner: the others re-announce (with what
        // they hold) before this node reads the origin.
        if (this.#owner !== null && this.#owner !== candidate.id) this.#takeoverAt = now;
        break;
      }
      try {
        answer = await links.transport.announce(candidate.url, name, request);
        owner = candidate;
        break;
      } catch (err) {
        this.#o.unreachable(candidate, err);
        this.#o.log.info("swarm: owner candidate unreachable", {
          name,
          owner: candidate.id,
          error: err,
        });
      }
    }
    if (this.#stopped) return;
    this.#owner = owner?.id ?? null;
    // The origin: the owner reads it; a node with no owner reachable too,
    // gently; everyone else never.
    const mode = owner?.self ? "owner" : owner === null ? "fallback" : "none";
    this.#setOrigin(mode);
    // An owner brings chunks from the origin; a node that is its own owner
    // with no origin configured can wait for nobody.
    this.#o.job.setMoreMayCome(owner !== null && !(owner.self && !links.origin));
    if (answer) this.#connect(answer, owner);
  }

  /** Neighbors whose first bitmap has not come yet. */
  readonly #awaitingFirst = new Set<string>();
  #started = 0;
  #originTimer: Timer | null = null;
  #wantedOrigin: "none" | "owner" | "fallback" = "none";
  /** When this node last took ownership over from another node. */
  #takeoverAt = -Infinity;

  /**
   * Turns origin reads on or off. On waits until the neighbors followed so
   * far have said what they hold (or `originDelayMs` passed): a holder's
   * bitmap a moment away must not lose the race to the origin.
   */
  #setOrigin(mode: "none" | "owner" | "fallback"): void {
    this.#wantedOrigin = mode;
    const now = this.#o.clock.monotonic();
    const delay = this.#o.originDelayMs ?? 1000;
    const wait = Math.max(
      this.#awaitingFirst.size > 0 ? delay - (now - this.#started) : 0,
      mode === "owner" ? (this.#o.takeoverDelayMs ?? 300) - (now - this.#takeoverAt) : 0,
    );
    if (mode !== "none" && wait > 0) {
      this.#originTimer ??= this.#o.clock.setTimeout(
        () => {
          this.#originTimer = null;
          if (!this.#stopped) this.#applyOrigin(this.#wantedOrigin);
        },
        wait,
        { ref: false },
      );
      return;
    }
    this.#applyOrigin(mode);
  }

  #applyOrigin(mode: "none" | "owner" | "fallback"): void {
    if (mode === this.#origin || !this.#o.links.origin) return;
    const { job } = this.#o;
    if (this.#origin !== "none") {
      job.removeSource("origin");
      this.#o.links.origin.remove();
    }
    this.#origin = mode;
    if (mode === "none") return;
    this.#o.links.origin.add();
    const maxInFlight = mode === "owner"
      ? this.#o.ownerOriginRequests ?? 8
      : this.#o.fallbackOriginRequests ?? 2;
    job.addSource({ id: "origin", kind: "origin" as SourceKind, maxInFlight }, "all");
    this.#o.log.info(
      mode === "owner"
        ? "swarm: this node owns the snapshot and reads the origin"
        : "swarm: no owner answers; reading the origin directly",
      { name: this.#o.name },
    );
  }

  #connect(answer: AnnounceAnswer, owner: OwnerCandidate | null): void {
    const max = this.#o.maxNeighbors ?? 16;
    const offered = answer.peers.filter((p) => p.id !== this.#o.self.id);
    // The owner, when handed out, is followed first: it is where new chunks enter.
    offered.sort((a, b) => (a.id === owner?.id ? -1 : b.id === owner?.id ? 1 : 0));
    const now = this.#o.clock.monotonic();
    for (const peer of offered) {
      // The owner is followed whatever the count: chunks enter the swarm there.
      const isOwner = owner !== null && !owner.self && peer.url === owner.url;
      if (this.#neighbors.size >= max && !isOwner) continue;
      if (this.#neighbors.has(peer.id)) continue;
      if ((this.#banned.get(peer.id) ?? 0) > now) continue;
      this.#follow(peer, owner);
    }
  }

  #follow(
    peer: { id: string; url: string; zone: string | null; rack?: string | null },
    owner: OwnerCandidate | null,
  ): void {
    const { job, links, name, digest } = this.#o;
    const id = `peer:${peer.id}`;
    const neighbor: Neighbor = { ...peer, subscription: null, complete: false };
    this.#neighbors.set(peer.id, neighbor);
    links.addPeer(peer);
    const spec: SourceSpec = {
      id,
      kind: "peer",
      zone: peer.zone,
      rack: peer.rack ?? null,
      maxInFlight: this.#o.perPeer ?? 3,
      waits: peer.id === owner?.id,
    };
    let added = false;
    this.#awaitingFirst.add(peer.id);
    const heard = () => {
      if (!this.#awaitingFirst.delete(peer.id)) return;
      if (this.#awaitingFirst.size === 0 && this.#wantedOrigin !== this.#origin) {
        this.#originTimer?.cancel();
        this.#originTimer = null;
        this.#applyOrigin(this.#wantedOrigin);
      }
    };
    const handler: HaveHandler = {
      bitmap: (bits) => {
        if (this.#stopped) return;
        if (!added) {
          job.addSource(spec, bits);
          added = true;
        } else {
          job.setSourceHave(id, bits);
        }
        heard();
      },
      have: (chunks) => {
        if (this.#stopped || !added) return;
        for (const chunk of chunks) job.sourceHasChunk(id, chunk);
      },
      end: (reason) => {
        if (this.#stopped) return;
        heard();
        if (reason === "complete") {
          neighbor.complete = true;
          if (added) job.setSourceHave(id, "all");
          else {
            job.addSource(spec, "all");
            added = true;
          }
          return;
        }
        this.#neighbors.delete(peer.id);
        if (added) job.removeSource(id);
        links.removePeer(peer.id);
        if (reason instanceof Error) this.#o.unreachable(peer, reason);
        // The owner's stream broke: find the next owner now, not at the
        // next round (a takeover in a round trip, not in seconds).
        if (peer.id === this.#owner && !this.#complete) {
          this.announce().catch((err) =>
            this.#o.log.debug("swarm: announce failed", { error: err })
          );
        }
      },
    };
    neighbor.subscription = links.transport.subscribe(peer.url, name, { digest, handler });
  }
}
