/**
 * The read-ahead buffer of one connection: request heads are parsed in
 * place, and the start of a body (or a pipelined request) waits here until
 * it is read. It grows for large heads and shrinks back once empty. Private
 * to `src/http/`.
 *
 * @module
 */

import { MAX_HEADER_BYTES, MAX_REQUEST_LINE } from "./_head.ts";
import { lineTooLong } from "./body.ts";

/** Read-ahead buffer size; it grows for large heads and shrinks back after. */
export const BUFFER_BYTES = 8 * 1024;
const MAX_BUFFER_BYTES = MAX_REQUEST_LINE + MAX_HEADER_BYTES + 4096;

const decoder = new TextDecoder();

/**
 * Bytes read from a connection and not consumed yet: `bytes[start..end)`.
 * The fields are public so the head parser can scan them in place.
 */
export class ReadBuffer {
  bytes: Uint8Array = new Uint8Array(BUFFER_BYTES);
  start = 0;
  end = 0;

  /** Bytes waiting. */
  get buffered(): number {
    return this.end - this.start;
  }

  /** Moves up to `view.length` waiting bytes into `view`; the count. */
  take(view: Uint8Array): number {
    const n = Math.min(this.end - this.start, view.length);
    view.set(this.bytes.subarray(this.start, this.start + n));
    this.start += n;
    this.shrink();
    return n;
  }

  /**
   * Takes one line (LF or CRLF ended, without it) of at most `max` bytes,
   * or null when no whole line is waiting.
   *
   * @throws {BodyAbortedError} when the line is longer than `max`
   */
  takeLine(max: number): string | null {
    const lf = this.bytes.subarray(this.start, this.end).indexOf(10);
    if (lf === -1) {
      if (this.end - this.start > max + 1) throw lineTooLong();
      return null;
    }
    const endOfLine = this.start + lf;
    const hasCr = lf > 0 && this.bytes[endOfLine - 1] === 13;
    if (lf - (hasCr ? 1 : 0) > max) throw lineTooLong();
    const line = decoder.decode(this.bytes.subarray(this.start, hasCr ? endOfLine - 1 : endOfLine));
    this.start = endOfLine + 1;
    this.shrink();
    return line;
  }

  /** Room after the waiting bytes for a body read: compacts, or grows when full. */
  room(): Uint8Array {
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
    } else if (this.end === this.bytes.length) {
      this.bytes.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
      if (this.end === this.bytes.length) this.grow(this.end + 1);
    }
    return this.bytes.subarray(this.end);
  }

  /**
   * Frees space at the end for more of a head: compacts (moving the head
   * parser's `scan` positions along), or grows within the head limit.
   */
  makeRoom(scan: { scanned: number; lineEnd: number }): void {
    if (this.end < this.bytes.length) return;
    if (this.start > 0) {
      const shift = this.start;
      this.bytes.copyWithin(0, shift, this.end);
      this.end -= shift;
      this.start = 0;
      scan.scanned = Math.max(0, scan.scanned - shift);
      if (scan.lineEnd !== -1) scan.lineEnd -= shift;
      if (this.end < this.bytes.length) return;
    }
    // findHeadEnd throws before a head outgrows MAX_BUFFER_BYTES.
    this.grow(this.end + 1);
  }

  /** Puts `bytes` back in front of the waiting ones. */
  unread(bytes: Uint8Array): void {
    const buffered = this.end - this.start;
    if (buffered === 0 && bytes.length <= this.bytes.length) {
      this.bytes.set(bytes);
      this.start = 0;
      this.end = bytes.length;
      return;
    }
    // Rare: a chunked body's read ran past the body (a pipelined request).
    const joined = new Uint8Array(Math.max(BUFFER_BYTES, bytes.length + buffered));
    joined.set(bytes);
    joined.set(this.bytes.subarray(this.start, this.end), bytes.length);
    this.bytes = joined;
    this.start = 0;
    this.end = bytes.length + buffered;
  }

  /** A buffer to read and drop bytes into (the read-ahead buffer itself when large enough). */
  scratch(): Uint8Array {
    return this.bytes.length >= BUFFER_BYTES ? this.bytes : new Uint8Array(BUFFER_BYTES);
  }

  /** A larger buffer holding at least `bytes` (the waiting bytes kept). */
  grow(bytes: number): void {
    const size = Math.max(bytes, Math.min(this.bytes.length * 2, MAX_BUFFER_BYTES));
    const bigger = new Uint8Array(size);
    bigger.set(this.bytes.subarray(this.start, this.end));
    this.end -= this.start;
    this.start = 0;
    this.bytes = bigger;
  }

  /** Gives back a buffer grown for a large head once it is empty. */
  shrink(): void {
    if (this.start !== this.end) return;
    this.start = 0;
    this.end = 0;
    if (this.bytes.length > BUFFER_BYTES) this.bytes = new Uint8Array(BUFFER_BYTES);
  }
}
