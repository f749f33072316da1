/**
 * The cache's byte budget: committed snapshots (bytes on disk) plus what is
 * reserved for drafts, uploads and pulls in progress never exceed
 * `--cache-size`. Making room evicts least recently used unpinned snapshots,
 * whole, through the catalog.
 *
 * @module
 */

import { formatSize } from "../config/mod.ts";
import { SnapmeshError } from "../errors.ts";
import type { Catalog } from "./catalog.ts";

/** Options for {@linkcode CacheBudget}. */
export interface CacheBudgetOptions {
  catalog: Catalog;
  /** The budget in bytes (`--cache-size`). */
  capacity: number;
}

/** Reservations against the cache budget, and eviction to honour them. */
export class CacheBudget {
  readonly capacity: number;
  readonly #catalog: Catalog;
  /** Bytes held outside the index: drafts, uploads and pulls in progress. */
  #reserved = 0;
  /** Snapshots in use (a live restore session): never evicted, by name → holders. */
  readonly #inUse = new Map<string, number>();

  constructor(options: CacheBudgetOptions) {
    this.#catalog = options.catalog;
    this.capacity = options.capacity;
  }

  /** Bytes in use: cached snapshots and reservations. */
  get used(): number {
    return this.#catalog.index.totalBytes + this.#reserved;
  }

  /** Bytes reserved outside the index. */
  get reserved(): number {
    return this.#reserved;
  }

  /** True when `bytes` more fit without evicting. */
  fits(bytes: number): boolean {
    return this.used + bytes <= this.capacity;
  }

  /**
   * Reserves `bytes`, evicting least recently used unpinned snapshots (never
   * those in `keep`) when needed.
   *
   * @throws {SnapmeshError} `insufficient_storage` when not enough can be evicted
   */
  async reserve(bytes: number, keep: ReadonlySet<string> = new Set()): Promise<void> {
    if (this.fits(bytes)) {
      this.#reserved += bytes;
      return;
    }
    await this.#catalog.lock.run(async () => {
      await this.#evictLocked(bytes, keep);
      this.#reserved += bytes;
    });
  }

  /** Counts bytes as reserved without evicting (what recovery finds on disk). */
  hold(bytes: number): void {
    this.#reserved += bytes;
  }

  /**
   * Marks snapshot `name` in use (a live restore reads it): it is never
   * evicted until the returned function is called (once per call of this).
   */
  use(name: string): () => void {
    this.#inUse.set(name, (this.#inUse.get(name) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#inUse.get(name) ?? 1) - 1;
      if (left > 0) this.#inUse.set(name, left);
      else this.#inUse.delete(name);
    };
  }

  /** True while some holder uses `name`. */
  inUse(name: string): boolean {
    return this.#inUse.has(name);
  }

  /** Gives reserved bytes back. */
  release(bytes: number): void {
    this.#reserved = Math.max(0, this.#reserved - bytes);
  }

  /**
   * Evicts until the cache fits its budget again (after a commit, a pull or
   * a restart), never the snapshots in `keep`.
   */
  async enforce(keep: ReadonlySet<string> = new Set()): Promise<void> {
    if (this.fits(0)) return;
    await this.#catalog.lock.run(() => this.#evictLocked(0, keep));
  }

  async #evictLocked(bytes: number, keep: ReadonlySet<string>): Promise<void> {
    const index = this.#catalog.index;
    if (this.#inUse.size > 0) keep = new Set([...keep, ...this.#inUse.keys()]);
    while (!this.fits(bytes)) {
      const victims = index.planEviction(this.used + bytes - this.capacity, keep);
      if (victims === null) throw this.insufficient(bytes);
      for (const victim of victims) await this.#catalog.removeLocked(victim, "evict");
    }
  }

  /** The error of a reservation that cannot be met. */
  insufficient(bytes: number): SnapmeshError {
    const pinned = this.#catalog.entries().filter((e) => e.pinned).reduce((n, e) => n + e.bytes, 0);
    return new SnapmeshError(
      "insufficient_storage",
      `Cannot make room for ${formatSize(bytes)} in the cache ` +
        `(${formatSize(this.used)} of ${formatSize(this.capacity)} used, ` +
        `${formatSize(pinned)} pinned, ${formatSize(this.#reserved)} in drafts and transfers): ` +
        `everything left is pinned or in use`,
      { capacityBytes: this.capacity, usedBytes: this.used },
    );
  }
}
