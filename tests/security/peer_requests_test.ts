import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import {
  type Discovery,
  HttpPeerTransport,
  HttpsDiscovery,
  httpsUrl,
  StaticDiscovery,
} from "../../src/cluster/mod.ts";
import {
  ClusterKeys,
  RequestVerifier,
  SIGNED_HEADERS,
  signRequest,
} from "../../src/security/mod.ts";
import { bodySha256 } from "../../src/security/request_signing.ts";
import { systemClock } from "../../src/util/clock.ts";

const KEY = "peer-requests-test-key-" + "q".repeat(32);

/** What a test server received. */
interface Seen {
  method: string;
  url: string;
  headers: Headers;
}

/** A server that records what it receives and answers hello (or a redirect). */
function recorder(answer: (request: Request) => Response) {
  const seen: Seen[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    seen.push({ method: request.method, url: request.url, headers: new Headers(request.headers) });
    return answer(request);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    seen,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

const hello = () => Response.json({ nodeId: "peer", version: "t", advertise: null });

Deno.test("HttpPeerTransport signs each request with the cluster key and sends no bearer token", async () => {
  await using peer = recorder(hello);
  const keys = new ClusterKeys([KEY]);
  const transport = new HttpPeerTransport({
    token: null,
    sign: (method, url) => signRequest(keys, { method, url }, { now: Date.now() }),
    isPeer: (url) => url === peer.url,
  });
  assertEquals((await transport.hello(peer.url, { timeoutMs: 2000 })).nodeId, "peer");
  const request = peer.seen[0]!;
  assertEquals(request.headers.get("authorization"), null);
  const verifier = new RequestVerifier(keys, { clock: systemClock });
  const url = new URL(request.url);
  assertEquals(
    verifier.verify({
      method: request.method,
      host: request.headers.get("host")!,
      target: url.pathname + url.search,
      header: (name) => request.headers.get(name) ?? undefined,
      bodySha256: bodySha256(null),
    }),
    null,
  );
  assert(request.headers.get(SIGNED_HEADERS.nonce));
});

Deno.test("HttpPeerTransport sends nothing to a URL that is not a configured peer", async () => {
  await using stranger = recorder(hello);
  const transport = new HttpPeerTransport({
    token: "the-token",
    isPeer: () => false,
  });
  await assertRejects(
    () => transport.hello(stranger.url, { timeoutMs: 2000 }),
    (e) => /not a configured peer/.test(String(e)),
  );
  await assertRejects(() =>
    transport.read(stranger.url, "fn", {
      digest: "a".repeat(64),
      file: "mem",
      start: 0,
      end: 9,
      wait: false,
      signal: new AbortController().signal,
    })
  );
  assertEquals(stranger.seen.length, 0);
});

Deno.test("HttpPeerTransport never follows a redirect (the credentials stay home)", async () => {
  await using elsewhere = recorder(hello);
  await using peer = recorder(() =>
    new Response(null, { status: 302, headers: { Location: `${elsewhere.url}/v1/peer/hello` } })
  );
  const transport = new HttpPeerTransport({ token: "the-token" });
  await assertRejects(() => transport.hello(peer.url, { timeoutMs: 2000 }));
  assertEquals(elsewhere.seen.length, 0);
});

Deno.test("HttpsDiscovery: with the cluster CA every peer is reached over https, same host and port", async () => {
  assertEquals(httpsUrl("http://10.0.0.7:7070"), "https://10.0.0.7:7070");
  assertEquals(httpsUrl("http://node-a"), "https://node-a:80");
  assertEquals(httpsUrl("https://node-a:8443"), "https://node-a:8443");
  assertEquals(httpsUrl("http://[::1]:7070"), "https://[::1]:7070");
  const source: Discovery = new StaticDiscovery(["http://a:1", "https://b:2"]);
  const upgraded = new HttpsDiscovery(source);
  assertEquals(await upgraded.peers(), ["https://a:1", "https://b:2"]);
  assertEquals([upgraded.label, upgraded.refreshMs], [source.label, source.refreshMs]);
});
