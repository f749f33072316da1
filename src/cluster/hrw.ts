/**
 * Rendezvous (highest random weight) hashing: every node ranks the members
 * for a key the same way, and removing a member moves only the keys it
 * owned.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** Weight of `member` for `key`: the first 8 bytes of sha256(member NUL key). */
export function weight(member: string, key: string): bigint {
  return createHash("sha256").update(member).update("\0").update(key).digest().readBigUInt64BE(0);
}

/** `members` ordered by descending weight for `key` (ties by id, so the order is total). */
export function rank<T>(members: readonly T[], key: string, id: (member: T) => string): T[] {
  return members
    .map((member) => ({ member, w: weight(id(member), key), id: id(member) }))
    .sort((a, b) => (a.w === b.w ? (a.id < b.id ? -1 : 1) : a.w > b.w ? -1 : 1))
    .map((x) => x.member);
}
