/**
 * What the CLI says is true: JSON error objects under --json, the flag (not
 * the query parameter) in rm's hint, why a peer is down, a quarantine after
 * a failed verify, and a `pull --hot` that does not claim the snapshot was
 * pulled. Real agents, the CLI as a real process.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { type AgentProcess, runSnapmesh, startAgent } from "../helpers/agent_process.ts";
import { startCluster } from "../helpers/cluster.ts";
import { CHUNK, memFile } from "../helpers/fixtures.ts";
import { startS3 } from "../helpers/s3.ts";
import { randomBytes, sha256, tempDir } from "../helpers/temp.ts";

const MiB = 1024 * 1024;

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

/** The one JSON error object a failed command printed on stderr. */
function errorOf(stderr: string): Record<string, unknown> {
  const lines = stderr.trim().split("\n");
  assertEquals(lines.length, 1, `one line on stderr, got:\n${stderr}`);
  const parsed = JSON.parse(lines[0]!);
  assertEquals(Object.keys(parsed), ["error"]);
  return parsed.error;
}

async function putFile(agent: AgentProcess, name: string, path: string): Promise<void> {
  const r = await runSnapmesh(["put", name, path], { env: { SNAPMESH_NODE: agent.url } });
  assertEquals(r.code, 0, r.stderr);
}

Deno.test("under --json a failure is one JSON error object on stderr; exit codes stay 1 and 2", async (t) => {
  await using tmp = await tempDir();
  await using agent = await startAgent({ dataDir: `${tmp.path}/data` });
  const env = { SNAPMESH_NODE: agent.url };

  await t.step("the node's own error object", async () => {
    const direct = await fetch(`${agent.url}/v1/snapshots/nope/files/mem`);
    const own = (await direct.json()).error;
    const r = await runSnapmesh(["get", "nope", "mem", "--json"], { env });
    assertEquals([r.code, r.stdout], [1, ""]);
    assertEquals(errorOf(r.stderr), own);
    assertEquals(own.code, "snapshot_not_found");
  });
  await t.step("an unreachable node", async () => {
    const r = await runSnapmesh(["ls", "--json"], { env: { SNAPMESH_NODE: "http://127.0.0.1:1" } });
    assertEquals([r.code, r.stdout], [1, ""]);
    const error = errorOf(r.stderr);
    assertEquals(error.code, "unreachable");
    assertMatch(String(error.message), /Cannot reach the node at http:\/\/127\.0\.0\.1:1/);
  });
  await t.step("bad usage, exit 2", async () => {
    for (const args of [["put", "--json"], ["ls", "--bogus", "--json"], ["get", "x", "--json"]]) {
      const r = await runSnapmesh(args, { env });
      assertEquals([r.code, r.stdout], [2, ""], args.join(" "));
      assertEquals(errorOf(r.stderr).code, "invalid_usage");
    }
  });
  await t.step("without --json, plain text as before", async () => {
    const r = await runSnapmesh(["get", "nope", "mem"], { env });
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /^snapmesh: Snapshot "nope"/);
  });
});

Deno.test("rm of a pinned snapshot points at --force, not at the API's query parameter", async () => {
  await using tmp = await tempDir();
  await using agent = await startAgent({ dataDir: `${tmp.path}/data` });
  const env = { SNAPMESH_NODE: agent.url };
  await Deno.writeFile(`${tmp.path}/mem`, randomBytes(MiB, 1));
  await putFile(agent, "fn-pinned", `${tmp.path}/mem`);
  assertEquals((await runSnapmesh(["pin", "fn-pinned"], { env })).code, 0);
  const r = await runSnapmesh(["rm", "fn-pinned"], { env });
  assertEquals(r.code, 1);
  assertMatch(
    r.stderr,
    /is pinned: unpin it first \(snapmesh unpin fn-pinned\), or remove it anyway with: snapmesh rm fn-pinned --force/,
  );
  assert(!r.stderr.includes("?force"), r.stderr);
  const asJson = await runSnapmesh(["rm", "fn-pinned", "--json"], { env });
  const error = errorOf(asJson.stderr);
  assertEquals(error.code, "snapshot_pinned");
  assert(!String(error.message).includes("?force"), String(error.message));
  assertEquals((await runSnapmesh(["rm", "fn-pinned", "--force"], { env })).code, 0);
});

Deno.test("peers shows why a peer is down", async () => {
  await using tmp = await tempDir();
  // Nothing listens on port 1 of loopback: the peer is down with a connection error.
  await using agent = await startAgent({
    dataDir: `${tmp.path}/data`,
    args: ["--peers", "http://127.0.0.1:1"],
  });
  const env = { SNAPMESH_NODE: agent.url };
  let lastError = "";
  await waitFor("the peer's error", async () => {
    const status = await (await fetch(`${agent.url}/v1/status`)).json();
    lastError = status.peers[0]?.lastError ?? "";
    return lastError !== "";
  });
  const r = await runSnapmesh(["peers"], { env });
  assertEquals(r.code, 0, r.stderr);
  const [header, row] = r.stdout.split("\n");
  assertMatch(header!, /LAST ERROR/);
  assertMatch(row!, /http:\/\/127\.0\.0\.1:1\s+down\s+never\s+/);
  assert(row!.includes(lastError), `${row} should include ${lastError}`);
});

