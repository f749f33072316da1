/**
 * Who may do what on `/v1` (README "Security"):
 *
 * - the full token (`--token`): every client route;
 * - the read token (`--read-token`): reads and pulls only (GET and HEAD,
 *   `POST /v1/snapshots/{name}/pull`); anything else is 403 `forbidden`;
 * - peers, on `/v1/peer/*` only: a request signed with the cluster key, or
 *   (with `--peer-mtls`) a client certificate from the cluster's CA. Client
 *   tokens never open these routes once peers have credentials of their
 *   own; without any (and without a read token) the full token still does,
 *   as before roles existed, and the node says so at start.
 *
 * Tokens are compared in constant time (both sides hashed first).
 *
 * @module
 */

import type { Context, MiddlewareHandler } from "hono";
import { createHash, timingSafeEqual } from "node:crypto";
import type { PeerAuthMode } from "../config/mod.ts";
import { SnapmeshError } from "../errors.ts";
import type { HttpRequestInfo } from "../http/mod.ts";
import {
  bodySha256,
  EMPTY_SHA256,
  RequestVerifier,
  type SignatureFailure,
} from "../security/mod.ts";

/** Who a request is. */
export type Role = "full" | "read" | "peer";

/** Options for {@linkcode authorize}. */
export interface AuthOptions {
  /** The full-access token; null: client routes are open. */
  token: string | null;
  /** The read-only token, or null. */
  readToken: string | null;
  /** How peers authenticate. */
  peer: PeerAuthMode;
  /** Checks signed peer requests (when peers sign). */
  verifier: RequestVerifier | null;
  /** Counts a refused peer request, by reason (for metrics). */
  onPeerRefused?: (reason: string) => void;
}

/** Largest body a signed request may carry (peer requests have small ones or none). */
const MAX_SIGNED_BODY = 1024 * 1024;
/** Routes a read token may POST to, besides GET and HEAD everywhere. */
const READ_POSTS = [/^\/v1\/snapshots\/[^/]+\/pull$/, /^\/v1\/snapshots\/[^/]+\/restore$/];
/** A read token may end the restore sessions it (or anyone) started. */
const READ_DELETES = [/^\/v1\/restores\/[^/]+$/];

function digest(value: string): Uint8Array {
  return createHash("sha256").update(value).digest();
}

/** The bearer token of a request, or null. */
function bearer(header: string | undefined): string | null {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? "");
  return match ? match[1]! : null;
}

/**
 * Which client token an Authorization header carries ("full", "read" or
 * null), compared in constant time against each.
 */
export function clientTokens(
  options: Pick<AuthOptions, "token" | "readToken">,
): (header: string | undefined) => "full" | "read" | null {
  const full = options.token === null ? null : digest(options.token);
  const read = options.readToken === null ? null : digest(options.readToken);
  return (header) => {
    const given = digest(bearer(header) ?? `\0invalid\0${crypto.randomUUID()}`);
    const isFull = full !== null && timingSafeEqual(given, full);
    const isRead = read !== null && timingSafeEqual(given, read);
    return isFull ? "full" : isRead ? "read" : null;
  };
}

/** Authorizes every `/v1` request; the role lands in `c.var.role`. */
export function authorize(
  options: AuthOptions,
): MiddlewareHandler<{ Bindings: Partial<HttpRequestInfo>; Variables: { role: Role } }> {
  const full = options.token;
  const tokenRole = clientTokens(options);

  return async function authorizeRequest(c, next) {
    const path = c.req.path;
    if (path === "/v1/peer" || path.startsWith("/v1/peer/")) {
      c.set("role", await peerRole(c, options, tokenRole));
      return await next();
    }
    if (full === null) {
      c.set("role", "full");
      return await next();
    }
    const header = c.req.header("authorization");
    const role = tokenRole(header);
    if (role === null) {
      throw new SnapmeshError(
        "unauthorized",
        header === undefined ? "Missing bearer token" : "Invalid bearer token",
      );
    }
    if (role === "read" && !readAllowed(c.req.method, path)) {
      throw new SnapmeshError(
        "forbidden",
        `The read-only token cannot ${c.req.method} ${path}: it reads and pulls only; ` +
          "use the full-access token",
      );
    }
    c.set("role", role);
    await next();
  };
}

