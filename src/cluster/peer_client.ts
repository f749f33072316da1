/**
 * The node-to-node client: what one agent asks another (`/v1/peer/*`).
 *
 * @module
 */

import { SnapmeshError } from "../errors.ts";
import { noteTransientBytes } from "../util/gc.ts";

/** A peer's answer to hello. */
export interface Hello {
  nodeId: string;
  version: string;
  advertise: string;
}

/** Which chunks of a snapshot a peer has verified. */
export interface Availability {
  digest: string;
  complete: boolean;
  /** Per file: base64 bitmap of verified chunks (bit i = chunk i); absent when complete. */
  have: Record<string, string>;
  /**
   * Per file: chunks the node is fetching from the owner right now. Others
   * leave those to it (and take them from it afterwards) instead of asking
   * the owner for the same chunk.
   */
  pending?: Record<string, string>;
}

/** A peer's manifest answer: the canonical manifest text and what it holds. */
export interface PeerManifest extends Availability {
  manifest: string;
}

/** Largest manifest answer accepted from a peer. */
const MAX_MANIFEST_ANSWER = 32 * 1024 * 1024;
/** Largest availability answer accepted from a peer. */
const MAX_AVAILABILITY_ANSWER = 8 * 1024 * 1024;

/**
 * True for failures that say the peer cannot be reached (refused, reset,
 * unreachable), as opposed to an answer we did not like or a slow one.
 */
export function isConnectionError(err: unknown): boolean {
  // Deno's fetch rejects with a TypeError when the connection fails.
  return err instanceof TypeError;
}

/** A peer refused us (wrong token) or broke the protocol. */
export class PeerError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "PeerError";
    this.status = status;
  }
}

/** Options for {@linkcode PeerClient}. */
export interface PeerClientOptions {
  token: string | null;
  /** A request or body idle this long is aborted. @default 10000 */
  stallMs?: number;
}

/** Talks to one peer. */
export class PeerClient {
  readonly url: string;
  readonly #token: string | null;
  readonly #stallMs: number;

  constructor(url: string, options: PeerClientOptions) {
    this.url = url.replace(/\/+$/, "");
    this.#token = options.token;
    this.#stallMs = options.stallMs ?? 10_000;
  }

  async hello(timeoutMs: number): Promise<Hello> {
    const response = await this.#get("/v1/peer/hello", timeoutMs);
    return await response.json() as Hello;
  }

  /**
   * The peer's manifest of `name`, or null when it has none. With `fetch`, an
   * owner that misses starts its own pull and answers once the manifest is known.
   */
  async manifest(name: string, fetch: boolean, timeoutMs: number): Promise<PeerManifest | null> {
    const response = await this.#get(
      `/v1/peer/snapshots/${encodeURIComponent(name)}/manifest${fetch ? "?fetch=1" : ""}`,
      timeoutMs,
      [404],
    );
    if (response.status === 404) {
      await response.body?.cancel();
      return null;
    }
    const answer = await readJson(response, MAX_MANIFEST_ANSWER, this.url) as PeerManifest;
    if (typeof answer?.manifest !== "string") {
      throw new PeerError(502, `peer ${this.url} sent a manifest answer without a manifest`);
    }
    return answer;
  }

  /** Which chunks of `name` at `digest` the peer holds, or null. */
  async availability(
    name: string,
    digest: string,
    timeoutMs: number,
  ): Promise<Availability | null> {
    const response = await this.#get(
      `/v1/peer/snapshots/${encodeURIComponent(name)}/have?digest=${digest}`,
      timeoutMs,
      [404],
    );
    if (response.status === 404) {
      await response.body?.cancel();
      return null;
    }
    return await readJson(response, MAX_AVAILABILITY_ANSWER, this.url) as Availability;
  }

  /**
   * Tells the peer that chunk `index` of `file` it sent failed verification
   * here, so it checks its own copy (it never takes our word for it).
   */
  async suspect(name: string, digest: string, file: string, index: number): Promise<void> {
    const query = `digest=${digest}&file=${encodeURIComponent(file)}&chunk=${index}`;
    const response = await fetch(
      `${this.url}/v1/peer/snapshots/${encodeURIComponent(name)}/suspect?${query}`,
      { method: "POST", headers: this.#headers(), signal: AbortSignal.timeout(2000) },
    );
    await response.body?.cancel();
  }

  /**
   * Bytes `start..end` of a file of snapshot `name` at `digest`. With
   * `wait`, the peer waits for chunks its own pull has not verified yet.
   */
  async read(
    name: string,
    digest: string,
    file: string,
    start: number,
    end: number,
    options: { wait: boolean; signal: AbortSignal },
  ): Promise<Uint8Array> {
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
      controller.abort(new Error(`peer ${this.url} idle for ${limit} ms`));
    };
    let watchdog = setTimeout(check, limit);
    try {
      const response = await fetch(this.url + path, {
        headers: this.#headers({ Range: `bytes=${start}-${end}` }),
        signal: controller.signal,
      });
      if (response.status !== 206 && response.status !== 200) {
        const text = await response.text().catch(() => "");
        throw new PeerError(
          response.status,
          `peer ${this.url} answered ${response.status}: ${text.slice(0, 200)}`,
        );
      }
      const out = new Uint8Array(end - start + 1);
      let at = 0;
      for await (const chunk of response.body!) {
        last = Date.now();
        if (at + chunk.length > out.length) throw new Error(`peer ${this.url} sent too many bytes`);
        out.set(chunk, at);
        at += chunk.length;
        noteTransientBytes(chunk.length);
      }
      if (at !== out.length) throw new Error(`peer ${this.url} sent ${at} of ${out.length} bytes`);
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

  #headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.#token ? { Authorization: `Bearer ${this.#token}`, ...extra } : extra;
  }

  async #get(path: string, timeoutMs: number, ok: number[] = []): Promise<Response> {
    const response = await fetch(this.url + path, {
      headers: this.#headers(),
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (response.ok || ok.includes(response.status)) return response;
    const text = await response.text().catch(() => "");
    throw new PeerError(
      response.status,
      `peer ${this.url} answered ${response.status}: ${text.slice(0, 200)}`,
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

/** Packs a chunk state array (true = verified) into base64. */
export function encodeBitmap(bits: ArrayLike<boolean>): string {
  const bytes = new Uint8Array(Math.ceil(bits.length / 8));
  for (let i = 0; i < bits.length; i++) if (bits[i]) bytes[i >> 3]! |= 1 << (i & 7);
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

/** Unpacks a base64 bitmap. */
export function decodeBitmap(text: string): Uint8Array {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new SnapmeshError("invalid_body", "Invalid availability bitmap");
  }
}

/** True when bit `index` is set. */
export function hasBit(bitmap: Uint8Array, index: number): boolean {
  return ((bitmap[index >> 3] ?? 0) & (1 << (index & 7))) !== 0;
}
