/**
 * Uploads committed snapshots to the origin: whole files to
 * `<prefix>/<name>/files/<file>`, then the signatures (`manifest.sig`, when
 * signed), then the manifest, which is the commit marker. The queue lives in the journal (`push_queued` rides on the add
 * record), so an acknowledged commit reaches the origin even when the agent
 * dies right after answering.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { Catalog } from "../cache/mod.ts";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log/mod.ts";
import { decodeManifest, encodeManifest, sameContent, sha256Hex } from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import { encodeSignatureFile, SIGNATURE_FILE } from "../security/mod.ts";
import { lazyFileStream } from "../store/mod.ts";
import type { Clock, Timer } from "../util/clock.ts";
import type { Random } from "../util/random.ts";
import type { Origin } from "./origin.ts";

/** What the pusher works with. */
export interface PusherDeps {
  origin: Origin;
  /** The local snapshots, their push queue (journaled) and quarantine. */
  catalog: Catalog;
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  random: Random;
}

/** Uploads to the origin, as a commit or a pull starts them. */
export interface PushQueue {
  /** Uploads now; rejects when the upload fails (it stays queued). */
  push(name: string, digest: string): Promise<void>;
  /** Looks at the queue now (an async push was journaled). */
  kick(): void;
}

/** Push queue state for `/v1/status`. */
export interface PushStatus {
  queued: number;
  inProgress: string[];
  failing: { name: string; attempts: number; lastError: string; retryInMs: number }[];
}

/** A local file no longer matches its manifest: it must not reach the origin. */
export class CorruptFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CorruptFileError";
  }
}

/** The origin already holds other content under the name: retrying cannot help. */
export class PushConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PushConflictError";
  }
}

interface Failure {
  attempts: number;
  nextAt: number;
  lastError: string;
}

const MAX_PARALLEL = 2;
const MAX_BACKOFF_MS = 5 * 60_000;

/** Drains the push queue in the background, with per-snapshot backoff. */
export class Pusher implements PushQueue {
  readonly #deps: PusherDeps;
  readonly #inFlight = new Map<string, Promise<void>>();
  readonly #failures = new Map<string, Failure>();
  #stopped = false;
  /** Aborts uploads in flight (at shutdown, once the grace time is over). */
  readonly #abort = new AbortController();
  #wake: (() => void) | null = null;
  #loop: Promise<void> | null = null;

  constructor(deps: PusherDeps) {
    this.#deps = deps;
  }

  /** Starts the background loop. */
  start(): void {
    this.#loop ??= this.#run();
  }

  /** Asks the loop to look at the queue now. */
  kick(): void {
    this.#wake?.();
  }

