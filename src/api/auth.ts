/**
 * Bearer-token check for `/v1/*`, in constant time.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { createHash, timingSafeEqual } from "node:crypto";
import { SnapmeshError } from "../errors.ts";

/** Options for {@linkcode bearerToken}. */
export interface BearerTokenOptions {
  /** The expected token; null disables the check. */
  token: string | null;
}

function digest(value: string): Uint8Array {
  return createHash("sha256").update(value).digest();
}

/**
 * Requires `Authorization: Bearer <token>`. Both sides are hashed first so the
 * comparison takes the same time whatever the length or content of the guess.
 */
export function bearerToken(options: BearerTokenOptions): MiddlewareHandler {
  const expected = options.token === null ? null : digest(options.token);
  return async function requireBearerToken(c, next) {
    if (expected !== null) {
      const header = c.req.header("authorization") ?? "";
      const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
      const given = digest(match ? match[1]! : `\0invalid\0${crypto.randomUUID()}`);
      if (!timingSafeEqual(given, expected) || !match) {
        throw new SnapmeshError(
          "unauthorized",
          header === "" ? "Missing bearer token" : "Invalid bearer token",
        );
      }
    }
    await next();
  };
}
