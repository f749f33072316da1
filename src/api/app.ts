/**
 * The HTTP API (DESIGN.md §3). Routes parse and validate, call the agent,
 * and map results; errors are mapped in `onError` only.
 *
 * @module
 */

import { type Context, Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { Agent } from "../agent/mod.ts";
import { encodeBytes } from "../cluster/mod.ts";
import { type ErrorCode, hasCode, SnapmeshError } from "../errors.ts";
import { BodyAbortedError, bytesResponse, type HttpRequestInfo } from "../http/mod.ts";
import { assertName } from "../manifest/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import { parseRange, streamSource } from "../store/mod.ts";
import { type AuthOptions, authorize, type Role } from "./auth.ts";
import { HttpError } from "./errors.ts";
import { STATUS_PAGE } from "./status_page.ts";

/** Dependencies of {@linkcode createApp}. */
export interface AppDeps {
  /** Resolves with the agent once recovery finished. */
  agent: Promise<Agent>;
  /** True once `agent` has resolved. */
  isReady(): boolean;
  /** Why a ready agent cannot take changes now (`/readyz` answers 503), or null. */
  notReadyReason?(): string | null;
  /** The full-access token (used when `auth` is not given: one token opens everything). */
  token?: string | null;
  /** Roles: full and read tokens, and how peers authenticate. @default from `token` */
  auth?: AuthOptions;
  metrics: Metrics;
  log: Logger;
  nodeId: string;
  version: string;
  /** Aborted when the agent shuts down: event streams end. */
  shutdown?: AbortSignal;
  /** How long `/v1` requests wait for recovery before 503. @default 30000 */
  readyTimeoutMs?: number;
}

type Env = {
  Bindings: Partial<HttpRequestInfo>;
  Variables: { agent: Agent; requestId: string; expected: boolean; role: Role };
};

const MAX_JSON_BODY = 1024 * 1024;
/** Deepest nesting of arrays and objects accepted in a JSON body. */
const MAX_JSON_DEPTH = 64;
/** Answers that report a state, not a fault: logged at debug. */
const EXPECTED: ReadonlySet<ErrorCode> = new Set(["not_ready", "shutting_down"]);
const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** Builds the Hono app. Touches no `Deno.*` API. */
export function createApp(deps: AppDeps): Hono<Env> {
  const app = new Hono<Env>();
  const { metrics, log } = deps;

  app.use(async function observe(c, next) {
    const started = performance.now();
    const inbound = c.req.header("x-request-id");
    const requestId = inbound && REQUEST_ID.test(inbound) ? inbound : crypto.randomUUID();
    c.set("requestId", requestId);
    await next();
    c.res.headers.set("X-Request-Id", requestId);
    const matched = c.res.status !== 404 && c.res.status !== 405;
    const route = c.req.routePath && matched ? c.req.routePath : "unmatched";
    const seconds = (performance.now() - started) / 1000;
    metrics.httpRequests.inc({ method: c.req.method, route, status: String(c.res.status) });
    metrics.httpDuration.observe({ method: c.req.method, route }, seconds);
    const quiet = c.get("expected") ||
      ((c.req.method === "GET" || c.req.method === "HEAD") && c.res.status < 400);
    (quiet ? log.debug : log.info)("http", {
      requestId,
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ms: Math.round(seconds * 1000),
    });
  });

  app.onError((err, c) => {
    const httpError = HttpError.from(err);
    const fields = () => ({
      requestId: c.get("requestId"),
      method: c.req.method,
      path: c.req.path,
      code: httpError.code,
      error: err,
    });
    if (EXPECTED.has(httpError.code)) {
      c.set("expected", true);
      log.debug("request refused", fields());
    } else if (err instanceof BodyAbortedError) {
      log.warn("request body ended early", fields());
    } else if (httpError.status >= 500 && httpError.code !== "insufficient_storage") {
      log.error("request failed", {
        ...fields(),
        stack: err instanceof Error && !(err instanceof SnapmeshError) ? err.stack : undefined,
      });
    }
    return httpError.toResponse();
  });

  // Filled once every route is registered: the methods each path pattern answers.
  let routes: RouteMethods = [];
  app.notFound((c) => unmatched(c.req.method, c.req.path, routes));

  // The status page: public, it holds no data; its script reads /v1 with the token.
  app.get("/", () => new Response(STATUS_PAGE.html, { headers: STATUS_PAGE.headers }));
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", (c) => {
    if (!deps.isReady()) throw new SnapmeshError("not_ready", "Recovery has not finished");
    const why = deps.notReadyReason?.() ?? null;
    if (why !== null) throw new SnapmeshError("not_ready", `Not ready: ${why}`);
    return c.json({ status: "ready" });
  });
  app.get(
    "/metrics",
    async () =>
      new Response(await metrics.render(), { headers: { "Content-Type": metrics.contentType } }),
  );

  const v1 = new Hono<Env>();
  v1.use(authorize(
    deps.auth ?? {
      token: deps.token ?? null,
      readToken: null,
      peer: { kind: "legacy" },
      verifier: null,
    },
  ));
  // Once recovery is over, the agent is taken as it is: no promise per request.
  let agentNow: Agent | null = null;
  deps.agent.then((agent) => (agentNow = agent), () => {});
  v1.use(async function waitForRecovery(c, next) {
    c.set("agent", agentNow !== null && deps.isReady() ? agentNow : await readyAgent(deps));
    await next();
  });

  v1.put("/snapshots/:name/files/:file", async (c) => {
    const { name, file } = c.req.param();
    const result = await c.get("agent").stageFile(name, file, c.req.raw.body, {
      contentLength: contentLength(c),
    });
    return c.json(result, 201);
  });

  v1.post("/snapshots/:name/files/:file/import", async (c) => {
    const { name, file } = c.req.param();
    const body = await jsonBody(c);
    const result = await c.get("agent").importFile(name, file, body.path);
    return c.json(result, 201);
  });

  v1.post("/snapshots/:name/commit", async (c) => {
    const body = await jsonBody(c);
    const { manifest, created } = await c.get("agent").commit(c.req.param("name"), {
      labels: body.labels,
      hot: body.hot,
    });
    return c.json(manifest, created ? 201 : 200);
  });

  v1.delete("/snapshots/:name/draft", async (c) => {
    return c.json(await c.get("agent").dropDraft(c.req.param("name")));
  });

  v1.get("/snapshots", async (c) => c.json(await c.get("agent").listDetailed()));

  v1.get(
    "/snapshots/:name",
    async (c) => c.json(await c.get("agent").manifest(c.req.param("name"))),
  );

  v1.on(["GET", "HEAD"], "/snapshots/:name/files/:file", async (c) => {
    const { name, file } = c.req.param();
    const agent = c.get("agent");
    if (c.req.method === "HEAD") {
      // Headers only: no pull is started for a snapshot that is not local.
      const info = await agent.describeFile(name, file);
      const { status, headers } = fileHeaders(c, info);
      return new Response(null, { status, headers });
    }
    // A local copy whose first chunk fails verification is quarantined at
    // once; the request is then served from another source (read-through).
    for (let attempt = 0;; attempt++) {
      const opened = await agent.openFile(name, file);
      try {
        const { status, headers, range } = fileHeaders(c, opened);
        if (status === 304 || range.end < range.start) {
          opened.close();
          return new Response(null, { status, headers });
        }
        // Waits for the first byte, so a pull that fails now gets an error status.
        const body = await opened.body(range.start, range.end);
        return body instanceof Uint8Array
          ? bytesResponse(body, { status, headers })
          : new Response(body, { status, headers });
      } catch (err) {
        opened.close();
        if (attempt === 0 && opened.source === "local" && hasCode(err, "verification_failed")) {
          continue;
        }
        throw err;
      }
    }
  });

  v1.post("/snapshots/:name/pull", async (c) => {
    const wait = c.req.query("wait") !== "false";
    const hot = c.req.query("hot") === "true";
    const result = await c.get("agent").pull(c.req.param("name"), { wait, hot });
    return c.json(result, "state" in result ? 202 : 200);
  });

  v1.post("/snapshots/:name/verify", async (c) => {
    return c.json(await c.get("agent").verify(c.req.param("name")));
  });

  v1.delete("/snapshots/:name", async (c) => {
    const force = c.req.query("force") === "true";
    const origin = c.req.query("origin") === "true";
    const result = await c.get("agent").remove(c.req.param("name"), { force, origin });
    return c.json({ ...result, removed: true });
  });

  v1.put("/snapshots/:name/pin", async (c) => {
    return c.json(await c.get("agent").setPinned(c.req.param("name"), true));
  });

  v1.delete("/snapshots/:name/pin", async (c) => {
    return c.json(await c.get("agent").setPinned(c.req.param("name"), false));
  });

  v1.post("/snapshots/:name/restore", async (c) => {
    const body = await jsonBody(c);
    return c.json(await c.get("agent").restore(c.req.param("name"), body), 201);
  });

  v1.get("/restores", (c) => c.json(c.get("agent").restoreStatus()));

  v1.delete("/restores/:id", async (c) => {
    return c.json(await c.get("agent").endRestore(c.req.param("id")));
  });

  v1.get("/snapshots/:name/workingset", async (c) => {
    return c.json(await c.get("agent").workingSet(c.req.param("name")));
  });

  v1.put("/snapshots/:name/workingset", async (c) => {
    const body = await jsonBody(c);
    return c.json(await c.get("agent").setWorkingSet(c.req.param("name"), body));
  });

  v1.get("/pulls", (c) => c.json(c.get("agent").pullStatus()));

  // Server-sent events: the same list, twice a second, while the client listens.
  v1.get("/pulls/events", (c) => {
    const agent = c.get("agent");
    return streamSSE(c, async (stream) => {
      let id = 0;
      let open = true;
      stream.onAbort(() => {
        open = false;
      });
      while (open && !deps.shutdown?.aborted) {
        await stream.writeSSE({
          event: "pulls",
          id: String(id++),
          data: JSON.stringify(agent.pullStatus()),
        });
        await stream.sleep(500);
      }
    });
  });

  v1.get("/status", (c) => {
    const agent = c.get("agent");
    return c.json({
      nodeId: deps.nodeId,
      version: deps.version,
      uptime: Math.round((Date.now() - agent.startedAt) / 1000),
      ready: deps.isReady(),
      dataDir: agent.config.dataDir,
      // What a client checks before it sends a file (snapmesh put).
      limits: { maxFileSize: agent.config.maxFileSize, chunkSize: agent.config.chunkSize },
      cache: agent.cacheStatus(),
      peers: agent.peerStatus(),
      origin: agent.originStatus(),
      pulls: agent.pullStatus(),
      restores: agent.restoreStatus(),
      journal: agent.journalStatus(),
    });
  });

  // Node to node: peers only (see auth.ts). Documented in the README.
  v1.get("/peer/hello", (c) => c.json(c.get("agent").peerHello()));

  v1.get("/peer/probe", async (c) => {
    const target = c.req.query("target");
    if (!target || target.length > 2048) {
      throw new SnapmeshError("invalid_body", "target must be a peer URL");
    }
    return c.json({ reached: await c.get("agent").peerProbe(target) });
  });

  v1.get("/peer/snapshots/:name/manifest", async (c) => {
    const answer = await c.get("agent").peerManifest(
      c.req.param("name"),
      c.req.query("fetch") === "1",
    );
    if (answer === null) throw new SnapmeshError("snapshot_not_found", "Not here");
    return c.json(answer);
  });

  v1.get("/peer/snapshots/:name/have", (c) => {
    const answer = c.get("agent").peerAvailability(c.req.param("name"), digestParam(c));
    if (answer === null) throw new SnapmeshError("snapshot_not_found", "Not here");
    return c.json(answer);
  });

  v1.post("/peer/snapshots/:name/suspect", (c) => {
    const index = Number(c.req.query("chunk"));
    const file = c.req.query("file") ?? "";
    if (!Number.isSafeInteger(index) || index < 0) {
      throw new SnapmeshError("invalid_body", "Query parameter chunk must be a chunk index");
    }
    c.get("agent").peerSuspect(c.req.param("name"), { digest: digestParam(c), file, index });
    return c.json({ accepted: true }, 202);
  });

  v1.post("/peer/snapshots/:name/announce", async (c) => {
    const body = await jsonBody(c);
    const answer = c.get("agent").peerAnnounce(c.req.param("name"), {
      digest: digestParam(c),
      peer: body as never,
    });
    return c.json(answer);
  });

  // A have stream: newline-delimited JSON, a line at least every 5 s.
  v1.get("/peer/snapshots/:name/events", (c) => {
    const agent = c.get("agent");
    const name = c.req.param("name");
    const digest = digestParam(c);
    const encoder = new TextEncoder();
    let subscription: { close(): void } | null = null;
    let heartbeat: ReturnType<typeof setInterval> | undefined;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        const send = (event: unknown) => {
          try {
            controller.enqueue(encoder.encode(JSON.stringify(event) + "\n"));
          } catch {
            // The stream is closed.
          }
        };
        const stop = () => {
          clearInterval(heartbeat);
          try {
            controller.close();
          } catch {
            // Already closed.
          }
        };
        subscription = agent.peerSubscribe(name, digest, {
          bitmap: (bits) => send(bits === "all" ? { all: true } : { bitmap: encodeBytes(bits) }),
          have: (chunks) => send({ have: chunks }),
          end: (reason) => {
            if (reason === "complete") send({ complete: true });
            stop();
          },
        });
        if (subscription === null) throw new SnapmeshError("snapshot_not_found", "Not here");
        heartbeat = setInterval(() => send({ ping: 1 }), 5000);
        deps.shutdown?.addEventListener("abort", () => {
          subscription?.close();
          stop();
        }, { once: true });
      },
      cancel() {
        clearInterval(heartbeat);
        subscription?.close();
      },
    });
    return new Response(stream, { headers: { "Content-Type": "application/x-ndjson" } });
  });

  v1.get("/peer/snapshots/:name/workingset", async (c) => {
    const answer = await c.get("agent").peerWorkingSet(c.req.param("name"), digestParam(c));
    if (answer === null) throw new SnapmeshError("not_found", "No working set here");
    return c.json(answer);
  });

  v1.get("/peer/snapshots/:name/files/:file", async (c) => {
    const { name, file } = c.req.param();
    const read = await c.get("agent").peerRead(name, {
      digest: digestParam(c),
      file,
      range: c.req.header("range"),
      wait: c.req.query("wait") === "1",
      from: c.req.header("x-snapmesh-node") ?? null,
    });
    return new Response(read.stream, {
      status: 206,
      headers: {
        "Content-Type": "application/octet-stream",
        "Content-Length": String(read.end - read.start + 1),
        "Content-Range": `bytes ${read.start}-${read.end}/${read.size}`,
      },
    });
  });

  app.route("/v1", v1);
  routes = routeMethods(app.routes);
  return app;
}

