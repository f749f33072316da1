/**
 * A small HTTP proxy in front of the S3 server that counts what the origin
 * sends and injects faults: 503 bursts, connections reset mid-body, bodies
 * that stall, requests that are never answered ("hang", until `clear()`),
 * flipped bytes. Requests go upstream through node:http so the
 * Host header (part of the SigV4 signature) is kept as the client sent it.
 *
 * @module
 */

import http from "node:http";

/** One kind of fault, applied to the next `times` matching requests. */
export interface FaultRule {
  kind: "status" | "reset" | "stall" | "flip" | "trickle" | "hang";
  /** Requests it applies to. @default every request */
  method?: string;
  path?: RegExp;
  /** How many matching requests get it. @default Infinity */
  times?: number;
  /** Matching requests let through untouched before the rule applies. @default 0 */
  skip?: number;
  /** For "status". @default 503 */
  status?: number;
  /** Body offset where a reset, stall or flip happens. @default 0 */
  afterBytes?: number;
  /** For "flip": flip again every this many bytes after the first. */
  every?: number;
  /** For "trickle": bytes sent per tick. @default 16384 */
  sliceBytes?: number;
  /** For "trickle": pause between slices. @default 100 */
  intervalMs?: number;
}

/** A request the proxy saw. */
export interface SeenRequest {
  method: string;
  path: string;
  status: number;
  fault: FaultRule["kind"] | null;
}

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
]);

/** The proxy. */
export class FaultProxy implements AsyncDisposable {
  readonly url: string;
  readonly seen: SeenRequest[] = [];
  /** Body bytes sent to clients for GETs answered 200 or 206. */
  getBytes = 0;
  #rules: (FaultRule & { left: number })[] = [];
  readonly #server: Deno.HttpServer;
  readonly #stalls = new Set<() => void>();

  private constructor(server: Deno.HttpServer, url: string) {
    this.#server = server;
    this.url = url;
  }