/** True for what a read token may do. */
export function readAllowed(method: string, path: string): boolean {
  if (method === "GET" || method === "HEAD") return true;
  if (method === "DELETE") return READ_DELETES.some((pattern) => pattern.test(path));
  return method === "POST" && READ_POSTS.some((pattern) => pattern.test(path));
}

const SIGNATURE_MESSAGES: Record<SignatureFailure, string> = {
  missing: "The peer signature is incomplete",
  malformed: "The peer signature is malformed",
  expired: "The peer signature is too old or too far in the future (check the clocks)",
  body_mismatch: "The request body does not match its signed digest",
  bad_signature: "The peer signature does not verify (another cluster key, or an altered request)",
  replayed: "This signed request was seen already (a replay)",
  overloaded: "Too many signed requests to remember; retry in a moment",
};

async function peerRole(
  c: Context<{ Bindings: Partial<HttpRequestInfo>; Variables: { role: Role } }>,
  options: AuthOptions,
  tokenRole: (header: string | undefined) => "full" | "read" | null,
): Promise<"peer" | "full"> {
  const refuse = (code: "unauthorized" | "forbidden", reason: string, message: string) => {
    options.onPeerRefused?.(reason);
    return new SnapmeshError(code, message);
  };
  const mode = options.peer;
  const header = c.req.header("authorization");
  if (mode.kind === "closed") {
    throw refuse(
      "forbidden",
      "closed",
      "Node-to-node routes are closed on this node: client tokens do not open them, and no " +
        "cluster key or peer mTLS is configured",
    );
  }
  if (mode.kind === "legacy") {
    // No peer credentials and no client roles: the one token opens everything.
    if (options.token === null) return "full";
    const role = tokenRole(header);
    if (role === "full") return "full";
    if (role === "read") {
      throw refuse("forbidden", "client_token", "Client tokens do not open node-to-node routes");
    }
    throw refuse(
      "unauthorized",
      header === undefined ? "missing" : "bad_token",
      header === undefined ? "Missing bearer token" : "Invalid bearer token",
    );
  }
  if (mode.mtls && c.env?.clientCertificate) return "peer";
  const verifier = options.verifier;
  const signed = RequestVerifier.isSigned({ header: (name) => c.req.header(name) });
  if (mode.signed && verifier && signed) {
    const failure = verifier.verify({
      method: c.req.method,
      // The Host field as received (the URL's authority for a request without one).
      host: c.req.header("host") ?? new URL(c.req.url).host,
      target: requestTarget(c.req.url),
      header: (name) => c.req.header(name),
      bodySha256: await bodyDigest(c),
    });
    if (failure === null) return "peer";
    throw refuse(
      failure === "overloaded" ? "forbidden" : "unauthorized",
      failure,
      SIGNATURE_MESSAGES[failure],
    );
  }
  if (header !== undefined && tokenRole(header) !== null) {
    throw refuse(
      "forbidden",
      "client_token",
      "Client tokens do not open node-to-node routes: peers authenticate with " +
        (mode.signed && mode.mtls
          ? "a signature or a client certificate"
          : mode.signed
          ? "a cluster-key signature"
          : "a client certificate from the cluster CA"),
    );
  }
  throw refuse(
    "unauthorized",
    "missing",
    mode.mtls && !mode.signed
      ? "Node-to-node routes need a client certificate from the cluster CA"
      : "Node-to-node routes need a request signed with the cluster key",
  );
}

/** Path and query of a URL exactly as received (src/http keeps the request target as sent). */
export function requestTarget(url: string): string {
  const match = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/i.exec(url);
  const target = match ? match[1]! : url;
  return target === "" ? "/" : target;
}

async function bodyDigest(c: Context): Promise<string> {
  const method = c.req.method;
  if (method === "GET" || method === "HEAD" || c.req.raw.body === null) return EMPTY_SHA256;
  const length = Number(c.req.header("content-length") ?? NaN);
  if (length > MAX_SIGNED_BODY) {
    throw new SnapmeshError(
      "invalid_body",
      `A signed request body is at most ${MAX_SIGNED_BODY} bytes`,
    );
  }
  // Hono keeps the bytes: a handler can still read the body.
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (bytes.length > MAX_SIGNED_BODY) {
    throw new SnapmeshError(
      "invalid_body",
      `A signed request body is at most ${MAX_SIGNED_BODY} bytes`,
    );
  }
  return bodySha256(bytes);
}
