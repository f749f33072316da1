/**
 * The CLI's HTTP client for one node.
 *
 * @module
 */

/** A request to the node failed; the message is the node's error message. */
export class RequestError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "RequestError";
    this.status = status;
    this.code = code;
  }
}

/** Options for {@linkcode NodeClient}. */
export interface NodeClientOptions {
  /** Base URL of the node. */
  node: string;
  /** Bearer token, or undefined. */
  token?: string;
}

/** Talks to a snapmesh node's `/v1` API. */
export class NodeClient {
  readonly node: string;
  readonly #token: string | undefined;

  constructor(options: NodeClientOptions) {
    this.node = options.node.replace(/\/+$/, "");
    this.#token = options.token;
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
      response = await fetch(this.url(path), { ...init, method, headers });
    } catch (err) {
      throw new RequestError(
        0,
        "unreachable",
        `Cannot reach the node at ${this.node}: ${(err as Error).message}`,
      );
    }
    if (response.ok || response.status === 304) return response;
    let code = "http_error";
    let message = `${method} ${path} answered ${response.status}`;
    try {
      const body = await response.json();
      if (body?.error?.message) {
        code = String(body.error.code);
        message = String(body.error.message);
      }
    } catch {
      // Not our JSON error body; keep the generic message.
    }
    throw new RequestError(response.status, code, message);
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
}

/** Escapes one path segment. */
export function segment(value: string): string {
  return encodeURIComponent(value);
}
