/**
 * The hot path of client reads: a small single-range GET of a file of a
 * cached snapshot (what a restoring VM's page faults turn into) answered
 * from the request's head, without `Request`, Hono or `Response` objects.
 * It answers exactly what `GET /v1/snapshots/{name}/files/{file}` answers
 * (status, headers, request id, metrics, log line). Anything else — another
 * route, a query, no range or several, conditional requests, a snapshot not
 * cached here, a bad token, any error — is left to the app, which answers it
 * the usual way.
 *
 * @module
 */

import type { Agent } from "../agent/mod.ts";
import type { FastHandler, FastRequest, RawResponse } from "../http/mod.ts";
import { parseRange } from "../store/mod.ts";
import type { AppDeps } from "./_env.ts";
import { clientTokens } from "./auth.ts";

const FILE_ROUTE = /^\/v1\/snapshots\/([A-Za-z0-9._-]+)\/files\/([A-Za-z0-9._-]+)$/;
/** The route's name in metrics, as the app reports it. */
const ROUTE = "/v1/snapshots/:name/files/:file";
/** Ranges up to this size are read into one buffer (as the route does). */
const MAX_FAST_BYTES = 64 * 1024;
const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** The fields the fast path reads; any other conditional field sends the request the usual way. */
interface Fields {
  range?: string;
  authorization?: string;
  requestId?: string;
  conditional: boolean;
}

function fieldsOf(request: FastRequest): Fields {
  const fields: Fields = { conditional: false };
  for (const [name, value] of request.headers) {
    if (name === "range") fields.range = value;
    else if (name === "authorization") fields.authorization = value;
    else if (name === "x-request-id") fields.requestId = value;
    else if (name === "if-range" || name === "if-none-match") fields.conditional = true;
  }
  return fields;
}

/** A fast handler for the app built from `deps` (see the module documentation). */
export function fastReads(deps: AppDeps): FastHandler {
  const { metrics, log } = deps;
  const auth = deps.auth ?? { token: deps.token ?? null, readToken: null };
  const role = clientTokens(auth);
  let agent: Agent | null = null;
  deps.agent.then((a) => (agent = a), () => {});

  return async (request) => {
    const started = performance.now();
    const match = FILE_ROUTE.exec(request.target);
    if (!match || agent === null || !deps.isReady()) return null;
    const fields = fieldsOf(request);
    if (fields.range === undefined || fields.conditional) return null;
    // Both tokens may read; a missing or wrong one is answered by the app (401).
    if (auth.token !== null && role(fields.authorization) === null) return null;
    const [, name, file] = match as unknown as [string, string, string];
    const opened = await agent.openCachedFile(name, file).catch(() => null);
    if (opened === null) return null;
    let body: Uint8Array;
    let start: number;
    let end: number;
    try {
      const range = parseRange(fields.range, opened.size);
      if (range === null || range.end - range.start + 1 > MAX_FAST_BYTES) {
        opened.close();
        return null;
      }
      ({ start, end } = range);
      const bytes = await opened.body(start, end);
      if (!(bytes instanceof Uint8Array)) {
        await bytes.cancel();
        return null;
      }
      body = bytes;
    } catch {
      opened.close();
      return null; // the app answers the same request: its error, or a retry
    }
    const requestId = fields.requestId && REQUEST_ID.test(fields.requestId)
      ? fields.requestId
      : crypto.randomUUID();
    const raw: RawResponse = {
      status: 206,
      headers: `accept-ranges: bytes\r\ncontent-type: application/octet-stream\r\n` +
        `etag: "${opened.sha256}"\r\nx-snapmesh-source: ${opened.source}\r\n` +
        `content-range: bytes ${start}-${end}/${opened.size}\r\nx-request-id: ${requestId}\r\n`,
      body,
    };
    const seconds = (performance.now() - started) / 1000;
    metrics.httpRequests.inc({ method: "GET", route: ROUTE, status: "206" });
    metrics.httpDuration.observe({ method: "GET", route: ROUTE }, seconds);
    log.debug("http", {
      requestId,
      method: "GET",
      path: request.target,
      status: 206,
      ms: Math.round(seconds * 1000),
    });
    return raw;
  };
}
