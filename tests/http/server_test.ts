/**
 * The HTTP/1.1 server over real loopback sockets: framing, keep-alive,
 * pipelining, strict parsing and its limits, response bodies that fail,
 * timeouts, caps, accept errors and shutdown.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { RawClient } from "../helpers/raw_http.ts";
import {
  type HttpConn,
  type HttpHandler,
  type HttpListener,
  type HttpServer,
  type HttpServerOptions,
  serveHttp,
} from "../../src/http/mod.ts";
import { createLogger } from "../../src/log/mod.ts";

interface TestServer extends AsyncDisposable {
  url: string;
  server: HttpServer;
  /** Log lines the server wrote. */
  logs: string[];
}

function testServer(
  handler: HttpHandler,
  options: HttpServerOptions = {},
  listener: HttpListener = Deno.listen({ hostname: "127.0.0.1", port: 0 }),
): TestServer {
  const logs: string[] = [];
  const log = createLogger({ level: "debug", write: (line) => logs.push(line) });
  const server = serveHttp(listener, handler, { log, ...options });
  const { port } = server.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    logs,
    async [Symbol.asyncDispose]() {
      await server.shutdown(0);
    },
  };
}

/** Echoes the method, target and body length; counts calls. */
function echo(): HttpHandler & { calls: number } {
  const handler = async (request: Request) => {
    handler.calls++;
    const body = request.body
      ? new Uint8Array(await new Response(request.body).arrayBuffer())
      : null;
    return Response.json({
      method: request.method,
      url: request.url,
      length: body?.length ?? null,
      text: body && body.length <= 1024 ? new TextDecoder().decode(body) : null,
    });
  };
  handler.calls = 0;
  return handler;
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const GET = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: test\r\n${extra}\r\n`;

Deno.test("serveHttp() keeps a connection for sequential and pipelined requests, in order", async () => {
  await using s = testServer(echo());
  using client = await RawClient.connect(s.url);
  await client.send(GET("/one"));
  const one = await client.readResponse();
  assertEquals([one.status, JSON.parse(one.text).url], [200, "http://test/one"]);
  assertEquals(one.headers["connection"], undefined);
  // Three requests in one write: answered in order on the same connection.
  await client.send(GET("/a") + GET("/b") + GET("/c"));
  for (const path of ["/a", "/b", "/c"]) {
    const response = await client.readResponse();
    assertEquals(JSON.parse(response.text).url, `http://test${path}`);
    assertEquals(response.framing, "length");
  }
  // The target reaches the handler as sent: no dot-segment removal.
  await client.send(GET("/x/../y/%2e%2e/z"));
  assertEquals(JSON.parse((await client.readResponse()).text).url, "http://test/x/../y/%2e%2e/z");
  await client.send(GET("/last", "Connection: close\r\n"));
  const last = await client.readResponse();
  assertEquals(last.headers["connection"], "close");
  assert(await client.waitClosed(), "the server closes after Connection: close");
});

Deno.test("serveHttp() speaks HTTP/1.0: close by default, keep-alive on request, close-delimited streams", async () => {
  await using s = testServer((request) => {
    if (request.url.endsWith("/stream")) {
      let n = 0;
      return new Response(
        new ReadableStream({
          async pull(c) {
            await new Promise((r) => setTimeout(r, 5));
            if (n++ < 3) c.enqueue(new TextEncoder().encode(`part${n};`));
            else c.close();
          },
        }),
      );
    }
    return new Response("hello");
  });
  {
    using client = await RawClient.connect(s.url);
    await client.send("GET / HTTP/1.0\r\n\r\n"); // no Host: fine in 1.0
    const response = await client.readResponse();
    assertEquals([response.status, response.text, response.headers["connection"]], [
      200,
      "hello",
      "close",
    ]);
    assert(await client.waitClosed());
  }
  {
    using client = await RawClient.connect(s.url);
    await client.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const first = await client.readResponse();
    assertEquals(first.headers["connection"], "keep-alive");
    await client.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const streamed = await client.readResponse();
    // No chunked coding in 1.0: the body ends with the connection.
    assertEquals([streamed.framing, streamed.text], ["close", "part1;part2;part3;"]);
    assertEquals(streamed.headers["connection"], "close");
  }
  {
    using client = await RawClient.connect(s.url);
    await client.send(GET("/stream"));
    const chunked = await client.readResponse();
    assertEquals([chunked.framing, chunked.text, chunked.complete], [
      "chunked",
      "part1;part2;part3;",
      true,
    ]);
  }
});

