/**
 * `snapmesh serve`: owns the listener and HTTP server (src/http), the
 * data-directory lock, signals and graceful shutdown. Startup order: raise
 * the open file limit, lock (a second agent exits at once),
 * listen and print the listen line (so `/healthz` answers), recover (until
 * then `/readyz` is 503 and `/v1` requests wait), serve.
 *
 * @module
 */

import { Agent } from "./agent/mod.ts";
import { type AppDeps, createApp, fastReads } from "./api/mod.ts";
import { formatListen, type ServeConfig } from "./config/mod.ts";
import { errorMessage, SnapmeshError } from "./errors.ts";
import { DenoFileSystem, type FileSystem } from "./fs/mod.ts";
import {
  fitConnectionLimit,
  type HttpListener,
  type HttpServer,
  raiseFdLimit,
  serveHttp,
} from "./http/mod.ts";
import { createLogger, type Logger } from "./log/mod.ts";
import { Metrics } from "./metrics/mod.ts";
import { openOrigin } from "./origin/mod.ts";
import {
  loadSecurity,
  MutualTlsListener,
  type NodeSecurity,
  type ReloadableListener,
  RustlsListener,
} from "./security/mod.ts";
import { DataDirLockedError, lockDataDir } from "./store/mod.ts";
import { systemClock } from "./util/clock.ts";
import { VERSION } from "./version.ts";

/** Options for {@linkcode runServe}. */
export interface RunServeOptions {
  log?: Logger;
  fs?: FileSystem;
  /** Aborting it shuts the agent down gracefully (as SIGTERM does). */
  signal?: AbortSignal;
  /** Writes the listen line. @default stdout */
  announce?: (line: string) => void;
  /** Most time a graceful shutdown waits for open requests. @default 10000 */
  shutdownGraceMs?: number;
  /** Most time a graceful shutdown waits for uploads in flight. @default 5000 */
  pushGraceMs?: number;
  /**
   * The process exits (code 1) if a shutdown takes longer than this, and at
   * a second signal. For the CLI only: the journal makes that safe, but a
   * library caller's process is not ours to end. @default off
   */
  hardExitMs?: number;
  /** Found while loading the config (a secret file others can read…): logged at start. */
  warnings?: string[];
}

