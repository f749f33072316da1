/**
 * Writing a `Response` on an HTTP/1.1 connection: status line, headers and
 * body framing (RFC 9112 §6). A body of known length goes out with
 * `Content-Length`, other bodies chunked (or, to HTTP/1.0 clients, up to the
 * close). A body stream that fails mid-way aborts the connection, so the
 * client sees a short body instead of a clean end.
 *
 * @module
 */

/** Where a response goes: the connection. */
export interface ResponseSink {
  /** Writes all of `bytes` (throws when the connection is gone). */
  write(bytes: Uint8Array): Promise<void>;
  /** The body being sent; the connection cancels it if it closes meanwhile. */
  track(reader: ReadableStreamDefaultReader<Uint8Array> | null): void;
  /**
   * A buffer of `bytes` to assemble one write in: the connection's reusable
   * one when it is large enough (it is free again once that write is done).
   */
  buffer(bytes: number): Uint8Array;
}

/** The request a response answers. */
export interface ResponseContext {
  method: string;
  /** HTTP minor version of the request. */
  minor: 0 | 1;
  /** Whether the connection may stay open after this response. */
  keepAlive: boolean;
}

/** After a response: serve the next request, close gracefully, or abort. */
export type WriteOutcome = "keep" | "close" | "abort";

/** Heads and body pieces up to this size are joined into one write. */
const COALESCE_BYTES = 64 * 1024;

const REASONS: Record<number, string> = {
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  409: "Conflict",
  411: "Length Required",
  413: "Content Too Large",
  414: "URI Too Long",
  416: "Range Not Satisfiable",
  417: "Expectation Failed",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
  507: "Insufficient Storage",
};

/** Response fields the server owns: framing and connection management. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
]);

const encoder = new TextEncoder();
const NOT_YET: Promise<null> = Promise.resolve(null);

/** Bodies known to be these bytes, by response: see {@linkcode bytesResponse}. */
const BYTE_BODIES = new WeakMap<Response, Uint8Array>();

/**
 * A response with `bytes` as its body, which this server writes straight
 * out, without the body stream (and its reads and promises) a `Response`
 * otherwise needs: for small bodies answered at a high rate (4 KiB range
 * reads). Anywhere else (`app.request()` in tests, a middleware that
 * replaces the response) it is an ordinary `Response`. `bytes` must not
 * change afterwards.
 */
export function bytesResponse(bytes: Uint8Array<ArrayBuffer>, init: ResponseInit): Response {
  const response = new Response(bytes, init);
  BYTE_BODIES.set(response, bytes);
  return response;
}

let dateSecond = -1;
let dateText = "";

/** The Date field value, formatted once a second. */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

/** Writes a fast handler's answer to `sink` (a GET's: it has a body); never throws. */
export async function writeRaw(
  sink: ResponseSink,
  raw: { status: number; headers: string; body: Uint8Array },
  context: ResponseContext,
): Promise<WriteOutcome> {
  const connection = !context.keepAlive
    ? "connection: close\r\n"
    : context.minor === 0
    ? "connection: keep-alive\r\n"
    : "";
  const head = `HTTP/1.1 ${raw.status} ${REASONS[raw.status] ?? "Unknown"}\r\n${raw.headers}` +
    `date: ${httpDate()}\r\ncontent-length: ${raw.body.length}\r\n${connection}\r\n`;
  if (!await send(sink, [head, raw.body])) return "abort";
  return context.keepAlive ? "keep" : "close";
}

/** Writes `response` to `sink`; never throws. */
export async function writeResponse(
  sink: ResponseSink,
  response: Response,
  context: ResponseContext,
): Promise<WriteOutcome> {
  const status = response.status;
  let head = `HTTP/1.1 ${status} ${REASONS[status] ?? (response.statusText || "Unknown")}\r\n`;
  let declared: number | null = null;
  let hasDate = false;
  // forEach, not for-of: the same names and values (set-cookie kept apart),
  // several times faster in Deno.
  response.headers.forEach((value, name) => {
    if (name === "content-length") {
      declared = /^\d{1,15}$/.test(value) ? Number(value) : null;
    } else if (!HOP_BY_HOP.has(name)) {
      if (name === "date") hasDate = true;
      head += `${name}: ${value}\r\n`;
    }
  });
  if (!hasDate) head += `date: ${httpDate()}\r\n`;

  let keepAlive = context.keepAlive;
  const connectionField = () =>
    !keepAlive ? "connection: close\r\n" : context.minor === 0 ? "connection: keep-alive\r\n" : "";
  const outcome = (): WriteOutcome => (keepAlive ? "keep" : "close");

  const bodyless = context.method === "HEAD" || status === 204 || status === 304;
  const bytes = response.bodyUsed ? undefined : BYTE_BODIES.get(response);
  if (bytes !== undefined && bodyless) declared ??= bytes.length;
  if (bytes !== undefined && !bodyless) {
    // The body stream is never made: nothing to read or cancel.
    if (declared !== null && declared !== bytes.length) return "abort";
    return await send(sink, [
        head + `content-length: ${bytes.length}\r\n` + connectionField() + "\r\n",
        bytes,
      ])
      ? outcome()
      : "abort";
  }

  const body = response.body;
  if (bodyless || body === null) {
    body?.cancel().catch(() => {});
    if (bodyless) {
      // A HEAD answer keeps the length a GET would have (RFC 9110 §8.6).
      if (declared !== null && status !== 204) head += `content-length: ${declared}\r\n`;
    } else {
      head += "content-length: 0\r\n";
    }
    return await send(sink, [head + connectionField() + "\r\n"]) ? outcome() : "abort";
  }

  let reader: ReadableStreamDefaultReader<Uint8Array>;
  try {
    reader = body.getReader();
  } catch {
    return "abort"; // a body already used or locked: nothing sensible to send
  }
  sink.track(reader);
  try {
    if (declared !== null) {
      return await sendSized(
          sink,
          reader,
          head + `content-length: ${declared}\r\n` +
            connectionField() + "\r\n",
          declared,
        )
        ? outcome()
        : "abort";
    }
    const first = await reader.read();
    if (first.done) {
      return await send(sink, [head + "content-length: 0\r\n" + connectionField() + "\r\n"])
        ? outcome()
        : "abort";
    }
    // A body made of bytes has ended already; a live stream has not.
    const pending = reader.read();
    const next = await Promise.race([pending, NOT_YET]);
    if (next !== null && next.done) {
      const length = first.value.length;
      return await send(sink, [
          head + `content-length: ${length}\r\n` + connectionField() + "\r\n",
          first.value,
        ])
        ? outcome()
        : "abort";
    }
    const later = next === null ? pending : Promise.resolve(next);
    if (context.minor === 0) {
      // HTTP/1.0 has no chunked coding: the body ends with the connection.
      keepAlive = false;
      if (!await send(sink, [head + connectionField() + "\r\n", first.value])) return "abort";
      return await pump(sink, reader, later, (bytes) => [bytes]) ? "close" : "abort";
    }
    const chunked = new ChunkFramer();
    const start = [head + "transfer-encoding: chunked\r\n" + connectionField() + "\r\n"];
    if (!await send(sink, [...start, ...chunked.frame(first.value)])) return "abort";
    if (!await pump(sink, reader, later, (bytes) => chunked.frame(bytes))) return "abort";
    return await send(sink, [chunked.end()]) ? outcome() : "abort";
  } catch {
    // The body stream failed: abort, never end the body cleanly.
    reader.cancel().catch(() => {});
    return "abort";
  } finally {
    sink.track(null);
  }
}

