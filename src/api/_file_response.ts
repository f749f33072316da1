/**
 * Status and headers of a file response: Range, If-Range, If-None-Match.
 * Private to `src/api/`.
 *
 * @module
 */

import type { Context } from "hono";
import { parseRange } from "../store/mod.ts";

/** Status and headers of a file response, honouring Range, If-Range and If-None-Match. */
export function fileHeaders(
  c: Context,
  info: { size: number; sha256: string; source: string },
): {
  status: 200 | 206 | 304;
  headers: Record<string, string>;
  range: { start: number; end: number };
} {
  const etag = `"${info.sha256}"`;
  const headers: Record<string, string> = {
    "Accept-Ranges": "bytes",
    "Content-Type": "application/octet-stream",
    "ETag": etag,
    "X-Snapmesh-Source": info.source,
  };
  if (matchesEtag(c.req.header("if-none-match"), etag)) {
    return { status: 304, headers, range: { start: 0, end: -1 } };
  }
  const ifRange = c.req.header("if-range");
  const rangeHeader = ifRange === undefined || ifRange === etag ? c.req.header("range") : null;
  const range = parseRange(rangeHeader, info.size);
  const start = range?.start ?? 0;
  const end = range?.end ?? info.size - 1;
  headers["Content-Length"] = String(end - start + 1);
  if (range) headers["Content-Range"] = `bytes ${start}-${end}/${info.size}`;
  return { status: range ? 206 : 200, headers, range: { start, end } };
}

function matchesEtag(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(",").some((tag) => {
    const t = tag.trim().replace(/^W\//, "");
    return t === "*" || t === etag;
  });
}