/** Runs the agent until a signal; returns the process exit code. */
export async function runServe(
  config: ServeConfig,
  options: RunServeOptions = {},
): Promise<number> {
  const log = options.log ??
    createLogger({ level: config.logLevel, base: { node: config.nodeId } });
  const fs = options.fs ?? new DenoFileSystem();
  const announce = options.announce ?? writeStdout;
  for (const warning of options.warnings ?? []) log.warn(warning);
  const fdLimit = raiseFdLimit(log);
  const maxConnections = fitConnectionLimit(config.maxConnections, fdLimit?.soft ?? null);
  if (maxConnections < config.maxConnections) {
    log.info("max-connections lowered to fit the open file limit", {
      maxConnections,
      configured: config.maxConnections,
      openFileLimit: fdLimit?.soft,
    });
  } else {
    log.debug("open file limit", { soft: fdLimit?.soft, hard: fdLimit?.hard, maxConnections });
  }

  let lock;
  try {
    lock = await lockDataDir(config.dataDir);
  } catch (err) {
    if (err instanceof DataDirLockedError) {
      log.error(err.message);
      printError(err.message);
      return 1;
    }
    throw err;
  }

  const metrics = new Metrics();
  let security: NodeSecurity;
  try {
    security = await loadSecurity(config, { log, metrics, clock: systemClock });
  } catch (err) {
    const message = `Cannot start: ${errorMessage(err)}`;
    log.error(message);
    printError(message);
    lock.release();
    return 1;
  }
  let agent: Agent | null = null;
  const opening = openOrigin(config, { log, metrics }).then((origin) =>
    Agent.open({
      config,
      fs,
      log,
      metrics,
      version: VERSION,
      origin,
      trust: security.trust,
      peerCredentials: security.peerCredentials,
    })
  );
  // The app awaits this promise; keep a failed recovery from being "unhandled".
  opening.catch(() => {});
  const stop = new AbortController();
  const appDeps: AppDeps = {
    agent: opening,
    shutdown: stop.signal,
    isReady: () => agent !== null,
    notReadyReason: () => agent?.unhealthyReason() ?? null,
    auth: {
      token: config.token,
      readToken: config.readToken,
      peer: security.peerMode,
      verifier: security.verifier,
      onPeerRefused: (reason) => metrics.peerAuthFailures.inc({ reason }),
    },
    metrics,
    log,
    nodeId: config.nodeId,
    version: VERSION,
  };
  const app = createApp(appDeps);

  const onSignal = () => {
    if (stop.signal.aborted && options.hardExitMs !== undefined) {
      log.warn("second signal during shutdown: exiting now");
      Deno.exit(1);
    }
    if (!stop.signal.aborted && options.hardExitMs !== undefined) {
      // Everything below is bounded; this is the belt to those braces. Armed
      // here, so it also covers a signal that comes during recovery.
      const hard = setTimeout(() => {
        log.error("shutdown took too long: exiting now", { afterMs: options.hardExitMs });
        Deno.exit(1);
      }, options.hardExitMs);
      Deno.unrefTimer(hard);
    }
    stop.abort();
  };
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  options.signal?.addEventListener("abort", onSignal, { once: true });

  let server: HttpServer;
  const scheme = security.tls ? "https" : "http";
  try {
    let listener: HttpListener;
    if (security.tls) {
      const tls = security.tls;
      // With --peer-mtls, node:tls (it can verify client certificates);
      // otherwise Deno's rustls listener, the cheaper one (README "Security").
      const reloadable: ReloadableListener = config.peerMtls
        ? new MutualTlsListener(config.listen, { files: tls.current, log })
        : new RustlsListener(config.listen, { files: tls.current, log });
      tls.onChange((files) => reloadable.reload(files));
      tls.watch();
      listener = reloadable;
    } else {
      listener = Deno.listen({
        hostname: config.listen.hostname,
        port: config.listen.port,
        transport: "tcp",
      });
    }
    server = serveHttp(listener, (request, info) => app.fetch(request, info), {
      // Small range reads of cached files skip Request/Hono/Response (same answers).
      fast: fastReads(appDeps),
      log,
      idleTimeoutMs: config.idleTimeoutMs,
      headerTimeoutMs: config.headerTimeoutMs,
      bodyTimeoutMs: config.bodyTimeoutMs,
      maxConnections,
      maxUploads: config.maxUploads,
      onReject: (reason) => metrics.httpRejected.inc({ reason }),
      onTimeout: (kind) => metrics.httpTimeouts.inc({ kind }),
      onError: (err) => {
        if (err instanceof SnapmeshError && err.code === "shutting_down") {
          // A response streamed from a pull that shutdown ended: expected.
          log.info("response cut short by shutdown");
          return new Response(
            '{"error":{"code":"shutting_down","message":"The agent is shutting down"}}',
            { status: 503, headers: { "Content-Type": "application/json" } },
          );
        }
        log.error("unhandled request error", { error: err });
        return new Response('{"error":{"code":"internal","message":"Internal error"}}', {
          status: 500,
          headers: { "Content-Type": "application/json" },
        });
      },
    });
    metrics.bindHttp({ connections: () => server.connections, uploads: () => server.uploads });
  } catch (err) {
    const message = `Cannot listen on ${formatListen(config.listen)}: ${errorMessage(err)}`;
    log.error(message);
    printError(message);
    await opening.then((a) => a.close()).catch(() => {});
    security.close();
    lock.release();
    return 1;
  }
  {
    const addr = server.addr as Deno.NetAddr;
    const where = formatListen({ hostname: addr.hostname, port: addr.port });
    announce(`snapmesh listening on ${scheme}://${where}`);
    log.info("listening", { address: where, version: VERSION, dataDir: config.dataDir });
    if (config.token === null && !isLoopback(addr.hostname)) {
      log.warn(
        "no token, and listening beyond loopback: anyone who can reach this port can " +
          "change and delete snapshots (set SNAPMESH_TOKEN, the same on every node)",
        { address: where },
      );
    }
  }

  let exitCode = 0;
  try {
    const opened = await opening;
    const address = server.addr as Deno.NetAddr;
    const host = address.hostname === "0.0.0.0" || address.hostname === "::"
      ? safeHostname()
      : address.hostname;
    opened.setAdvertise(`${scheme}://${formatListen({ hostname: host, port: address.port })}`);
    agent = opened;
  } catch (err) {
    const message = `Cannot start: ${errorMessage(err)}`;
    log.error(message, { error: err });
    printError(message);
    exitCode = 1;
    stop.abort();
  }

  if (!stop.signal.aborted) {
    await new Promise<void>((resolve) => stop.signal.addEventListener("abort", () => resolve()));
  }
  const grace = options.shutdownGraceMs ?? 10_000;
  const pushGrace = options.pushGraceMs ?? 5000;
  log.info("shutting down", { graceMs: grace, pushGraceMs: pushGrace });

  // No new connections; pulls end now; open requests get the grace time.
  const closing = server.shutdown(grace);
  agent?.stopTransfers();
  await Promise.race([closing, delay(grace)]);
  if (agent) {
    try {
      await agent.close({ pushGraceMs: pushGrace });
    } catch (err) {
      log.error("shutdown: closing the agent failed", { error: err });
      exitCode = 1;
    }
  }
  for (const s of signals) Deno.removeSignalListener(s, onSignal);
  security.close();
  lock.release();
  log.info("stopped", { exitCode });
  return exitCode;
}

function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\./.test(hostname);
}

function safeHostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "localhost";
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    Deno.unrefTimer(timer);
  });
}

const encoder = new TextEncoder();

function writeStdout(line: string): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

function printError(message: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(`snapmesh: ${message}\n`));
  } catch {
    // stderr closed.
  }
}
