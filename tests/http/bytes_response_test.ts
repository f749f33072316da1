/**
 * `bytesResponse()`: a body the server writes straight out, framed like any
 * other; replaced or wrapped responses fall back to their body stream.
 */

import { assertEquals } from "../helpers/assert.ts";
import { RawClient } from "../helpers/raw_http.ts";
import { bytesResponse, type HttpHandler, serveHttp } from "../../src/http/mod.ts";

async function withServer(handler: HttpHandler, run: (url: string) => Promise<void>) {
  const server = serveHttp(Deno.listen({ hostname: "127.0.0.1", port: 0 }), handler);
  try {
    await run(`http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`);
  } finally {
    await server.shutdown(0);
  }
}

const GET = (path: string, method = "GET") => `${method} ${path} HTTP/1.1\r\nHost: test\r\n\r\n`;

Deno.test("bytesResponse() bodies are sent whole with their length, keep-alive intact", async () => {
  const bytes = new Uint8Array(70_000).map((_, i) => i & 0xff);
  await withServer((request) => {
    const path = new URL(request.url).pathname;
    if (path === "/small") return bytesResponse(new TextEncoder().encode("four"), { status: 206 });
    if (path === "/large") return bytesResponse(bytes, { headers: { "X-Kind": "large" } });
    // Wrapped by a middleware: an ordinary response, written from its stream.
    if (path === "/wrapped") return new Response(bytesResponse(bytes, {}).body);
    return new Response(null, { status: 404 });
  }, async (url) => {
    using client = await RawClient.connect(url);
    await client.send(GET("/small") + GET("/large") + GET("/small", "HEAD") + GET("/wrapped"));
    const small = await client.readResponse();
    assertEquals([small.status, small.headers["content-length"], small.text], [206, "4", "four"]);
    const large = await client.readResponse();
    assertEquals([large.headers["content-length"], large.headers["x-kind"]], ["70000", "large"]);
    assertEquals(large.body, bytes);
    const head = await client.readResponse({ head: true });
    assertEquals([head.status, head.headers["content-length"], head.body.length], [206, "4", 0]);
    const wrapped = await client.readResponse();
    assertEquals(wrapped.body, bytes);
  });
});
