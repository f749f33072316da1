/**
 * Manifests as the origin holds them: `<prefix>/<name>/manifest.json`, read
 * and checked (with its signatures, `<prefix>/<name>/manifest.sig`, against
 * the node's trusted keys), kept for a minute (a manifest is immutable once
 * written, but a name can be deleted from the origin and published again).
 *
 * @module
 */

import { LRUCache } from "lru-cache";
import { errorMessage, SnapmeshError } from "../errors.ts";
import { decodeManifest, type ManifestWithDigest } from "../manifest/mod.ts";
import { decodeSignatureFile, SIGNATURE_FILE, type SnapshotTrust } from "../security/mod.ts";
import type { Origin } from "./origin.ts";

/** Reads snapshot manifests from the origin. */
export class RemoteManifests {
  readonly #origin: Origin;
  readonly #trust: SnapshotTrust | null;
  readonly #cache = new LRUCache<string, ManifestWithDigest>({ max: 512, ttl: 60_000 });

  /** @param trust checks signatures (null: none are read) */
  constructor(origin: Origin, trust: SnapshotTrust | null = null) {
    this.#origin = origin;
    this.#trust = trust;
  }

  /**
   * The origin's manifest of `name`, or null when it has none.
   *
   * @throws {SnapmeshError} `upstream_failed` when the origin cannot be read or holds garbage,
   *   `untrusted_snapshot` when this node enforces signatures and no trusted key signed it
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
    if (this.#trust) {
      const sigKey = origin.snapshotPrefix(name) + SIGNATURE_FILE;
      let sidecar: Uint8Array | null;
      try {
        sidecar = await origin.getObject(sigKey);
      } catch (err) {
        throw upstream(
          `Cannot read ${sigKey} from the origin ${origin.endpoint}: ${errorMessage(err)}`,
        );
      }
      const signatures = sidecar === null ? [] : decodeSignatureFile(sidecar, manifest.digest);
      await this.#trust.accept(manifest, signatures, {
        source: "origin",
        who: `the origin ${origin.endpoint}`,
      });
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
