/**
 * An agent and its Hono app in the test process, on a temp data directory,
 * for fast route tests with `app.request()`.
 *
 * @module
 */

import { Agent } from "../../src/agent/mod.ts";
import { createApp } from "../../src/api/mod.ts";
import { peerAuthMode, resolveServeConfig, type ServeConfig } from "../../src/config/mod.ts";
import { DenoFileSystem, type FileSystem } from "../../src/fs/mod.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { Metrics } from "../../src/metrics/mod.ts";
import { openOrigin } from "../../src/origin/mod.ts";
import { ClusterKeys, RequestVerifier } from "../../src/security/mod.ts";
import { type Clock, systemClock } from "../../src/util/clock.ts";

/** An in-process agent. */
export interface TestNode extends AsyncDisposable {
  agent: Agent;
  app: ReturnType<typeof createApp>;
  dir: string;
  config: ServeConfig;
  /** Sends a request to the app, adding the token when one is configured. */
  request(path: string, init?: RequestInit): Promise<Response>;
  /** Closes the agent and opens it again on the same directory. */
  reopen(): Promise<TestNode>;
}

/** Starts an in-process agent with `serve` flags (by flag name). */
export async function testNode(
  flags: Record<string, unknown> = {},
  options: {
    dir?: string;
    fs?: FileSystem;
    env?: Record<string, string>;
    /** The clock signed peer requests are checked against. @default systemClock */
    clock?: Clock;
  } = {},
): Promise<TestNode> {
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "snapmesh-app-" });
  const config = resolveServeConfig({
    flags: { "data-dir": dir, ...flags },
    env: options.env ?? {},
    file: null,
    cwd: "/",
    hostname: "test-node",
  });
  const metrics = new Metrics();
  const agent = await Agent.open({
    origin: await openOrigin(config, { log: silentLogger, metrics }),
    config,
    fs: options.fs ?? new DenoFileSystem(),
    log: silentLogger,
    metrics,
    version: "test",
    touchFlushMs: 5,
  });
  const app = createApp({
    agent: Promise.resolve(agent),
    isReady: () => true,
    notReadyReason: () => agent.unhealthyReason(),
    // As src/serve.ts builds it.
    auth: {
      token: config.token,
      readToken: config.readToken,
      peer: peerAuthMode(config),
      verifier: config.clusterKey === null
        ? null
        : new RequestVerifier(ClusterKeys.parse(config.clusterKey), {
          clock: options.clock ?? systemClock,
        }),
      onPeerRefused: (reason) => metrics.peerAuthFailures.inc({ reason }),
    },
    metrics,
    log: silentLogger,
    nodeId: config.nodeId,
    version: "test",
  });
  let closed = false;
  const node: TestNode = {
    agent,
    app,
    dir,
    config,
    request(path, init = {}) {
      const headers = new Headers(init.headers);
      if (config.token && !headers.has("authorization")) {
        headers.set("Authorization", `Bearer ${config.token}`);
      }
      return Promise.resolve(app.request(path, { ...init, headers }));
    },
    async reopen() {
      closed = true;
      await agent.close();
      return await testNode(flags, { ...options, dir });
    },
    async [Symbol.asyncDispose]() {
      if (!closed) await agent.close();
      if (options.dir === undefined) {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
  };
  return node;
}

/** Stages files and commits them; returns the commit response. */
export async function publish(
  node: TestNode,
  name: string,
  files: Record<string, Uint8Array>,
  body: Record<string, unknown> = {},
): Promise<Response> {
  for (const [file, bytes] of Object.entries(files)) {
    const put = await node.request(`/v1/snapshots/${name}/files/${file}`, {
      method: "PUT",
      body: bytes as Uint8Array<ArrayBuffer>,
    });
    if (put.status !== 201) {
      throw new Error(`PUT ${name}/${file}: ${put.status} ${await put.text()}`);
    }
    await put.body?.cancel();
  }
  return await node.request(`/v1/snapshots/${name}/commit`, {
    method: "POST",
    body: JSON.stringify(body),
  });
}

/** Reads a JSON error body and returns its code. */
export async function errorCode(response: Response): Promise<string> {
  const body = await response.json();
  return body?.error?.code;
}
