/**
 * Snapshot and file names. A name is one path segment that can never climb
 * out of its directory: it starts with a letter or digit (so never `.`, `..`
 * or a dotfile) and holds only letters, digits, `.`, `_` and `-`.
 *
 * @module
 */

import { SnapmeshError } from "../errors.ts";

/** The pattern of DESIGN.md §2, shared by snapshot names and file names. */
export const NAME_PATTERN: RegExp = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Most files one snapshot may hold. */
export const MAX_FILES = 64;

/** True when `value` is a valid snapshot or file name. */
export function isValidName(value: string): boolean {
  return NAME_PATTERN.test(value);
}

/**
 * Throws `invalid_name` unless `value` is a valid name.
 *
 * @param kind what the name denotes, for the message ("snapshot", "file")
 */
export function assertName(kind: string, value: string): string {
  if (!isValidName(value)) {
    throw new SnapmeshError(
      "invalid_name",
      `Invalid ${kind} name ${
        JSON.stringify(truncate(value))
      }: it must match ${NAME_PATTERN.source}`,
    );
  }
  return value;
}

function truncate(value: string): string {
  return value.length > 80 ? `${value.slice(0, 77)}...` : value;
}
