import { assert, assertEquals } from "../helpers/assert.ts";
import { errorCode, publish, testNode } from "../helpers/in_process.ts";
import { readAllowed } from "../../src/api/auth.ts";
import { ClusterKeys, SIGNED_HEADERS, signRequest } from "../../src/security/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const FULL = "full-token-abcdefghijklmnop";
const READ = "read-token-qrstuvwxyz012345";
const KEY = "cluster-key-" + "k".repeat(40);

/** Headers that sign `method url` with `key` at the clock's time. */
function signed(clock: VirtualClock, method: string, url: string, key = KEY, body?: Uint8Array) {
  return signRequest(new ClusterKeys([key]), { method, url, body: body ?? null }, {
    now: clock.now(),
  });
}

Deno.test("signed peer requests: fresh ones pass; replayed, altered, old, foreign and token ones do not", async () => {
  const clock = new VirtualClock();
  await using node = await testNode(
    { token: FULL, "read-token": READ },
    { env: { SNAPMESH_CLUSTER_KEY: KEY }, clock },
  );
  const app = node.app;
  const hello = "http://localhost/v1/peer/hello";
  const fresh = signed(clock, "GET", hello);
  assertEquals((await app.request(hello, { headers: fresh })).status, 200);

  // The same request again (a capture replayed 24 s later): refused.
  await clock.advance(24_000);
  const replayed = await app.request(hello, { headers: fresh });
  assertEquals([replayed.status, await errorCode(replayed)], [401, "unauthorized"]);

  // Altered path, query, method or body.
  const manifest = "http://localhost/v1/peer/snapshots/fn-a/manifest";
  const other = await app.request("http://localhost/v1/peer/snapshots/fn-b/manifest", {
    headers: signed(clock, "GET", manifest),
  });
  assertEquals(other.status, 401);
  const query = await app.request(manifest + "?fetch=1", {
    headers: signed(clock, "GET", manifest),
  });
  assertEquals(query.status, 401);
  const suspect = "http://localhost/v1/peer/snapshots/fn-a/suspect?digest=" + "a".repeat(64) +
    "&file=mem&chunk=0";
  const body = new TextEncoder().encode("one");
  const altered = await app.request(suspect, {
    method: "POST",
    body: "two",
    headers: signed(clock, "POST", suspect, KEY, body),
  });
  assertEquals(altered.status, 401);
  const intact = await app.request(suspect, {
    method: "POST",
    body: "one",
    headers: signed(clock, "POST", suspect, KEY, body),
  });
  assertEquals(intact.status, 202);
  const asPost = await app.request(hello, { method: "POST", headers: signed(clock, "GET", hello) });
  assertEquals(asPost.status, 401);

  // Five minutes old.
  const old = signed(clock, "GET", hello);
  await clock.advance(5 * 60_000);
  assertEquals((await app.request(hello, { headers: old })).status, 401);

  // Another cluster's key.
  const foreign = await app.request(hello, {
    headers: signed(clock, "GET", hello, "another-cluster-" + "z".repeat(40)),
  });
  assertEquals(foreign.status, 401);

  // Client tokens never open node-to-node routes; nothing at all is 401.
  for (const token of [FULL, READ]) {
    const r = await app.request(hello, { headers: { Authorization: `Bearer ${token}` } });
    assertEquals([r.status, await errorCode(r)], [403, "forbidden"]);
  }
  assertEquals((await app.request(hello)).status, 401);
  // A signature opens node-to-node routes only.
  assertEquals(
    (await app.request("/v1/status", {
      headers: signed(clock, "GET", "http://localhost/v1/status"),
    })).status,
    401,
  );

  // Counted, by reason.
  const metrics = await (await app.request("/metrics")).text();
  for (const reason of ["replayed", "bad_signature", "expired", "client_token", "missing"]) {
    assert(
      new RegExp(`snapmesh_peer_auth_failures_total\\{reason="${reason}"\\} [1-9]`).test(metrics),
      `${reason}\n${metrics}`,
    );
  }
});

