/**
 * Where chunks come from during a pull.
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
  /** Stable id for logs and bad-source tracking ("origin", a peer's node id, "local"). */
  readonly id: string;
  readonly kind: SourceKind;
  /** Verification failures tolerated before the source is avoided for the rest of the pull. */
  readonly strikes: number;
  /** Whether this source can serve every chunk of the request now (a peer may hold only part). */
  has(request: ChunkRequest): boolean;
  /** Reads the chunk; rejects on any failure (after the source's own retries). */
  read(request: ChunkRequest, signal: AbortSignal): Promise<Uint8Array>;
  /**
   * Preference for this request: lower first. Defaults by kind: local 0,
   * peer 1, origin 3. Among equals, the source with fewer requests in
   * flight is chosen.
   */
  priority?(request: ChunkRequest): number;
  /** True when this source is fetching the chunk from the owner right now (so it will hold it soon). */
  pending?(request: ChunkRequest): boolean;
  /** True when the source holds every chunk of the request now (without fetching it first). */
  holds?(request: ChunkRequest): boolean;
  /** True when this source is a peer pulling the same snapshot now (not the owner). */
  participant?(): boolean;
  /** The node id the source stands for (shares are split by node id). */
  readonly participantId?: string;
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
