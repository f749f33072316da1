/**
 * Where chunks come from during a pull: other local snapshots, peers, the
 * origin. A source only reads; what it holds is the scheduler's business
 * (bitmaps fed by the swarm), and verification is the data plane's.
 *
 * @module
 */

/**
 * The bytes a pull asks a source for: `count` consecutive chunks of `file`
 * from chunk `index` on, bytes `start..end` inclusive.
 */
export interface ChunkRequest {
  file: string;
  index: number;
  count: number;
  start: number;
  end: number;
}

/** Kinds of sources, as pull results and metrics count bytes. */
export type SourceKind = "local" | "peer" | "origin";

/** A place chunks can be read from. */
export interface ChunkSource {
  /** Stable id ("origin", "local", "peer:<node id>"). */
  readonly id: string;
  readonly kind: SourceKind;
  /**
   * Reads the chunks; rejects on any failure (after the source's own
   * retries). With `wait`, the source may wait until it holds them.
   */
  read(
    request: ChunkRequest,
    options: { signal: AbortSignal; wait: boolean },
  ): Promise<Uint8Array>;
  /**
   * Chunk `index` of `file` from this source failed verification: tell the
   * source, which may hold a rotted copy (a hint it checks for itself).
   */
  suspect?(file: string, index: number): void;
}

/** A source gave up for good on a request (for example the object is gone). */
export class SourceFailedError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SourceFailedError";
  }
}
