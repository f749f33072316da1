/**
 * The agent as users run it: a separate process, driven over HTTP and by the CLI.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { runSnapmesh, snapmeshCommand, startAgent } from "../helpers/agent_process.ts";
import { journaledTouches } from "../helpers/journal_file.ts";
import { rawRequest } from "../helpers/raw_http.ts";
import { randomBytes, sha256, tempDir } from "../helpers/temp.ts";
import { waitFor } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

async function put(url: string, name: string, file: string, body: BodyInit, token?: string) {
  const headers: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(`${url}/v1/snapshots/${name}/files/${file}`, {
    method: "PUT",
    body,
    headers,
  });
  return { status: response.status, json: await response.json() };
}

async function commit(url: string, name: string) {
  const response = await fetch(`${url}/v1/snapshots/${name}/commit`, { method: "POST" });
  return { status: response.status, json: await response.json() };
}

Deno.test("serve prints its real port, answers health probes and stops on SIGTERM", async () => {
  await using tmp = await tempDir();
  const agent = await startAgent({ dataDir: tmp.path });
  try {
    assertMatch(agent.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert(!agent.url.endsWith(":0"));
    for (const path of ["/healthz", "/readyz"]) {
      const response = await fetch(`${agent.url}${path}`);
      assertEquals(response.status, 200);
      await response.body?.cancel();
    }
    const metrics = await (await fetch(`${agent.url}/metrics`)).text();
    assert(metrics.includes("snapmesh_ready 1"));
    const logs = agent.logs().trim().split("\n").map((line) => JSON.parse(line));
    assert(logs.some((l) => l.msg === "recovered"));
  } finally {
    const status = await agent.stop();
    assertEquals(status.code, 0, agent.logs());
  }
});

Deno.test("a second agent on the same data directory exits non-zero", async () => {
  await using tmp = await tempDir();
  await using first = await startAgent({ dataDir: tmp.path });
  const second = await runSnapmesh(["serve", "--listen", "127.0.0.1:0", "--data-dir", tmp.path]);
  assertEquals(second.code, 1);
  assertMatch(second.stderr, /Another snapmesh agent \(pid \d+\) is using the data directory/);
  assert(!second.stdout.includes("listening"));
  const still = await fetch(`${first.url}/healthz`);
  assertEquals(still.status, 200);
  await still.body?.cancel();
});

Deno.test("over real HTTP: upload, commit, read, and path tricks never escape", async () => {
  await using tmp = await tempDir();
  await using agent = await startAgent({ dataDir: tmp.path });
  const mem = new Uint8Array(4 * MiB);
  mem.set(randomBytes(MiB, 1), MiB);
  assertEquals((await put(agent.url, "fn-a", "mem", mem)).status, 201);
  assertEquals((await commit(agent.url, "fn-a")).status, 201);
  const file = await fetch(`${agent.url}/v1/snapshots/fn-a/files/mem`);
  assertEquals(await sha256(new Uint8Array(await file.arrayBuffer())), await sha256(mem));

  const tricks = [
    "/v1/snapshots/../files/mem",
    "/v1/snapshots/%2e%2e/files/mem",
    "/v1/snapshots/%2E%2E/files/mem",
    "/v1/snapshots/fn-a/files/..",
    "/v1/snapshots/fn-a/files/%2e%2e",
    "/v1/snapshots/..%2F..%2Fetc/files/passwd",
    "/v1/snapshots/fn-a%2F..%2F..%2F/files/mem",
    "/v1/snapshots/fn-a%5C..%5C/files/mem",
    "/v1/snapshots/fn%00a/files/mem",
    "/v1/snapshots/.journal/files/wal",
    `/v1/snapshots/${"a".repeat(300)}/files/mem`,
  ];
  for (const path of tricks) {
    for (const method of ["GET", "PUT", "DELETE"]) {
      const response = await rawRequest(agent.url, method, path, {}, method === "PUT" ? "x" : "");
      assertEquals(response.status, 400, `${method} ${path}: ${response.body}`);
      assertEquals(JSON.parse(response.body).error.code, "invalid_name");
    }
  }
  // Nothing was created outside the snapshots and drafts of valid names.
  const entries = [...Deno.readDirSync(tmp.path)].map((e) => e.name).sort();
  assertEquals(entries, ["LOCK", "drafts", "journal", "partial", "snapshots", "tmp"]);
  assertEquals([...Deno.readDirSync(`${tmp.path}/snapshots`)].map((e) => e.name), ["fn-a"]);
});

Deno.test("acknowledged snapshots, pins and order survive kill -9; leftovers are cleaned", async () => {
  await using tmp = await tempDir();
  const first = await startAgent({ dataDir: tmp.path, args: ["--cache-size", "12MiB"] });
  const blobs = new Map<string, Uint8Array>();
  for (const [name, seed] of [["a", 1], ["b", 2], ["c", 3]] as const) {
    const bytes = randomBytes(3 * MiB, seed);
    blobs.set(name, bytes);
    assertEquals((await put(first.url, name, "mem", bytes)).status, 201);
    assertEquals((await commit(first.url, name)).status, 201);
  }
  assertEquals((await fetch(`${first.url}/v1/snapshots/b/pin`, { method: "PUT" })).status, 200);
  await (await fetch(`${first.url}/v1/snapshots/a/files/mem`)).arrayBuffer(); // order: b c a
  // The read's access time is journaled in a batch (no fsync): kill only once it is in the file.
  await waitFor(
    "the access time of a in the journal",
    async () => (await journaledTouches(tmp.path)).has("a"),
  );
  // A staged but uncommitted file is acknowledged too.
  assertEquals((await put(first.url, "draft", "mem", randomBytes(1000, 9))).status, 201);
  await first.kill();

  // Leftovers a crash could leave: temp files and an orphaned blob.
  await Deno.writeTextFile(`${tmp.path}/tmp/publish-junk`, "x");
  await Deno.writeTextFile(`${tmp.path}/drafts/draft/blobs/orphan`, "x");

  await using second = await startAgent({ dataDir: tmp.path, args: ["--cache-size", "12MiB"] });
  const list = await (await fetch(`${second.url}/v1/snapshots`)).json();
  assertEquals(list.map((s: { name: string }) => s.name), ["a", "b", "c"]);
  assert(list.find((s: { name: string }) => s.name === "b").pinned);
  assertEquals([...Deno.readDirSync(`${tmp.path}/tmp`)], []);
  assertEquals([...Deno.readDirSync(`${tmp.path}/drafts/draft/blobs`)].length, 1);
  assertEquals((await commit(second.url, "draft")).status, 201);
  // "a" was read last before the crash and "b" is pinned, so "c" goes first.
  assertEquals((await put(second.url, "d", "mem", randomBytes(3 * MiB, 4))).status, 201);
  assertEquals((await commit(second.url, "d")).status, 201);
  const after = (await (await fetch(`${second.url}/v1/snapshots`)).json()).map((
    s: { name: string },
  ) => s.name);
  assertEquals(after, ["a", "b", "d", "draft"]);
  for (const name of ["a", "b"]) {
    const got = await fetch(`${second.url}/v1/snapshots/${name}/files/mem`);
    assertEquals(
      await sha256(new Uint8Array(await got.arrayBuffer())),
      await sha256(blobs.get(name)!),
      name,
    );
  }
});

Deno.test("damage in the middle of the journal stops the agent with a clear message", async () => {
  await using tmp = await tempDir();
  const first = await startAgent({ dataDir: tmp.path });
  for (const name of ["a", "b", "c"]) {
    await put(first.url, name, "f", new TextEncoder().encode(name));
    await commit(first.url, name);
  }
  await first.kill();
  const wal = `${tmp.path}/journal/wal`;
  const bytes = await Deno.readFile(wal);
  bytes[40]! ^= 0xff; // inside the first record: later records are intact
  await Deno.writeFile(wal, bytes);
  const result = await runSnapmesh(["serve", "--listen", "127.0.0.1:0", "--data-dir", tmp.path]);
  assertEquals(result.code, 1);
  assertMatch(result.stderr, /damaged in the middle/);
  assertMatch(result.stderr, /--rebuild-index/);
  assertEquals(
    await sha256(await Deno.readFile(wal)),
    await sha256(bytes),
    "the journal must be left untouched",
  );

  // The documented way out: rebuild the index from a verified scan.
  await using rebuilt = await startAgent({ dataDir: tmp.path, args: ["--rebuild-index"] });
  const names = (await (await fetch(`${rebuilt.url}/v1/snapshots`)).json()).map((
    s: { name: string },
  ) => s.name);
  assertEquals(names, ["a", "b", "c"]);
});

Deno.test("a torn journal tail is truncated and logged, and the agent starts", async () => {
  await using tmp = await tempDir();
  const first = await startAgent({ dataDir: tmp.path });
  await put(first.url, "a", "f", new TextEncoder().encode("a"));
  await commit(first.url, "a");
  await first.kill();
  const wal = `${tmp.path}/journal/wal`;
  const extra = new Uint8Array(13).fill(0x5a); // half a record
  const file = await Deno.open(wal, { append: true });
  await file.write(extra);
  file.close();
  await using second = await startAgent({ dataDir: tmp.path });
  const names = (await (await fetch(`${second.url}/v1/snapshots`)).json()).map((
    s: { name: string },
  ) => s.name);
  assertEquals(names, ["a"]);
  assertMatch(second.logs(), /truncated a torn tail/);
});

Deno.test("the CLI: put, ls, get, pull, pin, rm, verify, status with exit codes 0, 1 and 2", async () => {
  await using tmp = await tempDir();
  await using agent = await startAgent({ dataDir: `${tmp.path}/data`, args: ["--token", "t0k"] });
  const env = { SNAPMESH_NODE: agent.url, SNAPMESH_TOKEN: "t0k" };
  const mem = new Uint8Array(3 * MiB);
  mem.set(randomBytes(MiB, 5), 0);
  await Deno.writeFile(`${tmp.path}/mem`, mem);
  await Deno.writeTextFile(`${tmp.path}/state.bin`, "vmstate");

  const putResult = await runSnapmesh(
    [
      "put",
      "fn-cli",
      `${tmp.path}/mem`,
      "--as",
      `vmstate=${tmp.path}/state.bin`,
      "--label",
      "fn=cli",
    ],
    { env },
  );
  assertEquals(putResult.code, 0, putResult.stderr);
  assertMatch(putResult.stdout, /^committed fn-cli [0-9a-f]{64}/);
  assert(!putResult.stderr.includes("\r"), "no progress bar when stderr is not a TTY");

  const ls = await runSnapmesh(["ls", "--json"], { env });
  assertEquals(ls.code, 0);
  const listed = JSON.parse(ls.stdout);
  assertEquals(listed[0].name, "fn-cli");
  assertEquals(listed[0].files, ["mem", "vmstate"]);

  const out = `${tmp.path}/got`;
  const get = await runSnapmesh(["get", "fn-cli", "mem", "-o", out], { env });
  assertEquals(get.code, 0, get.stderr);
  assertEquals(await sha256(await Deno.readFile(out)), await sha256(mem));
  const toStdout = await runSnapmesh(["get", "fn-cli", "vmstate", "-o", "-"], { env });
  assertEquals(toStdout.stdout, "vmstate");

  const pull = await runSnapmesh(["pull", "fn-cli", "--json"], { env });
  assertEquals(pull.code, 0);
  assertEquals(JSON.parse(pull.stdout).paths.mem, `${tmp.path}/data/snapshots/fn-cli/files/mem`);

  assertEquals((await runSnapmesh(["pin", "fn-cli"], { env })).code, 0);
  const pinnedRm = await runSnapmesh(["rm", "fn-cli"], { env });
  assertEquals(pinnedRm.code, 1);
  assertMatch(pinnedRm.stderr, /pinned/);
  assertEquals((await runSnapmesh(["unpin", "fn-cli"], { env })).code, 0);

  const verify = await runSnapmesh(["verify", "fn-cli"], { env });
  assertEquals(verify.code, 0, verify.stdout + verify.stderr);
  assertMatch(verify.stdout, /fn-cli verifies/);

  const status = await runSnapmesh(["status", "--json"], { env });
  assertEquals(JSON.parse(status.stdout).cache.entries, 1);
  const peers = await runSnapmesh(["peers"], { env });
  assertEquals(peers.code, 0);

  const denied = await runSnapmesh(["ls"], {
    env: { SNAPMESH_NODE: agent.url, SNAPMESH_TOKEN: "wrong" },
  });
  assertEquals(denied.code, 1);
  assertMatch(denied.stderr, /Invalid bearer token/);
  assertEquals((await runSnapmesh(["get", "nope", "mem"], { env })).code, 1);
  assertEquals((await runSnapmesh(["rm", "fn-cli"], { env })).code, 0);
  assertEquals((await runSnapmesh(["ls", "--json"], { env })).stdout.trim(), "[]");

  for (
    const usage of [["put"], ["get", "x"], ["frobnicate"], ["ls", "--bogus"], [
      "serve",
      "--cache-size",
      "lots",
    ], []]
  ) {
    const result = await runSnapmesh(usage, { env });
    assertEquals(result.code, 2, `${usage.join(" ")}: ${result.stderr}`);
  }
  const help = await runSnapmesh(["put", "--help"]);
  assertEquals(help.code, 0);
  assertMatch(help.stdout, /snapmesh put NAME FILE/);
  const version = await runSnapmesh(["--version"]);
  assertMatch(version.stdout, /^snapmesh \d+\.\d+\.\d+/);
  const unreachable = await runSnapmesh(["ls"], { env: { SNAPMESH_NODE: "http://127.0.0.1:1" } });
  assertEquals(unreachable.code, 1);
});

Deno.test("serve --print-config merges file, env and flags and redacts secrets", async () => {
  await using tmp = await tempDir();
  const file = `${tmp.path}/config.json`;
  await Deno.writeTextFile(
    file,
    JSON.stringify({ "cache-size": "1GiB", token: "file-secret", "node-id": "from-file" }),
  );
  const result = await runSnapmesh([
    "serve",
    "--config",
    file,
    "--print-config",
    "--node-id",
    "from-flag",
  ], {
    env: { SNAPMESH_CACHE_SIZE: "2GiB" },
  });
  assertEquals(result.code, 0, result.stderr);
  const printed = JSON.parse(result.stdout);
  assertEquals(printed["cache-size"], 2 * 1024 ** 3);
  assertEquals(printed["node-id"], "from-flag");
  assertEquals(printed.token, "[set]");
  assert(!result.stdout.includes("file-secret"));
  await Deno.writeTextFile(file, JSON.stringify({ "cache-sise": "1GiB" }));
  const bad = await runSnapmesh(["serve", "--config", file]);
  assertEquals(bad.code, 2);
  assertMatch(bad.stderr, /Unknown key "cache-sise"/);
});

Deno.test("the CLI draws a progress bar on a TTY and stays quiet otherwise", async () => {
  await using tmp = await tempDir();
  await using agent = await startAgent({ dataDir: `${tmp.path}/data` });
  await Deno.writeFile(`${tmp.path}/mem`, randomBytes(8 * MiB, 3));
  const [exe, lead] = snapmeshCommand();
  const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const command = [exe, ...lead, "put", "tty-test", `${tmp.path}/mem`].map(quote).join(" ");
  // script(1) runs the command with its stdio on a pseudo-terminal.
  const result = await new Deno.Command("script", {
    args: ["-qec", command, "/dev/null"],
    env: { SNAPMESH_NODE: agent.url },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(result.stdout);
  assertEquals(result.code, 0, text);
  assertMatch(text, /put mem \[#+\.*\]\s+\d+%/);
  assertMatch(text, /100% 8\.00 MiB\/8\.00 MiB/);
  assertMatch(text, /committed tty-test [0-9a-f]{64}/);
});

Deno.test("after kill -9 the LRU order follows access times, even for reads journaled late", async () => {
  await using tmp = await tempDir();
  const args = ["--cache-size", "12MiB"];
  const first = await startAgent({ dataDir: tmp.path, args });
  const blob = (seed: number) => randomBytes(3 * MiB, seed);
  for (const [name, seed] of [["a", 1], ["b", 2]] as const) {
    assertEquals((await put(first.url, name, "mem", blob(seed))).status, 201);
    assertEquals((await commit(first.url, name)).status, 201);
  }
  assertEquals((await put(first.url, "c", "mem", blob(3))).status, 201);
  // Read "a", then commit "c" at once: the access-time batch for "a" reaches
  // the journal after the record that adds "c".
  await (await fetch(`${first.url}/v1/snapshots/a/files/mem`, { headers: { Range: "bytes=0-0" } }))
    .arrayBuffer();
  assertEquals((await commit(first.url, "c")).status, 201);
  await waitFor(
    "the access time of a in the journal",
    async () => (await journaledTouches(tmp.path)).has("a"),
  );
  await first.kill();
  await using second = await startAgent({ dataDir: tmp.path, args });
  // True order b, a, c. (Replaying in journal order would give b, c, a;
  // ignoring the read would give a, b, c.) Each new 3 MiB snapshot evicts one.
  const names = async () =>
    (await (await fetch(`${second.url}/v1/snapshots`)).json()).map((s: { name: string }) => s.name);
  assertEquals((await put(second.url, "d", "mem", blob(4))).status, 201);
  assertEquals((await commit(second.url, "d")).status, 201);
  assertEquals(await names(), ["a", "c", "d"]);
  assertEquals((await put(second.url, "e", "mem", blob(5))).status, 201);
  assertEquals((await commit(second.url, "e")).status, 201);
  assertEquals(await names(), ["c", "d", "e"]);
});
