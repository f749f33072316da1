/**
 * Graceful shutdown, as systemd does it: SIGTERM while a pull, an upload
 * and a download are in flight. The agent stops accepting, aborts the pull
 * (keeping its verified chunks), gives the upload a few seconds and leaves
 * it queued, checkpoints the journal and exits 0, within a bounded time.
 * After a restart everything carries on.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { startAgent } from "../helpers/agent_process.ts";
import { memFile, originArgs, startOrigin } from "../helpers/fixtures.ts";
import { sha256, tempDir } from "../helpers/temp.ts";
import { waitFor } from "../helpers/wait.ts";

const BASE = ["--chunk-size", "256KiB", "--origin-stall-timeout", "30s"];

Deno.test("SIGTERM with a pull, an upload and a download in flight: exit 0 in bounded time, nothing lost", async () => {
  await using o = await startOrigin();
  await using tmp = await tempDir();
  const args = [...BASE, ...originArgs(o)];
  // A snapshot only in the origin, for the pull.
  const big = memFile(80, 31); // 20 MiB, 14 MiB non-zero
  {
    await using seeder = await startAgent({
      dataDir: `${tmp.path}/seed`,
      args: [...args, "--push", "sync"],
      env: o.s3.env,
    });
    assertEquals(
      (await fetch(`${seeder.url}/v1/snapshots/fn-big/files/mem`, { method: "PUT", body: big }))
        .status,
      201,
    );
    assertEquals(
      (await fetch(`${seeder.url}/v1/snapshots/fn-big/commit`, { method: "POST" })).status,
      201,
    );
  }
  const dataDir = `${tmp.path}/a`;
  const agentArgs = [...args, "--push", "async", "--max-origin-rate", "2MB"];
  const a = await startAgent({ dataDir, args: agentArgs, env: o.s3.env });
  try {
    // An upload that cannot finish: the origin takes PUTs but never answers them.
    o.proxy.add({ kind: "hang", method: "PUT" });
    const small = memFile(8, 32);
    assertEquals(
      (await fetch(`${a.url}/v1/snapshots/fn-new/files/mem`, { method: "PUT", body: small }))
        .status,
      201,
    );
    assertEquals(
      (await fetch(`${a.url}/v1/snapshots/fn-new/commit`, { method: "POST" })).status,
      201,
    );
    // A download of a snapshot being pulled (2 MB/s from the origin: about 7 s).
    const download = fetch(`${a.url}/v1/snapshots/fn-big/files/mem`);
    await waitFor("the pull to be under way", async () => {
      const pulls = await (await fetch(`${a.url}/v1/pulls`)).json();
      return pulls.some((p: { bytesDone: number }) => p.bytesDone > 0);
    });
    // The push's upload is in flight: the origin holds its PUT.
    await waitFor("the upload to hang", () => o.proxy.seen.some((r) => r.fault === "hang"), {
      context: () => a.logs().slice(-2000),
    });
    const stopping = Date.now();
    Deno.kill(a.pid, "SIGTERM");
    // The download ends (cut short: the pull was aborted), it does not hang.
    const response = await download;
    await response.arrayBuffer().catch(() => null);
    const status = await a.status;
    const took = Date.now() - stopping;
    assertEquals(status.code, 0, a.logs().slice(-3000));
    assert(took < 15_000, `shutdown took ${took} ms`);
    const logs = a.logs();
    assertMatch(logs, /aborting uploads in flight; they stay queued/);
    assertMatch(logs, /"msg":"stopped"/);
  } finally {
    await a.kill();
  }
  // After a restart: the checkpoint left nothing to replay, the upload is
  // still queued and lands once the origin takes it, the pull resumes.
  o.proxy.clear();
  await using b = await startAgent({ dataDir, args: agentArgs, env: o.s3.env });
  const status = await (await fetch(`${b.url}/v1/status`)).json();
  assertEquals(status.journal.replayedRecords, 0, JSON.stringify(status.journal));
  await waitFor(
    "the queued upload to land",
    async () => (await o.s3.get("fn-new/manifest.json")) !== null,
    { intervalMs: 200 },
  );
  const pull = await fetch(`${b.url}/v1/snapshots/fn-big/pull`, { method: "POST" });
  const result = await pull.json();
  assertEquals(pull.status, 200, JSON.stringify(result));
  assert(result.bytes.local > 0, `resumed from verified chunks: ${JSON.stringify(result.bytes)}`);
  assertEquals(await sha256(await Deno.readFile(result.paths.mem)), await sha256(big));
});

Deno.test("SIGTERM while the origin never answers a push's manifest check: exit 0 in bounded time, still queued", async () => {
  await using o = await startOrigin();
  await using tmp = await tempDir();
  const dataDir = `${tmp.path}/a`;
  const args = [...BASE, ...originArgs(o), "--push", "async"];
  // The commit asks the origin for the name's manifest (another snapshot under that
  // name answers 409); then the push asks again before uploading: that GET hangs.
  o.proxy.add({ kind: "hang", method: "GET", path: /fn-check\/manifest\.json$/, skip: 1 });
  const a = await startAgent({ dataDir, args, env: o.s3.env });
  let took: number;
  try {
    const body = memFile(4, 33);
    assertEquals(
      (await fetch(`${a.url}/v1/snapshots/fn-check/files/mem`, { method: "PUT", body })).status,
      201,
    );
    assertEquals(
      (await fetch(`${a.url}/v1/snapshots/fn-check/commit`, { method: "POST" })).status,
      201,
    );
    await waitFor(
      "the manifest check to be in flight",
      () => o.proxy.seen.some((s) => s.fault === "hang"),
      { timeoutMs: 5000 },
    );
    const stopping = Date.now();
    Deno.kill(a.pid, "SIGTERM");
    const status = await a.status;
    took = Date.now() - stopping;
    assertEquals(status.code, 0, a.logs().slice(-3000));
    assertMatch(a.logs(), /aborting uploads in flight; they stay queued/);
  } finally {
    await a.kill();
  }
  assert(took < 10_000, `shutdown took ${took} ms`);
  o.proxy.clear();
  await using b = await startAgent({ dataDir, args, env: o.s3.env });
  await waitFor(
    "the queued upload to land",
    async () => (await o.s3.get("fn-check/manifest.json")) !== null,
    { intervalMs: 200 },
  );
  assertEquals((await (await fetch(`${b.url}/v1/status`)).json()).origin.push.queued, 0);
});

Deno.test("SIGTERM with an event stream open (a status page): the stream ends, the agent exits at once", async () => {
  await using tmp = await tempDir();
  const a = await startAgent({ dataDir: `${tmp.path}/a` });
  try {
    const events = await fetch(`${a.url}/v1/pulls/events`);
    assertEquals(events.status, 200);
    const reader = events.body!.getReader();
    await reader.read(); // the first event: the stream is live
    const stopping = Date.now();
    Deno.kill(a.pid, "SIGTERM");
    while (!(await reader.read()).done) {
      // drain until the agent ends the stream
    }
    const status = await a.status;
    const took = Date.now() - stopping;
    assertEquals(status.code, 0, a.logs().slice(-2000));
    assert(took < 3000, `shutdown took ${took} ms with an event stream open`);
  } finally {
    await a.kill();
  }
});
