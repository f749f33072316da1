/**
 * Trust between nodes, with real agents: TLS and mutual TLS on the
 * listener, client roles, peers that authenticate as peers, certificates
 * rotated without a restart, signed snapshots refused or accepted from
 * peers and from the origin, and secrets that never leak.
 */

import { assert, assertEquals, assertMatch, assertRejects } from "../helpers/assert.ts";
import {
  type AgentProcess,
  runSnapmesh,
  snapmeshCommand,
  startAgent,
} from "../helpers/agent_process.ts";
import { startCluster } from "../helpers/cluster.ts";
import { memFile, originArgs, startOrigin } from "../helpers/fixtures.ts";
import { tempDir } from "../helpers/temp.ts";
import { issueCert, makeCa, type TestCert } from "../helpers/tls.ts";
import { ClusterKeys, generateKeyPair, signRequest } from "../../src/security/mod.ts";

const FULL = "full-secret-token-0123456789";
const READ = "read-secret-token-9876543210";
const CLUSTER_KEY = "cluster-secret-key-" + "x".repeat(40);
const BASE = ["--chunk-size", "256KiB", "--origin-stall-timeout", "2s"];

/** An HTTP client trusting `ca`, presenting `cert` when given. */
function httpsClient(caPem: string, cert?: TestCert): Deno.HttpClient {
  return Deno.createHttpClient({
    caCerts: [caPem],
    ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}),
  });
}

/** A request to an agent; the body read as JSON (or text when it is not). */
async function call(
  url: string,
  init: RequestInit & { client?: Deno.HttpClient; token?: string } = {},
): Promise<{ status: number; body: Record<string, unknown> | string }> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set("Authorization", `Bearer ${init.token}`);
  const response = await fetch(url, { ...init, headers });
  const text = await response.text();
  let body: Record<string, unknown> | string = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON.
  }
  return { status: response.status, body };
}

function code(body: unknown): string | undefined {
  return (body as { error?: { code?: string } })?.error?.code;
}

/** Stages one file and commits it on `agent` with the full token. */
async function publishOn(
  agent: AgentProcess,
  name: string,
  bytes: Uint8Array<ArrayBuffer>,
  options: { token?: string; client?: Deno.HttpClient } = {},
): Promise<Record<string, unknown>> {
  const token = options.token ?? FULL;
  const client = options.client ? { client: options.client } : {};
  const put = await call(`${agent.url}/v1/snapshots/${name}/files/mem`, {
    method: "PUT",
    body: bytes,
    token,
    ...client,
  });
  assertEquals(put.status, 201, JSON.stringify(put.body));
  const commit = await call(`${agent.url}/v1/snapshots/${name}/commit`, {
    method: "POST",
    body: "{}",
    token,
    ...client,
  });
  assertEquals(commit.status, 201, JSON.stringify(commit.body));
  return commit.body as Record<string, unknown>;
}

