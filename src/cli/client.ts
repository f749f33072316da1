/**
 * The CLI's HTTP client for one node.
 *
 * @module
 */

import { sizedUpload, type SizedUploadOptions, UploadError } from "./upload.ts";

/**
 * A command failed (exit code 1). `code` is stable snake_case; `notes` are
 * printed after the message, and `extra` is merged into the `--json` error
 * object.
 */
export class CommandError extends Error {
  readonly code: string;
  readonly notes: string[] = [];
  readonly extra: Record<string, unknown> = {};

  constructor(code: string, message: string) {
    super(message);
    this.name = "CommandError";
    this.code = code;
  }
}

/** A request to the node failed; the message is the node's error message. */
export class RequestError extends CommandError {
  readonly status: number;
  /** The node's own error object (`{code, message, …}`), when it sent one. */
  readonly body: Record<string, unknown> | null;

  constructor(
    status: number,
    code: string,
    message: string,
    body: Record<string, unknown> | null = null,
  ) {
    super(code, message);
    this.name = "RequestError";
    this.status = status;
    this.body = body;
  }
}

/** Options for {@linkcode NodeClient}. */
export interface NodeClientOptions {
  /** Base URL of the node. */
  node: string;
  /** Bearer token, or undefined. */
  token?: string;
  /** PEM CA certificate(s) to verify an https node against (a private CA). */
  ca?: string;
}

/** An upload of one file: see {@linkcode NodeClient.upload}. */
export type UploadOptions = Omit<SizedUploadOptions, "url" | "method" | "headers">;

/** Talks to a snapmesh node's `/v1` API. */
export class NodeClient {
  readonly node: string;
  readonly #token: string | undefined;
  readonly #ca: string | undefined;
  #client: Deno.HttpClient | undefined;

  constructor(options: NodeClientOptions) {
    this.node = options.node.replace(/\/+$/, "");
    this.#token = options.token;
    this.#ca = options.ca;
  }

  /** URL of an API path (segments are escaped by the caller with {@linkcode segment}). */
  url(path: string): string {
    return `${this.node}${path}`;
  }

  /** Sends a request; non-2xx answers throw {@linkcode RequestError}. */
  async request(method: string, path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.#token) headers.set("Authorization", `Bearer ${this.#token}`);
    let response: Response;
    try {
      if (this.#ca !== undefined) this.#client ??= Deno.createHttpClient({ caCerts: [this.#ca] });
      response = await fetch(this.url(path), {
        ...init,
        method,
        headers,
        ...(this.#client ? { client: this.#client } : {}),
      });
    } catch (err) {
      throw this.#unreachable(err);
    }
    if (response.ok || response.status === 304) return response;
    throw answerError({ method, path }, {
      status: response.status,
      text: await response.text().catch(() => ""),
    });
  }

  /** Sends a request and parses the JSON answer. */
  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = {};
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { "Content-Type": "application/json" };
    }
    const response = await this.request(method, path, init);
    return await response.json() as T;
  }

  /**
   * PUTs a file as one sized body (`Content-Length`, streamed from disk)
   * and parses the JSON answer; non-2xx answers throw {@linkcode RequestError}.
   */
  async upload<T>(path: string, options: UploadOptions): Promise<T> {
    const headers: Record<string, string> = { "Content-Type": "application/octet-stream" };
    if (this.#token) headers["Authorization"] = `Bearer ${this.#token}`;
    let answer;
    try {
      answer = await sizedUpload({
        ...options,
        url: this.url(path),
        method: "PUT",
        headers,
        ...(this.#ca === undefined ? {} : { ca: this.#ca }),
      });
    } catch (err) {
      if (!(err instanceof UploadError)) throw err;
      const code = (err.cause as { code?: string } | undefined)?.code;
      if (code === "ECONNREFUSED" || code === "ENOTFOUND") throw this.#unreachable(err);
      throw new RequestError(
        0,
        "upload_failed",
        `The upload to ${this.node} broke off: ${err.message}`,
      );
    }
    if (answer.status < 200 || answer.status > 299) {
      throw answerError({ method: "PUT", path }, answer);
    }
    return JSON.parse(answer.text) as T;
  }

  #unreachable(err: unknown): RequestError {
    return new RequestError(
      0,
      "unreachable",
      `Cannot reach the node at ${this.node}: ${(err as Error).message}`,
    );
  }
}

/** The error for a non-2xx answer: the node's own when its body is our JSON error. */
function answerError(
  { method, path }: { method: string; path: string },
  { status, text }: { status: number; text: string },
): RequestError {
  try {
    const error = JSON.parse(text)?.error;
    if (typeof error?.message === "string") {
      return new RequestError(status, String(error.code), error.message, error);
    }
  } catch {
    // Not our JSON error body; keep the generic message.
  }
  return new RequestError(status, "http_error", `${method} ${path} answered ${status}`);
}

/** Escapes one path segment. */
export function segment(value: string): string {
  return encodeURIComponent(value);
}
