/**
 * The journal records of the agent's state, and their codec.
 *
 * @module
 */

import type { JournalRecord } from "../journal/mod.ts";

/** Where a snapshot's bytes came from when it became local. */
export type Source = "local" | "peer" | "origin";

/** A snapshot became local (commit or completed pull). */
export interface AddRecord {
  t: "add";
  name: string;
  digest: string;
  /** Bytes on disk (non-zero chunks plus the manifest). */
  bytes: number;
  /** Sum of file sizes. */
  size: number;
  files: number;
  source: Source;
  at: number;
  /** Also queue the snapshot for upload to the origin (async push), in the same record. */
  push?: boolean;
}

/** A snapshot was evicted or deleted. */
export interface RemoveRecord {
  t: "remove";
  name: string;
  digest: string;
  reason: "delete" | "evict" | "missing" | "quarantine";
}

/** Pin state changed. */
export interface PinRecord {
  t: "pin" | "unpin";
  name: string;
}

/** Snapshots were read, with the time of each read (ms), most recent last. */
export interface TouchRecord {
  t: "touch";
  names: string[];
  times: number[];
}

/** An upload to the origin was queued (async push) or finished. */
export interface PushRecord {
  t: "push_queued" | "push_done";
  name: string;
  digest: string;
}

/** Every record the agent journals. */
export type StateRecord = AddRecord | RemoveRecord | PinRecord | TouchRecord | PushRecord;

const TYPES: Record<StateRecord["t"], number> = {
  add: 1,
  remove: 2,
  pin: 3,
  unpin: 4,
  touch: 5,
  push_queued: 6,
  push_done: 7,
};

const NAMES = new Map<number, StateRecord["t"]>(
  Object.entries(TYPES).map(([name, type]) => [type, name as StateRecord["t"]]),
);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** True for a record type byte this codec knows. */
export function isKnownRecordType(type: number): boolean {
  return NAMES.has(type);
}

/** Encodes a record as a journal type byte and payload. */
export function encodeStateRecord(record: StateRecord): { type: number; payload: Uint8Array } {
  const { t, ...rest } = record;
  return { type: TYPES[t], payload: encoder.encode(JSON.stringify(rest)) };
}

/**
 * Decodes a journal record. The checksum already vouches for the bytes; the
 * shape is still checked so a bug cannot poison the state silently.
 */
export function decodeStateRecord(record: JournalRecord): StateRecord {
  const t = NAMES.get(record.type);
  if (t === undefined) throw new TypeError(`Unknown journal record type ${record.type}`);
  const body = JSON.parse(decoder.decode(record.payload)) as Record<string, unknown>;
  const out = { t, ...body } as StateRecord;
  const name = (out as { name?: unknown }).name;
  if (out.t === "touch") {
    if (!Array.isArray(out.names) || !Array.isArray(out.times)) {
      throw new TypeError("touch record without names and times");
    }
  } else if (typeof name !== "string") {
    throw new TypeError(`${t} record without a name`);
  }
  return out;
}
