/**
 * Open read handles of hot files, kept between requests: a random 4 KiB
 * range read otherwise spends more time opening and closing its file than
 * reading it.
 *
 * Bounded: past `max` handles the least recently used is closed. A handle
 * is leased while a reader uses it and closed only once every lease is
 * back, so a reader that started before an eviction finishes on the file
 * it opened (an unlinked file stays readable while a descriptor is open),
 * and a removed snapshot's space is freed as soon as its last reader ends.
 *
 * @module
 */

import type { FileHandle } from "../fs/mod.ts";

/** A handle on loan from a {@linkcode HandleCache}; give it back with `release()`. */
export interface HandleLease {
  readonly handle: FileHandle;
  /** Ends the loan (once; later calls do nothing). */
  release(): void;
}

/** Options for {@linkcode HandleCache}. */
export interface HandleCacheOptions {
  /** Handles kept open at most (leased ones may briefly exceed it). @default 256 */
  max?: number;
}

class Slot {
  handle: FileHandle | null = null;
  opening: Promise<FileHandle> | null = null;
  refs = 0;
  /** Out of the cache: closes when the last lease is back. */
  retired = false;

  constructor(readonly key: string, readonly group: string) {}
}

class Lease implements HandleLease {
  #slot: Slot | null;
  readonly handle: FileHandle;

  constructor(slot: Slot, handle: FileHandle) {
    this.#slot = slot;
    this.handle = handle;
  }

  release(): void {
    const slot = this.#slot;
    if (slot === null) return;
    this.#slot = null;
    slot.refs--;
    if (slot.retired && slot.refs === 0) closeSlot(slot);
  }
}

function closeSlot(slot: Slot): void {
  const handle = slot.handle;
  slot.handle = null;
  handle?.close();
}

/** Open read handles by key, least recently used closed first. */
export class HandleCache {
  readonly #max: number;
  /** Insertion order is use order: the first entry is the least recently used. */
  readonly #slots = new Map<string, Slot>();
  #opened = 0;
  #closed = false;

  constructor(options: HandleCacheOptions = {}) {
    this.#max = Math.max(1, options.max ?? 256);
  }

  /** Handles in the cache (not counting retired ones still on loan). */
  get size(): number {
    return this.#slots.size;
  }

  /** Files opened so far (a measure of how well the cache works). */
  get opened(): number {
    return this.#opened;
  }

  /** Leases the handle of `key` if it is open in the cache, without waiting; else null. */
  lease(key: string): HandleLease | null {
    const slot = this.#slots.get(key);
    if (slot === undefined || slot.handle === null) return null;
    this.#slots.delete(key);
    this.#slots.set(key, slot);
    slot.refs++;
    return new Lease(slot, slot.handle);
  }

  /**
   * Leases the handle of `key`, opening it with `open` when it is not
   * cached. `group` names what a later {@linkcode HandleCache.forget}
   * closes (a snapshot digest). Rejects with `open`'s error.
   */
  async acquire(key: string, group: string, open: () => Promise<FileHandle>): Promise<HandleLease> {
    let slot = this.#slots.get(key);
    if (slot !== undefined) {
      // Most recently used goes last.
      this.#slots.delete(key);
      this.#slots.set(key, slot);
    } else {
      slot = new Slot(key, group);
      if (!this.#closed) {
        this.#slots.set(key, slot);
        this.#trim();
      } else {
        slot.retired = true;
      }
    }
    slot.refs++;
    if (slot.handle !== null) return new Lease(slot, slot.handle);
    try {
      if (slot.opening === null) {
        this.#opened++;
        slot.opening = open();
      }
      const handle = await slot.opening;
      slot.handle ??= handle;
      return new Lease(slot, handle);
    } catch (err) {
      slot.opening = null;
      slot.refs--;
      if (this.#slots.get(key) === slot) this.#slots.delete(key);
      throw err;
    } finally {
      // Retired while opening with nobody left to use it: close now.
      if (slot.retired && slot.refs === 0) closeSlot(slot);
    }
  }

  /** Closes the handles of `group` (each once its leases are back); later acquires reopen. */
  forget(group: string): void {
    for (const slot of this.#slots.values()) {
      if (slot.group === group) this.#retire(slot);
    }
  }

  /** Closes every handle (each once its leases are back); later leases are not cached. */
  close(): void {
    this.#closed = true;
    for (const slot of this.#slots.values()) this.#retire(slot);
  }

  #trim(): void {
    for (const slot of this.#slots.values()) {
      if (this.#slots.size <= this.#max) return;
      this.#retire(slot);
    }
  }

  #retire(slot: Slot): void {
    this.#slots.delete(slot.key);
    slot.retired = true;
    if (slot.refs === 0) closeSlot(slot);
  }
}
