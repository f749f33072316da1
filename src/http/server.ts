/**
 * The HTTP/1.1 server: an accept loop that survives accept errors (EMFILE
 * included), caps on connections and uploads, one watchdog for every
 * connection's deadlines, and graceful shutdown.
 *
 * @module
 */

import { type Logger, silentLogger } from "../log/mod.ts";
import type {
  ConnectionHost,
  FastHandler,
  HttpConn,
  HttpHandler,
  TimeoutKind,
} from "./_conn_types.ts";
import { Connection } from "./_connection.ts";
import { jsonError } from "./_response.ts";

/** Where connections come from. `Deno.Listener` is one. */
export interface HttpListener {
  accept(): Promise<HttpConn>;
  close(): void;
  readonly addr: Deno.Addr;
}

/** Why the server turned a connection or request away. */
export type RejectReason = "max_connections" | "max_uploads" | "bad_request";

/** Options for {@linkcode serveHttp}. */
export interface HttpServerOptions {
  /**
   * Answers when the handler throws.
   * @default a 500 `{"error":{"code":"internal",…}}`
   */
  onError?: (err: unknown) => Response | Promise<Response>;
  /** @default silent */
  log?: Logger;
  /** A connection with no request in progress is closed after this long. @default 60000 */
  idleTimeoutMs?: number;
  /** A request head must be complete this long after its first byte. @default 10000 */
  headerTimeoutMs?: number;
  /**
   * A request body read, or a response write, that makes no progress for
   * this long closes the connection. @default 30000
   */
  bodyTimeoutMs?: number;
  /** Open connections at most; more are answered 503 and closed. @default 1024 */
  maxConnections?: number;
  /**
   * Requests with a large (over 1 MiB) or chunked PUT/POST body in progress at
   * most; more are answered 503 before their body is read. @default 64
   */
  maxUploads?: number;
  /** Counts a turned-away connection or request (for metrics). */
  onReject?: (reason: RejectReason) => void;
  /** Counts a connection closed by a timeout (for metrics). */
  onTimeout?: (kind: TimeoutKind) => void;
  /** Answers hot bodiless requests without `Request`/`Response` objects (see {@linkcode FastHandler}). */
  fast?: FastHandler;
}

/** Connections over the cap being answered 503 at once, at most; more are just closed. */
const MAX_REJECTING = 64;
/** Time a 503 for a connection over the cap may take. */
const REJECT_MS = 1000;
/** Accept errors are logged at most this often. */
const ACCEPT_WARN_MS = 5000;
const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1000;

const OVERLOADED_BODY =
  '{"error":{"code":"overloaded","message":"Too many connections; retry in a second"}}';
const OVERLOADED = new TextEncoder().encode(
  "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n" +
    `connection: close\r\ncontent-length: ${OVERLOADED_BODY.length}\r\n\r\n${OVERLOADED_BODY}`,
);

/** A running server. */
export class HttpServer {
  readonly #listener: HttpListener;
  readonly #host: ConnectionHost;
  readonly #options: HttpServerOptions;
  readonly #maxConnections: number;
  readonly #maxUploads: number;
  readonly #connections = new Set<Connection>();
  readonly #watchdog: ReturnType<typeof setInterval>;
  #uploads = 0;
  #rejecting = 0;
  #closing = false;
  #acceptDone = false;
  #wake: (() => void) | null = null;
  #finish!: () => void;
  /** Resolves once the server stopped accepting and every connection is closed. */
  readonly finished: Promise<void>;

