/**
 * The HTTP API (DESIGN.md §3). Routes parse and validate, call the agent,
 * and map results; errors are mapped in `onError` only.
 *
 * @module
 */

import { Hono } from "hono";
import type { Agent } from "../agent/mod.ts";
import { type ErrorCode, SnapmeshError } from "../errors.ts";
import { BodyAbortedError } from "../http/mod.ts";
import type { AppDeps, Env } from "./_env.ts";
import { type RouteMethods, routeMethods, unmatched } from "./_routing.ts";
import { authorize } from "./auth.ts";
import { registerClientRoutes } from "./client_routes.ts";
import { HttpError } from "./errors.ts";
import { registerPeerRoutes } from "./peer_routes.ts";
import { STATUS_PAGE } from "./status_page.ts";

export type { AppDeps } from "./_env.ts";
export { assertJsonDepth } from "./request.ts";

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

  registerClientRoutes(v1, deps);
  registerPeerRoutes(v1, deps);

  app.route("/v1", v1);
  routes = routeMethods(app.routes);
  return app;
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
