/**
 * A peer as a chunk source: chunk reads through the peer transport. What
 * the peer holds is known from its have stream (the swarm session feeds
 * the scheduler); a read asks with `wait` only for an urgent chunk from the
 * owner, which fetches it first.
 *
 * @module
 */

import type { PeerTransport } from "../cluster/mod.ts";
import type { ChunkRequest, ChunkSource } from "./source.ts";

/** Options for {@linkcode PeerSource}. */
export interface PeerSourceOptions {
  transport: PeerTransport;
  /** Where the peer is reached. */
  url: string;
  /** The peer's node id. */
  nodeId: string;
  name: string;
  digest: string;
  /** Called after each successful read (for membership's last-seen). */
  onSuccess?: () => void;
  /** Called when a read fails (the peer may be gone). */
  onFailure?: (err: unknown) => void;
}

/** Reads chunks from one peer. */
export class PeerSource implements ChunkSource {
  readonly id: string;
  readonly kind = "peer" as const;
  readonly url: string;
  readonly #o: PeerSourceOptions;

  constructor(options: PeerSourceOptions) {
    this.#o = options;
    this.id = `peer:${options.nodeId}`;
    this.url = options.url;
  }

  suspect(file: string, index: number): void {
    const { transport, url, name, digest } = this.#o;
    transport.suspect(url, name, { digest, file, index }).catch(() => {
      // Only a hint: the peer's scrub finds the rot too.
    });
  }

  async read(
    request: ChunkRequest,
    options: { signal: AbortSignal; wait: boolean },
  ): Promise<Uint8Array> {
    const { transport, url, name, digest } = this.#o;
    try {
      const bytes = await transport.read(url, name, {
        digest,
        file: request.file,
        start: request.start,
        end: request.end,
        wait: options.wait,
        signal: options.signal,
      });
      this.#o.onSuccess?.();
      return bytes;
    } catch (err) {
      if (!options.signal.aborted) this.#o.onFailure?.(err);
      throw err;
    }
  }
}
