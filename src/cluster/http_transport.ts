/**
 * The node-to-node transport over HTTP: what one agent asks another
 * (`/v1/peer/*`). Redirects are never followed, and nothing is sent to a URL
 * that is not a configured peer. Each request carries this node's peer
 * credentials: a signature with the cluster key, or (with mutual TLS) the
 * client certificate of its HTTP client; the bearer token only in a cluster
 * where peers have no credentials of their own.
 *
 * @module
 */

import { noteTransientBytes } from "../util/gc.ts";
import {
  type Availability,
  type Hello,
  PeerError,
  type PeerManifest,
  type PeerReadRequest,
  type PeerTransport,
} from "./transport.ts";

/** Largest manifest answer accepted from a peer. */
const MAX_MANIFEST_ANSWER = 32 * 1024 * 1024;
/** Largest availability answer accepted from a peer. */
const MAX_AVAILABILITY_ANSWER = 8 * 1024 * 1024;

/** Options for {@linkcode HttpPeerTransport}. */
export interface HttpPeerTransportOptions {
  /** Bearer token sent to peers (only when peers have no credentials of their own). */
  token: string | null;
  /** Headers that sign a request (the cluster key), or null. */
  sign?: ((method: string, url: string) => Record<string, string>) | null;
  /** The HTTP client to use now (a CA and client certificate; it changes on rotation). */
  client?: (() => Deno.HttpClient) | null;
  /** True for URLs of configured peers; requests to others are refused. @default any */
  isPeer?: (url: string) => boolean;
  /** A request or body idle this long is aborted. @default 10000 */
  stallMs?: number;
}

/** Talks to peers over HTTP. */
export class HttpPeerTransport implements PeerTransport {
  readonly #token: string | null;
  readonly #sign: ((method: string, url: string) => Record<string, string>) | null;
  readonly #client: (() => Deno.HttpClient) | null;
  readonly #isPeer: (url: string) => boolean;
  readonly #stallMs: number;

  constructor(options: HttpPeerTransportOptions) {
    this.#token = options.token;
    this.#sign = options.sign ?? null;
    this.#client = options.client ?? null;
    this.#isPeer = options.isPeer ?? (() => true);
    this.#stallMs = options.stallMs ?? 10_000;
  }

