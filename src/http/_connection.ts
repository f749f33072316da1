/**
 * One HTTP/1.1 connection: reads request heads, hands requests to the
 * handler in order (pipelined ones included), writes responses, and closes
 * itself when a deadline passes. Deadlines are plain fields that the
 * server's single watchdog checks; no timer is armed per read or write.
 *
 * @module
 */

import type { ConnectionHost, HttpConn, RawResponse, TimeoutKind } from "./_conn_types.ts";
import { findHeadEnd, HttpParseError, parseHead, type RequestHead } from "./_head.ts";
import { ReadBuffer } from "./_read_buffer.ts";
import {
  jsonError,
  type ResponseSink,
  type WriteOutcome,
  writeRaw,
  writeResponse,
} from "./_response.ts";
import { BodyAbortedError, type BodyInput, RequestBody } from "./body.ts";

/** Responses up to this size (head and body) are assembled in a reused buffer. */
const WRITE_BUFFER_BYTES = 8 * 1024;
/** Unread body bytes drained after a response to keep a connection; more closes it. */
const DRAIN_BYTES = 256 * 1024;
/** A request with a body larger than this (or chunked) is an upload. */
const UPLOAD_BYTES = 1024 * 1024;
/** Blank lines before a request line are skipped (RFC 9112 §2.2), up to this many bytes. */
const MAX_LEADING_BLANK = 64;
/** After a final response, unread client bytes are discarded this long before closing. */
const LINGER_MS = 2000;
const LINGER_BYTES = 1024 * 1024;

const encoder = new TextEncoder();
/** Methods `Request` refuses (Fetch §2.2.1); answered 501. */
const FORBIDDEN_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);
const CONTINUE = encoder.encode("HTTP/1.1 100 Continue\r\n\r\n");

/** A request whose `url` is the target as sent, not normalized (`..` stays). */
class ServerRequest extends Request {
  readonly #url: string;

  constructor(url: string, init: RequestInit) {
    super(url, init);
    this.#url = url;
  }

  override get url(): string {
    return this.#url;
  }
}

/** One accepted connection. */
export class Connection implements BodyInput, ResponseSink {
  readonly #conn: HttpConn;
  readonly #host: ConnectionHost;
  readonly #rb = new ReadBuffer();
  #closed = false;
  /** Set when the connection was closed on purpose; read errors then say why. */
  #closeReason: string | null = null;
  #body: RequestBody | null = null;
  #responseStarted = false;
  #responseReader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  #writeBuffer: Uint8Array | null = null;

  /** Absolute time (ms) by which the pending read must complete. */
  readDeadline = Infinity;
  readKind: TimeoutKind | "linger" = "idle";
  /** Absolute time (ms) by which the pending write must make progress. */
  writeDeadline = Infinity;
  /** A request has been parsed and is not finished. */
  inRequest = false;

  constructor(conn: HttpConn, host: ConnectionHost) {
    this.#conn = conn;
    this.#host = host;
  }

  get remoteAddr(): Deno.Addr {
    return this.#conn.remoteAddr;
  }

  /** Serves requests until the connection ends; never throws. */
  async serve(): Promise<void> {
    let ending: "linger" | "close" = "close";
    try {
      while (!this.#closed) {
        const head = await this.#readHead();
        if (head === null) break;
        const outcome = await this.#exchange(head);
        if (outcome !== "keep") {
          if (outcome === "close") ending = "linger";
          break;
        }
        if (this.#host.closing) {
          ending = "linger";
          break;
        }
      }
    } catch (err) {
      if (err instanceof HttpParseError && !this.#closed) {
        this.#host.rejected("bad_request");
        await this.#sendError(err.status, "invalid_request", err.message);
        ending = "linger";
      } else if (!this.#closed) {
        this.#host.log.debug("connection failed", { error: err });
      }
    }
    if (ending === "linger") await this.#linger();
    this.close();
  }

