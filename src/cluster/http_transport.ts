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
  type AnnounceAnswer,
  type AnnounceRequest,
  type Availability,
  decodeBitmap,
  type HaveHandler,
  type Hello,
  PeerError,
  type PeerManifest,
  type PeerReadRequest,
  type PeerTransport,
  type PeerWorkingSet,
  type Subscription,
} from "./transport.ts";

/** Largest manifest answer accepted from a peer. */
const MAX_MANIFEST_ANSWER = 32 * 1024 * 1024;
/** An announce that takes longer than this counts as unanswered. */
const ANNOUNCE_TIMEOUT_MS = 3000;
/** A have stream silent this long is dead (the peer sends a line every few seconds). */
const STREAM_IDLE_MS = 15_000;
/** The reason a subscription was closed by its owner. */
const CLOSED = new Error("subscription closed");
/** Largest availability answer accepted from a peer. */
const MAX_AVAILABILITY_ANSWER = 8 * 1024 * 1024;

/** Options for {@linkcode HttpPeerTransport}. */
export interface HttpPeerTransportOptions {
  /** Bearer token sent to peers (only when peers have no credentials of their own). */
  token: string | null;
  /** This node's id, sent so peers can favour nodes that upload to them. */
  nodeId?: string;
  /** Headers that sign a request (the cluster key), or null. */
  sign?: ((method: string, url: string, body?: Uint8Array | null) => Record<string, string>) | null;
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
  readonly #sign:
    | ((method: string, url: string, body?: Uint8Array | null) => Record<string, string>)
    | null;
  readonly #client: (() => Deno.HttpClient) | null;
  readonly #isPeer: (url: string) => boolean;
  readonly #stallMs: number;
  readonly #nodeId: string | null;

  constructor(options: HttpPeerTransportOptions) {
    this.#token = options.token;
    this.#nodeId = options.nodeId ?? null;
    this.#sign = options.sign ?? null;
    this.#client = options.client ?? null;
    this.#isPeer = options.isPeer ?? (() => true);
    this.#stallMs = options.stallMs ?? 10_000;
  }

