/**
 * Uploads a file with its size announced up front (`Content-Length`),
 * streamed from disk, so the node can take it as one sized body.
 *
 * Not through `fetch`: Deno 2.9's fetch drops a `Content-Length` header
 * given with a stream body and sends the body chunked (denoland/deno#24197),
 * and its sized bodies (a `Blob`, `node:fs` `openAsBlob`) are read into
 * memory whole: 835 MB peak for a 256 MiB file. `node:http` sends the
 * header it is given and streams the body with backpressure, so the CLI
 * holds a few chunks at a time whatever the file's size.
 *
 * @module
 */

import http from "node:http";
import https from "node:https";
import { concatBytes } from "../util/bytes.ts";

/** Options for {@linkcode sizedUpload}. */
export interface SizedUploadOptions {
  /** Absolute URL to send the file to. */
  url: string;
  /** @default "PUT" */
  method?: string;
  /** Request headers (`Content-Length` is set from `size`). */
  headers?: Record<string, string>;
  /** The open file to send, read from its current position. */
  file: Deno.FsFile;
  /** Bytes to send: the file's size when the upload starts. */
  size: number;
  /** Called with the bytes handed to the connection so far. */
  onSent?: (bytes: number) => void;
  /** Called once the last byte has left the client. */
  onAllSent?: () => void;
  /** Bytes read from the file at a time. @default 262144 */
  chunkBytes?: number;
  /** PEM CA to verify an https node against. @default the system's */
  ca?: string;
}

/** The node's answer. */
export interface SizedUploadAnswer {
  status: number;
  headers: Headers;
  /** The answer's body (small JSON). */
  text: string;
}

/** The connection failed before the node answered (refused, reset, closed). */
export class UploadError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UploadError";
  }
}

/**
 * Sends `size` bytes of `file` as one request with `Content-Length: size`
 * and resolves with the node's answer. An answer that arrives before the
 * body is sent (a refusal) stops the sending and is returned as is. Rejects
 * with {@linkcode UploadError} when the connection fails, and with the
 * file's error when reading it fails.
 */
export function sizedUpload(options: SizedUploadOptions): Promise<SizedUploadAnswer> {
  const url = new URL(options.url);
  const transport = url.protocol === "https:" ? https : http;
  const chunkBytes = options.chunkBytes ?? 256 * 1024;
  return new Promise<SizedUploadAnswer>((resolve, reject) => {
    let answered = false;
    let failed = false;
    const request = transport.request(url, {
      method: options.method ?? "PUT",
      headers: { ...options.headers, "Content-Length": String(options.size) },
      // One connection per upload: a pooled keep-alive socket would outlive it.
      agent: false,
      ...(options.ca === undefined ? {} : { ca: options.ca }),
    });
    request.on("response", (response) => {
      answered = true;
      const parts: Uint8Array[] = [];
      response.on("data", (part: Uint8Array) => parts.push(part));
      response.on("error", (err: Error) => reject(new UploadError(err.message, { cause: err })));
      response.on("end", () => {
        const headers = new Headers();
        for (const [name, value] of Object.entries(response.headers)) {
          if (value !== undefined) {
            headers.set(name, Array.isArray(value) ? value.join(", ") : value);
          }
        }
        resolve({
          status: response.statusCode ?? 0,
          headers,
          text: new TextDecoder().decode(concatBytes(parts)),
        });
      });
    });
    request.on("error", (err: Error) => {
      failed = true;
      // A node that answers early (a refusal) may close the connection
      // while the body is still being sent: the answer is what counts.
      if (!answered) reject(new UploadError(err.message, { cause: err }));
    });

    (async () => {
      let sent = 0;
      // A few buffers, each reused once the connection has taken its bytes
      // (the write callback): memory stays at a few chunks, and no garbage
      // piles up for the collector while a large file streams.
      const pool = new BufferPool(4, chunkBytes);
      while (sent < options.size && !answered && !failed) {
        const buffer = await pool.take();
        const n = await options.file.read(buffer.subarray(0, options.size - sent));
        if (n === null) {
          throw new Error(
            `The file shrank while it was being sent: ${sent} of ${options.size} bytes read`,
          );
        }
        const flushed = request.write(buffer.subarray(0, n), () => pool.give(buffer));
        sent += n;
        options.onSent?.(sent);
        if (!flushed && !answered) await drained(request);
      }
      if (answered || failed) return;
      request.end(() => options.onAllSent?.());
    })().catch((err: Error) => {
      // Reading the file failed: that error, not the connection's, is the reason.
      reject(err);
      request.destroy(err);
    });
  });
}

/** Fixed buffers handed out in turn; `take` waits until one is given back. */
class BufferPool {
  readonly #free: Uint8Array<ArrayBuffer>[] = [];
  readonly #waiting: ((buffer: Uint8Array<ArrayBuffer>) => void)[] = [];

  constructor(count: number, bytes: number) {
    for (let i = 0; i < count; i++) this.#free.push(new Uint8Array(bytes));
  }

  take(): Promise<Uint8Array<ArrayBuffer>> {
    const buffer = this.#free.pop();
    return buffer ? Promise.resolve(buffer) : new Promise((resolve) => this.#waiting.push(resolve));
  }

  give(buffer: Uint8Array<ArrayBuffer>): void {
    const next = this.#waiting.shift();
    if (next) next(buffer);
    else this.#free.push(buffer);
  }
}

/** Waits until the request can take more bytes, or has failed or been answered. */
function drained(request: http.ClientRequest): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      request.off("drain", done);
      request.off("error", done);
      request.off("response", done);
      request.off("close", done);
      resolve();
    };
    request.on("drain", done);
    request.on("error", done);
    request.on("response", done);
    request.on("close", done);
  });
}