/** Path patterns (as regular expressions) and the methods registered on each. */
type RouteMethods = { pattern: RegExp; methods: string[] }[];

/** The route table, derived from what the app registered (middleware aside). */
function routeMethods(registered: readonly { method: string; path: string }[]): RouteMethods {
  const byPath = new Map<string, string[]>();
  for (const { method, path } of registered) {
    if (method === "ALL") continue; // middleware
    const methods = byPath.get(path) ?? [];
    if (!methods.includes(method)) methods.push(method);
    byPath.set(path, methods);
  }
  return [...byPath].map(([path, methods]) => ({
    pattern: new RegExp(
      "^" +
        path.split("/").map((segment) =>
          segment.startsWith(":")
            ? "[^/]+"
            : segment === "*"
            ? ".*"
            : segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
        ).join("/") + "$",
    ),
    methods,
  }));
}

/**
 * A request no route took. Names in a /v1/snapshots path are checked first,
 * so a path trick gets invalid_name whatever the method; then a known path
 * answers 405 with `Allow`, an unknown one 404.
 */
function unmatched(method: string, path: string, routes: RouteMethods): Response {
  try {
    if (path.startsWith("/v1/snapshots/")) {
      const segments = path.split("/").slice(3).map(decodeSegment);
      assertName("snapshot", segments[0] ?? "");
      if (segments[1] === "files" && segments[2] !== undefined) assertName("file", segments[2]);
    }
  } catch (err) {
    return HttpError.from(err).toResponse();
  }
  const allowed = routes.filter((r) => r.pattern.test(path)).flatMap((r) => r.methods);
  if (allowed.length > 0) {
    const allow = [...new Set(allowed)].join(", ");
    return new HttpError(
      "method_not_allowed",
      `${method} is not allowed on ${path}; use ${allow}`,
      {
        headers: { Allow: allow },
      },
    ).toResponse();
  }
  return new HttpError("not_found", `No route for ${method} ${path}`).toResponse();
}