  /** `fetch` with this node's credentials, to a configured peer only, never redirected. */
  #fetch(
    url: string,
    path: string,
    init: { method?: string; headers?: Record<string, string>; signal: AbortSignal },
  ): Promise<Response> {
    if (!this.#isPeer(url)) {
      // Reached only by a bug or a peer removed mid-transfer: never leak credentials.
      return Promise.reject(
        new PeerError(0, `refusing to send a request to ${url}: it is not a configured peer`),
      );
    }
    const method = init.method ?? "GET";
    const target = url + path;
    const credentials = this.#sign
      ? this.#sign(method, target)
      : this.#token
      ? { Authorization: `Bearer ${this.#token}` }
      : {};
    const client = this.#client?.();
    return fetch(target, {
      method,
      headers: { ...credentials, ...init.headers },
      signal: init.signal,
      redirect: "manual",
      ...(client ? { client } : {}),
    });
  }

  async hello(url: string, options: { timeoutMs: number }): Promise<Hello> {
    const response = await this.#get(url, "/v1/peer/hello", { timeoutMs: options.timeoutMs });
    return await response.json() as Hello;
  }

  async manifest(
    url: string,
    name: string,
    options: { fetch: boolean; timeoutMs: number },
  ): Promise<PeerManifest | null> {
    const response = await this.#get(
      url,
      `/v1/peer/snapshots/${encodeURIComponent(name)}/manifest${options.fetch ? "?fetch=1" : ""}`,
      { timeoutMs: options.timeoutMs, ok: [404] },
    );
    if (response.status === 404) {
      await response.body?.cancel();
      return null;
    }
    const answer = await readJson(response, MAX_MANIFEST_ANSWER, url) as PeerManifest;
    if (typeof answer?.manifest !== "string") {
      throw new PeerError(502, `peer ${url} sent a manifest answer without a manifest`);
    }
    return answer;
  }

  async availability(
    url: string,
    name: string,
    options: { digest: string; timeoutMs: number },
  ): Promise<Availability | null> {
    const response = await this.#get(
      url,
      `/v1/peer/snapshots/${encodeURIComponent(name)}/have?digest=${options.digest}`,
      { timeoutMs: options.timeoutMs, ok: [404] },
    );
    if (response.status === 404) {
      await response.body?.cancel();
      return null;
    }
    return await readJson(response, MAX_AVAILABILITY_ANSWER, url) as Availability;
  }

  async suspect(
    url: string,
    name: string,
    report: { digest: string; file: string; index: number },
  ): Promise<void> {
    const query = `digest=${report.digest}&file=${encodeURIComponent(report.file)}` +
      `&chunk=${report.index}`;
    const response = await this.#fetch(
      url,
      `/v1/peer/snapshots/${encodeURIComponent(name)}/suspect?${query}`,
      { method: "POST", signal: AbortSignal.timeout(2000) },
    );
    await response.body?.cancel();
  }

  async read(url: string, name: string, request: PeerReadRequest): Promise<Uint8Array> {
    const { digest, file, start, end } = request;
    const options = request;
    const path =
      `/v1/peer/snapshots/${encodeURIComponent(name)}/files/${encodeURIComponent(file)}` +
      `?digest=${digest}${options.wait ? "&wait=1" : ""}`;
    const controller = new AbortController();
    const onAbort = () => controller.abort(options.signal.reason);
    options.signal.addEventListener("abort", onAbort, { once: true });
    // One watchdog for the whole exchange, pushed back by every byte.
    let last = Date.now();
    // A waiting read may legitimately idle while the peer fetches: allow more.
    const limit = options.wait ? this.#stallMs * 6 : this.#stallMs;
    const check = () => {
      const idle = Date.now() - last;
      if (idle < limit) {
        watchdog = setTimeout(check, limit - idle);
        return;
      }
      controller.abort(new Error(`peer ${url} idle for ${limit} ms`));
    };
    let watchdog = setTimeout(check, limit);
    try {
      const response = await this.#fetch(url, path, {
        headers: { Range: `bytes=${start}-${end}` },
        signal: controller.signal,
      });
      if (response.status !== 206 && response.status !== 200) {
        const text = await response.text().catch(() => "");
        throw new PeerError(
          response.status,
          `peer ${url} answered ${response.status}: ${text.slice(0, 200)}`,
        );
      }
      const out = new Uint8Array(end - start + 1);
      let at = 0;
      for await (const chunk of response.body!) {
        last = Date.now();
        if (at + chunk.length > out.length) throw new Error(`peer ${url} sent too many bytes`);
        out.set(chunk, at);
        at += chunk.length;
        noteTransientBytes(chunk.length);
      }
      if (at !== out.length) throw new Error(`peer ${url} sent ${at} of ${out.length} bytes`);
      return out;
    } catch (err) {
      if (controller.signal.aborted && controller.signal.reason instanceof Error) {
        throw controller.signal.reason;
      }
      throw err;
    } finally {
      clearTimeout(watchdog);
      options.signal.removeEventListener("abort", onAbort);
    }
  }

  async #get(
    url: string,
    path: string,
    options: { timeoutMs: number; ok?: number[] },
  ): Promise<Response> {
    const response = await this.#fetch(url, path, {
      signal: AbortSignal.timeout(options.timeoutMs),
    });
    if (response.ok || options.ok?.includes(response.status)) return response;
    const text = await response.text().catch(() => "");
    throw new PeerError(
      response.status,
      `peer ${url} answered ${response.status}: ${text.slice(0, 200)}`,
    );
  }
}

/** Reads a JSON body of at most `max` bytes. */
async function readJson(response: Response, max: number, url: string): Promise<unknown> {
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const part of response.body ?? []) {
    size += part.length;
    if (size > max) {
      // Leaving the loop cancels the body.
      throw new PeerError(502, `peer ${url} sent an answer larger than ${max} bytes`);
    }
    parts.push(part);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new PeerError(502, `peer ${url} sent an answer that is not JSON`);
  }
}