Deno.test("the read token reads and pulls; publishing, pinning, deleting and drafts are 403", async () => {
  await using node = await testNode({ token: FULL, "read-token": READ });
  assertEquals((await publish(node, "fn-a", { mem: new Uint8Array(1000).fill(7) })).status, 201);
  const as = (token: string) => ({ headers: { Authorization: `Bearer ${token}` } });
  const req = (path: string, method: string, token = READ, body?: string) =>
    node.app.request(path, { method, ...as(token), ...(body ? { body } : {}) });
  for (
    const [method, path] of [
      ["GET", "/v1/snapshots"],
      ["GET", "/v1/snapshots/fn-a"],
      ["GET", "/v1/snapshots/fn-a/files/mem"],
      ["HEAD", "/v1/snapshots/fn-a/files/mem"],
      ["POST", "/v1/snapshots/fn-a/pull"],
      ["GET", "/v1/status"],
      ["GET", "/v1/pulls"],
    ] as const
  ) {
    const r = await req(path, method);
    assertEquals(r.status, 200, `${method} ${path}`);
    await r.body?.cancel();
  }
  for (
    const [method, path, body] of [
      ["PUT", "/v1/snapshots/fn-b/files/mem", "x"],
      ["POST", "/v1/snapshots/fn-b/commit", "{}"],
      ["DELETE", "/v1/snapshots/fn-b/draft"],
      ["PUT", "/v1/snapshots/fn-a/pin"],
      ["DELETE", "/v1/snapshots/fn-a/pin"],
      ["DELETE", "/v1/snapshots/fn-a"],
      ["POST", "/v1/snapshots/fn-a/verify"],
    ] as const
  ) {
    const r = await req(path, method, READ, body);
    assertEquals([r.status, await errorCode(r)], [403, "forbidden"], `${method} ${path}`);
  }
  // A wrong token is 401 and its value is never echoed.
  const wrong = await req("/v1/snapshots", "GET", "not-" + READ);
  const text = await wrong.text();
  assertEquals(wrong.status, 401);
  assert(!text.includes(READ) && !text.includes(FULL), text);
  assertEquals((await req("/v1/snapshots/fn-a", "GET", FULL)).status, 200);
});

Deno.test("peer routes: the one token opens them without roles; with a read token and no peer credentials they are closed", async () => {
  {
    await using node = await testNode({ token: FULL });
    const r = await node.app.request("/v1/peer/hello", {
      headers: { Authorization: `Bearer ${FULL}` },
    });
    assertEquals(r.status, 200);
    assertEquals((await node.app.request("/v1/peer/hello")).status, 401);
  }
  {
    await using node = await testNode({ token: FULL, "read-token": READ });
    for (const token of [FULL, READ]) {
      const r = await node.app.request("/v1/peer/hello", {
        headers: { Authorization: `Bearer ${token}` },
      });
      assertEquals([r.status, await errorCode(r)], [403, "forbidden"]);
    }
  }
});

Deno.test("readAllowed(): GET and HEAD anywhere, POST only to pull or restore, DELETE only a restore", () => {
  assert(readAllowed("GET", "/v1/snapshots/x/files/mem"));
  assert(readAllowed("HEAD", "/v1/snapshots/x/files/mem"));
  assert(readAllowed("POST", "/v1/snapshots/x/pull"));
  assert(!readAllowed("POST", "/v1/snapshots/x/pull/extra"));
  assert(!readAllowed("POST", "/v1/snapshots/x/commit"));
  assert(!readAllowed("PUT", "/v1/snapshots/x/pin"));
  assert(!readAllowed("DELETE", "/v1/snapshots/x"));
  assert(readAllowed("POST", "/v1/snapshots/x/restore"));
  assert(readAllowed("DELETE", "/v1/restores/r-1"));
  assert(!readAllowed("DELETE", "/v1/restores"));
  assert(!readAllowed("PUT", "/v1/snapshots/x/workingset"));
  assertEquals(SIGNED_HEADERS.signature, "x-snapmesh-signature");
});