async function readyAgent(deps: AppDeps): Promise<Agent> {
  if (deps.isReady()) return await deps.agent;
  const timeout = deps.readyTimeoutMs ?? 30_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new SnapmeshError("not_ready", "The agent is still recovering; retry soon")),
      timeout,
    );
  });
  try {
    return await Promise.race([deps.agent, expired]);
  } finally {
    clearTimeout(timer);
  }
}

function digestParam(c: Context): string {
  const digest = c.req.query("digest") ?? "";
  if (!/^[0-9a-f]{64}$/.test(digest)) {
    throw new SnapmeshError(
      "invalid_body",
      "Query parameter digest must be 64 lowercase hex digits",
    );
  }
  return digest;
}

function contentLength(c: Context): number | null {
  const header = c.req.header("content-length");
  if (header === undefined) return null;
  if (!/^\d{1,16}$/.test(header)) {
    throw new SnapmeshError("invalid_body", `Invalid Content-Length ${JSON.stringify(header)}`);
  }
  return Number(header);
}

async function jsonBody(c: Context): Promise<Record<string, unknown>> {
  const length = contentLength(c);
  if (length !== null && length > MAX_JSON_BODY) throw tooBigBody();
  const bytes = c.req.raw.body ? await readCapped(c.req.raw.body, length) : new Uint8Array(0);
  // Before JSON.parse: a megabyte of "[[[[…" parses into half a million
  // nested arrays, hundreds of MB that outlive the request.
  assertJsonDepth(bytes, MAX_JSON_DEPTH);
  const text = new TextDecoder().decode(bytes);
  if (text.trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SnapmeshError("invalid_body", `Body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SnapmeshError("invalid_body", "Body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/**
 * Reads a JSON body into one buffer (sized by Content-Length when given,
 * else grown), failing as soon as it passes {@linkcode MAX_JSON_BODY}: a
 * chunked body announces no length.
 */
async function readCapped(
  body: ReadableStream<Uint8Array>,
  length: number | null,
): Promise<Uint8Array> {
  const source = streamSource(body);
  // One byte more than expected, to see a body that runs past it.
  let buffer = new ArrayBuffer(Math.min((length ?? 16 * 1024) + 1, MAX_JSON_BODY + 1));
  let filled = 0;
  while (true) {
    if (filled === buffer.byteLength) {
      if (filled > MAX_JSON_BODY) {
        await source.cancel();
        throw tooBigBody();
      }
      const bigger = new ArrayBuffer(Math.min(buffer.byteLength * 2, MAX_JSON_BODY + 1));
      new Uint8Array(bigger).set(new Uint8Array(buffer, 0, filled));
      buffer = bigger;
    }
    const read = await source.read(buffer, filled, buffer.byteLength - filled);
    buffer = read.buffer;
    if (read.bytes === 0) return new Uint8Array(buffer, 0, filled);
    filled += read.bytes;
  }
}

/**
 * Throws `invalid_body` when arrays and objects in `bytes` nest deeper than
 * `max`. One pass; brackets inside strings (escaped quotes included) do not
 * count. Malformed JSON is left for JSON.parse to report.
 */
export function assertJsonDepth(bytes: Uint8Array, max: number): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === 0x5c) i++; // backslash: the next byte is escaped
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) {
      inString = true;
    } else if (b === 0x5b || b === 0x7b) {
      if (++depth > max) {
        throw new SnapmeshError("invalid_body", `JSON body nests deeper than ${max} levels`);
      }
    } else if (b === 0x5d || b === 0x7d) {
      depth--;
    }
  }
}

function tooBigBody(): SnapmeshError {
  return new SnapmeshError("invalid_body", `JSON body is larger than ${MAX_JSON_BODY} bytes`);
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment; // malformed escapes fail the name check as they are
  }
}

/** Status and headers of a file response, honouring Range, If-Range and If-None-Match. */
function fileHeaders(
  c: Context,
  info: { size: number; sha256: string; source: string },
): {
  status: 200 | 206 | 304;
  headers: Record<string, string>;
  range: { start: number; end: number };
} {
  const etag = `"${info.sha256}"`;
  const headers: Record<string, string> = {
    "Accept-Ranges": "bytes",
    "Content-Type": "application/octet-stream",
    "ETag": etag,
    "X-Snapmesh-Source": info.source,
  };
  if (matchesEtag(c.req.header("if-none-match"), etag)) {
    return { status: 304, headers, range: { start: 0, end: -1 } };
  }
  const ifRange = c.req.header("if-range");
  const rangeHeader = ifRange === undefined || ifRange === etag ? c.req.header("range") : null;
  const range = parseRange(rangeHeader, info.size);
  const start = range?.start ?? 0;
  const end = range?.end ?? info.size - 1;
  headers["Content-Length"] = String(end - start + 1);
  if (range) headers["Content-Range"] = `bytes ${start}-${end}/${info.size}`;
  return { status: range ? 206 : 200, headers, range: { start, end } };
}

function matchesEtag(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(",").some((tag) => {
    const t = tag.trim().replace(/^W\//, "");
    return t === "*" || t === etag;
  });
}
