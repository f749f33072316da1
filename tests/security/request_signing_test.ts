import { assert, assertEquals, assertThrows } from "../helpers/assert.ts";
import {
  bodySha256,
  canonicalRequest,
  ClusterKeys,
  EMPTY_SHA256,
  type ReceivedRequest,
  RequestVerifier,
  SIGNED_HEADERS,
  signRequest,
} from "../../src/security/request_signing.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const KEY = "k".repeat(40);
const OTHER = "o".repeat(40);

/** The request a receiver sees for `url`, carrying `headers`. */
function received(
  url: string,
  headers: Record<string, string>,
  options: { method?: string; body?: Uint8Array } = {},
): ReceivedRequest {
  const parsed = new URL(url);
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    method: options.method ?? "GET",
    host: parsed.host,
    target: parsed.pathname + parsed.search,
    header: (name) => lower[name.toLowerCase()],
    bodySha256: bodySha256(options.body),
  };
}

function setup(windowMs?: number) {
  const clock = new VirtualClock({ start: 1_767_225_600_000 });
  const keys = new ClusterKeys([KEY]);
  const verifier = new RequestVerifier(keys, { clock, ...(windowMs ? { windowMs } : {}) });
  const url = "http://10.0.0.7:7070/v1/peer/snapshots/fn-a/files/mem?digest=" + "a".repeat(64);
  const sign = (
    target = url,
    options: { method?: string; body?: Uint8Array; nonce?: string; keys?: ClusterKeys } = {},
  ) =>
    signRequest(options.keys ?? keys, {
      method: options.method ?? "GET",
      url: target,
      body: options.body ?? null,
    }, {
      now: clock.now(),
      ...(options.nonce ? { nonce: options.nonce } : {}),
    });
  return { clock, keys, verifier, url, sign };
}

Deno.test("canonicalRequest() joins the signed parts in a fixed order", () => {
  const text = canonicalRequest({
    method: "get",
    host: "Node-A:7070",
    target: "/v1/peer/hello?x=1",
    date: 1700000000000,
    nonce: "abcdefghijklmnopqrstuv",
    bodySha256: EMPTY_SHA256,
  });
  assertEquals(
    text,
    `snapmesh-request-v1\nGET\nnode-a:7070\n/v1/peer/hello?x=1\n1700000000000\n` +
      `abcdefghijklmnopqrstuv\n${EMPTY_SHA256}`,
  );
});

Deno.test("RequestVerifier accepts a fresh signed request once", () => {
  const { verifier, url, sign } = setup();
  const headers = sign();
  assertEquals(verifier.verify(received(url, headers)), null);
  assertEquals(verifier.remembered, 1);
});

Deno.test("RequestVerifier refuses a replay within the window", async () => {
  const { clock, verifier, url, sign } = setup();
  const headers = sign();
  assertEquals(verifier.verify(received(url, headers)), null);
  await clock.advance(24_000);
  assertEquals(verifier.verify(received(url, headers)), "replayed");
});

Deno.test("RequestVerifier refuses an altered request", async (t) => {
  const { verifier, url, sign } = setup();
  await t.step("path", () => {
    const headers = sign();
    const other = url.replace("/files/mem", "/files/vmstate");
    assertEquals(verifier.verify(received(other, headers)), "bad_signature");
  });
  await t.step("query", () => {
    const headers = sign();
    assertEquals(verifier.verify(received(url + "&wait=1", headers)), "bad_signature");
  });
  await t.step("method", () => {
    const headers = sign();
    assertEquals(verifier.verify(received(url, headers, { method: "POST" })), "bad_signature");
  });
  await t.step("host", () => {
    const headers = sign();
    const other = url.replace("10.0.0.7", "10.0.0.8");
    assertEquals(verifier.verify(received(other, headers)), "bad_signature");
  });
  await t.step("body, with its digest header changed to match", () => {
    const body = new TextEncoder().encode("chunk=1");
    const headers = sign(url, { method: "POST", body });
    const forged = new TextEncoder().encode("chunk=2");
    const altered = { ...headers, [SIGNED_HEADERS.contentSha256]: bodySha256(forged) };
    assertEquals(
      verifier.verify(received(url, altered, { method: "POST", body: forged })),
      "bad_signature",
    );
  });
  await t.step("body, its digest header kept", () => {
    const body = new TextEncoder().encode("chunk=1");
    const headers = sign(url, { method: "POST", body });
    const forged = new TextEncoder().encode("chunk=2");
    assertEquals(
      verifier.verify(received(url, headers, { method: "POST", body: forged })),
      "body_mismatch",
    );
  });
  await t.step("timestamp", () => {
    const headers = sign();
    const altered = {
      ...headers,
      [SIGNED_HEADERS.date]: String(Number(headers[SIGNED_HEADERS.date]) + 1),
    };
    assertEquals(verifier.verify(received(url, altered)), "bad_signature");
  });
  await t.step("nonce", () => {
    const headers = sign();
    const altered = { ...headers, [SIGNED_HEADERS.nonce]: "A".repeat(22) };
    assertEquals(verifier.verify(received(url, altered)), "bad_signature");
  });
  assertEquals(verifier.remembered, 0);
});