Deno.test("serveHttp() answers malformed requests 400 invalid_request and closes", async (t) => {
  const handler = echo();
  await using s = testServer(handler);
  const cases: [string, string, number][] = [
    ["no version", "GET /\r\nHost: x\r\n\r\n", 400],
    ["two spaces", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["bad method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["absolute-form", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505],
    ["missing Host", "GET / HTTP/1.1\r\n\r\n", 400],
    ["two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],
    ["bad Host", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400],
    [
      "CL and TE",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      400,
    ],
    ["bad CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3x\r\n\r\n", 400],
    ["negative CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400],
    [
      "conflicting CLs",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
      400,
    ],
    ["CL list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n", 400],
    ["folded header", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n", 400],
    ["space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400],
    ["bare CR", "GET / HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n", 400],
    ["control char", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400],
    ["gzip coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501],
    ["TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ["CONNECT", "CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n", 501],
  ];
  for (const [name, request, status] of cases) {
    await t.step(name, async () => {
      using client = await RawClient.connect(s.url);
      await client.send(request);
      const response = await client.readResponse();
      assertEquals(response.status, status);
      assertEquals(JSON.parse(response.text).error.code, "invalid_request");
      assertEquals(response.headers["connection"], "close");
      assert(await client.waitClosed(), "closed after the error");
    });
  }
  assertEquals(handler.calls, 0);
  await t.step("identical Content-Length fields are one length", async () => {
    using client = await RawClient.connect(s.url);
    await client.send(
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    );
    assertEquals(JSON.parse((await client.readResponse()).text).text, "abc");
  });
});

Deno.test("serveHttp() limits: request line 8 KiB (414), header block 64 KiB and 100 fields (431)", async (t) => {
  const handler = echo();
  await using s = testServer(handler);
  const cases: [string, string, number][] = [
    ["long target", `GET /${"a".repeat(8200)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414],
    ["huge header", `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(66_000)}\r\n\r\n`, 431],
    [
      "many headers",
      `GET / HTTP/1.1\r\nHost: x\r\n${"X-A: 1\r\n".repeat(100)}\r\n`,
      431,
    ],
  ];
  for (const [name, request, status] of cases) {
    await t.step(name, async () => {
      using client = await RawClient.connect(s.url);
      // Sent without its end: the limit is enforced without waiting for it.
      await client.send(request.slice(0, -4));
      const response = status === 431 && name === "many headers"
        ? (await client.send("\r\n\r\n"), await client.readResponse())
        : await client.readResponse();
      assertEquals(response.status, status);
      assertEquals(JSON.parse(response.text).error.code, "invalid_request");
      assert(await client.waitClosed());
    });
  }
  await t.step("just under the limits is fine", async () => {
    using client = await RawClient.connect(s.url);
    await client.send(
      `GET /${"a".repeat(8000)} HTTP/1.1\r\nHost: x\r\n${"X-A: 1\r\n".repeat(98)}` +
        `X-Big: ${"b".repeat(60_000)}\r\n\r\n`,
    );
    assertEquals((await client.readResponse()).status, 200);
  });
  assertEquals(handler.calls, 1);
});

Deno.test("serveHttp() decodes chunked bodies: extensions ignored, trailers dropped, next request follows", async () => {
  await using s = testServer(echo());
  using client = await RawClient.connect(s.url);
  await client.send(
    "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "5;name=value;other\r\nhello\r\n" +
      "1 ; spaced=1\r\n,\r\n" +
      "6\r\n world\r\n" +
      "0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n" +
      GET("/next"),
  );
  const posted = JSON.parse((await client.readResponse()).text);
  assertEquals([posted.length, posted.text], [12, "hello, world"]);
  assertEquals(JSON.parse((await client.readResponse()).text).url, "http://test/next");

  // Broken framing: the handler's stream fails, the connection closes.
  await client.send(
    "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
  );
  assert(await client.waitClosed(), "closed after a broken chunked body");
});

Deno.test("serveHttp() reads chunked bodies in large pieces, taking the framing out in place", async (t) => {
  // Many small chunks with extensions, a trailer, then a pipelined request:
  // all of it lands in one read into the handler's buffer.
  const bytes = new Uint8Array(300_000).map((_, i) => (i * 7 + (i >> 9)) & 0xff);
  const parts: Uint8Array[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const size = Math.min(bytes.length - at, 1 + ((i * 977) % 3000));
    parts.push(new TextEncoder().encode(`${size.toString(16)}${i % 3 ? "" : ";x=y"}\r\n`));
    parts.push(bytes.subarray(at, at + size), new TextEncoder().encode("\r\n"));
    at += size;
  }
  parts.push(new TextEncoder().encode("0\r\nX-Sum: 1\r\n\r\n" + GET("/after")));
  const body = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (body.set(p, at), at + p.length), 0);

  let waiting = 0;
  const received: { bytes: Uint8Array; reads: number }[] = [];
  const viewSize = { value: 0 };
  await using s = testServer(async (request) => {
    if (request.method === "GET") return new Response("after");
    const reader = request.body!.getReader({ mode: "byob" });
    const out = new Uint8Array(bytes.length);
    let at = 0;
    let reads = 0;
    let buffer = new ArrayBuffer(viewSize.value);
    waiting++;
    while (true) {
      const { done, value } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      out.set(value, at);
      at += value.length;
      reads++;
      buffer = value.buffer as ArrayBuffer;
    }
    received.push({ bytes: out.subarray(0, at), reads });
    return new Response("ok");
  });
  for (const size of [1024 * 1024, 1000, 7, 1]) {
    await t.step(`BYOB views of ${size} bytes`, async () => {
      viewSize.value = size;
      received.length = 0;
      const before = waiting;
      using client = await RawClient.connect(s.url);
      await client.send("PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
      await waitFor("the handler to wait for body bytes", () => waiting > before);
      await client.send(body);
      assertEquals((await client.readResponse()).text, "ok");
      assertEquals((await client.readResponse()).text, "after");
      assertEquals(received[0]!.bytes, bytes);
      if (size === 1024 * 1024) {
        assert(
          received[0]!.reads < 20,
          `${received[0]!.reads} reads for ${parts.length / 3} chunks`,
        );
      }
    });
  }
});

Deno.test("serveHttp() gives handlers a byte stream read straight into BYOB buffers", async () => {
  const reads: number[] = [];
  let error: unknown = null;
  await using s = testServer(async (request) => {
    try {
      const reader = request.body!.getReader({ mode: "byob" });
      let buffer = new ArrayBuffer(1024 * 1024);
      while (true) {
        const { done, value } = await reader.read(new Uint8Array(buffer));
        if (done) break;
        reads.push(value.length);
        buffer = value.buffer as ArrayBuffer;
      }
    } catch (err) {
      error = err;
    }
    return new Response("ok");
  });
  using client = await RawClient.connect(s.url);
  const size = 8 * 1024 * 1024;
  await client.send(`PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\n\r\n`);
  await client.send(new Uint8Array(size).fill(1));
  assertEquals((await client.readResponse()).text, "ok");
  assertEquals(error, null);
  assertEquals(reads.reduce((a, b) => a + b, 0), size);
  // Reads fill the caller's buffer from the socket: far more than a 64 KiB piece at a time.
  assert(Math.max(...reads) > 64 * 1024, `read sizes: ${reads.slice(0, 10)}`);
});

Deno.test("serveHttp() sends 100 Continue only when the handler reads the body", async (t) => {
  await using s = testServer(async (request) => {
    if (request.headers.get("authorization") !== "yes") {
      return new Response("no", { status: 401 });
    }
    return new Response(await request.text());
  });
  await t.step("the handler reads: 100, then the final response", async () => {
    using client = await RawClient.connect(s.url);
    await client.send(
      "PUT /f HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\nExpect: 100-continue\r\n" +
        "Content-Length: 5\r\n\r\n",
    );
    assertEquals((await client.readResponse()).status, 100);
    await client.send("hello");
    const response = await client.readResponse();
    assertEquals([response.status, response.text], [200, "hello"]);
    assertEquals(response.headers["connection"], undefined, "kept alive");
  });
  await t.step(
    "the handler answers without reading: no 100, and the connection closes",
    async () => {
      using client = await RawClient.connect(s.url);
      await client.send(
        "PUT /f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
      );
      const response = await client.readResponse();
      assertEquals(response.status, 401);
      assertEquals(response.headers["connection"], "close");
      assert(await client.waitClosed());
    },
  );
});

Deno.test("serveHttp() sends no body for HEAD, 204 and 304, keeping HEAD's Content-Length", async () => {
  await using s = testServer((request) => {
    const path = new URL(request.url).pathname;
    if (path === "/204") return new Response(null, { status: 204 });
    if (path === "/304") return new Response(null, { status: 304, headers: { ETag: '"x"' } });
    return new Response(request.method === "HEAD" ? null : "twelve bytes", {
      headers: { "Content-Length": "12" },
    });
  });
  using client = await RawClient.connect(s.url);
  await client.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GET("/204") + GET("/304") + GET("/"));
  const head = await client.readResponse({ head: true });
  assertEquals([head.status, head.headers["content-length"]], [200, "12"]);
  const noContent = await client.readResponse();
  assertEquals([noContent.status, noContent.headers["content-length"]], [204, undefined]);
  assertEquals((await client.readResponse()).status, 304);
  // Had any of them sent a body, this response would not parse.
  assertEquals((await client.readResponse()).text, "twelve bytes");
});

Deno.test("serveHttp() aborts the connection when a response body fails mid-way", async (t) => {
  const failing = () => {
    let sent = 0;
    return new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent++ < 2) c.enqueue(new Uint8Array(1000).fill(65));
        else c.error(new Error("disk on fire"));
      },
    });
  };
  await using s = testServer((request) =>
    request.url.endsWith("/sized")
      ? new Response(failing(), { headers: { "Content-Length": "10000" } })
      : new Response(failing())
  );
  for (const path of ["/sized", "/chunked"]) {
    await t.step(path, async () => {
      using client = await RawClient.connect(s.url);
      await client.send(GET(path));
      const response = await client.readResponse();
      assertEquals(response.status, 200);
      assertEquals(response.complete, false, "the client can tell the body is cut short");
      assertEquals(response.body.length, 2000);
    });
  }
});

Deno.test("serveHttp() cancels a response body when the client goes away", async () => {
  let cancelled: unknown = null;
  await using s = testServer(() =>
    new Response(
      new ReadableStream({
        async pull(c) {
          await new Promise((r) => setTimeout(r, 5));
          c.enqueue(new Uint8Array(16 * 1024));
        },
        cancel(reason) {
          cancelled = reason ?? "cancelled";
        },
      }),
    )
  );
  const client = await RawClient.connect(s.url);
  await client.send(GET("/endless"));
  await client.readResponse({ head: true }); // the head only
  client.close();
  await waitFor("the body to be cancelled", () => cancelled !== null);
  await waitFor("the connection to close", () => s.server.connections === 0);
});

Deno.test("serveHttp() drains a small unread body before the next request and closes on a large one", async () => {
  await using s = testServer(() => new Response("ignored the body"));
  using client = await RawClient.connect(s.url);
  await client.send(
    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789" + GET("/b"),
  );
  assertEquals((await client.readResponse()).text, "ignored the body");
  assertEquals((await client.readResponse()).text, "ignored the body");
  const big = 4 * 1024 * 1024;
  await client.send(`POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: ${big}\r\n\r\n`);
  const response = await client.readResponse();
  assertEquals(response.headers["connection"], undefined);
  assert(await client.waitClosed(), "a body too large to drain closes the connection");
});

Deno.test("serveHttp() closes idle, slow-header and stalled-body connections after their timeouts", async (t) => {
  let bodyError: unknown = null;
  const timeouts: string[] = [];
  await using s = testServer(async (request) => {
    try {
      await request.arrayBuffer();
    } catch (err) {
      bodyError = err;
    }
    return new Response("ok");
  }, {
    idleTimeoutMs: 300,
    headerTimeoutMs: 300,
    bodyTimeoutMs: 300,
    onTimeout: (kind) => timeouts.push(kind),
  });
  await t.step("idle after accept", async () => {
    using client = await RawClient.connect(s.url);
    const started = Date.now();
    assert(await client.waitClosed(3000));
    assert(Date.now() - started >= 250, "not before the idle timeout");
  });
  await t.step("idle between keep-alive requests", async () => {
    using client = await RawClient.connect(s.url);
    await client.send(GET("/"));
    assertEquals((await client.readResponse()).text, "ok");
    assert(await client.waitClosed(3000));
  });
  await t.step("a head that never ends", async () => {
    using client = await RawClient.connect(s.url);
    await client.send("GET / HTTP/1.1\r\nHost: x\r\n");
    // Dribbling bytes does not extend the header deadline.
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 80));
      await client.send("X-A: 1\r\n").catch(() => {});
    }
    assert(await client.waitClosed(3000));
  });
  await t.step("a body that stops", async () => {
    using client = await RawClient.connect(s.url);
    await client.send("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part");
    assert(await client.waitClosed(3000));
    await waitFor("the handler to see the error", () => bodyError !== null);
    assert(bodyError instanceof Error && bodyError.name === "BodyAbortedError", String(bodyError));
    assertMatch((bodyError as Error).message, /no request body bytes for 300 ms/);
  });
  await waitFor("every connection to close", () => s.server.connections === 0);
  assertEquals([...new Set(timeouts)].sort(), ["body", "header", "idle"]);
});

Deno.test("serveHttp() closes a connection whose client stops reading the response", async () => {
  let cancelled = false;
  await using s = testServer(() =>
    new Response(
      new ReadableStream({
        pull(c) {
          c.enqueue(new Uint8Array(1024 * 1024));
        },
        cancel() {
          cancelled = true;
        },
      }),
    ), { bodyTimeoutMs: 300 });
  using client = await RawClient.connect(s.url);
  await client.send(GET("/endless"));
  // Never read: the socket buffers fill, the server's writes stall.
  await waitFor("the stalled connection to close", () => s.server.connections === 0);
  assert(cancelled, "the response body was cancelled");
});

Deno.test("serveHttp() a client that hangs up mid-body fails the body stream with BodyAbortedError", async () => {
  let bodyError: unknown = null;
  let started = false;
  await using s = testServer(async (request) => {
    started = true;
    try {
      await request.arrayBuffer();
    } catch (err) {
      bodyError = err;
    }
    return new Response("ok");
  });
  const client = await RawClient.connect(s.url);
  await client.send("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nsome of it");
  await waitFor("the handler to start reading", () => started);
  client.close();
  await waitFor("the handler to see the error", () => bodyError !== null);
  assert(bodyError instanceof Error && bodyError.name === "BodyAbortedError", String(bodyError));
  assertMatch((bodyError as Error).message, /ended early.*10 of 100000 bytes/);
});

Deno.test("serveHttp() answers connections over maxConnections 503 overloaded, without stalling", async () => {
  const rejected: string[] = [];
  await using s = testServer(() => new Response("ok"), {
    maxConnections: 2,
    onReject: (reason) => rejected.push(reason),
  });
  using a = await RawClient.connect(s.url);
  using b = await RawClient.connect(s.url);
  await waitFor("two connections", () => s.server.connections === 2);
  using c = await RawClient.connect(s.url);
  await c.send(GET("/"));
  const response = await c.readResponse();
  assertEquals(response.status, 503);
  assertEquals(JSON.parse(response.text).error.code, "overloaded");
  assertEquals([response.headers["retry-after"], response.headers["connection"]], ["1", "close"]);
  assert(await c.waitClosed());
  assertEquals(rejected, ["max_connections"]);
  // The two inside are served as usual.
  await a.send(GET("/"));
  assertEquals((await a.readResponse()).text, "ok");
  b.close();
  await waitFor("a free slot", () => s.server.connections === 1);
  using d = await RawClient.connect(s.url);
  await d.send(GET("/"));
  assertEquals((await d.readResponse()).text, "ok");
});

Deno.test("serveHttp() answers uploads over maxUploads 503 before reading their body", async () => {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let started = 0;
  await using s = testServer(async (request) => {
    started++;
    await held;
    await request.arrayBuffer();
    return new Response("stored");
  }, { maxUploads: 1 });
  const big = 2 * 1024 * 1024;
  using first = await RawClient.connect(s.url);
  await first.send(`PUT /1 HTTP/1.1\r\nHost: x\r\nContent-Length: ${big}\r\n\r\n`);
  await waitFor("the first upload", () => started === 1);
  using second = await RawClient.connect(s.url);
  await second.send("PUT /2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  const refused = await second.readResponse();
  assertEquals(refused.status, 503);
  assertEquals(JSON.parse(refused.text).error.code, "overloaded");
  assertEquals(refused.headers["retry-after"], "1");
  assertEquals(started, 1, "the handler never saw the second upload");
  // Small bodies are not uploads.
  using small = await RawClient.connect(s.url);
  await small.send("PUT /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
  await waitFor("the small PUT", () => started === 2);
  release();
  await first.send(new Uint8Array(big));
  assertEquals((await first.readResponse()).text, "stored");
  assertEquals((await small.readResponse()).text, "stored");
});

Deno.test("serveHttp() keeps accepting through accept errors (EMFILE), with backoff and a rate-limited warning", async () => {
  const real = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let failures = 8;
  const flaky: HttpListener = {
    addr: real.addr,
    close: () => real.close(),
    accept(): Promise<HttpConn> {
      if (failures > 0) {
        failures--;
        return Promise.reject(new Error("Too many open files (os error 24)"));
      }
      return real.accept();
    },
  };
  await using s = testServer(() => new Response("still here"), {}, flaky);
  using client = await RawClient.connect(s.url);
  await client.send(GET("/"));
  assertEquals((await client.readResponse()).text, "still here");
  assertEquals(failures, 0);
  const warnings = s.logs.filter((l) => l.includes("cannot accept connections"));
  assertEquals(warnings.length, 1, "eight failures, one warning");
  assertMatch(warnings[0]!, /"level":"warn".*Too many open files/);
});

Deno.test("HttpServer.shutdown() closes idle connections, finishes requests in flight, then closes the rest", async () => {
  let finish!: () => void;
  const slow = new Promise<void>((r) => (finish = r));
  let inFlight = 0;
  const s = testServer(async (request) => {
    inFlight++;
    if (request.url.endsWith("/slow")) await slow;
    if (request.url.endsWith("/stuck")) await new Promise(() => {});
    return new Response("done");
  });
  try {
    using idle = await RawClient.connect(s.url);
    using busy = await RawClient.connect(s.url);
    using stuck = await RawClient.connect(s.url);
    await busy.send(GET("/slow"));
    await stuck.send(GET("/stuck"));
    await waitFor("two requests in flight", () => inFlight === 2);
    assertEquals(s.server.connections, 3);
    const stopped = s.server.shutdown(500);
    assert(await idle.waitClosed(1000), "the idle connection closes at once");
    finish();
    const response = await busy.readResponse();
    assertEquals([response.text, response.headers["connection"]], ["done", "close"]);
    assert(await busy.waitClosed(1000));
    await stopped;
    assertEquals(s.server.connections, 0);
    assert(await stuck.waitClosed(1000), "the stuck request is cut at the grace");
    await assertRefused(s.url);
  } finally {
    await s[Symbol.asyncDispose]();
  }
});

async function assertRefused(url: string): Promise<void> {
  try {
    const conn = await RawClient.connect(url);
    conn.close();
  } catch (err) {
    assert(err instanceof Deno.errors.ConnectionRefused, String(err));
    return;
  }
  throw new Error("the server still accepts connections");
}
