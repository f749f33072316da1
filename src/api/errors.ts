/**
 * The one place where domain errors become HTTP responses.
 *
 * @module
 */

import type { ContentfulStatusCode } from "hono/utils/http-status";
import { type ErrorCode, SnapmeshError } from "../errors.ts";
import { isNoSpace } from "../fs/mod.ts";
import { BodyAbortedError } from "../http/mod.ts";

const STATUS: Record<ErrorCode, ContentfulStatusCode> = {
  invalid_name: 400,
  invalid_range: 400,
  invalid_body: 400,
  unauthorized: 401,
  forbidden: 403,
  path_not_allowed: 403,
  not_found: 404,
  method_not_allowed: 405,
  snapshot_not_found: 404,
  file_not_found: 404,
  draft_not_found: 404,
  snapshot_exists: 409,
  snapshot_pinned: 409,
  upload_in_progress: 409,
  chunk_unavailable: 409,
  too_large: 413,
  range_not_satisfiable: 416,
  not_ready: 503,
  shutting_down: 503,
  busy: 503,
  insufficient_storage: 507,
  upstream_failed: 502,
  verification_failed: 502,
  untrusted_snapshot: 502,
  journal_failed: 500,
  internal: 500,
};

/** Status code of a domain error code. */
export function statusOf(code: ErrorCode): ContentfulStatusCode {
  return STATUS[code];
}

/** An HTTP error that renders itself as the JSON error body of the contract. */
export class HttpError extends Error {
  readonly status: ContentfulStatusCode;
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  readonly headers: Record<string, string>;

  constructor(
    code: ErrorCode,
    message: string,
    options: { details?: Record<string, unknown>; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = "HttpError";
    this.code = code;
    this.status = statusOf(code);
    this.details = options.details;
    this.headers = options.headers ?? {};
  }

  /** Converts any thrown value; unknown errors become a 500 `internal`. */
  static from(err: unknown): HttpError {
    if (err instanceof HttpError) return err;
    if (err instanceof SnapmeshError) {
      const headers: Record<string, string> = {};
      if (err.code === "range_not_satisfiable" && typeof err.details?.size === "number") {
        headers["Content-Range"] = `bytes */${err.details.size}`;
      }
      if (err.code === "unauthorized") headers["WWW-Authenticate"] = 'Bearer realm="snapmesh"';
      return new HttpError(err.code, err.message, { details: err.details, headers });
    }
    if (isNoSpace(err)) {
      // Whatever the operation: a full disk is the node's storage, not a bug.
      return new HttpError(
        "insufficient_storage",
        "The disk under the data directory is full; free space and retry",
      );
    }
    // The client hung up or went silent mid-body: its fault, not ours.
    if (err instanceof BodyAbortedError) return new HttpError("invalid_body", err.message);
    return new HttpError("internal", "Internal error; see the agent log");
  }

  /** The JSON body: `{"error": {"code", "message", ...details}}`. */
  body(): { error: Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, ...this.details } };
  }

  toResponse(extraHeaders: Record<string, string> = {}): Response {
    return new Response(JSON.stringify(this.body()), {
      status: this.status,
      headers: { "Content-Type": "application/json", ...this.headers, ...extraHeaders },
    });
  }
}