Deno.test("RequestVerifier refuses a request 5 minutes old, and one from the future", async () => {
  const { clock, verifier, url, sign } = setup();
  const old = sign();
  await clock.advance(5 * 60_000);
  assertEquals(verifier.verify(received(url, old)), "expired");
  const early = signRequest(new ClusterKeys([KEY]), { method: "GET", url }, {
    now: clock.now() + 31_000,
  });
  assertEquals(verifier.verify(received(url, early)), "expired");
});

Deno.test("RequestVerifier takes a configurable window", async () => {
  const { clock, verifier, url, sign } = setup(5_000);
  const headers = sign();
  await clock.advance(6_000);
  assertEquals(verifier.verify(received(url, headers)), "expired");
});

Deno.test("RequestVerifier refuses another cluster's key, and unsigned or malformed requests", () => {
  const { verifier, url, sign } = setup();
  assertEquals(
    verifier.verify(received(url, sign(url, { keys: new ClusterKeys([OTHER]) }))),
    "bad_signature",
  );
  assertEquals(verifier.verify(received(url, {})), "missing");
  const headers = sign();
  assertEquals(
    verifier.verify(received(url, { ...headers, [SIGNED_HEADERS.signature]: "v1=zz" })),
    "malformed",
  );
  assertEquals(
    verifier.verify(received(url, { ...headers, [SIGNED_HEADERS.nonce]: "short" })),
    "malformed",
  );
  assert(!RequestVerifier.isSigned(received(url, {})));
  assert(RequestVerifier.isSigned(received(url, headers)));
});

Deno.test("RequestVerifier forgets nonces once they expire (bounded memory)", async () => {
  const { clock, verifier, url, sign } = setup();
  for (let i = 0; i < 100; i++) {
    assertEquals(verifier.verify(received(url, sign())), null);
    await clock.advance(1_000);
  }
  // Only nonces whose requests could still be accepted are kept.
  assert(verifier.remembered <= 61, `remembered ${verifier.remembered}`);
});

Deno.test("RequestVerifier refuses signed requests when its nonce set is full", async () => {
  const clock = new VirtualClock();
  const keys = new ClusterKeys([KEY]);
  const verifier = new RequestVerifier(keys, { clock, maxNonces: 2 });
  const url = "http://node:7070/v1/peer/hello";
  const sign = () => signRequest(keys, { method: "GET", url }, { now: clock.now() });
  assertEquals(verifier.verify(received(url, sign())), null);
  assertEquals(verifier.verify(received(url, sign())), null);
  assertEquals(verifier.verify(received(url, sign())), "overloaded");
  await clock.advance(61_000);
  assertEquals(verifier.verify(received(url, sign())), null);
});

Deno.test("ClusterKeys: the first key signs, every key verifies (rotation)", () => {
  const clock = new VirtualClock();
  const url = "http://node:7070/v1/peer/hello";
  const oldNode = new ClusterKeys([KEY]);
  const rotating = ClusterKeys.parse(`# new key first\n${OTHER}\n${KEY}\n`);
  const verifier = new RequestVerifier(rotating, { clock });
  const headers = signRequest(oldNode, { method: "GET", url }, { now: clock.now() });
  assertEquals(verifier.verify(received(url, headers)), null);
  const verifierOld = new RequestVerifier(oldNode, { clock });
  const fromRotated = signRequest(rotating, { method: "GET", url }, { now: clock.now() });
  assertEquals(verifierOld.verify(received(url, fromRotated)), "bad_signature");
});

Deno.test("ClusterKeys refuses short or missing keys", () => {
  assertThrows(() => new ClusterKeys(["short"]), (e) => e instanceof RangeError);
  assertThrows(() => ClusterKeys.parse("\n# nothing\n"), (e) => e instanceof RangeError);
});
