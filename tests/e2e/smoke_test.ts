/**
 * The end-to-end smoke test of the binary: serve, put, get, a pull from a
 * peer, a pull from the origin. It runs against a binary it builds into its
 * temp directory (not dist/) when `deno compile` can build one here
 * (DENORT_BIN names Deno's runtime), and otherwise against `deno run` with
 * exactly the binary's permission flags (scripts/flags.ts), so a missing
 * permission fails it either way.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { runSnapmesh, snapmeshCommand, startAgent } from "../helpers/agent_process.ts";
import { startS3 } from "../helpers/s3.ts";
import { randomBytes, sha256, tempDir } from "../helpers/temp.ts";
import { waitFor } from "../helpers/wait.ts";
import { compile } from "../../scripts/compile.ts";
import { version } from "../../scripts/flags.ts";

/** The binary, built into `dir` (never into the checkout), or `deno run` with its flags. */
async function command(dir: string): Promise<[string, string[]]> {
  if (Deno.env.get("DENORT_BIN")) {
    if ((await compile(`${dir}/snapmesh`)) === 0) return [`${dir}/snapmesh`, []];
    throw new Error("DENORT_BIN is set but the binary could not be built (see above)");
  }
  console.log(
    "smoke: Deno's runtime (denort) is not available here, so the binary cannot be built; " +
      "running through deno run with the binary's permission flags",
  );
  return snapmeshCommand();
}

Deno.test("smoke: serve, put, get, pull from a peer, pull from the origin", async () => {
  await using tmp = await tempDir();
  const cmd = await command(tmp.path);
  await using s3 = await startS3();
  const version_ = await runSnapmesh(["--version"], { command: cmd });
  assertEquals(version_.stdout.trim(), `snapmesh ${version()}`);

  const origin = [
    "--origin-endpoint",
    s3.endpoint,
    "--origin-bucket",
    s3.bucket,
    "--origin-prefix",
    s3.prefix,
  ];
  const peers = `${tmp.path}/peers`;
  await Deno.writeTextFile(peers, "");
  const common = ["--token", "smoke", "--peers-file", peers, ...origin];
  await using a = await startAgent({
    dataDir: `${tmp.path}/a`,
    args: ["--node-id", "a", "--push", "sync", ...common],
    env: s3.env,
    command: cmd,
  });
  await using b = await startAgent({
    dataDir: `${tmp.path}/b`,
    args: ["--node-id", "b", ...common],
    env: s3.env,
    command: cmd,
  });
  await Deno.writeTextFile(peers, `${a.url}\n${b.url}\n`);

  const mem = new Uint8Array(3 * 1024 * 1024);
  mem.set(randomBytes(1024 * 1024, 1), 1024 * 1024);
  await Deno.writeFile(`${tmp.path}/mem`, mem);
  const env = { SNAPMESH_TOKEN: "smoke" };
  const put = await runSnapmesh(["put", "smoke-fn", `${tmp.path}/mem`, "--node", a.url], {
    env,
    command: cmd,
  });
  assertEquals(put.code, 0, put.stderr);
  assert((await s3.keys()).includes("smoke-fn/manifest.json"), "pushed to the origin");

  const get = await runSnapmesh([
    "get",
    "smoke-fn",
    "mem",
    "-o",
    `${tmp.path}/got`,
    "--node",
    a.url,
  ], { env, command: cmd });
  assertEquals(get.code, 0, get.stderr);
  assertEquals(await sha256(await Deno.readFile(`${tmp.path}/got`)), await sha256(mem));

  // b learns about a from the peers file (reread within 2 s), then pulls from it.
  await waitFor("b to see a healthy peer", async () => {
    const status =
      await (await fetch(`${b.url}/v1/status`, { headers: { Authorization: "Bearer smoke" } }))
        .json();
    return status.peers.some((p: { healthy: boolean }) => p.healthy);
  }, { intervalMs: 100 });
  const fromPeer = await runSnapmesh(["pull", "smoke-fn", "--json", "--node", b.url], {
    env,
    command: cmd,
  });
  assertEquals(fromPeer.code, 0, fromPeer.stderr);
  const peerResult = JSON.parse(fromPeer.stdout);
  assertEquals(peerResult.bytes.peer, 1024 * 1024);
  assertEquals(peerResult.bytes.origin, 0);

  // A node with no peers pulls from the origin.
  await using c = await startAgent({
    dataDir: `${tmp.path}/c`,
    args: ["--token", "smoke", ...origin],
    env: s3.env,
    command: cmd,
  });
  const fromOrigin = await runSnapmesh(["pull", "smoke-fn", "--json", "--node", c.url], {
    env,
    command: cmd,
  });
  assertEquals(fromOrigin.code, 0, fromOrigin.stderr);
  const originResult = JSON.parse(fromOrigin.stdout);
  assertEquals(originResult.bytes.origin, 1024 * 1024);
  assertEquals(await sha256(await Deno.readFile(originResult.paths.mem)), await sha256(mem));
  assertMatch(c.logs(), /"msg":"pulled"/);
});