/** Flips one byte of a cached file, as bit rot would. */
async function rot(path: string, offset: number): Promise<void> {
  await Deno.chmod(path, 0o644);
  const file = await Deno.open(path, { read: true, write: true });
  try {
    const byte = new Uint8Array(1);
    await file.seek(offset, Deno.SeekMode.Start);
    await file.read(byte);
    byte[0]! ^= 0xff;
    await file.seek(offset, Deno.SeekMode.Start);
    await file.write(byte);
  } finally {
    file.close();
  }
}

Deno.test("verify says the snapshot was quarantined and where the next read gets a good copy", async (t) => {
  await using s3 = await startS3();
  await using tmp = await tempDir();
  const origin = [
    "--origin-endpoint",
    s3.endpoint,
    "--origin-bucket",
    s3.bucket,
    "--origin-prefix",
    s3.prefix,
    "--push",
    "sync",
  ];
  await using agent = await startAgent({ dataDir: `${tmp.path}/data`, args: origin, env: s3.env });
  const env = { SNAPMESH_NODE: agent.url };
  const mem = randomBytes(3 * MiB, 2);
  await Deno.writeFile(`${tmp.path}/mem`, mem);

  await t.step("text: BAD lines, then the quarantine and the origin on stderr", async () => {
    await putFile(agent, "fn-rot", `${tmp.path}/mem`);
    await rot(`${tmp.path}/data/snapshots/fn-rot/files/mem`, MiB + 17);
    const r = await runSnapmesh(["verify", "fn-rot"], { env });
    assertEquals(r.code, 1, r.stderr);
    assertMatch(r.stdout, /^BAD mem/m);
    assertMatch(
      r.stderr,
      /fn-rot does NOT verify \(mem differ from the manifest\): the node quarantined it/,
    );
    assertMatch(r.stderr, new RegExp(`under ${tmp.path}/data/quarantine/`));
    assertMatch(
      r.stderr,
      new RegExp(
        `the next read or pull of fn-rot fetches a good copy from the origin \\(${s3.endpoint}, bucket ${s3.bucket}\\)`,
      ),
    );
    // And so it does (the node may have fetched it again in the background already).
    const pulled = await runSnapmesh(["pull", "fn-rot", "--json"], { env });
    assertEquals(pulled.code, 0, pulled.stderr);
    const answer = JSON.parse(pulled.stdout);
    assert(["origin", "local"].includes(answer.source), pulled.stdout);
    assertEquals(await sha256(await Deno.readFile(answer.paths.mem)), await sha256(mem));
  });

  await t.step(
    "--json: the report with quarantined and refetchFrom, the error on stderr",
    async () => {
      await rot(`${tmp.path}/data/snapshots/fn-rot/files/mem`, 2 * MiB + 5);
      const r = await runSnapmesh(["verify", "fn-rot", "--json"], { env });
      assertEquals(r.code, 1);
      const report = JSON.parse(r.stdout);
      assertEquals([report.ok, report.quarantined], [false, true]);
      assertMatch(report.refetchFrom.join(" "), /^the origin/);
      const error = errorOf(r.stderr);
      assertEquals([error.code, error.quarantined], ["verification_failed", true]);
    },
  );
});

Deno.test("pull --hot says the hot set is ready and the files are incomplete, not 'pulled'", async () => {
  await using tmp = await tempDir();
  // a serves slowly (2 MB/s), so the whole snapshot takes seconds after the hot chunks.
  await using c = await startCluster({
    ids: ["a", "b"],
    dir: tmp.path,
    args: (id) => ["--chunk-size", "256KiB", ...(id === "a" ? ["--max-egress", "2MB"] : [])],
  });
  const auth = { Authorization: "Bearer cluster-token" };
  const a = c.get("a");
  const mem = memFile(40, 5);
  const put = await fetch(`${a.url}/v1/snapshots/fn-hot/files/mem`, {
    method: "PUT",
    body: mem,
    headers: auth,
  });
  assertEquals(put.status, 201, await put.text());
  const commit = await fetch(`${a.url}/v1/snapshots/fn-hot/commit`, {
    method: "POST",
    headers: auth,
    body: JSON.stringify({ hot: { mem: [35, 36, 37] } }),
  });
  assertEquals(commit.status, 201, await commit.text());

  const env = { SNAPMESH_NODE: c.get("b").url, SNAPMESH_TOKEN: "cluster-token" };
  const hot = await runSnapmesh(["pull", "fn-hot", "--hot"], { env });
  assertEquals(hot.code, 0, hot.stderr);
  assertMatch(hot.stdout, /^mem\t\S+\/snapshots\/fn-hot\/files\/mem$/m);
  assertMatch(hot.stderr, /hot set of fn-hot ready after \d+ ms/);
  assertMatch(hot.stderr, /INCOMPLETE: do not load them with Firecracker's File memory backend/);
  assert(!/pulled fn-hot (from|in)/.test(hot.stderr), hot.stderr);

  const full = await runSnapmesh(["pull", "fn-hot"], { env });
  assertEquals(full.code, 0, full.stderr);
  assertMatch(full.stderr, /^(pulled fn-hot from peer in \d+ ms|fn-hot is already local)/);
  const path = hot.stdout.split("\t")[1]!.trim();
  assertEquals(await sha256(await Deno.readFile(path)), await sha256(mem));
  assert(mem.length === 40 * CHUNK);
});