  /** Starts a proxy on 127.0.0.1:0 forwarding to `upstream`. */
  static start(upstream: string): Promise<FaultProxy> {
    const target = new URL(upstream);
    const holder: { proxy?: FaultProxy } = {};
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => holder.proxy!.#handle(req, target),
    );
    holder.proxy = new FaultProxy(server, `http://127.0.0.1:${server.addr.port}`);
    return Promise.resolve(holder.proxy);
  }

  /** Adds a fault rule. */
  add(rule: FaultRule): void {
    this.#rules.push({ ...rule, left: rule.times ?? Infinity });
  }

  /** Removes every rule and releases stalled responses. */
  clear(): void {
    this.#rules = [];
    for (const release of this.#stalls) release();
    this.#stalls.clear();
  }

  resetCounters(): void {
    this.getBytes = 0;
    this.seen.length = 0;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.clear();
    await this.#server.shutdown();
  }

  #take(method: string, path: string): FaultRule | null {
    for (const rule of this.#rules) {
      if (rule.left <= 0) continue;
      if (rule.method && rule.method !== method) continue;
      if (rule.path && !rule.path.test(path)) continue;
      if (rule.skip && rule.skip > 0) {
        rule.skip--;
        return null;
      }
      rule.left--;
      return rule;
    }
    return null;
  }

  async #handle(req: Request, target: URL): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname + url.search;
    const rule = this.#take(req.method, url.pathname);
    if (rule?.kind === "status") {
      const status = rule.status ?? 503;
      await req.body?.cancel();
      this.seen.push({ method: req.method, path, status, fault: "status" });
      return new Response(
        `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>` +
          `<Message>Please reduce your request rate (injected)</Message></Error>`,
        { status, headers: { "Content-Type": "application/xml" } },
      );
    }
    if (rule?.kind === "hang") {
      // Neither read the request body nor answer, until clear().
      this.seen.push({ method: req.method, path, status: 503, fault: "hang" });
      await new Promise<void>((resolve) => this.#stalls.add(resolve));
      await req.body?.cancel().catch(() => {});
      return new Response(null, { status: 503 });
    }
    const body = req.body ? new Uint8Array(await req.arrayBuffer()) : null;
    const headers: Record<string, string> = {};
    req.headers.forEach((value, key) => {
      if (!HOP_BY_HOP.has(key)) headers[key] = value;
    });
    if (body) headers["content-length"] = String(body.length);
    const upstream = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const r = http.request({
        host: target.hostname,
        port: Number(target.port),
        method: req.method,
        path,
        headers,
      }, resolve);
      r.on("error", reject);
      if (body) r.write(body);
      r.end();
    });
    const status = upstream.statusCode ?? 502;
    this.seen.push({ method: req.method, path, status, fault: rule?.kind ?? null });
    const responseHeaders = new Headers();
    for (const [key, value] of Object.entries(upstream.headers)) {
      if (HOP_BY_HOP.has(key) || value === undefined) continue;
      responseHeaders.set(key, Array.isArray(value) ? value.join(", ") : value);
    }
    if (req.method === "HEAD" || status === 204 || status === 304) {
      upstream.resume();
      return new Response(null, { status, headers: responseHeaders });
    }
    const counted = req.method === "GET" && (status === 200 || status === 206);
    const at = rule?.afterBytes ?? 0;
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      start: (controller) => {
        if (rule?.kind === "trickle") {
          // Slow but steady: small slices with pauses between them.
          const slice = rule.sliceBytes ?? 16384;
          const interval = rule.intervalMs ?? 100;
          let chain = Promise.resolve();
          let closed = false;
          upstream.on("data", (chunk: Uint8Array) => {
            const copy = new Uint8Array(chunk);
            upstream.pause();
            chain = chain.then(async () => {
              for (let at = 0; at < copy.length && !closed; at += slice) {
                await new Promise((r) => setTimeout(r, interval));
                const part = copy.subarray(at, at + slice);
                try {
                  controller.enqueue(part);
                } catch {
                  closed = true;
                  return;
                }
                sent += part.length;
                if (counted) this.getBytes += part.length;
              }
              upstream.resume();
            });
          });
          upstream.on("end", () => {
            chain = chain.then(() => {
              try {
                controller.close();
              } catch {
                // Cancelled.
              }
            });
          });
          upstream.on("error", (err) => {
            closed = true;
            try {
              controller.error(err);
            } catch {
              // Already closed.
            }
          });
          return;
        }
        upstream.on("data", (chunk: Uint8Array) => {
          let piece = new Uint8Array(chunk);
          if (
            rule && (rule.kind === "reset" || rule.kind === "stall") && sent + piece.length > at
          ) {
            piece = piece.subarray(0, Math.max(0, at - sent));
          }
          if (rule?.kind === "flip") {
            for (let p = at; p < sent + piece.length; p += rule.every ?? Infinity) {
              if (p >= sent) piece[p - sent]! ^= 0xff;
            }
          }
          if (piece.length > 0) controller.enqueue(piece);
          sent += piece.length;
          if (counted) this.getBytes += piece.length;
          if (rule && (rule.kind === "reset" || rule.kind === "stall") && sent >= at) {
            upstream.destroy();
            if (rule.kind === "reset") {
              controller.error(new Error("injected connection reset"));
            } else {
              // Hold the response open, sending nothing, until the client
              // gives up or the test clears the rules.
              const release = () => {
                try {
                  controller.error(new Error("stall released"));
                } catch {
                  // Already closed.
                }
              };
              this.#stalls.add(release);
            }
          }
        });
        upstream.on("end", () => {
          try {
            controller.close();
          } catch {
            // Already errored by a fault.
          }
        });
        upstream.on("error", (err) => {
          try {
            controller.error(err);
          } catch {
            // Already closed.
          }
        });
      },
      cancel: () => {
        upstream.destroy();
      },
    });
    return new Response(stream, { status, headers: responseHeaders });
  }
}
