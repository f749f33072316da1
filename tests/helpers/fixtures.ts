/**
 * Shared test fixtures: memory-like files and an origin (S3 server behind a
 * fault-injecting proxy).
 *
 * @module
 */

import type { AgentProcess } from "./agent_process.ts";
import { assertEquals } from "./assert.ts";
import { FaultProxy } from "./fault_proxy.ts";
import { startS3, type TestS3 } from "./s3.ts";
import { randomBytes } from "./temp.ts";

/** The token clusters in the tests share. */
export const TOKEN = "cluster-token";
/** Its Authorization header. */
export const auth = { Authorization: `Bearer ${TOKEN}` };

/** The chunk size the end-to-end tests run agents with (`--chunk-size 256KiB`). */
export const CHUNK = 256 * 1024;

/** A memory-like file: `chunks` chunks of `chunk` bytes, 3 of every 10 zero. */
export function memFile(chunks: number, seed: number, chunk = CHUNK): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(chunks * chunk);
  for (let i = 0; i < chunks; i++) {
    if (i % 10 < 3) continue;
    bytes.set(randomBytes(chunk, seed * 1000 + i), i * chunk);
  }
  return bytes;
}

/** Bytes in the chunks of `bytes` that are not all zero. */
export function nonZeroBytes(bytes: Uint8Array, chunk = CHUNK): number {
  let n = 0;
  for (let at = 0; at < bytes.length; at += chunk) {
    if (bytes.subarray(at, at + chunk).some((b) => b !== 0)) {
      n += Math.min(chunk, bytes.length - at);
    }
  }
  return n;
}

/** An S3 server and the proxy in front of it. */
export interface TestOrigin {
  s3: TestS3;
  proxy: FaultProxy;
}

/** Starts an S3 server with a fault proxy in front. */
export async function startOrigin(): Promise<TestOrigin & AsyncDisposable> {
  const s3 = await startS3();
  const proxy = await FaultProxy.start(s3.endpoint);
  return {
    s3,
    proxy,
    async [Symbol.asyncDispose]() {
      await proxy[Symbol.asyncDispose]();
      await s3[Symbol.asyncDispose]();
    },
  };
}

/** Serve flags that point an agent at `o` through its proxy. */
export function originArgs(o: TestOrigin): string[] {
  return [
    "--origin-endpoint",
    o.proxy.url,
    "--origin-bucket",
    o.s3.bucket,
    "--origin-prefix",
    o.s3.prefix,
  ];
}

/** Uploads `files` to `agent` and commits them as `name`; returns the commit answer. */
export async function publish(
  agent: AgentProcess,
  name: string,
  files: Record<string, Uint8Array<ArrayBuffer>>,
  body = {},
) {
  for (const [file, bytes] of Object.entries(files)) {
    const r = await fetch(`${agent.url}/v1/snapshots/${name}/files/${file}`, {
      method: "PUT",
      body: bytes,
      headers: auth,
    });
    assertEquals(r.status, 201, await r.text());
  }
  const r = await fetch(`${agent.url}/v1/snapshots/${name}/commit`, {
    method: "POST",
    headers: auth,
    body: JSON.stringify(body),
  });
  const json = await r.json();
  assertEquals(r.status, 201, JSON.stringify(json));
  return json;
}

/** What a pull answers (or an error body). */
export interface PullBody {
  digest: string;
  source: "local" | "peer" | "origin";
  complete: boolean;
  ms: number;
  bytes: { local: number; peer: number; origin: number };
  paths: { mem: string };
}

/** Pulls `name` on `agent`. */
export async function pull(
  agent: AgentProcess,
  name: string,
  query = "",
): Promise<{ status: number; body: PullBody }> {
  const r = await fetch(`${agent.url}/v1/snapshots/${name}/pull${query}`, {
    method: "POST",
    headers: auth,
  });
  return { status: r.status, body: await r.json() };
}