  /** `fetch` with this node's credentials, to a configured peer only, never redirected. */
  #fetch(
    url: string,
    path: string,
    init: {
      method?: string;
      headers?: Record<string, string>;
      body?: Uint8Array<ArrayBuffer>;
      signal: AbortSignal;
    },
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
      ? this.#sign(method, target, init.body ?? null)
      : this.#token
      ? { Authorization: `Bearer ${this.#token}` }
      : {};
    // Who asks (upload slots favour peers that reciprocate; never trusted).
    const from: Record<string, string> = this.#nodeId ? { "X-Snapmesh-Node": this.#nodeId } : {};
    const client = this.#client?.();
    return fetch(target, {
      method,
      headers: { ...from, ...credentials, ...init.headers },
      ...(init.body ? { body: init.body } : {}),
      signal: init.signal,
      redirect: "manual",
      ...(client ? { client } : {}),
    });
  }

  async hello(url: string, options: { timeoutMs: number }): Promise<Hello> {
    const response = await this.#get(url, "/v1/peer/hello", { timeoutMs: options.timeoutMs });
    return await response.json() as Hello;
  }

  async probe(url: string, target: string, options: { timeoutMs: number }): Promise<boolean> {
    const response = await this.#get(
      url,
      `/v1/peer/probe?target=${encodeURIComponent(target)}`,
      { timeoutMs: options.timeoutMs },
    );
    const answer = await readJson(response, MAX_AVAILABILITY_ANSWER, url) as { reached?: unknown };
    return answer?.reached === true;
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

  async workingSet(
    url: string,
    name: string,
    options: { digest: string; timeoutMs: number },
  ): Promise<PeerWorkingSet | null> {
    const response = await this.#get(
      url,
      `/v1/peer/snapshots/${encodeURIComponent(name)}/workingset?digest=${options.digest}`,
      { timeoutMs: options.timeoutMs, ok: [404] },
    );
    if (response.status === 404) {
      await response.body?.cancel();
      return null;
    }
    return await readJson(response, MAX_AVAILABILITY_ANSWER, url) as PeerWorkingSet;
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

  async announce(url: string, name: string, request: AnnounceRequest): Promise<AnnounceAnswer> {
    const response = await this.#fetch(
      url,
      `/v1/peer/snapshots/${encodeURIComponent(name)}/announce?digest=${request.digest}`,
      {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: new TextEncoder().encode(JSON.stringify(request.peer)),
        signal: AbortSignal.timeout(ANNOUNCE_TIMEOUT_MS),
      },
    );
    if (!response.ok) {
      const text = await response.text().catch(() => "");
      throw new PeerError(
        response.status,
        `peer ${url} answered ${response.status}: ${text.slice(0, 200)}`,
      );
    }
    const answer = await readJson(response, MAX_AVAILABILITY_ANSWER, url) as AnnounceAnswer;
    if (!Array.isArray(answer?.peers)) {
      throw new PeerError(502, `peer ${url} sent an announce answer without peers`);
    }
    return answer;
  }

  subscribe(
    url: string,
    name: string,
    options: { digest: string; handler: HaveHandler },
  ): Subscription {
    const { digest, handler } = options;
    const controller = new AbortController();
    let ended = false;
    const end = (reason: "complete" | "closed" | Error) => {
      if (ended) return;
      ended = true;
      handler.end(reason);
    };
    (async () => {
      // The stream sends a line at least every few seconds: silence means
      // the peer (or the path to it) is gone.
      let last = Date.now();
      const watchdog = setInterval(() => {
        if (Date.now() - last > STREAM_IDLE_MS) {
          controller.abort(new Error(`peer ${url}: have stream idle for ${STREAM_IDLE_MS} ms`));
        }
      }, STREAM_IDLE_MS / 3);
      Deno.unrefTimer(watchdog);
      try {
        const response = await this.#fetch(
          url,
          `/v1/peer/snapshots/${encodeURIComponent(name)}/events?digest=${digest}`,
          { signal: controller.signal },
        );
        if (response.status === 404) {
          await response.body?.cancel();
          end("closed");
          return;
        }
        if (!response.ok || !response.body) {
          const text = await response.text().catch(() => "");
          throw new PeerError(response.status, `peer ${url} answered ${response.status}: ${text}`);
        }
        const decoder = new TextDecoder();
        let pending = "";
        for await (const piece of response.body) {
          last = Date.now();
          pending += decoder.decode(piece, { stream: true });
          if (pending.length > MAX_AVAILABILITY_ANSWER) {
            throw new PeerError(502, `peer ${url} sent a have line that is too long`);
          }
          let newline: number;
          while ((newline = pending.indexOf("\n")) >= 0) {
            const line = pending.slice(0, newline).trim();
            pending = pending.slice(newline + 1);
            if (line === "" || ended) continue;
            const event = JSON.parse(line) as {
              bitmap?: string;
              all?: boolean;
              have?: number[];
              complete?: boolean;
            };
            if (event.all) handler.bitmap("all");
            else if (typeof event.bitmap === "string") handler.bitmap(decodeBitmap(event.bitmap));
            if (Array.isArray(event.have)) {
              handler.have(event.have.filter((c) => Number.isSafeInteger(c) && c >= 0));
            }
            if (event.complete) end("complete");
          }
        }
        end("closed");
      } catch (err) {
        if (controller.signal.aborted && controller.signal.reason === CLOSED) return;
        const reason = controller.signal.aborted ? controller.signal.reason : err;
        end(reason instanceof Error ? reason : new Error(String(reason)));
      } finally {
        clearInterval(watchdog);
      }
    })();
    return {
      close: () => {
        ended = true;
        controller.abort(CLOSED);
      },
    };
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
