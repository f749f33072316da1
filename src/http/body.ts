/**
 * Request bodies: `Content-Length` and chunked framing decoded straight from
 * the connection into the consumer's buffers, exposed as a byte stream.
 *
 * @module
 */

import { MAX_HEADER_BYTES, MAX_HEADER_FIELDS } from "./_head.ts";

/**
 * The request body could not be read to its end: the client closed the
 * connection or went silent mid-body, or its chunked framing was broken.
 * Handlers see it as the error of the body stream; it is the client's fault.
 */
export class BodyAbortedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BodyAbortedError";
  }
}

/**
 * Where a body's bytes come from: the connection and the bytes it has read
 * ahead. Only `readDirect` and `fill` wait for the network.
 */
export interface BodyInput {
  /** Bytes read ahead and not consumed yet. */
  readonly buffered: number;
  /** Moves up to `view.length` read-ahead bytes into `view`; the count. */
  takeBuffered(view: Uint8Array): number;
  /**
   * Reads from the connection straight into `view` (nothing may be read
   * ahead); 0 at the end of the connection.
   */
  readDirect(view: Uint8Array): Promise<number>;
  /**
   * A complete line from the read-ahead bytes (without its line end), or
   * null when none is there yet. Throws {@linkcode BodyAbortedError} when the
   * line is longer than `max` bytes.
   */
  takeLine(max: number): string | null;
  /** Reads more from the connection into the read-ahead bytes; false at its end. */
  fill(): Promise<boolean>;
  /** Puts `bytes` back in front of the read-ahead bytes. */
  unread(bytes: Uint8Array): void;
}

/** Options for {@linkcode RequestBody}. */
export interface RequestBodyOptions {
  /** Declared length, or null for a chunked body. */
  contentLength: number | null;
  /** Runs once before the first byte is read (sends `100 Continue`). */
  beforeFirstRead?: () => Promise<void>;
}

/** Longest chunk-size line accepted (size, extensions and all). */
const MAX_CHUNK_LINE = 4096;
/** Bytes a default (non-BYOB) reader gets per read. */
const AUTO_CHUNK_BYTES = 64 * 1024;

/** One request's body, read at most once, by the handler or by the server's drain. */
export class RequestBody {
  readonly #input: BodyInput;
  readonly #chunked: boolean;
  readonly #declared: number | null;
  #beforeFirstRead: (() => Promise<void>) | undefined;
  /** Fixed: bytes left of the body. Chunked: bytes left of the current chunk. */
  #remaining: number;
  #state: "size" | "data" | "crlf" | "trailers" | "done";
  #received = 0;
  #trailerBytes = 0;
  #trailerFields = 0;
  #started = false;
  #reading = false;
  #failure: Error | null = null;
  #controller: ReadableByteStreamController | null = null;
  #stream: ReadableStream<Uint8Array> | null = null;

  constructor(input: BodyInput, options: RequestBodyOptions) {
    this.#input = input;
    this.#declared = options.contentLength;
    this.#chunked = options.contentLength === null;
    this.#remaining = options.contentLength ?? 0;
    this.#state = this.#chunked ? "size" : this.#remaining === 0 ? "done" : "data";
    this.#beforeFirstRead = options.beforeFirstRead;
  }

  /** Every byte of the body (and its chunked trailer) has been read. */
  get done(): boolean {
    return this.#state === "done";
  }

  /** Someone asked for the body's bytes. */
  get started(): boolean {
    return this.#started;
  }

  /** A read is in progress. */
  get reading(): boolean {
    return this.#reading;
  }

