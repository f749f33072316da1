/**
 * The in-memory origin: objects in a map, with fault switches (down, failing
 * requests, slow or corrupted reads, a hanging request) so tests and the
 * in-process cluster can exercise what a real S3 does wrong, without a
 * server and without real I/O.
 *
 * @module
 */

import type { Clock } from "../util/clock.ts";
import {
  type ObjectInfo,
  type Origin,
  type OriginHealth,
  type OriginObserver,
  type OriginStats,
  snapshotPrefix,
  type UploadOptions,
} from "./origin.ts";

/** Faults armed on a {@linkcode MemoryOrigin}. */
export interface MemoryOriginFaults {
  /** Every request fails as a refused connection. */
  down?: boolean;
  /** The next N requests fail with a 503 SlowDown. */
  failNext?: number;
  /** Latency per request, in ms of the origin's clock. */
  delayMs?: number;
  /** Flip one byte of every object body read. */
  corrupt?: boolean;
  /** Requests never answer (until the caller's signal aborts). */
  hang?: boolean;
}

/** An error as the S3 SDK reports a status (`$metadata.httpStatusCode`). */
export class MemoryOriginError extends Error {
  readonly $metadata: { httpStatusCode: number };
  constructor(status: number, message: string) {
    super(message);
    this.name = status === 503 ? "SlowDown" : "OriginError";
    this.$metadata = { httpStatusCode: status };
  }
}

/** Options for {@linkcode MemoryOrigin}. */
export interface MemoryOriginOptions {
  clock: Clock;
  /** @default "snapshots" */
  bucket?: string;
  /** @default "" */
  prefix?: string;
}

/** An origin whose objects live in memory. */
export class MemoryOrigin implements Origin {
  readonly endpoint = "memory://origin";
  readonly bucket: string;
  readonly prefix: string;
  readonly stats: OriginStats = {
    requests: 0,
    retries: 0,
    errors: 0,
    bytesRead: 0,
    bytesWritten: 0,
  };
  observer: OriginObserver = {};
  /** Faults; change them at any time. */
  faults: MemoryOriginFaults = {};
  /** Object reads (GET requests), by key. */
  readonly reads = new Map<string, number>();
  readonly #objects = new Map<string, { bytes: Uint8Array; modified: number }>();
  readonly #clock: Clock;

  constructor(options: MemoryOriginOptions) {
    this.#clock = options.clock;
    this.bucket = options.bucket ?? "snapshots";
    this.prefix = options.prefix ?? "";
  }

  snapshotPrefix(name: string): string {
    return snapshotPrefix(this.prefix, name);
  }

  manifestKey(name: string): string {
    return `${this.snapshotPrefix(name)}manifest.json`;
  }

  fileKey(name: string, file: string): string {
    return `${this.snapshotPrefix(name)}files/${file}`;
  }

  health(): OriginHealth {
    return {
      endpoint: this.endpoint,
      bucket: this.bucket,
      prefix: this.prefix,
      healthy: !this.faults.down,
      lastContactMs: 0,
      lastError: this.faults.down ? "down (fault)" : null,
    };
  }

  async probe(): Promise<boolean> {
    try {
      await this.#request();
      return true;
    } catch {
      return false;
    }
  }

  async getObject(
    key: string,
    options: { range?: [number, number]; signal?: AbortSignal } = {},
  ): Promise<Uint8Array | null> {
    await this.#request(options.signal);
    this.reads.set(key, (this.reads.get(key) ?? 0) + 1);
    const object = this.#objects.get(key);
    if (!object) return null;
    const [start, end] = options.range ?? [0, object.bytes.length - 1];
    const out = object.bytes.slice(start, Math.min(end, object.bytes.length - 1) + 1);
    if (this.faults.corrupt && out.length > 0) out[out.length >> 1]! ^= 0xff;
    this.stats.bytesRead += out.length;
    return out;
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    await this.#request();
    return [...this.#objects]
      .filter(([key]) => key.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([key, o]) => ({ key, size: o.bytes.length, lastModified: o.modified }));
  }

  async putBytes(
    key: string,
    bytes: Uint8Array,
    options: { signal?: AbortSignal } = {},
  ): Promise<void> {
    await this.#request(options.signal);
    this.#objects.set(key, { bytes: bytes.slice(), modified: this.#clock.now() });
    this.stats.bytesWritten += bytes.length;
  }

  async uploadFile(key: string, options: UploadOptions): Promise<void> {
    await this.#request(options.signal);
    const out = new Uint8Array(options.size);
    let at = 0;
    for await (const piece of options.open()) {
      options.signal?.throwIfAborted();
      if (at + piece.length > out.length) {
        throw new Error(`Upload of ${key} is longer than its size`);
      }
      out.set(piece, at);
      at += piece.length;
      options.onProgress?.(at);
    }
    if (at !== out.length) throw new Error(`Upload of ${key} ended after ${at} bytes`);
    this.#objects.set(key, { bytes: out, modified: this.#clock.now() });
    this.stats.bytesWritten += out.length;
  }

  async deleteObject(key: string): Promise<void> {
    await this.#request();
    this.#objects.delete(key);
  }

  async deleteObjects(keys: string[]): Promise<void> {
    await this.#request();
    for (const key of keys) this.#objects.delete(key);
  }

  /** Puts an object directly (test setup; no fault applies). */
  seed(key: string, bytes: Uint8Array): void {
    this.#objects.set(key, { bytes: bytes.slice(), modified: this.#clock.now() });
  }

  /** Keys held, sorted. */
  keys(): string[] {
    return [...this.#objects.keys()].sort();
  }

  async #request(signal?: AbortSignal): Promise<void> {
    this.stats.requests++;
    this.observer.request?.();
    const { delayMs, down, hang } = this.faults;
    if (delayMs) await this.#clock.sleep(delayMs, { signal });
    signal?.throwIfAborted();
    if (down) {
      this.stats.errors++;
      throw new TypeError(`connection refused: ${this.endpoint}`);
    }
    if (hang) {
      await new Promise<void>((_, reject) => {
        signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
      });
    }
    if ((this.faults.failNext ?? 0) > 0) {
      this.faults.failNext!--;
      this.stats.errors++;
      throw new MemoryOriginError(503, "SlowDown: please reduce your request rate (fault)");
    }
  }
}
