/**
 * HTTP Range parsing (RFC 9110 §14). Only a single byte range is served;
 * anything else the contract asks to refuse with `invalid_range`.
 *
 * @module
 */

import { SnapmeshError } from "../errors.ts";

/** An inclusive byte range within a representation. */
export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

const SPEC = /^(\d*)-(\d*)$/;

/**
 * Parses a `Range` header against a representation of `size` bytes.
 *
 * @returns null when there is no header (serve the whole representation)
 * @throws {SnapmeshError} `invalid_range` for a malformed or multi-range
 * header, `range_not_satisfiable` when no byte of the range exists
 */
export function parseRange(header: string | null | undefined, size: number): ByteRange | null {
  if (header === null || header === undefined) return null;
  const value = header.trim();
  const eq = value.indexOf("=");
  if (eq < 0 || value.slice(0, eq).trim().toLowerCase() !== "bytes") {
    throw invalid(header, 'only "bytes=" ranges are supported');
  }
  const specs = value.slice(eq + 1).split(",");
  if (specs.length !== 1) throw invalid(header, "multiple ranges are not supported");
  const match = SPEC.exec(specs[0]!.trim());
  if (!match) throw invalid(header, "expected bytes=START-END, bytes=START- or bytes=-SUFFIX");
  const [, first, last] = match as unknown as [string, string, string];
  if (first === "" && last === "") throw invalid(header, "the range is empty");
  // Any number of digits is well-formed (RFC 9110): huge values clamp below.

  if (first === "") {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) throw unsatisfiable(header, size);
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === "" ? size - 1 : Number(last);
  if (last !== "" && end < start) throw invalid(header, "the end comes before the start");
  if (start >= size) throw unsatisfiable(header, size);
  return { start, end: Math.min(end, size - 1) };
}

function invalid(header: string, why: string): SnapmeshError {
  return new SnapmeshError(
    "invalid_range",
    `Invalid Range header ${JSON.stringify(header)}: ${why}`,
  );
}

function unsatisfiable(header: string, size: number): SnapmeshError {
  return new SnapmeshError(
    "range_not_satisfiable",
    `Range ${JSON.stringify(header)} is outside the file (${size} bytes)`,
    { size },
  );
}
