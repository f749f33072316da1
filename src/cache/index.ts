/**
 * The index of local snapshots: what is cached, pinned, queued for the
 * origin, and in which order it was used. It is the journal's state machine:
 * every change arrives as a journal record, so replaying the journal rebuilds
 * it exactly. Recency and size accounting come from `lru-cache`.
 *
 * @module
 */

import { LRUCache } from "lru-cache";
import type { JournalRecord, JournalStateMachine } from "../journal/mod.ts";
import type { Logger } from "../log/mod.ts";
import { decodeStateRecord, isKnownRecordType, type Source, type StateRecord } from "./records.ts";

/** One local snapshot. */
export interface CacheEntry {
  name: string;
  digest: string;
  /** Bytes on disk. */
  bytes: number;
  /** Sum of file sizes. */
  size: number;
  files: number;
  source: Source;
  addedAt: number;
  lastAccess: number;
  pinned: boolean;
}

interface CheckpointState {
  v: 1;
  /** Least recently used first. */
  entries: CacheEntry[];
  push: { name: string; digest: string }[];
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Local snapshots in LRU order, with pins and the origin push queue. */
export class SnapshotIndex implements JournalStateMachine {
  #lru = newLru();
  #push = new Map<string, string>();
  #live = false;
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /**
   * Marks replay as finished. From then on accesses are applied when they
   * happen (see {@linkcode SnapshotIndex.touch}) and touch records only
   * persist them.
   */
  goLive(): void {
    // Access times reach the journal in batches, after records written
    // meanwhile, so the replay order alone would misplace them: restore the
    // order from the times (stable for equal times).
    const entries = this.entries();
    this.#live = true;
    // A checkpoint is written in LRU order: usually nothing moves.
    if (entries.every((e, i) => i === 0 || entries[i - 1]!.lastAccess <= e.lastAccess)) return;
    entries.sort((a, b) => a.lastAccess - b.lastAccess);
    this.#lru = newLru();
    for (const entry of entries) this.#lru.set(entry.name, entry);
  }

  isKnownType(type: number): boolean {
    return isKnownRecordType(type);
  }

  apply(record: JournalRecord): void {
    this.applyRecord(decodeStateRecord(record));
  }

  /** Applies a decoded record. */
  applyRecord(record: StateRecord): void {
    switch (record.t) {
      case "add": {
        const previous = this.#lru.peek(record.name);
        this.#lru.set(record.name, {
          name: record.name,
          digest: record.digest,
          bytes: record.bytes,
          size: record.size,
          files: record.files,
          source: record.source,
          addedAt: record.at,
          lastAccess: record.at,
          pinned: previous?.digest === record.digest ? previous.pinned : false,
        });
        if (record.push) this.#push.set(record.name, record.digest);
        break;
      }
      case "remove":
        if (this.#lru.peek(record.name)?.digest === record.digest) this.#lru.delete(record.name);
        // A snapshot deleted before its upload finished is not uploaded.
        if (this.#push.get(record.name) === record.digest) this.#push.delete(record.name);
        break;
      case "pin":
      case "unpin": {
        const entry = this.#lru.peek(record.name);
        if (entry) entry.pinned = record.t === "pin";
        break;
      }
      case "touch":
        if (this.#live) break;
        record.names.forEach((name, i) => {
          const entry = this.#lru.peek(name);
          if (entry) entry.lastAccess = Math.max(entry.lastAccess, record.times[i] ?? 0);
        });
        break;
      case "push_queued":
        this.#push.set(record.name, record.digest);
        break;
      case "push_done":
        if (this.#push.get(record.name) === record.digest) this.#push.delete(record.name);
        break;
    }
  }

  snapshot(): Uint8Array {
    const state: CheckpointState = {
      v: 1,
      entries: this.entries(),
      push: [...this.#push].map(([name, digest]) => ({ name, digest })),
    };
    return encoder.encode(JSON.stringify(state));
  }

  restore(payload: Uint8Array | null): void {
    this.#lru = newLru();
    this.#push.clear();
    if (payload === null) return;
    const state = JSON.parse(decoder.decode(payload)) as CheckpointState;
    if (state.v !== 1 || !Array.isArray(state.entries) || !Array.isArray(state.push)) {
      throw new TypeError("checkpoint state has an unknown shape");
    }
    // The parsed objects are fresh: no copy needed.
    for (const entry of state.entries) this.#lru.set(entry.name, entry);
    for (const { name, digest } of state.push) this.#push.set(name, digest);
  }

  /** Marks a snapshot as just used (most recent). */
  touch(name: string, at: number): void {
    const entry = this.#lru.get(name);
    if (entry) entry.lastAccess = Math.max(entry.lastAccess, at);
  }

  get(name: string): CacheEntry | undefined {
    return this.#lru.peek(name);
  }

  has(name: string): boolean {
    return this.#lru.has(name);
  }

  /** Entries, least recently used first. */
  entries(): CacheEntry[] {
    const out: CacheEntry[] = [];
    for (const entry of this.#lru.rvalues()) if (entry) out.push(entry);
    return out;
  }

  get count(): number {
    return this.#lru.size;
  }

  /** Bytes on disk of all local snapshots. */
  get totalBytes(): number {
    return this.#lru.calculatedSize;
  }

  /** True when `name` waits for an upload to the origin. */
  isQueuedForPush(name: string): boolean {
    return this.#push.has(name);
  }

  /** Snapshots waiting to be pushed to the origin. */
  pushQueue(): { name: string; digest: string }[] {
    return [...this.#push].map(([name, digest]) => ({ name, digest }));
  }

  /**
   * Least recently used unpinned snapshots whose bytes add up to at least
   * `bytes`, skipping `keep`; null when even all of them are not enough.
   */
  planEviction(bytes: number, keep: ReadonlySet<string>): CacheEntry[] | null {
    const victims: CacheEntry[] = [];
    let freed = 0;
    for (const entry of this.entries()) {
      if (freed >= bytes) break;
      // Pinned snapshots, and those still waiting for their upload, are in use.
      if (entry.pinned || keep.has(entry.name) || this.#push.has(entry.name)) continue;
      victims.push(entry);
      freed += entry.bytes;
    }
    if (freed < bytes) {
      this.#log.debug("cache: cannot free enough", { wanted: bytes, evictable: freed });
      return null;
    }
    return victims;
  }
}

function newLru(): LRUCache<string, CacheEntry> {
  // No automatic eviction: eviction deletes files and is journaled, so the
  // agent decides it (planEviction) and applies it through the journal.
  return new LRUCache<string, CacheEntry>({
    maxSize: Number.MAX_SAFE_INTEGER,
    sizeCalculation: (entry) => Math.max(1, entry.bytes),
  });
}
