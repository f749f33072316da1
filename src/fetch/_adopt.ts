// Adoption: a name whose origin prefix holds files but no manifest (a
// vHive-style upload: `<name>/mem_file`, `<name>/snap_file`, …) is pulled
// file by file, and its manifest is built from the bytes that arrived.

import { createHash } from "node:crypto";
import { errorMessage, SnapmeshError } from "../errors.ts";
import type { Logger } from "../log/mod.ts";
import {
  chunkCount,
  isValidName,
  type Manifest,
  MANIFEST_SCHEMA,
  MAX_FILES,
} from "../manifest/mod.ts";
import type { Origin } from "../origin/mod.ts";
import { SIGNATURE_FILE, type SnapshotTrust } from "../security/mod.ts";
import type { SnapshotStore } from "../store/mod.ts";
import type { PullFile, PullJob } from "./pull_job.ts";

/** Options for {@linkcode planAdoption}. */
export interface PlanAdoptionOptions {
  origin: Origin | null;
  /** Chunk size of the adopted snapshot (the node's). */
  chunkSize: number;
  log: Logger;
  /** Refuses names that must come with a signed manifest. @default none */
  trust?: SnapshotTrust;
}

/** The plan of an adoption's pull. */
export interface AdoptionPlan {
  /** The partial's key. */
  key: string;
  files: PullFile[];
  /** Origin object key of each file. */
  keys: Map<string, string>;
  reservedBytes: number;
  /** The newest file's time: the manifest's `createdAt`. */
  createdAt: number;
}

/**
 * Plans the pull of `name` when no peer and no origin manifest has it:
 * the files directly under its origin prefix. Throws `snapshot_not_found`
 * when there are none (or no origin), `upstream_failed` when they cannot be
 * listed or adopted.
 */
export async function planAdoption(
  name: string,
  options: PlanAdoptionOptions,
): Promise<AdoptionPlan> {
  const { origin, chunkSize, log } = options;
  options.trust?.assertNotRefused(name);
  if (!origin) throw notFound(name);
  const prefix = origin.snapshotPrefix(name);
  let objects;
  try {
    objects = await origin.list(prefix);
  } catch (err) {
    throw upstream(
      `Cannot list ${prefix} at the origin ${origin.endpoint}: ${errorMessage(err)}`,
    );
  }
  const direct = objects.filter((o) =>
    !o.key.slice(prefix.length).includes("/") && o.key.slice(prefix.length) !== SIGNATURE_FILE
  );
  if (direct.length === 0) {
    if (objects.length > 0) {
      log.warn("origin holds files but no manifest: an unfinished push; not adopting", {
        name,
      });
    }
    throw notFound(name);
  }
  if (direct.length > MAX_FILES) {
    throw upstream(
      `Cannot adopt ${prefix}: it holds ${direct.length} files, more than ${MAX_FILES}`,
    );
  }
  options.trust?.assertAdoptable(name);
  const keys = new Map<string, string>();
  const files = direct.map((o) => {
    const file = o.key.slice(prefix.length);
    if (!isValidName(file)) {
      throw upstream(`Cannot adopt ${prefix}: object "${file}" is not a valid file name`);
    }
    keys.set(file, o.key);
    return {
      name: file,
      size: o.size,
      chunks: new Array(chunkCount(o.size, chunkSize)).fill(null),
    };
  }).sort((a, b) => (a.name < b.name ? -1 : 1));
  return {
    key: `adopt-${name}`,
    files,
    keys,
    reservedBytes: files.reduce((n, f) => n + f.size, 0) + 64 * 1024,
    createdAt: Math.max(...direct.map((o) => o.lastModified)),
  };
}

/** Options for {@linkcode adoptedManifest}. */
export interface AdoptedManifestOptions {
  /** The partial's key. */
  key: string;
  store: SnapshotStore;
  origin: Origin;
  /** From the plan; 0 when unknown (a pull resumed after a restart). */
  createdAt: number | undefined;
}

/** Builds the manifest of an adopted snapshot from the bytes that arrived. */
export async function adoptedManifest(
  job: PullJob,
  options: AdoptedManifestOptions,
): Promise<Manifest> {
  const { key, store, origin } = options;
  const files = [];
  for (let fi = 0; fi < job.files.length; fi++) {
    const file = job.files[fi]!;
    const handle = await store.openPartialFile(key, file.name);
    const hash = createHash("sha256");
    try {
      const buffer = new Uint8Array(1024 * 1024);
      for (let at = 0; at < file.size; at += buffer.length) {
        const n = await handle.readAt(
          buffer.subarray(0, Math.min(buffer.length, file.size - at)),
          at,
        );
        hash.update(buffer.subarray(0, n));
      }
    } finally {
      handle.close();
    }
    files.push({
      name: file.name,
      size: file.size,
      sha256: hash.digest("hex"),
      chunks: job.received[fi]!,
    });
  }
  // Deterministic (same listing, same manifest), so nodes adopting at the
  // same moment agree on the digest.
  return {
    schema: MANIFEST_SCHEMA,
    name: job.name,
    createdAt: new Date(options.createdAt || 0).toISOString(),
    chunkSize: job.chunkSize,
    labels: { "snapmesh.adopted-from": `${origin.bucket}/${origin.snapshotPrefix(job.name)}` },
    files,
  };
}

/** The error of a name nothing has. */
function notFound(name: string): SnapmeshError {
  return new SnapmeshError(
    "snapshot_not_found",
    `Snapshot "${name}" is not on this node, and no peer or origin has it`,
  );
}

function upstream(message: string): SnapmeshError {
  return new SnapmeshError("upstream_failed", message);
}
