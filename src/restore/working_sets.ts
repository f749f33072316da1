/**
 * Working sets: for a snapshot digest, the chunks of one file (the memory
 * file) in the order a restored VM first touched them. Manifests are
 * immutable, so a working set is a sidecar keyed by the snapshot digest:
 *
 * - locally `<data-dir>/workingsets/<digest>.json`, written durably (temp
 *   file, fsync, rename, directory fsync);
 * - at the origin `<prefix>/<name>/workingsets/<digest>.json` (pushed in the
 *   background; nested under the snapshot, so an adoption never mistakes it
 *   for a file, and deleting the snapshot at the origin deletes it);
 * - served to peers (`GET /v1/peer/snapshots/{name}/workingset?digest=`).
 *
 * A node that lacks one asks its local copy, then a few peers, then the
 * origin, and keeps what it found. Whatever the source, a working set is
 * checked against the manifest (file present, chunk indexes in range).
 *
 * @module
 */

import type { Membership } from "../cluster/mod.ts";
import { errorMessage, SnapmeshError } from "../errors.ts";
import type { FileSystem } from "../fs/mod.ts";
import { writeDurably } from "../fs/durable.ts";
import type { Logger } from "../log/mod.ts";
import type { ManifestWithDigest } from "../manifest/mod.ts";
import type { Origin } from "../origin/mod.ts";
import type { Clock } from "../util/clock.ts";

/** A working set: chunk indexes of `file`, in first-fault order. */
export interface WorkingSet {
  digest: string;
  file: string;
  chunks: number[];
}

/** Where a working set came from. */
export type WorkingSetSource = "recorded" | "put" | "peer" | "origin";

/** Options for {@linkcode WorkingSets}. */
export interface WorkingSetsOptions {
  fs: FileSystem;
  /** `<data-dir>/workingsets` */
  dir: string;
  origin: Origin | null;
  membership: Membership | null;
  log: Logger;
  clock: Clock;
  /** How long a lookup waits for peers and the origin. @default 1500 */
  lookupTimeoutMs?: number;
}

const PEERS_ASKED = 4;
const DIGEST = /^[0-9a-f]{64}$/;

/** The working sets this node knows, and how to find others. */
export class WorkingSets {
  readonly #o: WorkingSetsOptions;
  /** By digest; null: looked up recently and found nowhere. */
  readonly #known = new Map<string, WorkingSet | null>();
  readonly #missedAt = new Map<string, number>();

  constructor(options: WorkingSetsOptions) {
    this.#o = options;
  }

