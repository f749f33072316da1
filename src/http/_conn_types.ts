/**
 * What a connection runs on and reports to: the byte stream, the handler
 * and what it learns, the server's side. Private to `src/http/`
 * (`mod.ts` re-exports the public ones).
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import type { Connection } from "./_connection.ts";

/** A client certificate that the TLS layer verified against the cluster's CA. */
export interface ClientCertificate {
  subject: string;
  serialNumber: string;
  fingerprint256: string;
}

/**
 * The byte stream a connection runs on. `Deno.Conn` and `Deno.TlsConn` are
 * ones; src/security's mutual-TLS connection is another.
 */
export interface HttpConn {
  /** Reads into `buffer`; the count, or null at the end of the stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some of `bytes`; the count written. */
  write(bytes: Uint8Array): Promise<number>;
  /** Sends the end of the stream, keeping the read side open. */
  closeWrite(): Promise<void>;
  close(): void;
  readonly remoteAddr: Deno.Addr;
  /** The client certificate verified during the TLS handshake, if the stream knows one. */
  readonly clientCertificate?: ClientCertificate | null;
}

/** What the handler learns about the connection besides the request. */
export interface HttpRequestInfo {
  remoteAddr: Deno.Addr;
  /** The verified client certificate (mutual TLS), or null. */
  clientCertificate: ClientCertificate | null;
}

/** Turns a request into a response. */
export type HttpHandler = (
  request: Request,
  info: HttpRequestInfo,
) => Response | Promise<Response>;

/** What a fast handler sees of a request: its head, as parsed (no `Request` is built). */
export interface FastRequest {
  method: string;
  /** The request target as sent (origin-form). */
  target: string;
  /** Field names lowercased, values trimmed, in the order sent. */
  headers: readonly (readonly [string, string])[];
}

/** A response a fast handler answers: written as it is, with `date` and framing added. */
export interface RawResponse {
  status: number;
  /** Header lines, each `name: value\r\n` (no framing or connection fields). */
  headers: string;
  body: Uint8Array;
}

/**
 * Answers some bodiless requests before any `Request` or `Response` object
 * is made (a hot path, such as small range reads), or null to let the
 * handler answer. It must answer exactly what the handler would.
 */
export type FastHandler = (
  request: FastRequest,
  info: HttpRequestInfo,
) => RawResponse | null | Promise<RawResponse | null>;

/** Why a connection was closed by a deadline. */
export type TimeoutKind = "idle" | "header" | "body" | "send";

/** What a connection needs from its server. */
export interface ConnectionHost {
  readonly handler: HttpHandler;
  readonly fast: FastHandler | null;
  readonly onError: (err: unknown) => Response | Promise<Response>;
  readonly log: Logger;
  readonly idleTimeoutMs: number;
  readonly headerTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  /** `host:port` for requests without a Host field (HTTP/1.0). */
  readonly defaultHost: string;
  /** The server is shutting down: finish the request in flight, then close. */
  readonly closing: boolean;
  /** Takes an upload slot; false when all are taken. */
  acquireUpload(): boolean;
  releaseUpload(): void;
  rejected(reason: "max_uploads" | "bad_request"): void;
  timedOut(kind: TimeoutKind): void;
  /** Called once, when the connection is closed. */
  closed(connection: Connection): void;
}
