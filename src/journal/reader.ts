/**
 * Reads a journal image and classifies damage, in the manner of LevelDB's log
 * reader and etcd's WAL repair: damage followed by no complete record is a
 * torn tail (the last append did not finish) and may be truncated; damage
 * followed by any valid record is corruption in the middle, which is never
 * dropped silently.
 *
 * @module
 */

import {
  decodeJournalHeader,
  decodeRecordAt,
  DURABLE_FLAG,
  type JournalRecord,
  MAX_PAYLOAD_BYTES,
  RECORD_HEADER_BYTES,
} from "./record.ts";

/** What is wrong at the first damaged offset. */
export interface JournalDamage {
  /** Byte offset of the first byte that is not part of a valid record. */
  offset: number;
  /** True when nothing valid follows: safe to truncate at `offset`. */
  tornTail: boolean;
  /** Human description of what was found. */
  detail: string;
}

/** Result of {@linkcode scanJournal}. */
export interface JournalScan {
  baseSeq: number;
  records: JournalRecord[];
  /** Offset just past the last valid record. */
  validEnd: number;
  damage: JournalDamage | null;
}

/** Known record types; a candidate with another type byte is not a record. */
export interface ScanOptions {
  isKnownType?: (type: number) => boolean;
}

/**
 * Scans a whole journal file image.
 *
 * @returns null when the file header itself is damaged
 */
export function scanJournal(bytes: Uint8Array, options: ScanOptions = {}): JournalScan | null {
  const header = decodeJournalHeader(bytes);
  if (header === null) return null;
  const isKnownType = options.isKnownType ?? (() => true);
  const records: JournalRecord[] = [];
  let offset = 20;
  let expected = header.baseSeq;
  while (offset < bytes.length) {
    const result = decodeRecordAt(bytes, offset);
    if (result.ok && result.record.seq === expected && isKnownType(result.record.type)) {
      records.push(result.record);
      offset = result.end;
      expected++;
      continue;
    }
    let detail: string;
    if (result.ok && result.record.seq !== expected) {
      // A record whose checksum holds but whose sequence number is wrong was
      // written whole: no torn append produces it. It is always corruption.
      detail = `record with sequence ${result.record.seq} where ${expected} was expected`;
      return {
        baseSeq: header.baseSeq,
        records,
        validEnd: offset,
        damage: { offset, tornTail: false, detail },
      };
    }
    detail = result.ok
      ? `record of unknown type ${result.record.type}`
      : `${result.reason.replace("_", " ")} at sequence ${expected}`;
    if (!result.ok && result.reason === "bad_checksum" && isAcknowledged(bytes, offset, expected)) {
      // Whole, in its place, flagged durable, with a bad checksum: this record
      // was fsynced before anyone was told it exists. A crash cannot tear what
      // was acknowledged, so this is damage to acknowledged state, whatever
      // follows it (a later unsynced record, or nothing at all).
      return {
        baseSeq: header.baseSeq,
        records,
        validEnd: offset,
        damage: {
          offset,
          tornTail: false,
          detail: `durable record ${expected} fails its checksum (it was acknowledged)`,
        },
      };
    }
    // Valid records after the damage make it corruption, unless none of them
    // was ever acknowledged: unsynced appends can reach the disk out of order.
    const later = findValidRecordsAfter(bytes, offset + 1, isKnownType);
    const durable = later.find((r) => r.durable);
    let note = "";
    if (durable) note = `, followed by a durable record at byte ${durable.offset}`;
    else if (later.length > 0) note = `, followed only by ${later.length} unsynced record(s)`;
    return {
      baseSeq: header.baseSeq,
      records,
      validEnd: offset,
      damage: { offset, tornTail: durable === undefined, detail: detail + note },
    };
  }
  return { baseSeq: header.baseSeq, records, validEnd: offset, damage: null };
}

/**
 * True when the bytes at `offset` frame a whole record with the expected
 * sequence number and the durable flag: only its checksum is wrong. A torn
 * append leaves the record short or its header unwritten (zeros); a record
 * that is complete and in place but fails its checksum was damaged after it
 * was written.
 */
function isAcknowledged(bytes: Uint8Array, offset: number, expected: number): boolean {
  if (bytes.length - offset < RECORD_HEADER_BYTES) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, RECORD_HEADER_BYTES);
  const length = view.getUint32(4, true);
  if (length > MAX_PAYLOAD_BYTES || offset + RECORD_HEADER_BYTES + length > bytes.length) {
    return false;
  }
  return view.getBigUint64(8, true) === BigInt(expected) &&
    (view.getUint8(16) & DURABLE_FLAG) !== 0;
}

/** What {@linkcode salvageJournal} could read of a damaged journal. */
export interface JournalSalvage {
  /** Every checksum-valid record, in file order. */
  records: JournalRecord[];
  /** Byte offsets where damage starts. */
  damagedAt: number[];
}

/**
 * Reads every valid record of a damaged journal image, skipping damage (for
 * a rebuild, which wants what can still be known: pins, access times).
 * Returns null when the header itself is damaged.
 */
export function salvageJournal(
  bytes: Uint8Array,
  options: ScanOptions = {},
): JournalSalvage | null {
  const header = decodeJournalHeader(bytes);
  if (header === null) return null;
  const isKnownType = options.isKnownType ?? (() => true);
  const records: JournalRecord[] = [];
  const damagedAt: number[] = [];
  let offset = 20;
  let lastSeq = header.baseSeq - 1;
  while (offset < bytes.length) {
    const result = decodeRecordAt(bytes, offset);
    if (result.ok && result.record.seq > lastSeq && isKnownType(result.record.type)) {
      records.push(result.record);
      lastSeq = result.record.seq;
      offset = result.end;
      continue;
    }
    damagedAt.push(offset);
    const next = nextValidRecord(bytes, offset + 1, isKnownType);
    if (next === null) break;
    offset = next;
  }
  return { records, damagedAt };
}

/** Offset of the first complete, checksum-valid record at or after `from`, or null. */
function nextValidRecord(
  bytes: Uint8Array,
  from: number,
  isKnownType: (type: number) => boolean,
): number | null {
  for (let offset = from; offset + RECORD_HEADER_BYTES <= bytes.length; offset++) {
    if (!isKnownType(bytes[offset + 16]! & ~DURABLE_FLAG)) continue;
    if (decodeRecordAt(bytes, offset).ok) return offset;
  }
  return null;
}

/** Complete, checksum-valid records at or after `from`, with their offsets. */
function findValidRecordsAfter(
  bytes: Uint8Array,
  from: number,
  isKnownType: (type: number) => boolean,
): { offset: number; durable: boolean }[] {
  const found: { offset: number; durable: boolean }[] = [];
  for (let offset = from; offset + RECORD_HEADER_BYTES <= bytes.length; offset++) {
    // Cheap filter before the checksum: the type byte must be a known type.
    if (!isKnownType(bytes[offset + 16]! & ~DURABLE_FLAG)) continue;
    const result = decodeRecordAt(bytes, offset);
    if (!result.ok) continue;
    found.push({ offset, durable: result.record.durable === true });
    if (result.record.durable) break;
    offset = result.end - 1;
  }
  return found;
}