  /** This node's working set of the snapshot at `digest`, or null. */
  async local(digest: string): Promise<WorkingSet | null> {
    if (!DIGEST.test(digest)) return null;
    const known = this.#known.get(digest);
    if (known) return known;
    let bytes: Uint8Array;
    try {
      bytes = await this.#o.fs.readFile(this.#path(digest));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
    try {
      const value = JSON.parse(new TextDecoder().decode(bytes)) as WorkingSet;
      if (value.digest !== digest || !Array.isArray(value.chunks)) throw new Error("bad shape");
      const set = { digest, file: String(value.file), chunks: value.chunks.map(Number) };
      this.#known.set(digest, set);
      return set;
    } catch (err) {
      this.#o.log.warn("working set file is unreadable; ignoring it", {
        digest,
        error: err,
      });
      return null;
    }
  }

  /**
   * The working set of a snapshot: local, else from a peer, else from the
   * origin (kept locally once found). Null when none has one; a miss is
   * remembered for a minute.
   */
  async find(name: string, manifest: ManifestWithDigest): Promise<WorkingSet | null> {
    const here = await this.local(manifest.digest);
    if (here) return here;
    const missed = this.#missedAt.get(manifest.digest);
    if (missed !== undefined && this.#o.clock.monotonic() - missed < 60_000) return null;
    const found = await this.#remote(name, manifest);
    if (!found) {
      this.#missedAt.set(manifest.digest, this.#o.clock.monotonic());
      return null;
    }
    try {
      await this.#store(found.set);
    } catch (err) {
      this.#o.log.warn("could not keep a working set found elsewhere", { name, error: err });
    }
    this.#o.log.info("working set found", {
      name,
      digest: manifest.digest,
      from: found.from,
      chunks: found.set.chunks.length,
    });
    return found.set;
  }

  /**
   * Sets the working set of a snapshot (checked against its manifest),
   * durably, and pushes it to the origin in the background.
   *
   * @throws {SnapmeshError} `invalid_body` when it does not fit the manifest
   */
  async put(
    name: string,
    manifest: ManifestWithDigest,
    input: { file?: unknown; chunks?: unknown; digest?: unknown },
    source: WorkingSetSource,
  ): Promise<WorkingSet> {
    if (input.digest !== undefined && input.digest !== manifest.digest) {
      throw new SnapmeshError(
        "invalid_body",
        `The working set is for digest ${String(input.digest)}, but "${name}" is ` +
          `${manifest.digest} here`,
      );
    }
    const set = checkWorkingSet(manifest, input);
    await this.#store(set);
    this.#o.log.info("working set stored", {
      name,
      digest: set.digest,
      file: set.file,
      chunks: set.chunks.length,
      source,
    });
    this.#push(name, set);
    return set;
  }

  /** For the puller: the recorded order of the hot chunks, per file, or null. */
  async hotOrder(
    name: string,
    manifest: ManifestWithDigest,
  ): Promise<Record<string, number[]> | null> {
    try {
      const set = await this.find(name, manifest);
      return set ? { [set.file]: set.chunks } : null;
    } catch (err) {
      this.#o.log.debug("working set lookup failed", { name, error: err });
      return null;
    }
  }

  async #store(set: WorkingSet): Promise<void> {
    const { fs } = this.#o;
    const path = this.#path(set.digest);
    await fs.mkdir(this.#o.dir); // made on first use: a node that never restores has none
    await writeDurably(fs, path, new TextEncoder().encode(JSON.stringify(set)));
    this.#known.set(set.digest, set);
    this.#missedAt.delete(set.digest);
  }

  #push(name: string, set: WorkingSet): void {
    const origin = this.#o.origin;
    if (!origin) return;
    const key = originKey(origin, name, set.digest);
    origin.putBytes(key, new TextEncoder().encode(JSON.stringify(set)), {
      contentType: "application/json",
    }).then(
      () => this.#o.log.debug("working set pushed to the origin", { name, key }),
      (err) =>
        this.#o.log.warn("could not push a working set to the origin", {
          name,
          key,
          error: errorMessage(err),
        }),
    );
  }

  async #remote(
    name: string,
    manifest: ManifestWithDigest,
  ): Promise<{ set: WorkingSet; from: string } | null> {
    const timeoutMs = this.#o.lookupTimeoutMs ?? 1500;
    const asks: Promise<{ set: WorkingSet; from: string } | null>[] = [];
    const membership = this.#o.membership;
    if (membership?.configured) {
      for (const member of membership.rank(name).slice(0, PEERS_ASKED + 1)) {
        if (member.self) continue;
        asks.push(
          membership.transport.workingSet(member.peer.url, name, {
            digest: manifest.digest,
            timeoutMs,
          }).then((answer) =>
            answer && { set: checkWorkingSet(manifest, answer), from: member.id }
          ),
        );
      }
    }
    // Peers first (they answer in about a round trip); the origin only when
    // none has one, and only from the snapshot's owner (the first of the
    // ranking): the others ask it, so the origin is asked about once.
    const fromPeers = await firstNonNull(asks);
    if (fromPeers) return fromPeers;
    const origin = this.#o.origin;
    if (!origin) return null;
    const first = membership?.configured ? membership.rank(name)[0] : null;
    if (first && !first.self) return null;
    const controller = new AbortController();
    const timer = this.#o.clock.setTimeout(() => controller.abort(), timeoutMs);
    try {
      const bytes = await origin.getObject(originKey(origin, name, manifest.digest), {
        signal: controller.signal,
      });
      if (bytes === null) return null;
      const set = checkWorkingSet(manifest, JSON.parse(new TextDecoder().decode(bytes)));
      return { set, from: "origin" };
    } catch (err) {
      this.#o.log.debug("origin working set lookup failed", { name, error: err });
      return null;
    } finally {
      timer.cancel();
    }
  }

  #path(digest: string): string {
    return `${this.#o.dir}/${digest}.json`;
  }
}

/** `<prefix>/<name>/workingsets/<digest>.json` */
export function originKey(origin: Origin, name: string, digest: string): string {
  return `${origin.snapshotPrefix(name)}workingsets/${digest}.json`;
}

/**
 * Checks a working set against a manifest: `file` one of its files,
 * `chunks` chunk indexes of that file (duplicates dropped, first kept).
 *
 * @throws {SnapmeshError} `invalid_body`
 */
export function checkWorkingSet(
  manifest: ManifestWithDigest,
  input: { file?: unknown; chunks?: unknown },
): WorkingSet {
  const bad = (why: string) => new SnapmeshError("invalid_body", `Invalid working set: ${why}`);
  if (typeof input !== "object" || input === null) throw bad("expected a JSON object");
  const file = input.file ?? "mem";
  const info = manifest.files.find((f) => f.name === file);
  if (typeof file !== "string" || !info) {
    throw bad(`the snapshot has no file ${JSON.stringify(file)}`);
  }
  if (!Array.isArray(input.chunks) || input.chunks.length === 0) {
    throw bad("chunks must be a non-empty array of chunk indexes");
  }
  const seen = new Set<number>();
  const chunks: number[] = [];
  for (const c of input.chunks) {
    if (!Number.isSafeInteger(c) || c < 0 || c >= info.chunks.length) {
      throw bad(
        `chunk ${JSON.stringify(c)} is not a chunk of "${file}" (0..${info.chunks.length - 1})`,
      );
    }
    if (!seen.has(c)) {
      seen.add(c);
      chunks.push(c);
    }
  }
  return { digest: manifest.digest, file, chunks };
}

/** The first promise to resolve with a value (null when all resolve null or fail). */
function firstNonNull<T>(promises: Promise<T | null>[]): Promise<T | null> {
  if (promises.length === 0) return Promise.resolve(null);
  return new Promise((resolve) => {
    let left = promises.length;
    for (const p of promises) {
      p.then(
        (value) => {
          if (value !== null) resolve(value);
          else if (--left === 0) resolve(null);
        },
        () => {
          if (--left === 0) resolve(null);
        },
      );
    }
  });
}