/** Sends a body whose length the handler declared; any other length aborts. */
async function sendSized(
  sink: ResponseSink,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  head: string,
  declared: number,
): Promise<boolean> {
  let sent = 0;
  let pendingHead: string | null = head;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    if (sent + value.length > declared) {
      reader.cancel().catch(() => {});
      return false;
    }
    const pieces: (string | Uint8Array)[] = pendingHead === null ? [value] : [pendingHead, value];
    pendingHead = null;
    if (!await send(sink, pieces)) {
      reader.cancel().catch(() => {});
      return false;
    }
    sent += value.length;
  }
  if (pendingHead !== null && !await send(sink, [pendingHead])) return false;
  return sent === declared;
}

/** Sends the rest of a stream, `first` being its next read. */
async function pump(
  sink: ResponseSink,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  first: Promise<ReadableStreamReadResult<Uint8Array>>,
  frame: (bytes: Uint8Array) => (string | Uint8Array)[],
): Promise<boolean> {
  let next = first;
  while (true) {
    const { done, value } = await next;
    if (done) return true;
    if (!await send(sink, frame(value))) {
      reader.cancel().catch(() => {});
      return false;
    }
    next = reader.read();
  }
}

/** Chunked coding; a large chunk's closing CRLF rides with the next write. */
class ChunkFramer {
  #carry = "";

  frame(bytes: Uint8Array): (string | Uint8Array)[] {
    if (bytes.length === 0) return [];
    const prefix = `${this.#carry}${bytes.length.toString(16)}\r\n`;
    this.#carry = "\r\n";
    return [prefix, bytes];
  }

  end(): string {
    const tail = `${this.#carry}0\r\n\r\n`;
    this.#carry = "";
    return tail;
  }
}

/**
 * Writes pieces, joining the small ones so a head and a small body leave in
 * one write; large byte pieces are written as they are (no copy). False when
 * the connection is gone.
 */
async function send(sink: ResponseSink, pieces: (string | Uint8Array)[]): Promise<boolean> {
  try {
    let joined: (string | Uint8Array)[] = [];
    let joinedBytes = 0;
    for (const piece of pieces) {
      if (typeof piece !== "string" && piece.length > COALESCE_BYTES) {
        if (joined.length > 0) await sink.write(join(sink, joined, joinedBytes));
        joined = [];
        joinedBytes = 0;
        await sink.write(piece);
        continue;
      }
      joined.push(piece);
      joinedBytes += piece.length; // strings here are ASCII or Latin-1: one byte a char
    }
    if (joined.length > 0) await sink.write(join(sink, joined, joinedBytes));
    return true;
  } catch {
    return false;
  }
}

function join(sink: ResponseSink, pieces: (string | Uint8Array)[], bytes: number): Uint8Array {
  if (pieces.length === 1 && typeof pieces[0] !== "string") return pieces[0]!;
  const out = sink.buffer(bytes);
  let at = 0;
  for (const piece of pieces) {
    if (typeof piece === "string") {
      const { read, written } = encoder.encodeInto(piece, out.subarray(at));
      if (read === piece.length && written === piece.length) {
        at += written;
      } else {
        // Field values may hold Latin-1 bytes (Headers keeps them as chars ≤ 0xFF).
        for (let i = 0; i < piece.length; i++) out[at + i] = piece.charCodeAt(i);
        at += piece.length;
      }
    } else {
      out.set(piece, at);
      at += piece.length;
    }
  }
  return out;
}

/** A JSON error response in the API's shape: `{"error":{"code","message"}}`. */
export function jsonError(
  status: number,
  code: string,
  text: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify({ error: { code, message: text } }), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}