/** The serial number of the certificate a new TLS connection to `url` gets (openssl s_client). */
async function servedSerial(url: string): Promise<string> {
  const { hostname, port } = new URL(url);
  const out = await new Deno.Command("sh", {
    args: [
      "-c",
      `openssl s_client -connect ${hostname}:${port} </dev/null 2>/dev/null | ` +
      "openssl x509 -noout -serial",
    ],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).trim().replace(/^serial=/, "").toUpperCase()
    .replace(/^0+(?=.)/, "");
}

Deno.test("TLS and mutual TLS: https with the CA, no plain http, other CAs refused, roles, peers only by certificate", async () => {
  await using tmp = await tempDir();
  const fleet = await makeCa(tmp.path, "fleet");
  const other = await makeCa(tmp.path, "other");
  const nodeA = await issueCert(fleet, tmp.path, "node-a");
  const nodeB = await issueCert(fleet, tmp.path, "node-b");
  const rogue = await issueCert(other, tmp.path, "rogue");
  const anonymous = httpsClient(fleet.pem);
  const peer = httpsClient(fleet.pem, nodeB);
  const outsider = httpsClient(fleet.pem, rogue);
  try {
    await using agent = await startAgent({
      dataDir: `${tmp.path}/a`,
      args: [
        ...BASE,
        ...["--tls-cert", nodeA.cert, "--tls-key", nodeA.key, "--tls-ca", fleet.cert],
        ...["--peer-mtls", "--token", FULL, "--read-token", READ],
      ],
      client: anonymous,
    });
    assertMatch(agent.url, /^https:\/\/127\.0\.0\.1:\d+$/);

    // https with the CA works; plain http to the TLS listener does not.
    assertEquals((await call(`${agent.url}/healthz`, { client: anonymous })).status, 200);
    const plain = agent.url.replace("https://", "http://");
    await assertRejects(() => fetch(`${plain}/healthz`).then((r) => r.text()));
    // Without the CA, the server's certificate is not trusted.
    await assertRejects(() => fetch(`${agent.url}/healthz`).then((r) => r.text()));

    // A client certificate from another CA is refused at the TLS layer.
    await assertRejects(() =>
      fetch(`${agent.url}/healthz`, { client: outsider }).then((r) => r.text())
    );

    assertMatch(agent.logs(), /refused a TLS client certificate that does not chain to --tls-ca/);

    // Node-to-node routes: a certificate from the CA, not a client token.
    const hello = await call(`${agent.url}/v1/peer/hello`, { client: peer });
    assertEquals(hello.status, 200, JSON.stringify(hello.body));
    for (const token of [FULL, READ]) {
      const r = await call(`${agent.url}/v1/peer/hello`, { client: anonymous, token });
      assertEquals([r.status, code(r.body)], [403, "forbidden"], token);
    }
    const none = await call(`${agent.url}/v1/peer/hello`, { client: anonymous });
    assertEquals([none.status, code(none.body)], [401, "unauthorized"]);
    // And a certificate opens node-to-node routes only.
    assertEquals((await call(`${agent.url}/v1/status`, { client: peer })).status, 401);

    // Roles: the read token reads and pulls; it cannot publish, pin or delete.
    const bytes = memFile(4, 1);
    await publishOn(agent, "fn-a", bytes, { client: anonymous });
    const asReader = { client: anonymous, token: READ };
    const refused: [string, string, string?][] = [
      ["PUT", "/v1/snapshots/fn-b/files/mem", "x"],
      ["POST", "/v1/snapshots/fn-a/commit", "{}"],
      ["PUT", "/v1/snapshots/fn-a/pin"],
      ["DELETE", "/v1/snapshots/fn-a/pin"],
      ["DELETE", "/v1/snapshots/fn-a"],
      ["DELETE", "/v1/snapshots/fn-a/draft"],
      ["POST", "/v1/snapshots/fn-a/files/mem/import", '{"path":"/etc/passwd"}'],
    ];
    for (const [method, path, body] of refused) {
      const r = await call(`${agent.url}${path}`, {
        method,
        ...asReader,
        ...(body ? { body } : {}),
      });
      assertEquals([r.status, code(r.body)], [403, "forbidden"], `${method} ${path}`);
    }
    assertEquals((await call(`${agent.url}/v1/snapshots`, asReader)).status, 200);
    assertEquals((await call(`${agent.url}/v1/snapshots/fn-a`, asReader)).status, 200);
    assertEquals((await call(`${agent.url}/v1/status`, asReader)).status, 200);
    const read = await fetch(`${agent.url}/v1/snapshots/fn-a/files/mem`, {
      client: anonymous,
      headers: { Authorization: `Bearer ${READ}` },
    });
    assertEquals(read.status, 200);
    assertEquals(new Uint8Array(await read.arrayBuffer()).length, bytes.length);
    const pulled = await call(`${agent.url}/v1/snapshots/fn-a/pull`, {
      method: "POST",
      ...asReader,
    });
    assertEquals(pulled.status, 200, JSON.stringify(pulled.body));
    // Still there: nothing the read token sent changed it.
    assertEquals(
      (await call(`${agent.url}/v1/snapshots/fn-a`, { client: anonymous, token: FULL })).status,
      200,
    );
  } finally {
    anonymous.close();
    peer.close();
    outsider.close();
  }
});

/** Writes a key pair into `dir`; returns the private key path and the public line. */
async function keyPair(dir: string, name: string): Promise<{ key: string; line: string }> {
  const pair = await generateKeyPair(name);
  const key = `${dir}/${name}.key`;
  await Deno.writeTextFile(key, pair.privatePem, { mode: 0o600 });
  return { key, line: pair.publicLine };
}

/** A request to a peer route, signed with `key` as a peer would. */
async function signedCall(
  url: string,
  key: string,
  init: { method?: string; headers?: Record<string, string> } = {},
): Promise<
  { status: number; body: Record<string, unknown> | string; headers: Record<string, string> }
> {
  const method = init.method ?? "GET";
  const headers = signRequest(new ClusterKeys([key]), { method, url }, { now: Date.now() });
  const sent = { ...headers, ...init.headers };
  const r = await call(url, { method, headers: sent });
  return { ...r, headers: sent };
}

Deno.test("a rogue node with the cluster key but an untrusted signing key publishes 'forged': an honest node refuses to pull, cache or serve it", async () => {
  await using tmp = await tempDir();
  const publisher = await keyPair(tmp.path, "publisher");
  const rogueKey = await keyPair(tmp.path, "rogue");
  const trusted = `${tmp.path}/trusted-keys`;
  await Deno.writeTextFile(trusted, `# the fleet's publisher\n${publisher.line}\n`);
  const keyFile = `${tmp.path}/cluster.key`;
  await Deno.writeTextFile(keyFile, CLUSTER_KEY + "\n", { mode: 0o600 });
  await using c = await startCluster({
    ids: ["pub", "honest", "rogue"],
    dir: tmp.path,
    token: () => FULL,
    args: (id) => [
      ...BASE,
      "--cluster-key-file",
      keyFile,
      ...(id === "pub" ? ["--signing-key", publisher.key, "--trusted-keys", trusted] : []),
      ...(id === "honest" ? ["--trusted-keys", trusted] : []),
      ...(id === "rogue" ? ["--signing-key", rogueKey.key] : []),
    ],
  });
  const honest = c.get("honest");
  const forged = await publishOn(c.get("rogue"), "forged", memFile(4, 7));
  const good = await publishOn(c.get("pub"), "good", memFile(4, 8));

  // Refused: pull, read-through of a file, and the manifest.
  const pull = await call(`${honest.url}/v1/snapshots/forged/pull`, {
    method: "POST",
    token: FULL,
  });
  assertEquals(
    [pull.status, code(pull.body)],
    [502, "untrusted_snapshot"],
    JSON.stringify(pull.body),
  );
  assertMatch(JSON.stringify(pull.body), /not signed by a trusted key|No trusted copy/);
  const file = await call(`${honest.url}/v1/snapshots/forged/files/mem`, { token: FULL });
  assertEquals([file.status, code(file.body)], [502, "untrusted_snapshot"]);
  const list = await call(`${honest.url}/v1/snapshots`, { token: FULL });
  assert(!JSON.stringify(list.body).includes("forged"), JSON.stringify(list.body));
  // Not cached, not offered to peers, nothing left on disk.
  const asked = await signedCall(`${honest.url}/v1/peer/snapshots/forged/manifest`, CLUSTER_KEY);
  assertEquals(asked.status, 404);
  const leftovers = [...Deno.readDirSync(`${tmp.path}/honest/snapshots`)].map((e) => e.name);
  assert(!leftovers.includes("forged"), leftovers.join());
  const metrics = await (await fetch(`${honest.url}/metrics`)).text();
  assertMatch(metrics, /snapmesh_untrusted_snapshots_total\{source="peer"\} [1-9]/);

  // The publisher's snapshot arrives with its signature, which travels on.
  const pulled = await call(`${honest.url}/v1/snapshots/good/pull`, {
    method: "POST",
    token: FULL,
  });
  assertEquals(pulled.status, 200, JSON.stringify(pulled.body));
  assertEquals((pulled.body as { digest: string }).digest, good.digest);
  const sidecar = JSON.parse(
    await Deno.readTextFile(`${tmp.path}/honest/snapshots/good/manifest.sig`),
  );
  assertEquals(sidecar.digest, good.digest);
  const offered = await signedCall(`${honest.url}/v1/peer/snapshots/good/manifest`, CLUSTER_KEY);
  assertEquals(offered.status, 200);
  assertEquals((offered.body as { signatures: unknown }).signatures, sidecar.signatures);

  // A captured signed request cannot be replayed.
  const replay = await call(`${honest.url}/v1/peer/snapshots/good/manifest`, {
    headers: offered.headers,
  });
  assertEquals([replay.status, code(replay.body)], [401, "unauthorized"]);
  // The rogue's own copy is unsigned as far as the fleet is concerned.
  assert(typeof forged.digest === "string");
});

Deno.test("the origin path: an unsigned manifest (or another snapshot's signature) is refused, adoption too; a signed one is pulled", async () => {
  await using o = await startOrigin();
  await using tmp = await tempDir();
  const publisher = await keyPair(tmp.path, "publisher");
  const trusted = `${tmp.path}/trusted-keys`;
  await Deno.writeTextFile(trusted, publisher.line + "\n");
  const start = (id: string, args: string[]) =>
    startAgent({
      dataDir: `${tmp.path}/${id}`,
      args: [...BASE, ...originArgs(o), "--token", FULL, "--node-id", id, ...args],
      env: o.s3.env,
    });
  const [pub, unsigned, honest] = await Promise.all([
    start("pub", ["--push", "sync", "--signing-key", publisher.key]),
    start("unsigned", ["--push", "sync"]),
    start("honest", ["--push", "off", "--trusted-keys", trusted]),
  ]);
  await using _pub = pub;
  await using _unsigned = unsigned;
  await using _honest = honest;

  const good = await publishOn(pub, "good", memFile(4, 11));
  await publishOn(unsigned, "forged", memFile(4, 12));
  const keys = await o.s3.keys();
  assert(keys.includes("good/manifest.sig"), keys.join());
  assert(!keys.includes("forged/manifest.sig"), keys.join());

  const pullOn = (name: string) =>
    call(`${honest.url}/v1/snapshots/${name}/pull`, { method: "POST", token: FULL });
  const refused = await pullOn("forged");
  assertEquals([refused.status, code(refused.body)], [502, "untrusted_snapshot"]);
  assertMatch(JSON.stringify(refused.body), /the origin/);

  // A signature of another snapshot does not vouch for this one.
  await o.s3.put("forged/manifest.sig", (await o.s3.get("good/manifest.sig"))!);
  await call(`${honest.url}/v1/snapshots/forged`, { method: "DELETE", token: FULL });
  const swapped = await pullOn("forged");
  assertEquals([swapped.status, code(swapped.body)], [502, "untrusted_snapshot"]);

  // Files without a manifest (a vHive-style upload) carry no publisher signature.
  await o.s3.put("vhive-1/mem_file", memFile(2, 13));
  const adopted = await pullOn("vhive-1");
  assertEquals([adopted.status, code(adopted.body)], [502, "untrusted_snapshot"]);
  assertMatch(JSON.stringify(adopted.body), /without a manifest/);

  const ok = await pullOn("good");
  assertEquals(ok.status, 200, JSON.stringify(ok.body));
  assertEquals((ok.body as { digest: string; source: string }).source, "origin");
  assertEquals((ok.body as { digest: string }).digest, good.digest);

  const names = JSON.stringify((await call(`${honest.url}/v1/snapshots`, { token: FULL })).body);
  assert(names.includes('"good"') && !names.includes("forged") && !names.includes("vhive"), names);
  const metrics = await (await fetch(`${honest.url}/metrics`)).text();
  assertMatch(metrics, /snapmesh_untrusted_snapshots_total\{source="origin"\} [2-9]/);
  assertMatch(metrics, /snapmesh_untrusted_snapshots_total\{source="adopted"\} [1-9]/);
});

/** Sends `GET path` on an open connection and reads one small response. */
async function rawGet(conn: Deno.Conn, path: string): Promise<string> {
  await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: node\r\n\r\n`));
  const buffer = new Uint8Array(4096);
  let text = "";
  while (!/\r\n\r\n[\s\S]*\}/.test(text)) {
    const n = await conn.read(buffer);
    if (n === null) break;
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return text;
}

Deno.test("certificates rotate without a restart: new connections get the new one, open ones keep theirs", async (t) => {
  await using tmp = await tempDir();
  const fleet = await makeCa(tmp.path, "fleet");
  const first = await issueCert(fleet, tmp.path, "node-v1");
  const second = await issueCert(fleet, tmp.path, "node-v2");
  assert(first.serial !== second.serial);
  for (const mtls of [false, true]) {
    await t.step(mtls ? "mutual TLS listener (node:tls)" : "TLS listener (rustls)", async () => {
      const dir = `${tmp.path}/${mtls ? "mtls" : "tls"}`;
      await Deno.mkdir(dir);
      const cert = `${dir}/live.pem`;
      const key = `${dir}/live.key`;
      await Deno.copyFile(first.cert, cert);
      await Deno.copyFile(first.key, key);
      const client = httpsClient(fleet.pem);
      try {
        await using agent = await startAgent({
          dataDir: `${dir}/data`,
          args: [
            ...["--tls-cert", cert, "--tls-key", key, "--tls-ca", fleet.cert],
            ...(mtls ? ["--peer-mtls"] : []),
          ],
          client,
        });
        assertEquals(await servedSerial(agent.url), first.serial);
        const { hostname, port } = new URL(agent.url);
        using open = await Deno.connectTls({
          hostname,
          port: Number(port),
          caCerts: [fleet.pem],
        });
        assertMatch(await rawGet(open, "/healthz"), /^HTTP\/1\.1 200/);

        // Rotate as cert-manager or certbot would: each file replaced by a rename.
        for (const [from, to] of [[second.key, key], [second.cert, cert]]) {
          await Deno.copyFile(from!, `${to}.new`);
          await Deno.rename(`${to}.new`, to!);
        }
        const deadline = Date.now() + 20_000;
        let serial = "";
        while (
          Date.now() < deadline && (serial = await servedSerial(agent.url)) !== second.serial
        ) {
          await new Promise((r) => setTimeout(r, 100));
        }
        assertEquals(serial, second.serial, agent.logs());
        assertMatch(agent.logs(), /TLS files reloaded/);
        // The connection opened before the rotation still serves requests.
        assertMatch(await rawGet(open, "/healthz"), /^HTTP\/1\.1 200/);
        // And new https requests verify against the same CA.
        assertEquals((await call(`${agent.url}/healthz`, { client })).status, 200);
        const metrics = await call(`${agent.url}/metrics`, { client });
        assertMatch(String(metrics.body), /snapmesh_tls_reloads_total 1/);
      } finally {
        client.close();
      }
    });
  }
});

Deno.test("credentials never appear in logs, --print-config, --config-template or error bodies", async () => {
  await using tmp = await tempDir();
  const tokenFile = `${tmp.path}/token`;
  await Deno.writeTextFile(tokenFile, FULL + "\n", { mode: 0o600 });
  const env = { SNAPMESH_CLUSTER_KEY: CLUSTER_KEY, SNAPMESH_READ_TOKEN: READ };
  const secrets = [FULL, READ, CLUSTER_KEY];
  const leaks = (text: string) => secrets.filter((s) => text.includes(s));

  const printed = await runSnapmesh(["serve", "--print-config", "--token-file", tokenFile], {
    env,
  });
  assertEquals(printed.code, 0, printed.stderr);
  assertEquals(leaks(printed.stdout + printed.stderr), []);
  const config = JSON.parse(printed.stdout);
  assertEquals([config.token, config["read-token"], config["token-file"]], [
    "[set]",
    "[set]",
    tokenFile,
  ]);
  const template = await runSnapmesh([
    "serve",
    "--config-template",
    ...["--token", FULL, "--read-token", READ],
  ]);
  assertEquals(template.code, 0, template.stderr);
  assertEquals(leaks(template.stdout), []);

  await using agent = await startAgent({
    dataDir: `${tmp.path}/data`,
    args: ["--token-file", tokenFile, "--log-level", "debug"],
    env,
  });
  const bodies: string[] = [];
  const probe = async (path: string, init: RequestInit & { token?: string } = {}) => {
    const r = await call(`${agent.url}${path}`, init);
    bodies.push(JSON.stringify(r.body));
    return r;
  };
  assertEquals((await probe("/v1/status", { token: FULL })).status, 200);
  await probe("/v1/status", { token: FULL + "x" });
  await probe("/v1/status", { headers: { Authorization: `Basic ${FULL}` } });
  await probe("/v1/snapshots/a/pin", { method: "PUT", token: READ });
  await probe("/v1/peer/hello", { token: FULL });
  await probe("/v1/peer/hello", { token: READ });
  await probe(`/v1/peer/hello?key=${CLUSTER_KEY.slice(0, 8)}`, {
    headers: signRequest(new ClusterKeys(["not-" + CLUSTER_KEY]), {
      method: "GET",
      url: `${agent.url}/v1/peer/hello`,
    }, { now: Date.now() }),
  });
  await probe("/v1/snapshots/nope/pull", { method: "POST", token: FULL });
  const ok = await signedCall(`${agent.url}/v1/peer/hello`, CLUSTER_KEY);
  assertEquals(ok.status, 200);
  await agent.stop();
  assertEquals(leaks(bodies.join("\n")), []);
  assertEquals(leaks(agent.logs()), [], "agent logs");
  // The log still says what happened.
  assertMatch(agent.logs(), /"status":401/);
});

Deno.test("peers over mutual TLS: a snapshot moves node to node, each verifying the other's certificate", async () => {
  await using tmp = await tempDir();
  const fleet = await makeCa(tmp.path, "fleet");
  const certs = {
    a: await issueCert(fleet, tmp.path, "node-a"),
    b: await issueCert(fleet, tmp.path, "node-b"),
  };
  const client = httpsClient(fleet.pem);
  try {
    await using c = await startCluster({
      ids: ["a", "b"],
      dir: tmp.path,
      token: () => FULL,
      client,
      args: (id) => {
        const cert = certs[id as "a" | "b"];
        return [
          ...BASE,
          ...["--tls-cert", cert.cert, "--tls-key", cert.key, "--tls-ca", fleet.cert],
          "--peer-mtls",
        ];
      },
    });
    const published = await publishOn(c.get("a"), "fn-tls", memFile(8, 21), { client });
    const pulled = await call(`${c.get("b").url}/v1/snapshots/fn-tls/pull`, {
      method: "POST",
      token: FULL,
      client,
    });
    assertEquals(pulled.status, 200, JSON.stringify(pulled.body));
    const body = pulled.body as { digest: string; source: string };
    assertEquals([body.digest, body.source], [published.digest, "peer"]);
  } finally {
    client.close();
  }
});

Deno.test("under ulimit -n 128, a flood of connections that never handshake runs into EMFILE and both TLS listeners keep accepting", async (t) => {
  await using tmp = await tempDir();
  const fleet = await makeCa(tmp.path, "fleet");
  const cert = await issueCert(fleet, tmp.path, "node");
  const [exe, lead] = snapmeshCommand();
  for (const mtls of [false, true]) {
    await t.step(mtls ? "mutual TLS listener" : "TLS listener", async () => {
      const client = httpsClient(fleet.pem);
      try {
        await using agent = await startAgent({
          dataDir: `${tmp.path}/${mtls ? "mtls" : "tls"}`,
          command: ["sh", ["-c", 'ulimit -n 128 && exec "$@"', "snapmesh", exe, ...lead]],
          args: [
            ...["--tls-cert", cert.cert, "--tls-key", cert.key, "--tls-ca", fleet.cert],
            ...(mtls ? ["--peer-mtls"] : []),
          ],
          client,
        });
        const { hostname, port } = new URL(agent.url);
        const flood: Deno.TcpConn[] = [];
        try {
          for (let i = 0; i < 600; i++) {
            flood.push(await Deno.connect({ hostname, port: Number(port) }));
          }
        } finally {
          for (const conn of flood) conn.close();
        }
        const deadline = Date.now() + 15_000;
        let status = 0;
        while (Date.now() < deadline && status !== 200) {
          status = await fetch(`${agent.url}/healthz`, { client })
            .then(async (r) => (await r.body?.cancel(), r.status), () => 0);
          if (status !== 200) await new Promise((r) => setTimeout(r, 50));
        }
        assertEquals(status, 200, agent.logs().slice(-3000));
        assertMatch(agent.logs(), /cannot accept connections; retrying.*Too many open files/);
      } finally {
        client.close();
      }
    });
  }
});
