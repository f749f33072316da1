/**
 * The public types of the chunk scheduler: what it is told of a
 * source, what it asks to send, and how a request ended. Re-exported from
 * `scheduler.ts`.
 *
 * @module
 */

import type { Random } from "../util/random.ts";

/** A kind of source. */
export type SourceKind = "local" | "peer" | "origin";

/** What the scheduler knows of a source when it is added. */
export interface SourceSpec {
  id: string;
  kind: SourceKind;
  /** The source's zone (peers), or null when unknown. */
  zone?: string | null;
  /** The source's rack (peers), or null when unknown. */
  rack?: string | null;
  /** Requests it may have in flight at once. */
  maxInFlight: number;
  /**
   * Requests that failed or brought bad bytes before the source is dropped.
   * @default 1 for peers (one bad chunk and it is gone), 3 for the origin
   * (bytes can be damaged in transit)
   */
  strikes?: number;
  /**
   * The source serves chunks it does not hold yet by fetching them first
   * (the owner, asked to wait): used only for urgent chunks no one holds.
   */
  waits?: boolean;
}

/** A request to send. */
export interface Assignment {
  id: number;
  source: string;
  /** First chunk (global number). */
  chunk: number;
  /** Consecutive chunks in the request (more than one only from the origin). */
  count: number;
  /** The source may wait for the chunk (urgent, from the owner). */
  wait: boolean;
  /** A second request for a chunk already in flight elsewhere. */
  duplicate: boolean;
}

/** How a request ended. */
export interface Outcome {
  /** Chunks that arrived and verified. */
  good: number[];
  /** Chunks that arrived but failed verification. */
  bad?: number[];
  /** Bytes received (for the source's rate). */
  bytes: number;
  /**
   * Why it failed, when it did: `busy` (the source is saturated: choke it a
   * while), `declined` (the source does not serve these chunks now — not
   * there yet, or sent often enough: ask others for them a while), `gone` (unreachable: drop it), `cancelled` (this node gave up on
   * it), `error` (any other failure: strike).
   */
  failure?: "busy" | "declined" | "gone" | "cancelled" | "error";
}

/** Options for `ChunkScheduler`. */
export interface ChunkSchedulerOptions {
  /** Chunks per file. */
  counts: number[];
  /** Bytes of chunk `c` (global number). */
  chunkBytes(chunk: number): number;
  /** The hot chunks, in fetch order (global numbers). */
  hot?: number[];
  random: Random;
  /** This node's zone. @default null */
  zone?: string | null;
  /** This node's rack: among holders of its zone, those of its rack are preferred. @default null */
  rack?: string | null;
  /** Requests in flight at once, over all sources. @default 16 */
  maxInFlight?: number;
  /** Adjacent chunks one origin request may cover. @default 4 */
  originRun?: number;
  /** The endgame starts when at most this many chunks are missing. @default 2 × maxInFlight */
  endgameChunks?: number;
  /** A request is slow after max(this, 4 × its expected time), in ms. @default 2000 */
  slowAfterMs?: number;
  /** How long a busy source is skipped, in ms. @default 300 */
  chokeMs?: number;
  /** How long a source is not asked again for chunks it declined, in ms. @default 1000 */
  declineMs?: number;
  /**
   * A chunk only other zones hold is fetched across zones after a random
   * wait up to this long, in ms (drawn once per chunk): the first node of
   * a zone to take it there tells the others, who then fetch it inside
   * the zone, so each chunk crosses zones a few times, not once per node.
   * @default 500
   */
  crossZoneWaitMs?: number;
  /** Failed requests before a source is dropped. @default 3 */
  strikes?: number;
  /**
   * A chunk only the owner holds is asked of it after a random wait up to
   * this long, in ms (drawn once per chunk): nodes take different chunks
   * from the owner, and a chunk another node took first is relayed by it,
   * so the owner's uplink carries each chunk about once.
   * @default 300
   */
  ownerWaitMs?: number;
  /**
   * A chunk other participants of the swarm hold (the tracker's union),
   * though no source of this node does yet, is read from the origin only
   * after this long, in ms: a new owner lets the swarm bring what it has.
   * @default 3000
   */
  heldElsewhereWaitMs?: number;
}
