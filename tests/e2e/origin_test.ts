/**
 * The S3/MinIO origin, end to end: agents as separate processes, s3rver
 * (or MinIO, see tests/helpers/s3.ts) behind a fault-injecting proxy.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { type AgentProcess, startAgent } from "../helpers/agent_process.ts";
import {
  CHUNK,
  memFile,
  nonZeroBytes,
  originArgs,
  startOrigin as origin,
  type TestOrigin as Origin,
} from "../helpers/fixtures.ts";
import { randomBytes, sha256, tempDir } from "../helpers/temp.ts";

function agentArgs(o: Origin, ...extra: string[]): string[] {
  return [
    ...originArgs(o),
    "--chunk-size",
    "256KiB",
    "--origin-stall-timeout",
    "1s",
    ...extra,
  ];
}

async function agentWith(o: Origin, dataDir: string, ...extra: string[]): Promise<AgentProcess> {
  return await startAgent({ dataDir, args: agentArgs(o, ...extra), env: o.s3.env });
}

async function publish(url: string, name: string, files: Record<string, Uint8Array<ArrayBuffer>>) {
  for (const [file, bytes] of Object.entries(files)) {
    const r = await fetch(`${url}/v1/snapshots/${name}/files/${file}`, {
      method: "PUT",
      body: bytes,
    });
    assertEquals(r.status, 201, await r.text());
  }
  const r = await fetch(`${url}/v1/snapshots/${name}/commit`, { method: "POST" });
  return { status: r.status, body: await r.json() };
}

async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

async function bytesOf(response: Response): Promise<Uint8Array> {
  return new Uint8Array(await response.arrayBuffer());
}

Deno.test("push sync uploads files then the manifest; an empty agent reads through", async () => {
  await using o = await origin();
  await using tmp = await tempDir();
  const mem = memFile(24, 1);
  const info = new TextEncoder().encode('{"function":"hello"}');
  await using a = await agentWith(o, `${tmp.path}/a`, "--push", "sync");
  const committed = await publish(a.url, "fn-a", { mem, "info.json": info });
  assertEquals(committed.status, 201, JSON.stringify(committed.body));
  // Acknowledged with --push sync: the objects are there already.
  assertEquals(await o.s3.keys(), ["fn-a/files/info.json", "fn-a/files/mem", "fn-a/manifest.json"]);
  assertEquals(await sha256((await o.s3.get("fn-a/files/mem"))!), await sha256(mem));
  const puts = o.proxy.seen.filter((r) => r.method === "PUT" || r.method === "POST").map((r) =>
    r.path
  );
  assert(
    puts.at(-1)!.includes("manifest.json"),
    `manifest must be written last: ${puts.join(", ")}`,
  );
  const manifestDigest = await sha256((await o.s3.get("fn-a/manifest.json"))!);
  assertEquals(manifestDigest, committed.body.digest);

  await using b = await agentWith(o, `${tmp.path}/b`);
  o.proxy.resetCounters();
  const manifest = await (await fetch(`${b.url}/v1/snapshots/fn-a`)).json();
  assertEquals(manifest.digest, committed.body.digest);
  const file = await fetch(`${b.url}/v1/snapshots/fn-a/files/mem`);
  assertEquals(file.status, 200);
  assertEquals(file.headers.get("x-snapmesh-source"), "origin");
  assertEquals(file.headers.get("etag"), `"${await sha256(mem)}"`);
  assertEquals(await sha256(await bytesOf(file)), await sha256(mem));
  // Zero chunks are never fetched; each non-zero byte crosses once.
  await waitFor(
    "the pull to finish",
    async () => (await (await fetch(`${b.url}/v1/snapshots`)).json()).length === 1,
  );
  assert(
    o.proxy.getBytes <= nonZeroBytes(mem) + info.length + 4096,
    `origin sent ${o.proxy.getBytes}`,
  );
  const again = await fetch(`${b.url}/v1/snapshots/fn-a/files/mem`);
  assertEquals(again.headers.get("x-snapmesh-source"), "local");
  await again.body?.cancel();
  const verify = await (await fetch(`${b.url}/v1/snapshots/fn-a/verify`, { method: "POST" }))
    .json();
  assert(verify.ok);
});

Deno.test("push async survives kill -9 right after the commit answered", async () => {
  await using o = await origin();
  await using tmp = await tempDir();
  const mem = memFile(12, 2);
  const first = await agentWith(o, `${tmp.path}/a`);
  // Uploads cannot finish: every PUT stalls (a dead origin, from the agent's view).
  o.proxy.add({ kind: "stall", method: "PUT" });
  const committed = await publish(first.url, "fn-async", { mem });
  assertEquals(committed.status, 201);
  await first.kill();
  assertEquals(await o.s3.keys(), []);
  o.proxy.clear();
  await using second = await agentWith(o, `${tmp.path}/a`);
  await waitFor(
    "the queued push to land",
    async () => (await o.s3.keys()).includes("fn-async/manifest.json"),
  );
  assertEquals(await sha256((await o.s3.get("fn-async/files/mem"))!), await sha256(mem));
  assertEquals(await sha256((await o.s3.get("fn-async/manifest.json"))!), committed.body.digest);
  await waitFor("the queue to drain", async () => {
    const status = await (await fetch(`${second.url}/v1/status`)).json();
    return status.origin.push.queued === 0;
  });
  const status = await (await fetch(`${second.url}/v1/status`)).json();
  assertEquals(status.origin.healthy, true);
  assertEquals(status.origin.push.mode, "async");
  const metrics = await (await fetch(`${second.url}/metrics`)).text();
  assertMatch(metrics, /snapmesh_pushes_total 1/);
  assertMatch(metrics, /snapmesh_pushed_bytes_total \d+/);
});

Deno.test("read-through on empty agents: range first, pull with paths, HEAD without pulling", async () => {
  await using o = await origin();
  await using tmp = await tempDir();
  const mem = memFile(40, 3);
  const vmstate = randomBytes(300_000, 4);
  {
    await using a = await agentWith(o, `${tmp.path}/a`, "--push", "sync");
    assertEquals((await publish(a.url, "fn-r", { mem, vmstate })).status, 201);
  }
  await using c = await agentWith(o, `${tmp.path}/c`);
  const head = await fetch(`${c.url}/v1/snapshots/fn-r/files/mem`, { method: "HEAD" });
  assertEquals(head.status, 200);
  assertEquals(head.headers.get("content-length"), String(mem.length));
  assertEquals(head.headers.get("x-snapmesh-source"), "origin");
  assertEquals(await (await fetch(`${c.url}/v1/snapshots`)).json(), []);

  const start = 33 * CHUNK + 1000;
  const range = await fetch(`${c.url}/v1/snapshots/fn-r/files/mem`, {
    headers: { Range: `bytes=${start}-${start + 99_999}` },
  });
  assertEquals(range.status, 206);
  assertEquals(range.headers.get("x-snapmesh-source"), "origin");
  assertEquals(await sha256(await bytesOf(range)), await sha256(mem.slice(start, start + 100_000)));

  await using d = await agentWith(o, `${tmp.path}/d`);
  const pull = await (await fetch(`${d.url}/v1/snapshots/fn-r/pull`, { method: "POST" })).json();
  assertEquals(pull.source, "origin");
  assertEquals(pull.complete, true);
  assertEquals(pull.bytes.peer, 0);
  assertEquals(pull.bytes.origin, nonZeroBytes(mem) + vmstate.length);
  assertEquals(pull.paths.mem, `${tmp.path}/d/snapshots/fn-r/files/mem`);
  assertEquals(await sha256(await Deno.readFile(pull.paths.mem)), await sha256(mem));
  assertEquals(await sha256(await Deno.readFile(pull.paths.vmstate)), await sha256(vmstate));
  const stat = await Deno.stat(pull.paths.mem);
  assert(stat.blocks! * 512 < mem.length, "the pulled mem file is sparse");
  assertEquals(stat.mode! & 0o777, 0o444);
  const again = await (await fetch(`${d.url}/v1/snapshots/fn-r/pull`, { method: "POST" })).json();
  assertEquals(again.source, "local");

  const missing = await fetch(`${d.url}/v1/snapshots/nope/pull`, { method: "POST" });
  assertEquals(missing.status, 404);
  assertEquals((await missing.json()).error.code, "snapshot_not_found");
});

Deno.test("a vHive-style upload without a manifest is adopted, and written back", async () => {
  await using o = await origin();
  await using tmp = await tempDir();
  const memFileBytes = memFile(20, 5);
  const snapFile = randomBytes(123_456, 6);
  const infoFile = new TextEncoder().encode('{"image":"hello"}');
  await o.s3.put("vh-fn/mem_file", memFileBytes);
  await o.s3.put("vh-fn/snap_file", snapFile);
  await o.s3.put("vh-fn/info_file", infoFile);
  await using a = await agentWith(o, `${tmp.path}/a`);
  const pull = await fetch(`${a.url}/v1/snapshots/vh-fn/pull`, { method: "POST" });
  assertEquals(pull.status, 200, await pull.clone().text());
  const result = await pull.json();
  assertEquals(Object.keys(result.paths).sort(), ["info_file", "mem_file", "snap_file"]);
  assertEquals(
    await sha256(await Deno.readFile(result.paths.mem_file)),
    await sha256(memFileBytes),
  );
  assertEquals(await sha256(await Deno.readFile(result.paths.snap_file)), await sha256(snapFile));
  const manifest = await (await fetch(`${a.url}/v1/snapshots/vh-fn`)).json();
  assertEquals(
    manifest.files.find((f: { name: string }) => f.name === "mem_file").sha256,
    await sha256(memFileBytes),
  );
  assertEquals(manifest.digest, result.digest);
  // Pushing is on (async by default with an origin): the manifest is written back.
  await waitFor(
    "the adopted manifest to be written back",
    async () => (await o.s3.keys()).includes("vh-fn/manifest.json"),
  );
  assertEquals(await sha256((await o.s3.get("vh-fn/manifest.json"))!), result.digest);
  assertEquals(await sha256((await o.s3.get("vh-fn/files/mem_file"))!), await sha256(memFileBytes));
  // A second node now reads the written-back manifest: same digest.
  await using b = await agentWith(o, `${tmp.path}/b`);
  const fromB = await (await fetch(`${b.url}/v1/snapshots/vh-fn`)).json();
  assertEquals(fromB.digest, result.digest);
});

Deno.test("every kind of origin fault is retried and the right bytes arrive", async (t) => {
  await using o = await origin();
  await using tmp = await tempDir();
  const mem = memFile(16, 7);
  {
    await using a = await agentWith(o, `${tmp.path}/a`, "--push", "sync");
    assertEquals((await publish(a.url, "fn-f", { mem })).status, 201);
  }
  const faults: [string, () => void][] = [
    ["503 bursts", () => o.proxy.add({ kind: "status", status: 503, method: "GET", times: 4 })],
    [
      "connections reset mid-body",
      () =>
        o.proxy.add({ kind: "reset", method: "GET", path: /files/, afterBytes: 10_000, times: 3 }),
    ],
    [
      "stalled bodies",
      () =>
        o.proxy.add({ kind: "stall", method: "GET", path: /files/, afterBytes: 5_000, times: 2 }),
    ],
    [
      "flipped bytes",
      () => o.proxy.add({ kind: "flip", method: "GET", path: /files/, afterBytes: 777, times: 2 }),
    ],
  ];
  let n = 0;
  for (const [label, arm] of faults) {
    await t.step(label, async () => {
      o.proxy.clear();
      arm();
      await using b = await agentWith(o, `${tmp.path}/b${n++}`);
      const pull = await fetch(`${b.url}/v1/snapshots/fn-f/pull`, { method: "POST" });
      assertEquals(pull.status, 200, await pull.clone().text());
      const result = await pull.json();
      assertEquals(await sha256(await Deno.readFile(result.paths.mem)), await sha256(mem));
      assert(o.proxy.seen.some((r) => r.fault !== null), "the fault was injected");
      const metrics = await (await fetch(`${b.url}/metrics`)).text();
      if (label === "flipped bytes") {
        assertMatch(metrics, /snapmesh_verification_failures_total\{source="origin"\} [1-9]/);
      } else {
        assertMatch(metrics, /snapmesh_origin_retries_total [1-9]/);
      }
    });
  }
});

Deno.test("when the retry budget is spent: 502 upstream_failed, and nothing wrong is cached", async (t) => {
  await using o = await origin();
  await using tmp = await tempDir();
  const mem = memFile(8, 8);
  {
    await using a = await agentWith(o, `${tmp.path}/a`, "--push", "sync");
    assertEquals((await publish(a.url, "fn-x", { mem })).status, 201);
  }
  const faults: [string, () => void][] = [
    [
      "always 503",
      () => o.proxy.add({ kind: "status", status: 503, method: "GET", path: /files/ }),
    ],
    [
      "always flipped",
      () =>
        o.proxy.add({ kind: "flip", method: "GET", path: /files/, afterBytes: 100, every: CHUNK }),
    ],
  ];
  let n = 0;
  for (const [label, arm] of faults) {
    await t.step(label, async () => {
      o.proxy.clear();
      arm();
      // A short stall timeout: the pull gives up 3 s after the last attempt, not 15.
      await using b = await agentWith(o, `${tmp.path}/x${n++}`, "--origin-stall-timeout", "3s");
      const started = performance.now();
      const pull = await fetch(`${b.url}/v1/snapshots/fn-x/pull`, { method: "POST" });
      assertEquals(pull.status, 502);
      assert(performance.now() - started < 14_000, "the pull gave up after the stall timeout");
      const error = (await pull.json()).error;
      assertEquals(error.code, "upstream_failed");
      assertMatch(error.message, /origin/);
      // Chunk 5 holds data (chunks 0-2 of every 10 are zero and need no fetch).
      const get = await fetch(`${b.url}/v1/snapshots/fn-x/files/mem`, {
        headers: { Range: `bytes=${5 * CHUNK}-${5 * CHUNK + 9}` },
      });
      assertEquals(get.status, 502);
      await get.body?.cancel();
      assertEquals(await (await fetch(`${b.url}/v1/snapshots`)).json(), []);
      // Once the origin behaves, the same agent pulls the right bytes.
      o.proxy.clear();
      const retry = await (await fetch(`${b.url}/v1/snapshots/fn-x/pull`, { method: "POST" }))
        .json();
      assertEquals(await sha256(await Deno.readFile(retry.paths.mem)), await sha256(mem));
    });
  }
});

Deno.test("a pull cut short by kill -9 resumes from the chunks already verified", async () => {
  await using o = await origin();
  await using tmp = await tempDir();
  const mem = memFile(40, 9);
  {
    await using a = await agentWith(o, `${tmp.path}/a`, "--push", "sync");
    assertEquals((await publish(a.url, "fn-resume", { mem })).status, 201);
  }
  // In the first run, three requests get through (runs of up to 7 chunks
  // here: 3 of every 10 are zero), then the origin stalls.
  o.proxy.add({ kind: "stall", method: "GET", path: /files\/mem/, skip: 3 });
  const first = await agentWith(o, `${tmp.path}/b`);
  const accepted = await fetch(`${first.url}/v1/snapshots/fn-resume/pull?wait=false`, {
    method: "POST",
  });
  assertEquals(accepted.status, 202);
  assertEquals((await accepted.json()).state, "pulling");
  await waitFor("some chunks to arrive", async () => {
    const status = await (await fetch(`${first.url}/v1/status`)).json();
    return (status.pulls[0]?.chunksDone ?? 0) >= 21;
  });
  await first.kill();
  o.proxy.clear();
  o.proxy.resetCounters();
  await using second = await agentWith(o, `${tmp.path}/b`);
  const pull = await (await fetch(`${second.url}/v1/snapshots/fn-resume/pull`, { method: "POST" }))
    .json();
  assertEquals(await sha256(await Deno.readFile(pull.paths.mem)), await sha256(mem));
  assert(pull.bytes.local >= 21 * CHUNK, `resumed: ${JSON.stringify(pull.bytes)}`);
  // Most bytes were resumed from disk, but they came from the origin: the
  // pull's source says where the bytes came from, not "local".
  assertEquals(pull.source, "origin");
  assertEquals(pull.bytes.local + pull.bytes.origin, nonZeroBytes(mem));
  // What crossed the network again: only the missing chunks, plus the manifest.
  const again = o.proxy.getBytes - pull.bytes.origin;
  assert(again >= 0 && again < 16 * 1024, `origin sent ${o.proxy.getBytes}`);
});

Deno.test("DELETE ?origin=true removes the manifest first, then the files", async () => {
  await using o = await origin();
  await using tmp = await tempDir();
  await using a = await agentWith(o, `${tmp.path}/a`, "--push", "sync");
  assertEquals(
    (await publish(a.url, "fn-del", { mem: memFile(4, 10), vmstate: randomBytes(1000, 1) })).status,
    201,
  );
  await publish(a.url, "fn-keep", { mem: memFile(2, 11) });
  o.proxy.resetCounters();
  const del = await fetch(`${a.url}/v1/snapshots/fn-del?origin=true`, { method: "DELETE" });
  assertEquals(del.status, 200);
  const body = await del.json();
  assertEquals([body.local, body.origin, body.removed], [true, true, true]);
  assertEquals((await o.s3.keys()).filter((k) => k.startsWith("fn-del/")), []);
  assertEquals((await o.s3.keys()).filter((k) => k.startsWith("fn-keep/")).length, 2);
  const deletes = o.proxy.seen.filter((r) => r.method === "DELETE" || r.path.includes("delete"));
  assert(deletes[0]!.path.includes("manifest.json"), `first delete: ${deletes[0]?.path}`);
  assertEquals((await fetch(`${a.url}/v1/snapshots/fn-del`)).status, 404);
  // Deleting from the origin only, when the snapshot is not local here.
  await using b = await agentWith(o, `${tmp.path}/b`);
  assertEquals(
    (await fetch(`${b.url}/v1/snapshots/fn-keep?origin=true`, { method: "DELETE" })).status,
    200,
  );
  assertEquals(await o.s3.keys(), []);
  const none = await fetch(`${b.url}/v1/snapshots/fn-keep?origin=true`, { method: "DELETE" });
  assertEquals(none.status, 404);
  await none.body?.cancel();
});

Deno.test("committing other content under a name the origin holds answers 409", async () => {
  await using o = await origin();
  await using tmp = await tempDir();
  await using a = await agentWith(o, `${tmp.path}/a`, "--push", "sync");
  const first = await publish(a.url, "fn-c", { mem: memFile(6, 12) });
  assertEquals(first.status, 201);
  await using b = await agentWith(o, `${tmp.path}/b`);
  const other = await publish(b.url, "fn-c", { mem: memFile(6, 13) });
  assertEquals(other.status, 409);
  assertEquals(other.body.error.code, "snapshot_exists");
  const same = await publish(b.url, "fn-c", { mem: memFile(6, 12) });
  assertEquals(same.status, 201);
  assertEquals(same.body.digest, first.body.digest, "same content takes the origin's manifest");
});

Deno.test("uploads that stall or answer 503 are retried until they land", async () => {
  await using o = await origin();
  await using tmp = await tempDir();
  await using a = await agentWith(o, `${tmp.path}/a`, "--push", "sync");
  const mem = memFile(40, 14); // 10 MiB: a multipart upload
  o.proxy.add({ kind: "status", status: 503, method: "PUT", times: 2 });
  o.proxy.add({ kind: "stall", method: "PUT", times: 1 });
  const committed = await publish(a.url, "fn-up", { mem });
  assertEquals(committed.status, 201, JSON.stringify(o.proxy.seen, null, 1));
  assertEquals(await sha256((await o.s3.get("fn-up/files/mem"))!), await sha256(mem));
  assert(
    o.proxy.seen.some((r) => r.fault === "stall") && o.proxy.seen.some((r) => r.fault === "status"),
  );
  const metrics = await (await fetch(`${a.url}/metrics`)).text();
  assertMatch(metrics, /snapmesh_pushes_total 1/);
});

Deno.test("a slow but steady origin body is not a stall, however long it takes", async () => {
  await using o = await origin();
  await using tmp = await tempDir();
  const mem = memFile(10, 15); // 7 non-zero chunks in a row: one 1.75 MiB ranged GET
  {
    await using a = await agentWith(o, `${tmp.path}/a`, "--push", "sync");
    assertEquals((await publish(a.url, "fn-slow", { mem })).status, 201);
  }
  // 64 KiB every 100 ms: each gap is far below the 1 s stall timeout, the
  // whole body takes about 2.8 s.
  o.proxy.add({
    kind: "trickle",
    method: "GET",
    path: /files/,
    sliceBytes: 65536,
    intervalMs: 100,
  });
  await using b = await agentWith(o, `${tmp.path}/b`);
  const started = Date.now();
  const pull = await fetch(`${b.url}/v1/snapshots/fn-slow/pull`, { method: "POST" });
  assertEquals(pull.status, 200, await pull.clone().text());
  const result = await pull.json();
  assert(Date.now() - started > 1500, "the body really was slow");
  assertEquals(await sha256(await Deno.readFile(result.paths.mem)), await sha256(mem));
  const metrics = await (await fetch(`${b.url}/metrics`)).text();
  assertMatch(metrics, /snapmesh_origin_retries_total 0/);
});
