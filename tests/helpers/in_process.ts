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
import { openOrigin, type Origin } from "../../src/origin/mod.ts";
import { ClusterKeys, RequestVerifier } from "../../src/security/mod.ts";
import { type Clock, systemClock } from "../../src/util/clock.ts";
import type { Random } from "../../src/util/random.ts";

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

/** What {@linkcode openTestAgent} opens an agent with, besides its flags. */
export interface OpenTestAgentOptions {
  /** The data directory (`--data-dir`). */
  dir: string;
  /** @default a new DenoFileSystem */
  fs?: FileSystem;
  env?: Record<string, string>;
  /** The origin; undefined opens the one the flags name (`openOrigin`), null means none. */
  origin?: Origin | null;
  /** @default systemClock */
  clock?: Clock;
  /** @default systemRandom */
  random?: Random;
  /** @default 5 */
  touchFlushMs?: number;
  /** @default new Metrics() */
  metrics?: Metrics;
}

/**
 * Resolves `serve` flags (by flag name) for a test and opens an agent on
 * them, silently; shared by the temp-directory node below and the in-memory
 * one (`memory_node.ts`).
 */
export async function openTestAgent(
  flags: Record<string, unknown>,
  options: OpenTestAgentOptions,
): Promise<{ agent: Agent; config: ServeConfig; metrics: Metrics }> {
  const config = resolveServeConfig({
    flags: { "data-dir": options.dir, ...flags },
    env: options.env ?? {},
    file: null,
    cwd: "/",
    hostname: "test-node",
  });
  const metrics = options.metrics ?? new Metrics();
  const origin = options.origin === undefined
    ? await openOrigin(config, { log: silentLogger, metrics })
    : options.origin;
  const agent = await Agent.open({
    origin,
    config,
    fs: options.fs ?? new DenoFileSystem(),
    log: silentLogger,
    metrics,
    version: "test",
    touchFlushMs: options.touchFlushMs ?? 5,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.random ? { random: options.random } : {}),
  });
  return { agent, config, metrics };
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
  const { agent, config, metrics } = await openTestAgent(flags, { ...options, dir });
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