  /**
   * Reads body bytes into `view`: bytes the connection already buffered are
   * copied, the rest is read from the connection straight into `view`.
   * Returns 0 at the end of the body.
   */
  async read(view: Uint8Array): Promise<number> {
    if (this.#failure) throw this.#failure;
    if (this.#state === "done" || view.length === 0) return 0;
    if (this.#reading) throw new TypeError("The request body is already being read");
    this.#reading = true;
    try {
      if (!this.#started) {
        this.#started = true;
        const before = this.#beforeFirstRead;
        this.#beforeFirstRead = undefined;
        await before?.();
      }
      return this.#chunked ? await this.#readChunked(view) : await this.#readFixed(view);
    } catch (err) {
      this.#failure ??= err instanceof BodyAbortedError ? err : connectionLost(err);
      throw this.#failure;
    } finally {
      this.#reading = false;
    }
  }

  async #readFixed(view: Uint8Array): Promise<number> {
    const want = Math.min(view.length, this.#remaining);
    const target = want === view.length ? view : view.subarray(0, want);
    const input = this.#input;
    const n = input.buffered > 0 ? input.takeBuffered(target) : await input.readDirect(target);
    if (n === 0) {
      throw new BodyAbortedError(
        `Request body ended early: the connection closed after ${this.#received} of ` +
          `${this.#declared} bytes`,
      );
    }
    this.#remaining -= n;
    this.#received += n;
    if (this.#remaining === 0) this.#state = "done";
    return n;
  }

  /**
   * Fills `view` with chunk data: from read-ahead bytes without waiting, or,
   * when there are none and nothing is filled yet, with one read from the
   * connection straight into all of `view`. That read may run past the
   * chunk into the framing of the next ones; the framing is then taken out
   * in place ({@linkcode RequestBody.#unframe}), so large reads stay possible
   * whatever the chunk size. Waits only while nothing is filled.
   */
  async #readChunked(view: Uint8Array): Promise<number> {
    const input = this.#input;
    let filled = 0;
    while (filled < view.length) {
      switch (this.#state) {
        case "done":
          return filled;
        case "data": {
          if (input.buffered > 0) {
            const room = Math.min(view.length - filled, this.#remaining);
            const n = input.takeBuffered(view.subarray(filled, filled + room));
            this.#took(n);
            filled += n;
            break;
          }
          if (filled > 0) return filled;
          const n = await input.readDirect(view);
          if (n === 0) throw this.#endedEarly();
          const data = Math.min(n, this.#remaining);
          this.#took(data);
          filled = n > data ? this.#unframe(view, data, n) : data;
          break;
        }
        case "crlf":
        case "size":
        case "trailers": {
          const max = this.#state === "crlf"
            ? 2
            : this.#state === "size"
            ? MAX_CHUNK_LINE
            : MAX_HEADER_BYTES - this.#trailerBytes;
          let line = input.takeLine(max);
          if (line === null) {
            if (filled > 0) return filled;
            line = await this.#line(max);
          }
          this.#framingLine(line);
          break;
        }
      }
    }
    return filled;
  }

  /** Counts `n` bytes of chunk data as consumed. */
  #took(n: number): void {
    this.#remaining -= n;
    this.#received += n;
    if (this.#remaining === 0) this.#state = "crlf";
  }

  /** Applies one framing line: the CRLF after a chunk, a chunk size, or a trailer field. */
  #framingLine(line: string): void {
    switch (this.#state) {
      case "crlf":
        if (line !== "") {
          throw new BodyAbortedError(
            "Invalid chunked request body: a chunk is longer than its size",
          );
        }
        this.#state = "size";
        return;
      case "size": {
        const size = parseChunkSize(line);
        if (size === 0) {
          this.#state = "trailers";
        } else {
          this.#remaining = size;
          this.#state = "data";
        }
        return;
      }
      case "trailers":
        // Trailer fields are read (within the header limits) and ignored.
        if (line === "") {
          this.#state = "done";
          return;
        }
        this.#trailerBytes += line.length + 2;
        if (++this.#trailerFields > MAX_HEADER_FIELDS) {
          throw new BodyAbortedError("Invalid chunked request body: too many trailer fields");
        }
    }
  }

  /**
   * `view[0, end)` holds `filled` bytes of data, then framing and data of
   * the chunks that follow. Moves their data down over the framing and
   * returns where the data ends; an unfinished line, the trailer and
   * anything after the body go back to the read-ahead bytes.
   */
  #unframe(view: Uint8Array, filled: number, end: number): number {
    let at = filled;
    while (at < end && this.#state !== "trailers") {
      if (this.#state === "data") {
        const take = Math.min(this.#remaining, end - at);
        view.copyWithin(filled, at, at + take);
        filled += take;
        at += take;
        this.#took(take);
        continue;
      }
      const lf = view.subarray(at, end).indexOf(10);
      const max = this.#state === "crlf" ? 2 : MAX_CHUNK_LINE;
      if (lf === -1) {
        if (end - at > max + 1) throw lineTooLong();
        break;
      }
      const lineEnd = lf > 0 && view[at + lf - 1] === 13 ? at + lf - 1 : at + lf;
      if (lineEnd - at > max) throw lineTooLong();
      this.#framingLine(latin1(view.subarray(at, lineEnd)));
      at += lf + 1;
    }
    if (at < end) this.#input.unread(view.subarray(at, end));
    return filled;
  }

  async #line(max: number): Promise<string> {
    while (true) {
      const line = this.#input.takeLine(max);
      if (line !== null) return line;
      if (!(await this.#input.fill())) throw this.#endedEarly();
    }
  }

  #endedEarly(): BodyAbortedError {
    return new BodyAbortedError(
      `Request body ended early: the connection closed after ${this.#received} bytes ` +
        "of a chunked body",
    );
  }

  /**
   * The body as a byte stream. A BYOB reader's buffer is filled straight from
   * the connection; a default reader gets 64 KiB pieces. Created once.
   */
  stream(): ReadableStream<Uint8Array> {
    this.#stream ??= new ReadableStream({
      type: "bytes",
      autoAllocateChunkSize: AUTO_CHUNK_BYTES,
      start: (controller) => {
        this.#controller = controller;
      },
      pull: async (controller) => {
        const request = controller.byobRequest!;
        const target = request.view!;
        const view = new Uint8Array(target.buffer, target.byteOffset, target.byteLength);
        let n: number;
        try {
          n = await this.read(view);
        } catch (err) {
          errorQuietly(controller, err);
          return;
        }
        try {
          if (n === 0) {
            controller.close();
            request.respond(0);
          } else {
            request.respond(n);
          }
        } catch {
          // The stream was errored meanwhile (the connection closed).
        }
      },
      cancel: () => {
        // The handler does not want the rest; the server drains or closes.
        this.#controller = null;
      },
    });
    return this.#stream;
  }

  /**
   * The connection is gone or the request is over: later reads fail with
   * `error`, and a stream still open is errored with it.
   */
  fail(error: Error): void {
    if (this.#state === "done" || this.#failure) return;
    this.#failure = error;
    if (this.#controller) errorQuietly(this.#controller, error);
    this.#controller = null;
  }

  /**
   * Reads and discards what is left of the body, up to `limit` bytes of
   * content. True when the body ended within the limit (the connection can
   * take another request); false otherwise (it must be closed).
   */
  async drain(limit: number): Promise<boolean> {
    if (this.#state === "done") return true;
    if (this.#reading || this.#failure) return false;
    if (!this.#chunked && this.#remaining > limit) return false;
    const scratch = new Uint8Array(Math.min(limit, 64 * 1024) || 1);
    let drained = 0;
    try {
      while (!this.done) {
        drained += await this.read(scratch);
        if (drained > limit) return false;
      }
    } catch {
      return false;
    }
    return true;
  }
}

function parseChunkSize(line: string): number {
  // chunk-size [ BWS ";" chunk-ext ] (RFC 9112 §7.1.1); extensions are ignored.
  const semicolon = line.indexOf(";");
  let digits = semicolon === -1 ? line : line.slice(0, semicolon);
  if (semicolon !== -1) digits = digits.replace(/[ \t]+$/, "");
  if (!/^[0-9A-Fa-f]{1,13}$/.test(digits)) {
    throw new BodyAbortedError(
      `Invalid chunked request body: bad chunk size line ${JSON.stringify(line.slice(0, 40))}`,
    );
  }
  return parseInt(digits, 16);
}

/** A framing line that is too long for its kind. */
export function lineTooLong(): BodyAbortedError {
  return new BodyAbortedError("Invalid chunked request body: a framing line is too long");
}

/** Framing bytes as text (ASCII when valid; anything else fails to parse later). */
function latin1(bytes: Uint8Array): string {
  return String.fromCharCode(...bytes);
}

function connectionLost(err: unknown): BodyAbortedError {
  const why = err instanceof Error ? err.message : String(err);
  return new BodyAbortedError(`Request body ended early: ${why}`);
}

function errorQuietly(controller: ReadableByteStreamController, err: unknown): void {
  try {
    controller.error(err);
  } catch {
    // Already closed or errored.
  }
}
