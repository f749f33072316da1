/**
 * Parsing what a request carries besides its path: a JSON body (capped in
 * size and nesting), Content-Length, the `digest` query parameter.
 *
 * @module
 */

import type { Context } from "hono";
import { SnapmeshError } from "../errors.ts";
import { readBounded } from "../util/bounded_body.ts";

/** Largest JSON body accepted. */
const MAX_JSON_BODY = 1024 * 1024;
/** Deepest nesting of arrays and objects accepted in a JSON body. */
const MAX_JSON_DEPTH = 64;

/** The `digest` query parameter: 64 lowercase hex digits, or `invalid_body`. */
export function digestParam(c: Context): string {
  const digest = c.req.query("digest") ?? "";
  if (!/^[0-9a-f]{64}$/.test(digest)) {
    throw new SnapmeshError(
      "invalid_body",
      "Query parameter digest must be 64 lowercase hex digits",
    );
  }
  return digest;
}

/** The declared Content-Length, null when there is none, `invalid_body` when malformed. */
export function contentLength(c: Context): number | null {
  const header = c.req.header("content-length");
  if (header === undefined) return null;
  if (!/^\d{1,16}$/.test(header)) {
    throw new SnapmeshError("invalid_body", `Invalid Content-Length ${JSON.stringify(header)}`);
  }
  return Number(header);
}

/** The JSON object a request carries (`{}` for an empty body), or `invalid_body`. */
export async function jsonBody(c: Context): Promise<Record<string, unknown>> {
  const length = contentLength(c);
  if (length !== null && length > MAX_JSON_BODY) throw tooBigBody();
  const bytes = c.req.raw.body
    ? await readBounded(c.req.raw.body, { maxBytes: MAX_JSON_BODY, tooLarge: tooBigBody })
    : new Uint8Array(0);
  // Before JSON.parse: a megabyte of "[[[[…" parses into half a million
  // nested arrays, hundreds of MB that outlive the request.
  assertJsonDepth(bytes, MAX_JSON_DEPTH);
  const text = new TextDecoder().decode(bytes);
  if (text.trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SnapmeshError("invalid_body", `Body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SnapmeshError("invalid_body", "Body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/**
 * Throws `invalid_body` when arrays and objects in `bytes` nest deeper than
 * `max`. One pass; brackets inside strings (escaped quotes included) do not
 * count. Malformed JSON is left for JSON.parse to report.
 */
export function assertJsonDepth(bytes: Uint8Array, max: number): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === 0x5c) i++; // backslash: the next byte is escaped
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) {
      inString = true;
    } else if (b === 0x5b || b === 0x7b) {
      if (++depth > max) {
        throw new SnapmeshError("invalid_body", `JSON body nests deeper than ${max} levels`);
      }
    } else if (b === 0x5d || b === 0x7d) {
      depth--;
    }
  }
}

function tooBigBody(): SnapmeshError {
  return new SnapmeshError("invalid_body", `JSON body is larger than ${MAX_JSON_BODY} bytes`);
}
