/**
 * The fast path of small range reads answers exactly what the route does,
 * and leaves everything else (bad tokens, large or several ranges,
 * conditional requests, snapshots not cached) to the app.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { publish, testNode } from "../helpers/in_process.ts";
import { randomBytes } from "../helpers/temp.ts";
import { fastReads } from "../../src/api/mod.ts";
import { serveHttp } from "../../src/http/mod.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { Metrics } from "../../src/metrics/mod.ts";

const TOKEN = "fast-token";
const READ_TOKEN = "fast-read-token";

/** The node's app behind two servers: one with the fast path, one without. */
async function servers() {
  const node = await testNode({ token: TOKEN, "read-token": READ_TOKEN, "chunk-size": "64KiB" });
  const fastMetrics = new Metrics();
  const handler = (request: Request) => node.app.fetch(request);
  const fast = serveHttp(Deno.listen({ hostname: "127.0.0.1", port: 0 }), handler, {
    fast: fastReads({
      agent: Promise.resolve(node.agent),
      isReady: () => true,
      auth: { token: TOKEN, readToken: READ_TOKEN, peer: { kind: "legacy" }, verifier: null },
      metrics: fastMetrics,
      log: silentLogger,
      nodeId: "test-node",
      version: "test",
    }),
  });
  const plain = serveHttp(Deno.listen({ hostname: "127.0.0.1", port: 0 }), handler);
  const url = (server: typeof fast) => `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  return {
    node,
    fastMetrics,
    fastUrl: url(fast),
    plainUrl: url(plain),
    async [Symbol.asyncDispose]() {
      await fast.shutdown(1000);
      await plain.shutdown(1000);
      await node[Symbol.asyncDispose]();
    },
  };
}

async function get(url: string, headers: Record<string, string>) {
  const r = await fetch(url, { headers: { Authorization: `Bearer ${TOKEN}`, ...headers } });
  const body = new Uint8Array(await r.arrayBuffer());
  const fields = [...r.headers].filter(([name]) => name !== "date" && name !== "x-request-id");
  return { status: r.status, fields, body, requestId: r.headers.get("x-request-id") };
}

Deno.test("fast range reads answer what the route answers: status, headers and bytes", async () => {
  await using s = await servers();
  const mem = randomBytes(1024 * 1024, 3);
  assertEquals((await publish(s.node, "fn", { mem })).status, 201);
  const path = "/v1/snapshots/fn/files/mem";
  const cases = [
    "bytes=4096-8191",
    "bytes=0-0",
    "bytes=-100",
    `bytes=${mem.length - 10}-${mem.length + 100}`,
    "bytes=65536-", // the rest of the file: too large for the fast path
    "bytes=0-99,200-299", // several ranges: the app refuses them
    "bytes=9999999-", // beyond the end: 416 from the app
  ];
  for (const range of cases) {
    const fast = await get(`${s.fastUrl}${path}`, { Range: range });
    const plain = await get(`${s.plainUrl}${path}`, { Range: range });
    assertEquals(fast.status, plain.status, range);
    assertEquals(fast.fields, plain.fields, range);
    assertEquals(fast.body, plain.body, range);
    assert(fast.requestId !== null, "every answer carries a request id");
  }
  // The small ones came through the fast path, counted under the route's own label.
  const counted = await s.fastMetrics.render();
  assertMatch(
    counted,
    /snapmesh_http_requests_total\{method="GET",route="\/v1\/snapshots\/:name\/files\/:file",status="206"\} 4/,
  );
  // ...the label the app gives the same route (the large range went through it).
  const app = await (await s.node.request("/metrics")).text();
  assertMatch(
    app,
    /snapmesh_http_requests_total\{method="GET",route="\/v1\/snapshots\/:name\/files\/:file",status="206"\} [1-9]/,
  );
  // A request id sent is kept.
  const own = await get(`${s.fastUrl}${path}`, { Range: "bytes=0-9", "X-Request-Id": "abc-1" });
  assertEquals(own.requestId, "abc-1");
});

Deno.test("fast range reads leave bad tokens, conditional requests and missing snapshots to the app", async () => {
  await using s = await servers();
  const mem = randomBytes(256 * 1024, 4);
  assertEquals((await publish(s.node, "fn", { mem })).status, 201);
  const path = `${s.fastUrl}/v1/snapshots/fn/files/mem`;
  const wrong = await fetch(path, {
    headers: { Authorization: "Bearer nope", Range: "bytes=0-9" },
  });
  assertEquals(wrong.status, 401);
  assertEquals((await wrong.json()).error.code, "unauthorized");
  const none = await fetch(path, { headers: { Range: "bytes=0-9" } });
  assertEquals(none.status, 401);
  await none.body?.cancel();
  // The read token reads.
  const read = await fetch(path, {
    headers: { Authorization: `Bearer ${READ_TOKEN}`, Range: "bytes=10-19" },
  });
  assertEquals(read.status, 206);
  assertEquals(new Uint8Array(await read.arrayBuffer()), mem.slice(10, 20));
  // If-None-Match with the current ETag: 304 from the app.
  const etag = (await get(path, { Range: "bytes=0-0" })).fields.find(([n]) => n === "etag")![1];
  const cached = await get(path, { Range: "bytes=0-9", "If-None-Match": etag });
  assertEquals(cached.status, 304);
  // A snapshot this node does not hold (and no peer or origin has): 404 from the app.
  const missing = await get(`${s.fastUrl}/v1/snapshots/other/files/mem`, { Range: "bytes=0-9" });
  assertEquals(missing.status, 404);
  // Only the two plain small reads took the fast path.
  assertMatch(
    await s.fastMetrics.render(),
    /snapmesh_http_requests_total\{method="GET",route="[^"]+",status="206"\} 2\n/,
  );
});