  /**
   * Stops the loop; uploads in flight get `graceMs` to finish, then are
   * aborted. An aborted push stays queued in the journal and starts over
   * at the next start.
   */
  async stop(graceMs = 5000): Promise<void> {
    this.#stopped = true;
    this.kick();
    await this.#loop;
    const settled = Promise.allSettled([...this.#inFlight.values()]);
    let timer: Timer | undefined;
    const late = await Promise.race([
      settled.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = this.#deps.clock.setTimeout(() => resolve(true), graceMs);
      }),
    ]);
    timer?.cancel();
    if (late) {
      this.#deps.log.warn("shutdown: aborting uploads in flight; they stay queued", {
        names: [...this.#inFlight.keys()],
      });
      this.#abort.abort(new Error("The agent is shutting down"));
      await settled;
    }
  }

  /** Pushes one snapshot now (single-flight per name); rejects when it fails. */
  push(name: string, digest: string): Promise<void> {
    const running = this.#inFlight.get(name);
    if (running) return running;
    const attempt = this.#pushOnce(name, digest).finally(() => this.#inFlight.delete(name));
    this.#inFlight.set(name, attempt);
    attempt.catch(() => {});
    return attempt;
  }

  /** Waits for an upload of `name` in flight, if any (before deleting it from the origin). */
  async settle(name: string): Promise<void> {
    await this.#inFlight.get(name)?.catch(() => {});
  }

  status(): PushStatus {
    const now = this.#deps.clock.monotonic();
    return {
      queued: this.#deps.catalog.index.pushQueue().length,
      inProgress: [...this.#inFlight.keys()],
      failing: [...this.#failures].map(([name, f]) => ({
        name,
        attempts: f.attempts,
        lastError: f.lastError,
        retryInMs: Math.max(0, f.nextAt - now),
      })),
    };
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      const now = this.#deps.clock.monotonic();
      for (const { name, digest } of this.#deps.catalog.index.pushQueue()) {
        if (this.#inFlight.size >= MAX_PARALLEL) break;
        if (this.#inFlight.has(name)) continue;
        const failure = this.#failures.get(name);
        if (failure && failure.nextAt > now) continue;
        this.push(name, digest).then(() => this.kick(), () => this.kick());
      }
      const nextDue = Math.min(
        ...[...this.#failures.values()].map((f) => f.nextAt - now),
        1000,
      );
      await new Promise<void>((resolve) => {
        const timer = this.#deps.clock.setTimeout(resolve, Math.max(nextDue, 20), { ref: false });
        this.#wake = () => {
          timer.cancel();
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  async #pushOnce(name: string, digest: string): Promise<void> {
    const { origin, catalog, log, metrics } = this.#deps;
    const store = catalog.store;
    const started = this.#deps.clock.monotonic();
    const signal = this.#abort.signal;
    try {
      const manifest = await store.readManifest(name, digest).catch((err) => {
        if (err instanceof Deno.errors.NotFound) return null;
        throw err;
      });
      signal.throwIfAborted();
      if (manifest === null) {
        // Deleted before it could be uploaded: nothing to push.
        await this.#markDone(name, digest);
        return;
      }
      const existing = await origin.getObject(origin.manifestKey(name), { signal });
      if (existing !== null) {
        if (sha256Hex(existing) === digest) {
          await this.#finish(name, { digest, bytes: 0, started });
          return;
        }
        let theirs;
        try {
          theirs = decodeManifest(existing);
        } catch (err) {
          throw new PushConflictError(
            `the origin holds an unreadable manifest for "${name}" (${errorMessage(err)})`,
          );
        }
        if (!sameContent(theirs, manifest)) {
          throw new PushConflictError(
            `the origin already holds other content under "${name}" (digest ${theirs.digest})`,
          );
        }
        log.info("push: the origin already holds the same files", { name, digest });
        await this.#finish(name, { digest, bytes: 0, started });
        return;
      }
      let bytes = 0;
      for (const file of manifest.files) {
        const path = store.filePath(name, file.name);
        await origin.uploadFile(origin.fileKey(name, file.name), {
          // Hashed on the way out: an upload whose bytes are not the
          // manifest's fails before its last part, and no manifest follows.
          open: () =>
            lazyFileStream(store.fs, path, 0, file.size - 1).pipeThrough(
              verifyingStream(file.sha256, file.size, `${name}/${file.name}`),
            ),
          size: file.size,
          signal,
        });
        bytes += file.size;
        metrics.pushedBytes.inc(file.size);
      }
      // The signatures before the manifest: whoever sees the manifest can check it.
      const signatures = await store.readSignatures(name, digest);
      if (signatures.length > 0) {
        signal.throwIfAborted();
        await origin.putBytes(
          origin.snapshotPrefix(name) + SIGNATURE_FILE,
          encodeSignatureFile(digest, signatures),
          { signal, contentType: "application/json" },
        );
      }
      // Last: the manifest makes the snapshot visible to every reader.
      signal.throwIfAborted();
      await origin.putBytes(origin.manifestKey(name), encodeManifest(manifest), { signal });
      await this.#finish(name, { digest, bytes, started });
    } catch (err) {
      if (signal.aborted) throw err; // shutting down: it stays queued, untouched
      const corrupt = findCorrupt(err);
      if (corrupt) {
        // Nothing to retry: the local copy is wrong. Out of the cache with it.
        metrics.pushFailures.inc({ reason: "corrupt" });
        log.error("push: a local file does not match its manifest; quarantining", {
          name,
          digest,
          error: corrupt,
        });
        this.#failures.set(name, { attempts: 1, nextAt: Infinity, lastError: corrupt.message });
        await this.#markDone(name, digest).catch(() => {});
        await catalog.quarantine(name, digest, corrupt.message).catch(() => {});
        throw corrupt;
      }
      const permanent = err instanceof PushConflictError;
      metrics.pushFailures.inc({ reason: permanent ? "conflict" : "error" });
      const previous = this.#failures.get(name);
      const attempts = (previous?.attempts ?? 0) + 1;
      const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (attempts - 1)) *
        (0.5 + this.#deps.random.next() / 2);
      this.#failures.set(name, {
        attempts,
        nextAt: this.#deps.clock.monotonic() + delay,
        lastError: errorMessage(err),
      });
      log.error(permanent ? "push: giving up" : "push: failed; will retry", {
        name,
        digest,
        attempts,
        retryInMs: permanent ? null : Math.round(delay),
        error: err,
      });
      if (permanent) {
        // Nothing a retry can fix: take it off the queue, keep the error visible.
        this.#failures.set(name, { attempts, nextAt: Infinity, lastError: errorMessage(err) });
        await this.#markDone(name, digest).catch(() => {});
      }
      throw err;
    }
  }

  /** Journals (fsynced) that the push of `name` at `digest` is finished. */
  async #markDone(name: string, digest: string): Promise<void> {
    const { catalog } = this.#deps;
    await catalog.lock.run(() => catalog.record({ t: "push_done", name, digest }));
  }

  async #finish(
    name: string,
    { digest, bytes, started }: { digest: string; bytes: number; started: number },
  ): Promise<void> {
    await this.#markDone(name, digest);
    this.#failures.delete(name);
    this.#deps.metrics.pushes.inc();
    this.#deps.log.info("pushed", {
      name,
      digest,
      bytes,
      ms: Math.round(this.#deps.clock.monotonic() - started),
    });
  }
}

/** Passes bytes through, failing at the end when their size or sha256 is not the expected one. */
function verifyingStream(
  sha256: string,
  size: number,
  what: string,
): TransformStream<Uint8Array, Uint8Array> {
  const hash = createHash("sha256");
  let seen = 0;
  return new TransformStream({
    transform(chunk, controller) {
      hash.update(chunk);
      seen += chunk.length;
      controller.enqueue(chunk);
    },
    flush() {
      const digest = hash.digest("hex");
      if (seen !== size || digest !== sha256) {
        throw new CorruptFileError(
          `${what} read back as ${seen} bytes with sha256 ${digest}; the manifest says ${size} bytes, ${sha256}`,
        );
      }
    },
  });
}

/** The CorruptFileError behind `err`, however the upload library wrapped it. */
function findCorrupt(err: unknown): CorruptFileError | null {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof CorruptFileError) return e;
  }
  return null;
}
