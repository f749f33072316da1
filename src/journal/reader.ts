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