  /**
   * Closes now: pending reads and writes fail, the request body (if any)
   * fails with a {@linkcode BodyAbortedError}, the response body is cancelled.
   */
  close(reason?: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason ?? null;
    this.readDeadline = Infinity;
    this.writeDeadline = Infinity;
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    this.#body?.fail(
      new BodyAbortedError(`Request body ended early: ${reason ?? "connection closed"}`),
    );
    this.#responseReader?.cancel(new Error(reason ?? "connection closed")).catch(() => {});
    this.#responseReader = null;
    this.#host.closed(this);
  }

  /** Closes the connection if a deadline has passed; the watchdog calls this. */
  expire(now: number): void {
    if (now >= this.readDeadline) {
      const kind = this.readKind;
      if (kind === "linger") return this.close("linger");
      this.#host.timedOut(kind);
      this.close(
        kind === "body"
          ? `no request body bytes for ${this.#host.bodyTimeoutMs} ms`
          : `${kind} timeout`,
      );
    } else if (now >= this.writeDeadline) {
      this.#host.timedOut("send");
      this.close(`the client read nothing for ${this.#host.bodyTimeoutMs} ms`);
    }
  }

  async #readHead(): Promise<RequestHead | null> {
    const scan = { scanned: 0, lineEnd: -1 };
    let begun = false;
    let skipped = 0;
    let headerDeadline = Infinity;
    const idleDeadline = Date.now() + this.#host.idleTimeoutMs;
    while (true) {
      const rb = this.#rb;
      while (!begun && rb.start < rb.end) {
        const b = rb.bytes[rb.start]!;
        if (b !== 13 && b !== 10) {
          begun = true;
          break;
        }
        if (++skipped > MAX_LEADING_BLANK) {
          throw new HttpParseError(400, "Too many blank lines before the request line");
        }
        rb.start++;
      }
      if (rb.start < rb.end) {
        if (headerDeadline === Infinity) headerDeadline = Date.now() + this.#host.headerTimeoutMs;
        const headEnd = findHeadEnd(rb.bytes, rb.start, rb.end, scan);
        if (headEnd !== -1) {
          const head = parseHead(rb.bytes, rb.start, headEnd);
          rb.start = headEnd;
          return head;
        }
      }
      rb.makeRoom(scan);
      // Blank lines alone do not start a request: still idle.
      const idle = !begun;
      const n = await this.#read(
        rb.bytes.subarray(rb.end),
        idle ? "idle" : "header",
        idle ? idleDeadline : headerDeadline,
      );
      if (n === 0) return null; // the client closed (mid-head: nothing to answer)
      rb.end += n;
    }
  }

  /** One request and its response. */
  async #exchange(head: RequestHead): Promise<WriteOutcome> {
    this.inRequest = true;
    this.#responseStarted = false;
    const upload = (head.method === "PUT" || head.method === "POST") &&
      (head.chunked || (head.contentLength ?? 0) > UPLOAD_BYTES);
    if (upload && !this.#host.acquireUpload()) {
      this.#host.rejected("max_uploads");
      this.inRequest = false;
      await this.#sendError(503, "overloaded", "Too many uploads in progress; retry soon", {
        "retry-after": "1",
      });
      return "close";
    }
    const hasBody = head.chunked || (head.contentLength ?? 0) > 0;
    if (!hasBody && head.method === "GET" && this.#host.fast) {
      const outcome = await this.#fast(head);
      if (outcome !== null) {
        this.inRequest = false;
        return outcome;
      }
    }
    const body = hasBody
      ? new RequestBody(this, {
        contentLength: head.chunked ? null : head.contentLength,
        beforeFirstRead: head.expectContinue ? () => this.#sendContinue() : undefined,
      })
      : null;
    this.#body = body;
    try {
      let request: Request;
      try {
        request = this.#request(head, body);
      } catch (err) {
        this.#host.rejected("bad_request");
        if (FORBIDDEN_METHODS.has(head.method.toUpperCase())) {
          await this.#sendError(501, "invalid_request", `Method ${head.method} is not supported`);
        } else {
          await this.#sendError(
            400,
            "invalid_request",
            `Cannot accept this request: ${message(err)}`,
          );
        }
        return "close";
      }
      const response = await this.#handle(request);
      if (this.#closed) {
        response.body?.cancel().catch(() => {});
        return "abort";
      }
      // Keep the connection only when the next request can be found: the body
      // was read, or can be drained (unless the client still waits for 100 Continue).
      let keepAlive = head.keepAlive && !this.#host.closing;
      if (body && !body.done) {
        if (head.expectContinue && !body.started) keepAlive = false;
        if (body.reading) keepAlive = false;
      }
      this.#responseStarted = true;
      const outcome = await writeResponse(this, response, {
        method: head.method,
        minor: head.minor,
        keepAlive,
      });
      if (outcome !== "keep") return outcome;
      if (body && !body.done && !(await body.drain(DRAIN_BYTES))) return "close";
      return "keep";
    } finally {
      this.#body = null;
      body?.fail(new BodyAbortedError("The request is over; its body can no longer be read"));
      if (upload) this.#host.releaseUpload();
      this.inRequest = false;
    }
  }

  /** The fast handler's answer, written; null when it leaves the request to the handler. */
  async #fast(head: RequestHead): Promise<WriteOutcome | null> {
    let raw: RawResponse | null;
    try {
      raw = await this.#host.fast!(head, {
        remoteAddr: this.#conn.remoteAddr,
        clientCertificate: this.#conn.clientCertificate ?? null,
      });
    } catch {
      raw = null; // the handler answers, errors included
    }
    if (raw === null) return null;
    if (this.#closed) return "abort";
    this.#responseStarted = true;
    return await writeRaw(this, raw, {
      method: head.method,
      minor: head.minor,
      keepAlive: head.keepAlive && !this.#host.closing,
    });
  }

  #request(head: RequestHead, body: RequestBody | null): Request {
    const host = head.host === null || head.host === "" ? this.#host.defaultHost : head.host;
    const init: RequestInit & { duplex?: "half" } = { method: head.method, headers: head.headers };
    if (body && head.method !== "GET" && head.method !== "HEAD") {
      init.body = body.stream();
      init.duplex = "half";
    }
    return new ServerRequest(`http://${host}${head.target}`, init);
  }

  async #handle(request: Request): Promise<Response> {
    try {
      const response = await this.#host.handler(request, {
        remoteAddr: this.#conn.remoteAddr,
        clientCertificate: this.#conn.clientCertificate ?? null,
      });
      if (response instanceof Response) return response;
      throw new TypeError("The handler did not return a Response");
    } catch (err) {
      try {
        return await this.#host.onError(err);
      } catch (inner) {
        this.#host.log.error("the error handler failed", { error: inner });
        return jsonError(500, "internal", "Internal error");
      }
    }
  }

  async #sendContinue(): Promise<void> {
    // Only while no final response has begun (RFC 9110 §10.1.1).
    if (!this.#responseStarted) await this.write(CONTINUE);
  }

  async #sendError(
    status: number,
    code: string,
    text: string,
    headers: Record<string, string> = {},
  ): Promise<void> {
    this.#responseStarted = true;
    await writeResponse(this, jsonError(status, code, text, headers), {
      method: "GET",
      minor: 1,
      keepAlive: false,
    });
  }

  /**
   * Ends the connection without losing the final response: the write side
   * is closed first, then whatever the client still sends is read and
   * dropped (bounded), so closing with unread bytes does not reset the
   * connection before the client has read the response.
   */
  async #linger(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.#conn.closeWrite();
      const deadline = Date.now() + LINGER_MS;
      const scratch = this.#rb.scratch();
      let dropped = 0;
      while (dropped < LINGER_BYTES && !this.#closed) {
        const n = await this.#read(scratch, "linger", deadline);
        if (n === 0) break;
        dropped += n;
      }
    } catch {
      // Gone already.
    }
  }

  /** One read from the connection under a deadline; 0 at the end of the stream. */
  async #read(
    view: Uint8Array,
    kind: TimeoutKind | "linger",
    deadline: number,
  ): Promise<number> {
    if (this.#closed) return 0;
    this.readKind = kind;
    this.readDeadline = deadline;
    try {
      return (await this.#conn.read(view)) ?? 0;
    } catch (err) {
      if (this.#closed) return 0;
      throw err;
    } finally {
      this.readDeadline = Infinity;
    }
  }

  // BodyInput

  get buffered(): number {
    return this.#rb.buffered;
  }

  takeBuffered(view: Uint8Array): number {
    return this.#rb.take(view);
  }

  async readDirect(view: Uint8Array): Promise<number> {
    return await this.#bodyRead(view);
  }

  takeLine(max: number): string | null {
    return this.#rb.takeLine(max);
  }

  async fill(): Promise<boolean> {
    const n = await this.#bodyRead(this.#rb.room());
    this.#rb.end += n;
    return n > 0;
  }

  unread(bytes: Uint8Array): void {
    this.#rb.unread(bytes);
  }

  /** A body read: no progress for the body timeout closes the connection. */
  async #bodyRead(view: Uint8Array): Promise<number> {
    if (this.#closed) throw this.#aborted();
    try {
      const n = await this.#read(view, "body", Date.now() + this.#host.bodyTimeoutMs);
      if (n === 0 && this.#closed) throw this.#aborted();
      return n;
    } catch (err) {
      if (err instanceof BodyAbortedError) throw err;
      throw new BodyAbortedError(`Request body ended early: ${message(err)}`);
    }
  }

  #aborted(): BodyAbortedError {
    return new BodyAbortedError(
      `Request body ended early: ${this.#closeReason ?? "the connection closed"}`,
    );
  }

  // ResponseSink

  async write(bytes: Uint8Array): Promise<void> {
    let at = 0;
    try {
      while (at < bytes.length) {
        if (this.#closed) throw new Deno.errors.BadResource("The connection is closed");
        this.writeDeadline = Date.now() + this.#host.bodyTimeoutMs;
        at += await this.#conn.write(at === 0 ? bytes : bytes.subarray(at));
      }
    } finally {
      this.writeDeadline = Infinity;
    }
  }

  track(reader: ReadableStreamDefaultReader<Uint8Array> | null): void {
    this.#responseReader = reader;
  }

  buffer(bytes: number): Uint8Array {
    // Writes are awaited one at a time, so one buffer serves them all: a small
    // response (a head and a 4 KiB range) costs no allocation.
    if (bytes > WRITE_BUFFER_BYTES) return new Uint8Array(bytes);
    this.#writeBuffer ??= new Uint8Array(WRITE_BUFFER_BYTES);
    return this.#writeBuffer.subarray(0, bytes);
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
