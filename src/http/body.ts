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

/** Where a body's bytes come from: the connection, read-ahead bytes first. */
export interface BodyInput {
  /** Reads up to `view.length` bytes into `view`; 0 at the end of the connection. */
  readInto(view: Uint8Array): Promise<number>;
  /**
   * Reads one line (without its line end), at most `max` bytes; null at the
   * end of the connection. Throws {@linkcode BodyAbortedError} when longer.
   */
  readLine(max: number): Promise<string | null>;
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
  #state: "size" | "data" | "crlf" | "done";
  #received = 0;
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

  /** Bytes of content read so far. */
  get received(): number {
    return this.#received;
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
    const n = await this.#input.readInto(want === view.length ? view : view.subarray(0, want));
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

  async #readChunked(view: Uint8Array): Promise<number> {
    while (true) {
      switch (this.#state) {
        case "done":
          return 0;
        case "size": {
          const line = await this.#line(MAX_CHUNK_LINE);
          const size = parseChunkSize(line);
          if (size === 0) {
            await this.#skipTrailers();
            this.#state = "done";
            return 0;
          }
          this.#remaining = size;
          this.#state = "data";
          break;
        }
        case "data": {
          const want = Math.min(view.length, this.#remaining);
          const n = await this.#input.readInto(
            want === view.length ? view : view.subarray(0, want),
          );
          if (n === 0) throw this.#endedEarly();
          this.#remaining -= n;
          this.#received += n;
          if (this.#remaining === 0) this.#state = "crlf";
          return n;
        }
        case "crlf": {
          if ((await this.#line(2)) !== "") {
            throw new BodyAbortedError(
              "Invalid chunked request body: a chunk is longer than its size",
            );
          }
          this.#state = "size";
          break;
        }
      }
    }
  }

  async #line(max: number): Promise<string> {
    const line = await this.#input.readLine(max);
    if (line === null) throw this.#endedEarly();
    return line;
  }

  /** Trailer fields are read (within the header limits) and ignored. */
  async #skipTrailers(): Promise<void> {
    let bytes = 0;
    for (let fields = 0;; fields++) {
      const line = await this.#line(MAX_HEADER_BYTES - bytes);
      if (line === "") return;
      bytes += line.length + 2;
      if (fields >= MAX_HEADER_FIELDS) {
        throw new BodyAbortedError("Invalid chunked request body: too many trailer fields");
      }
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
