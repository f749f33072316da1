/**
 * Journal record and file framing.
 *
 * Journal file:  magic "SMWAL001" (8) | base sequence u64 | crc32c u32 of the previous 16 bytes
 * Record:        crc32c u32 | length u32 | sequence u64 | type u8 | payload (length bytes)
 *
 * The CRC32C covers length, sequence, type and payload, so a valid record in
 * the wrong place (a stale or duplicated one) is told apart by its sequence
 * number, and a torn one by its checksum. Integers are little-endian.
 *
 * @module
 */

import { crc32cUpdate } from "./crc32c.ts";

/** Magic bytes that open a journal file. */
export const JOURNAL_MAGIC = "SMWAL001";
/** Bytes of the journal file header. */
export const JOURNAL_HEADER_BYTES = 20;
/** Bytes of a record header (before the payload). */
export const RECORD_HEADER_BYTES = 17;
/** Largest payload accepted; bounds every allocation made from a length field. */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;

/** A decoded record. */
export interface JournalRecord {
  seq: number;
  type: number;
  payload: Uint8Array;
  /**
   * True when the record was fsynced before anyone was told it exists. Stored
   * in the high bit of the type byte: after a power cut, unsynced records may
   * reach the disk out of order, so damage followed only by unsynced records
   * is still a torn tail.
   */
  durable?: boolean;
}

/** High bit of the type byte: the record was appended with an fsync. */
export const DURABLE_FLAG = 0x80;

const encoder = new TextEncoder();

/** CRC32C (Castagnoli) of some byte ranges, in order. */
export function crc32c(...parts: Uint8Array[]): number {
  let crc = 0;
  for (const part of parts) crc = crc32cUpdate(crc, part);
  return crc;
}

/** Encodes one record (`durable`: it will be fsynced before it is acknowledged). */
export function encodeRecord(
  seq: number,
  type: number,
  payload: Uint8Array,
  durable = false,
): Uint8Array {
  if (payload.length > MAX_PAYLOAD_BYTES) {
    throw new RangeError(
      `Journal record of ${payload.length} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte limit`,
    );
  }
  if (!Number.isInteger(type) || type < 1 || type > 127) {
    throw new RangeError(`Journal record type ${type} is not in 1..127`);
  }
  const bytes = new Uint8Array(RECORD_HEADER_BYTES + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(4, payload.length, true);
  view.setBigUint64(8, BigInt(seq), true);
  view.setUint8(16, durable ? type | DURABLE_FLAG : type);
  bytes.set(payload, RECORD_HEADER_BYTES);
  view.setUint32(0, crc32c(bytes.subarray(4)), true);
  return bytes;
}

/** Why a record could not be decoded at some offset. */
export type DecodeFailure = "short_header" | "bad_length" | "short_payload" | "bad_checksum";

/** Result of {@linkcode decodeRecordAt}. */
export type DecodeResult =
  | { ok: true; record: JournalRecord; end: number }
  | { ok: false; reason: DecodeFailure };

/**
 * Decodes the record starting at `offset`. The length field is bounded
 * before anything is read or allocated from it.
 */
export function decodeRecordAt(bytes: Uint8Array, offset: number): DecodeResult {
  if (bytes.length - offset < RECORD_HEADER_BYTES) return { ok: false, reason: "short_header" };
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, RECORD_HEADER_BYTES);
  const length = view.getUint32(4, true);
  if (length > MAX_PAYLOAD_BYTES) return { ok: false, reason: "bad_length" };
  const end = offset + RECORD_HEADER_BYTES + length;
  if (end > bytes.length) return { ok: false, reason: "short_payload" };
  if (crc32c(bytes.subarray(offset + 4, end)) !== view.getUint32(0, true)) {
    return { ok: false, reason: "bad_checksum" };
  }
  const seq = view.getBigUint64(8, true);
  if (seq > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, reason: "bad_checksum" };
  const typeByte = view.getUint8(16);
  return {
    ok: true,
    record: {
      seq: Number(seq),
      type: typeByte & ~DURABLE_FLAG,
      payload: bytes.slice(offset + RECORD_HEADER_BYTES, end),
      durable: (typeByte & DURABLE_FLAG) !== 0,
    },
    end,
  };
}

/** Encodes a journal file header for a file whose first record has `baseSeq`. */
export function encodeJournalHeader(baseSeq: number): Uint8Array {
  const bytes = new Uint8Array(JOURNAL_HEADER_BYTES);
  bytes.set(encoder.encode(JOURNAL_MAGIC), 0);
  new DataView(bytes.buffer).setBigUint64(8, BigInt(baseSeq), true);
  new DataView(bytes.buffer).setUint32(16, crc32c(bytes.subarray(0, 16)), true);
  return bytes;
}

/** Decodes a journal file header; null when it is missing or damaged. */
export function decodeJournalHeader(bytes: Uint8Array): { baseSeq: number } | null {
  if (bytes.length < JOURNAL_HEADER_BYTES) return null;
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== JOURNAL_MAGIC) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, JOURNAL_HEADER_BYTES);
  if (view.getUint32(16, true) !== crc32c(bytes.subarray(0, 16))) return null;
  return { baseSeq: Number(view.getBigUint64(8, true)) };
}

/** Magic bytes that open a checkpoint file. */
export const CHECKPOINT_MAGIC = "SMCKPT01";
const CHECKPOINT_HEADER_BYTES = 24;
/** Largest checkpoint payload accepted (256 MiB). */
export const MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024;

/**
 * Encodes a checkpoint: magic (8) | seq u64 | length u32 | crc32c u32 | payload.
 * The CRC covers seq, length and payload.
 */
export function encodeCheckpoint(seq: number, payload: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(CHECKPOINT_HEADER_BYTES + payload.length);
  const view = new DataView(bytes.buffer);
  bytes.set(encoder.encode(CHECKPOINT_MAGIC), 0);
  view.setBigUint64(8, BigInt(seq), true);
  view.setUint32(16, payload.length, true);
  bytes.set(payload, CHECKPOINT_HEADER_BYTES);
  view.setUint32(20, crc32c(bytes.subarray(8, 20), payload), true);
  return bytes;
}

/** Decodes a checkpoint; a string says what is wrong with it. */
export function decodeCheckpoint(
  bytes: Uint8Array,
): { seq: number; payload: Uint8Array } | string {
  if (bytes.length < CHECKPOINT_HEADER_BYTES) return "file is shorter than its header";
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== CHECKPOINT_MAGIC) {
    return "bad magic bytes";
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, CHECKPOINT_HEADER_BYTES);
  const length = view.getUint32(16, true);
  if (length > MAX_CHECKPOINT_BYTES || CHECKPOINT_HEADER_BYTES + length !== bytes.length) {
    return `length field ${length} does not match the file size ${bytes.length}`;
  }
  const payload = bytes.subarray(CHECKPOINT_HEADER_BYTES);
  if (crc32c(bytes.subarray(8, 20), payload) !== view.getUint32(20, true)) {
    return "checksum mismatch";
  }
  return { seq: Number(view.getBigUint64(8, true)), payload };
}
