/**
 * Manifests as the origin holds them: `<prefix>/<name>/manifest.json`, read
 * and checked, kept for a minute (a manifest is immutable once written, but
 * a name can be deleted from the origin and published again).
 *
 * @module
 */

import { LRUCache } from "lru-cache";
import { errorMessage, SnapmeshError } from "../errors.ts";
import { decodeManifest, type ManifestWithDigest } from "../manifest/mod.ts";
import type { Origin } from "./origin.ts";

/** Reads snapshot manifests from the origin. */
export class RemoteManifests {
  readonly #origin: Origin;
  readonly #cache = new LRUCache<string, ManifestWithDigest>({ max: 512, ttl: 60_000 });

  constructor(origin: Origin) {
    this.#origin = origin;
  }

  /**
   * The origin's manifest of `name`, or null when it has none.
   *
   * @throws {SnapmeshError} `upstream_failed` when the origin cannot be read or holds garbage
   */
  async get(name: string): Promise<ManifestWithDigest | null> {
    const cached = this.#cache.get(name);
    if (cached) return cached;
    const origin = this.#origin;
    const key = origin.manifestKey(name);
    let bytes: Uint8Array | null;
    try {
      bytes = await origin.getObject(key);
    } catch (err) {
      throw upstream(`Cannot read ${key} from the origin ${origin.endpoint}: ${errorMessage(err)}`);
    }
    if (bytes === null) return null;
    let manifest: ManifestWithDigest;
    try {
      manifest = decodeManifest(bytes);
    } catch (err) {
      throw upstream(`The origin's ${key} is not a valid manifest: ${errorMessage(err)}`);
    }
    if (manifest.name !== name) {
      throw upstream(`The origin's ${key} describes "${manifest.name}", not "${name}"`);
    }
    this.#cache.set(name, manifest);
    return manifest;
  }

  /** Forgets a cached manifest (after the origin deleted it, or a local delete). */
  forget(name: string): void {
    this.#cache.delete(name);
  }
}

function upstream(message: string): SnapmeshError {
  return new SnapmeshError("upstream_failed", message);
}