  constructor(listener: HttpListener, handler: HttpHandler, options: HttpServerOptions = {}) {
    this.#listener = listener;
    this.#options = options;
    this.#maxConnections = options.maxConnections ?? 1024;
    this.#maxUploads = options.maxUploads ?? 64;
    this.finished = new Promise((resolve) => (this.#finish = resolve));
    const log = options.log ?? silentLogger;
    const address = listener.addr as Deno.NetAddr;
    const isClosing = () => this.#closing;
    this.#host = {
      handler,
      fast: options.fast ?? null,
      onError: options.onError ?? defaultOnError(log),
      log,
      idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
      headerTimeoutMs: options.headerTimeoutMs ?? 10_000,
      bodyTimeoutMs: options.bodyTimeoutMs ?? 30_000,
      defaultHost: address.hostname?.includes(":")
        ? `[${address.hostname}]:${address.port}`
        : `${address.hostname ?? "localhost"}:${address.port ?? 80}`,
      get closing() {
        return isClosing();
      },
      acquireUpload: () => {
        if (this.#uploads >= this.#maxUploads) return false;
        this.#uploads++;
        return true;
      },
      releaseUpload: () => {
        this.#uploads--;
      },
      rejected: (reason) => options.onReject?.(reason),
      timedOut: (kind) => {
        log.debug("connection timed out", { kind });
        options.onTimeout?.(kind);
      },
      closed: (connection) => {
        this.#connections.delete(connection);
        this.#checkFinished();
      },
    };
    // One watchdog for all connections: it looks at each connection's
    // deadlines a few times per shortest timeout.
    const shortest = Math.min(
      this.#host.idleTimeoutMs,
      this.#host.headerTimeoutMs,
      this.#host.bodyTimeoutMs,
    );
    this.#watchdog = setInterval(() => {
      const now = Date.now();
      for (const connection of this.#connections) connection.expire(now);
    }, Math.max(10, Math.min(1000, Math.floor(shortest / 4))));
    Deno.unrefTimer(this.#watchdog);
    this.#acceptLoop();
  }

  /** The address the server listens on. */
  get addr(): Deno.Addr {
    return this.#listener.addr;
  }

  /** Open connections. */
  get connections(): number {
    return this.#connections.size;
  }

  /** Requests with an upload body in progress. */
  get uploads(): number {
    return this.#uploads;
  }

  /**
   * Stops accepting, closes idle connections at once, lets requests in
   * flight finish (their responses say `Connection: close`), and closes
   * whatever is left after `graceMs`. Resolves when every connection is closed.
   */
  shutdown(graceMs = 10_000): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      try {
        this.#listener.close();
      } catch {
        // Already closed.
      }
      this.#wake?.();
      for (const connection of this.#connections) {
        if (!connection.inRequest) connection.close("shutdown");
      }
      const timer = setTimeout(() => {
        for (const connection of this.#connections) connection.close("shutdown");
      }, graceMs);
      this.finished.then(() => clearTimeout(timer));
      this.#checkFinished();
    }
    return this.finished;
  }

  async #acceptLoop(): Promise<void> {
    const log = this.#host.log;
    let backoff = 0;
    let failures = 0;
    let lastWarn = -Infinity;
    while (!this.#closing) {
      let conn: HttpConn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (this.#closing) break;
        if (err instanceof Deno.errors.BadResource) {
          log.error("the listener was closed; no more connections are accepted", { error: err });
          break;
        }
        // EMFILE, ENFILE, ECONNABORTED…: the listener still works. Back off
        // (connections closing free descriptors) and try again.
        failures++;
        backoff = Math.min(Math.max(backoff * 2, ACCEPT_BACKOFF_MIN_MS), ACCEPT_BACKOFF_MAX_MS);
        const now = Date.now();
        if (now - lastWarn >= ACCEPT_WARN_MS) {
          log.warn("cannot accept connections; retrying", {
            error: err,
            failures,
            backoffMs: backoff,
            connections: this.#connections.size,
          });
          lastWarn = now;
          failures = 0;
        }
        await this.#pause(backoff);
        continue;
      }
      backoff = 0;
      if (this.#connections.size >= this.#maxConnections) {
        this.#overloaded(conn);
        continue;
      }
      trySetNoDelay(conn);
      const connection = new Connection(conn, this.#host);
      this.#connections.add(connection);
      connection.serve();
    }
    this.#acceptDone = true;
    this.#checkFinished();
  }

  /** Answers a connection over the cap with 503 and closes it, without holding up accepts. */
  #overloaded(conn: HttpConn): void {
    this.#options.onReject?.("max_connections");
    const close = () => {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    };
    if (this.#rejecting >= MAX_REJECTING) return close();
    this.#rejecting++;
    const timer = setTimeout(close, REJECT_MS);
    (async () => {
      try {
        let at = 0;
        while (at < OVERLOADED.length) at += await conn.write(OVERLOADED.subarray(at));
        await conn.closeWrite();
        // Read what the client sent, so closing does not reset the connection
        // before the client has read the 503.
        const scratch = new Uint8Array(4096);
        while ((await conn.read(scratch)) !== null) { /* drop */ }
      } catch {
        // The client is gone or the timer closed it.
      } finally {
        clearTimeout(timer);
        close();
        this.#rejecting--;
      }
    })();
  }

  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  #checkFinished(): void {
    if (this.#closing && this.#acceptDone && this.#connections.size === 0) {
      clearInterval(this.#watchdog);
      this.#finish();
    }
  }
}

/** Serves `handler` on connections from `listener` until {@linkcode HttpServer.shutdown}. */
export function serveHttp(
  listener: HttpListener,
  handler: HttpHandler,
  options: HttpServerOptions = {},
): HttpServer {
  return new HttpServer(listener, handler, options);
}

/**
 * The connection cap for a process whose descriptor soft limit is `softLimit`:
 * at most 60% of it, the rest left for files, peers and the origin.
 */
export function fitConnectionLimit(configured: number, softLimit: number | null): number {
  if (softLimit === null || !Number.isFinite(softLimit)) return configured;
  return Math.max(1, Math.min(configured, Math.floor(softLimit * 0.6)));
}

function defaultOnError(log: Logger): (err: unknown) => Response {
  return (err) => {
    log.error("unhandled request error", { error: err });
    return jsonError(500, "internal", "Internal error");
  };
}

function trySetNoDelay(conn: HttpConn): void {
  const tcp = conn as Partial<Deno.TcpConn>;
  try {
    tcp.setNoDelay?.(true);
  } catch {
    // Not TCP.
  }
}
