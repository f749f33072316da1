/**
 * A raw HTTP/1.1 request, path sent byte for byte (like `curl --path-as-is`):
 * fetch() would normalize `..` away before the agent ever saw it.
 *
 * @module
 */

import { concatBytes } from "../../src/util/bytes.ts";

/** Sends `METHOD path` to `baseUrl` as written and returns status and body. */
export async function rawRequest(
  baseUrl: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  payload = "",
): Promise<{ status: number; body: string }> {
  const url = new URL(baseUrl);
  const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
  try {
    const lines = [`${method} ${path} HTTP/1.1`, `Host: ${url.host}`, "Connection: close"];
    if (payload !== "") lines.push(`Content-Length: ${new TextEncoder().encode(payload).length}`);
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    await conn.write(new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n" + payload));
    let text = "";
    const buffer = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
    const body = text.slice(text.indexOf("\r\n\r\n") + 4);
    return { status, body };
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the server.
    }
  }
}

/** One response as read off the wire. */
export interface RawResponse {
  status: number;
  /** Field names lowercased; repeated fields joined with ", ". */
  headers: Record<string, string>;
  body: Uint8Array;
  text: string;
  /** False when the connection ended before the body did (short read). */
  complete: boolean;
  /** How the body was framed. */
  framing: "none" | "length" | "chunked" | "close";
}

/**
 * A raw HTTP/1.1 client connection: writes bytes as given and parses
 * responses one at a time, so tests can pipeline, stall, or hang up mid-way.
 * Every read has a deadline; a test never waits forever.
 */
export class RawClient {
  readonly conn: Deno.TcpConn;
  #buf = new Uint8Array(0);
  #eof = false;
  #pending: Promise<number | null> | null = null;
  #chunk = new Uint8Array(64 * 1024);

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to the host and port of `url`. */
  static async connect(url: string): Promise<RawClient> {
    const { hostname, port } = new URL(url);
    return new RawClient(await Deno.connect({ hostname, port: Number(port) }));
  }

  /** Writes all of `data`. */
  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    let at = 0;
    while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
  }

  /** Reads more bytes; false at the end of the stream (a reset counts as the end). */
  async #fill(timeoutMs: number): Promise<boolean> {
    if (this.#eof) return false;
    this.#pending ??= this.conn.read(this.#chunk).catch(() => null);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<"timeout">((
      r,
    ) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
    const n = await Promise.race([this.#pending, expired]);
    clearTimeout(timer);
    if (n === "timeout") throw new Error(`No bytes from the server within ${timeoutMs} ms`);
    this.#pending = null;
    if (n === null) {
      this.#eof = true;
      return false;
    }
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf);
    next.set(this.#chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
    return true;
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  async #line(timeoutMs: number): Promise<string | null> {
    while (true) {
      const lf = this.#buf.indexOf(10);
      if (lf !== -1) return new TextDecoder().decode(this.#take(lf + 1)).replace(/\r?\n$/, "");
      if (!(await this.#fill(timeoutMs))) return null;
    }
  }

  /**
   * Reads one response (an interim `100 Continue` is a response too). For
   * answers to HEAD pass `{ head: true }`: they have no body.
   */
  async readResponse(options: { head?: boolean; timeoutMs?: number } = {}): Promise<RawResponse> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const statusLine = await this.#line(timeoutMs);
    if (statusLine === null) throw new Error("The connection closed before a response");
    const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
    if (!match) throw new Error(`Not a status line: ${JSON.stringify(statusLine)}`);
    const status = Number(match[1]);
    const headers: Record<string, string> = {};
    while (true) {
      const line = await this.#line(timeoutMs);
      if (line === null) throw new Error("The connection closed in the response head");
      if (line === "") break;
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
    const done = (body: Uint8Array, complete: boolean, framing: RawResponse["framing"]) => ({
      status,
      headers,
      body,
      text: new TextDecoder().decode(body),
      complete,
      framing,
    });
    if (options.head || status < 200 || status === 204 || status === 304) {
      return done(new Uint8Array(0), true, "none");
    }
    if (headers["transfer-encoding"] === "chunked") {
      const parts: Uint8Array[] = [];
      while (true) {
        const sizeLine = await this.#line(timeoutMs);
        if (sizeLine === null) return done(concatBytes(parts), false, "chunked");
        const size = parseInt(sizeLine, 16);
        if (size === 0) {
          while ((await this.#line(timeoutMs)) !== "") { /* trailers */ }
          return done(concatBytes(parts), true, "chunked");
        }
        while (this.#buf.length < size + 2) {
          if (!(await this.#fill(timeoutMs))) {
            parts.push(this.#take(this.#buf.length));
            return done(concatBytes(parts), false, "chunked");
          }
        }
        parts.push(this.#take(size));
        this.#take(2);
      }
    }
    if (headers["content-length"] !== undefined) {
      const length = Number(headers["content-length"]);
      while (this.#buf.length < length) {
        if (!(await this.#fill(timeoutMs))) {
          return done(this.#take(this.#buf.length), false, "length");
        }
      }
      return done(this.#take(length), true, "length");
    }
    while (await this.#fill(timeoutMs)) { /* to the end */ }
    return done(this.#take(this.#buf.length), true, "close");
  }

  /** True once the server has closed the connection (all bytes it sent are dropped). */
  async waitClosed(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    try {
      while (Date.now() < deadline) {
        this.#buf = new Uint8Array(0);
        if (!(await this.#fill(deadline - Date.now()))) return true;
      }
    } catch {
      // The deadline passed while reading.
    }
    return false;
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Closed already.
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
