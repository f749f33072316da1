/**
 * Errors of the in-memory file system, as Deno reports them for the same
 * mistake. Private to `src/fs/`.
 *
 * @module
 */

// Errors as Deno reports them (class, code, message), so callers that test
// `instanceof Deno.errors.NotFound` or `err.code` behave the same on both.
const ERRORS = {
  EPERM: [1, "Operation not permitted", Deno.errors.PermissionDenied],
  ENOENT: [2, "No such file or directory", Deno.errors.NotFound],
  EBADF: [9, "Bad file descriptor", Error],
  EBUSY: [16, "Device or resource busy", Error],
  EEXIST: [17, "File exists", Deno.errors.AlreadyExists],
  ENOTDIR: [20, "Not a directory", Deno.errors.NotADirectory],
  EISDIR: [21, "Is a directory", Deno.errors.IsADirectory],
  EINVAL: [22, "Invalid argument", TypeError],
  ENOSPC: [28, "No space left on device", Error],
  ENOTEMPTY: [39, "Directory not empty", Error],
} as const;

/** An errno name that {@linkcode fsError} knows. */
export type ErrorCode = keyof typeof ERRORS;

/** The operation and path(s) an error is about, as Deno words them: `stat '/a'`. */
export type Context = string | undefined;

/** The error Deno gives for `code`, about `context`, with an optional detail. */
export function fsError(code: ErrorCode, context: Context, detail?: string): Error {
  const [errno, text, ErrorClass] = ERRORS[code];
  const where = context === undefined ? "" : `: ${context}`;
  const err = new ErrorClass(`${text} (os error ${errno})${where}${detail ? ` (${detail})` : ""}`);
  Object.assign(err, { code });
  return err;
}

/** `op 'path'`, or `op 'from' -> 'to'`: the context of an error. */
export function context(op: string, path: string, to?: string): string {
  return to === undefined ? `${op} '${path}'` : `${op} '${path}' -> '${to}'`;
}

/** EINVAL unless `offset` is a whole number of bytes >= 0. */
export function checkOffset(offset: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw fsError("EINVAL", undefined);
}
