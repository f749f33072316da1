/**
 * How one node asks another: the peer transport. The real one speaks HTTP
 * (`/v1/peer/*`); an in-memory one connects agents of one process (tests,
 * the in-process cluster). The asked node answers through a
 * {@linkcode PeerEndpoint}.
 *
 * @module
 */

import { SnapmeshError } from "../errors.ts";

/** A peer's answer to hello. */
export interface Hello {
  nodeId: string;
  version: string;
  advertise: string | null;
}

/** Which chunks of a snapshot a peer has verified. */
export interface Availability {
  digest: string;
  complete: boolean;
  /** Per file: base64 bitmap of verified chunks (bit i = chunk i); absent when complete. */
  have: Record<string, string>;
  /**
   * Per file: chunks the node is fetching from the owner right now. Others
   * leave those to it (and take them from it afterwards) instead of asking
   * the owner for the same chunk.
   */
  pending?: Record<string, string>;
}

/** A peer's manifest answer: the canonical manifest text and what it holds. */
export interface PeerManifest extends Availability {
  manifest: string;
  /**
   * Publishers' signatures over the manifest's digest, as the peer holds
   * them (checked by the asker; absent from unsigned snapshots and older peers).
   */
  signatures?: { keyId: string; signature: string }[];
}

/** A chunk read from a peer: bytes `start..end` (inclusive) of `file`. */
export interface PeerReadRequest {
  digest: string;
  file: string;
  start: number;
  end: number;
  /** The peer may wait for chunks its own pull has not verified yet. */
  wait: boolean;
  signal: AbortSignal;
}

/** A chunk a peer sent failed verification here. */
export interface SuspectReport {
  digest: string;
  file: string;
  index: number;
}

/** A participant of a snapshot's swarm. */
export interface SwarmMember {
  /** Node id. */
  id: string;
  /** Where peers reach it. */
  url: string;
  zone: string | null;
  /** Its rack, when it says (older nodes do not). */
  rack?: string | null;
  /** It holds the whole snapshot. */
  complete: boolean;
}

/** A node announcing itself to the tracker (the owner) of a snapshot's swarm. */
export interface AnnounceRequest {
  digest: string;
  peer: SwarmMember & {
    /**
     * The chunks it holds, as a base64 bitmap over global chunk numbers
     * (sent while it pulls): the tracker's union tells a new owner what the
     * swarm holds already, beyond its own neighbors.
     */
    have?: string;
  };
}

/** The tracker's answer: other participants to trade with. */
export interface AnnounceAnswer {
  peers: SwarmMember[];
}

/**
 * What a have stream delivers: the peer's chunks (global numbering: the
 * chunks of the manifest's files, one after the other), then each chunk it
 * verifies from then on.
 */
export interface HaveHandler {
  /** The chunks the peer holds now, as a bitmap, or "all". */
  bitmap(bits: Uint8Array | "all"): void;
  /** Chunks the peer verified since. */
  have(chunks: number[]): void;
  /**
   * The stream ended: `complete` (the peer now holds every chunk: it stays
   * a source), `closed` (it has no pull of this snapshot any more), or an
   * error (it may be gone).
   */
  end(reason: "complete" | "closed" | Error): void;
}

/** A have stream; close it when the peer is no longer wanted. */
export interface Subscription {
  close(): void;
}

/** A recorded working set: chunk indexes of `file` in first-fault order (lazy restore). */
export interface PeerWorkingSet {
  digest: string;
  file: string;
  chunks: number[];
}

/** How one node asks another. Every method rejects when the peer cannot be reached. */
export interface PeerTransport {
  hello(url: string, options: { timeoutMs: number }): Promise<Hello>;
  /**
   * The peer's manifest of `name`, or null when it has none. With `fetch`,
   * an owner that misses starts its own pull and answers once the manifest
   * is known.
   */
  manifest(
    url: string,
    name: string,
    options: { fetch: boolean; timeoutMs: number },
  ): Promise<PeerManifest | null>;
  /** Which chunks of `name` at `digest` the peer holds, or null. */
  availability(
    url: string,
    name: string,
    options: { digest: string; timeoutMs: number },
  ): Promise<Availability | null>;
  /** The bytes of a range; its length is checked by the caller. */
  read(url: string, name: string, request: PeerReadRequest): Promise<Uint8Array>;
  /** Tells the peer a chunk it sent failed verification (a hint it checks itself). */
  suspect(url: string, name: string, report: SuspectReport): Promise<void>;
  /** Asks the peer whether it reaches `target`, one of its own peers (an indirect probe). */
  probe(url: string, target: string, options: { timeoutMs: number }): Promise<boolean>;
  /** Announces a participant to the peer, the tracker of the snapshot's swarm. */
  announce(url: string, name: string, request: AnnounceRequest): Promise<AnnounceAnswer>;
  /**
   * Follows what the peer holds of snapshot `name` at `digest` (its have
   * stream). Failures end the stream (`handler.end(error)`); it never throws.
   */
  subscribe(
    url: string,
    name: string,
    options: { digest: string; handler: HaveHandler },
  ): Subscription;
  /** The peer's working set of `name` at `digest`, or null (checked by the caller). */
  workingSet(
    url: string,
    name: string,
    options: { digest: string; timeoutMs: number },
  ): Promise<PeerWorkingSet | null>;
}

/** What a node answers its peers (its peer service). */
export interface PeerEndpoint {
  hello(): Hello;
  manifest(name: string, fetch: boolean): Promise<PeerManifest | null>;
  availability(name: string, digest: string): Availability | null;
  read(
    name: string,
    request: {
      digest: string;
      file: string;
      range: string | undefined;
      wait: boolean;
      /** The asking node's id, when it said. */
      from?: string | null;
    },
  ): Promise<{ size: number; start: number; end: number; stream: ReadableStream<Uint8Array> }>;
  suspect(name: string, report: SuspectReport): void;
  announce(name: string, request: AnnounceRequest): AnnounceAnswer;
  /** Probes `target` (one of this node's peers) for a node that could not reach it. */
  probe(target: string): Promise<boolean>;
  /** Starts a have stream; null when this node has no copy or pull of it. */
  subscribe(name: string, digest: string, handler: HaveHandler): Subscription | null;
  workingSet(name: string, digest: string): Promise<PeerWorkingSet | null>;
}

/** A peer refused us (wrong credentials) or broke the protocol. */
export class PeerError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "PeerError";
    this.status = status;
  }
}

/**
 * True for failures that say the peer cannot be reached (refused, reset,
 * unreachable), as opposed to an answer we did not like or a slow one.
 */
export function isConnectionError(err: unknown): boolean {
  // Deno's fetch (and the in-memory transport) reject with a TypeError when
  // the connection fails.
  return err instanceof TypeError;
}

/** Packs a chunk state array (true = verified) into base64. */
export function encodeBitmap(bits: ArrayLike<boolean>): string {
  const bytes = new Uint8Array(Math.ceil(bits.length / 8));
  for (let i = 0; i < bits.length; i++) if (bits[i]) bytes[i >> 3]! |= 1 << (i & 7);
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

/** Packs a bitmap (bit i of byte i/8) into base64. */
export function encodeBytes(bits: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bits.length; i += 0x8000) {
    text += String.fromCharCode(...bits.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

/** Unpacks a base64 bitmap. */
export function decodeBitmap(text: string): Uint8Array {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new SnapmeshError("invalid_body", "Invalid availability bitmap");
  }
}

/** True when bit `index` is set. */
export function hasBit(bitmap: Uint8Array, index: number): boolean {
  return ((bitmap[index >> 3] ?? 0) & (1 << (index & 7))) !== 0;
}
