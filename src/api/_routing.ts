/**
 * Answers for requests no route took: `invalid_name` for a path trick,
 * 405 with `Allow` for a known path, else 404. Private to `src/api/`.
 *
 * @module
 */

import { assertName } from "../manifest/mod.ts";
import { HttpError } from "./errors.ts";

/** Path patterns (as regular expressions) and the methods registered on each. */
export type RouteMethods = { pattern: RegExp; methods: string[] }[];

/** The route table, derived from what the app registered (middleware aside). */
export function routeMethods(
  registered: readonly { method: string; path: string }[],
): RouteMethods {
  const byPath = new Map<string, string[]>();
  for (const { method, path } of registered) {
    if (method === "ALL") continue; // middleware
    const methods = byPath.get(path) ?? [];
    if (!methods.includes(method)) methods.push(method);
    byPath.set(path, methods);
  }
  return [...byPath].map(([path, methods]) => ({
    pattern: new RegExp(
      "^" +
        path.split("/").map((segment) =>
          segment.startsWith(":")
            ? "[^/]+"
            : segment === "*"
            ? ".*"
            : segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
        ).join("/") + "$",
    ),
    methods,
  }));
}

/**
 * A request no route took. Names in a /v1/snapshots path are checked first,
 * so a path trick gets invalid_name whatever the method; then a known path
 * answers 405 with `Allow`, an unknown one 404.
 */
export function unmatched(method: string, path: string, routes: RouteMethods): Response {
  try {
    if (path.startsWith("/v1/snapshots/")) {
      const segments = path.split("/").slice(3).map(decodeSegment);
      assertName("snapshot", segments[0] ?? "");
      if (segments[1] === "files" && segments[2] !== undefined) assertName("file", segments[2]);
    }
  } catch (err) {
    return HttpError.from(err).toResponse();
  }
  const allowed = routes.filter((r) => r.pattern.test(path)).flatMap((r) => r.methods);
  if (allowed.length > 0) {
    const allow = [...new Set(allowed)].join(", ");
    return new HttpError(
      "method_not_allowed",
      `${method} is not allowed on ${path}; use ${allow}`,
      {
        headers: { Allow: allow },
      },
    ).toResponse();
  }
  return new HttpError("not_found", `No route for ${method} ${path}`).toResponse();
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment; // malformed escapes fail the name check as they are
  }
}
