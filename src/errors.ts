/**
 * Domain errors shared by every room. Each carries a stable snake_case code;
 * the HTTP layer maps codes to status codes in one place (src/api/errors.ts).
 *
 * @module
 */

/** Stable error codes; they appear verbatim in JSON error bodies. */
export type ErrorCode =
  | "invalid_name"
  | "invalid_range"
  | "invalid_body"
  | "unauthorized"
  | "forbidden"
  | "path_not_allowed"
  | "not_found"
  | "method_not_allowed"
  | "snapshot_not_found"
  | "file_not_found"
  | "draft_not_found"
  | "snapshot_exists"
  | "snapshot_pinned"
  | "upload_in_progress"
  | "chunk_unavailable"
  | "too_large"
  | "range_not_satisfiable"
  | "not_ready"
  | "insufficient_storage"
  | "upstream_failed"
  | "journal_failed"
  | "verification_failed"
  | "untrusted_snapshot"
  | "shutting_down"
  | "busy"
  | "internal";

/** An error a client can act on: a stable code plus a human message. */
export class SnapmeshError extends Error {
  readonly code: ErrorCode;
  /** Extra fields merged into the JSON error body (for example `size` for 416). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = "SnapmeshError";
    this.code = code;
    this.details = details;
  }
}

/** True when `err` is a {@linkcode SnapmeshError} with the given code. */
export function hasCode(err: unknown, code: ErrorCode): err is SnapmeshError {
  return err instanceof SnapmeshError && err.code === code;
}

/** Best-effort message of an unknown thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
