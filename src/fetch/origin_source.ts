/**
 * The origin as a chunk source: one ranged GET per chunk.
 *
 * @module
 */

import type { Origin } from "../origin/mod.ts";
import type { RateLimiter } from "../util/rate.ts";
import { type ChunkRequest, type ChunkSource, SourceFailedError } from "./source.ts";

/** Reads chunks of a snapshot's files from the origin. */
export class OriginSource implements ChunkSource {
  readonly id = "origin";
  readonly kind = "origin" as const;
  readonly #origin: Origin;
  readonly #keys: ReadonlyMap<string, string>;
  readonly #rate: RateLimiter | null;

  /** `keys` maps each file name to its object key; `rate` paces the reads. */
  constructor(
    origin: Origin,
    keys: ReadonlyMap<string, string>,
    rate: RateLimiter | null = null,
  ) {
    this.#origin = origin;
    this.#keys = keys;
    this.#rate = rate;
  }

  async read(request: ChunkRequest, options: { signal: AbortSignal }): Promise<Uint8Array> {
    const { signal } = options;
    const key = this.#keys.get(request.file)!;
    await this.#rate?.take(request.end - request.start + 1);
    const bytes = await this.#origin.getObject(key, {
      range: [request.start, request.end],
      signal,
    });
    if (bytes === null) throw new SourceFailedError(`origin object ${key} is missing`);
    return bytes;
  }
}
