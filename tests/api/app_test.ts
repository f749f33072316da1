import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { DenoFileSystem, type OpenOptions } from "../../src/fs/mod.ts";
import { errorCode, publish, testNode } from "../helpers/in_process.ts";
import { createApp } from "../../src/api/app.ts";
import { BodyAbortedError } from "../../src/http/mod.ts";
import { createLogger } from "../../src/log/mod.ts";
import { Metrics } from "../../src/metrics/mod.ts";
import { randomBytes, sha256 } from "../helpers/temp.ts";
import { waitFor } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

/** Blobs in the draft of `name` (an upload creates its blob as it begins). */
function blobs(dir: string, name: string): number {
  try {
    return [...Deno.readDirSync(`${dir}/drafts/${name}/blobs`)].length;
  } catch {
    return 0;
  }
}

Deno.test("stage, commit, list, manifest, read: the happy path", async () => {
  await using node = await testNode();
  const mem = new Uint8Array(5 * MiB);
  mem.set(randomBytes(MiB, 3), 2 * MiB); // one data chunk among zero chunks
  const info = new TextEncoder().encode('{"fn":"a"}');
  const put = await node.request("/v1/snapshots/fn-a/files/mem", { method: "PUT", body: mem });
  assertEquals(put.status, 201);
  assertEquals(await put.json(), { file: "mem", size: mem.length, sha256: await sha256(mem) });

  const commit = await publish(node, "fn-a", { "info.json": info }, {
    labels: { function: "a" },
    hot: { mem: [2, 0] },
  });
  assertEquals(commit.status, 201);
  const manifest = await commit.json();
  assertEquals(manifest.name, "fn-a");
  assertMatch(manifest.digest, /^[0-9a-f]{64}$/);
  assertEquals(manifest.files.map((f: { name: string }) => f.name), ["info.json", "mem"]);
  assertEquals(manifest.files[1].chunks.filter((c: string) => c === "zero").length, 4);
  assertEquals(manifest.files[1].hot, [2, 0]);
  assertEquals(manifest.labels, { function: "a" });

  const list = await (await node.request("/v1/snapshots")).json();
  assertEquals(list.length, 1);
  assertEquals(list[0].name, "fn-a");
  assertEquals(list[0].digest, manifest.digest);
  assertEquals(list[0].size, mem.length + info.length);
  assertEquals(list[0].files, ["info.json", "mem"]);
  assertEquals(list[0].pinned, false);
  assertEquals(list[0].state, "ready");

  const got = await node.request("/v1/snapshots/fn-a");
  assertEquals((await got.json()).digest, manifest.digest);

  const file = await node.request("/v1/snapshots/fn-a/files/mem");
  assertEquals(file.status, 200);
  assertEquals(file.headers.get("etag"), `"${await sha256(mem)}"`);
  assertEquals(file.headers.get("accept-ranges"), "bytes");
  assertEquals(file.headers.get("x-snapmesh-source"), "local");
  assertEquals(file.headers.get("content-length"), String(mem.length));
  assertEquals(await sha256(new Uint8Array(await file.arrayBuffer())), await sha256(mem));

  // The cached file is read-only and sparse.
  const path = `${node.dir}/snapshots/fn-a/files/mem`;
  const stat = await Deno.stat(path);
  assertEquals(stat.mode! & 0o777, 0o444);
  assert(stat.blocks! * 512 <= 1.5 * MiB, `mem should be sparse: ${stat.blocks} blocks`);
  const pull = await (await node.request("/v1/snapshots/fn-a/pull", { method: "POST" })).json();
  assertEquals(pull.paths.mem, path);
  assertEquals(pull.source, "local");
});

Deno.test("ranges: 206 with Content-Range, HEAD without a body, 416 and invalid_range", async () => {
  await using node = await testNode();
  const data = randomBytes(3 * MiB + 77, 11);
  assertEquals((await publish(node, "r", { mem: data })).status, 201);
  const base = "/v1/snapshots/r/files/mem";
  const cases: [string, number, number][] = [
    ["bytes=0-0", 0, 0],
    ["bytes=1048570-1048590", 1048570, 1048590],
    ["bytes=-100", data.length - 100, data.length - 1],
    [`bytes=${data.length - 5}-`, data.length - 5, data.length - 1],
  ];
  for (const [header, start, end] of cases) {
    const response = await node.request(base, { headers: { Range: header } });
    assertEquals(response.status, 206, header);
    assertEquals(response.headers.get("content-range"), `bytes ${start}-${end}/${data.length}`);
    assertEquals(
      await sha256(new Uint8Array(await response.arrayBuffer())),
      await sha256(data.slice(start, end + 1)),
    );
  }
  const head = await node.request(base, { method: "HEAD" });
  assertEquals(head.status, 200);
  assertEquals(head.headers.get("content-length"), String(data.length));
  assertEquals(head.headers.get("x-snapmesh-source"), "local");
  assertEquals((await head.arrayBuffer()).byteLength, 0);
  const headRange = await node.request(base, { method: "HEAD", headers: { Range: "bytes=0-9" } });
  assertEquals(headRange.status, 206);
  assertEquals(headRange.headers.get("content-length"), "10");
  await headRange.body?.cancel();

  const multi = await node.request(base, { headers: { Range: "bytes=0-1,5-6" } });
  assertEquals(multi.status, 400);
  assertEquals(await errorCode(multi), "invalid_range");
  const bad = await node.request(base, { headers: { Range: "bytes=9-1" } });
  assertEquals(await errorCode(bad), "invalid_range");
  const past = await node.request(base, { headers: { Range: `bytes=${data.length}-` } });
  assertEquals(past.status, 416);
  assertEquals(past.headers.get("content-range"), `bytes */${data.length}`);
  assertEquals(await errorCode(past), "range_not_satisfiable");

  const etag = (await node.request(base, { method: "HEAD" })).headers.get("etag")!;
  const notModified = await node.request(base, { headers: { "If-None-Match": etag } });
  assertEquals(notModified.status, 304);
  const staleIfRange = await node.request(base, {
    headers: { Range: "bytes=0-9", "If-Range": '"old"' },
  });
  assertEquals(staleIfRange.status, 200);
  await staleIfRange.body?.cancel();
});

Deno.test("bad names get 400 invalid_name on every route, and nothing is written", async (t) => {
  await using node = await testNode();
  const names = [
    ".hidden",
    "-x",
    "a%2Fb",
    "a%2fb",
    "a%5Cb",
    "a%00b",
    "a%20b",
    "x".repeat(300),
    "%C3%A9",
  ];
  for (const bad of names) {
    await t.step(bad.length > 20 ? `${bad.slice(0, 10)}…(${bad.length})` : bad, async () => {
      const routes: [string, string][] = [
        ["PUT", `/v1/snapshots/${bad}/files/mem`],
        ["PUT", `/v1/snapshots/ok/files/${bad}`],
        ["POST", `/v1/snapshots/${bad}/commit`],
        ["GET", `/v1/snapshots/${bad}`],
        ["GET", `/v1/snapshots/${bad}/files/mem`],
        ["GET", `/v1/snapshots/ok/files/${bad}`],
        ["POST", `/v1/snapshots/${bad}/pull`],
        ["DELETE", `/v1/snapshots/${bad}`],
        ["PUT", `/v1/snapshots/${bad}/pin`],
      ];
      for (const [method, path] of routes) {
        const init: RequestInit = { method };
        if (method === "PUT") init.body = "x";
        const response = await node.request(path, init);
        assertEquals(response.status, 400, `${method} ${path}`);
        assertEquals(await errorCode(response), "invalid_name");
      }
    });
  }
  const drafts = [...Deno.readDirSync(`${node.dir}/drafts`)];
  assertEquals(drafts, []);
});

Deno.test("not found, drafts and conflicts use the documented codes", async () => {
  await using node = await testNode();
  const missing = await node.request("/v1/snapshots/nope");
  assertEquals(missing.status, 404);
  assertEquals(await missing.json(), {
    error: { code: "snapshot_not_found", message: 'Snapshot "nope" is not on this node' },
  });
  assertEquals(
    await errorCode(await node.request("/v1/snapshots/nope/files/mem")),
    "snapshot_not_found",
  );
  assertEquals(
    await errorCode(await node.request("/v1/snapshots/nope/pull", { method: "POST" })),
    "snapshot_not_found",
  );
  const commit = await node.request("/v1/snapshots/nope/commit", { method: "POST" });
  assertEquals([commit.status, await errorCode(commit)], [404, "draft_not_found"]);
  assertEquals((await node.request("/v1/nothing")).status, 404);

  // Draft then drop it.
  await node.request("/v1/snapshots/d/files/a", { method: "PUT", body: "abc" });
  const drop = await node.request("/v1/snapshots/d/draft", { method: "DELETE" });
  assertEquals(drop.status, 200);
  assertEquals(await drop.json(), { name: "d", files: ["a"] });
  assertEquals(
    await errorCode(await node.request("/v1/snapshots/d/draft", { method: "DELETE" })),
    "draft_not_found",
  );

  // Same content again: 200 with the same manifest; other content: 409.
  const first = await publish(node, "s", { a: new TextEncoder().encode("one") });
  assertEquals(first.status, 201);
  const digest = (await first.json()).digest;
  const again = await publish(node, "s", { a: new TextEncoder().encode("one") });
  assertEquals(again.status, 200);
  assertEquals((await again.json()).digest, digest);
  const other = await node.request("/v1/snapshots/s/files/a", { method: "PUT", body: "two" });
  assertEquals([other.status, await errorCode(other)], [409, "snapshot_exists"]);
  const newFile = await node.request("/v1/snapshots/s/files/b", { method: "PUT", body: "one" });
  assertEquals([newFile.status, await errorCode(newFile)], [409, "snapshot_exists"]);
  assertEquals(await errorCode(await node.request("/v1/snapshots/s/files/zz")), "file_not_found");

  // Commit bodies are validated.
  await node.request("/v1/snapshots/h/files/a", { method: "PUT", body: "abc" });
  for (
    const body of ["{not json", "[1]", '{"labels":"x"}', '{"hot":{"a":[5]}}', '{"hot":{"zz":[0]}}']
  ) {
    const response = await node.request("/v1/snapshots/h/commit", { method: "POST", body });
    assertEquals([response.status, await errorCode(response)], [400, "invalid_body"], body);
  }
});

Deno.test("the token guards /v1 but not health, readiness or metrics", async () => {
  await using node = await testNode({ token: "s3cret" });
  const noToken = await node.app.request("/v1/status");
  assertEquals(noToken.status, 401);
  assertEquals(await errorCode(noToken), "unauthorized");
  assertMatch(noToken.headers.get("www-authenticate") ?? "", /Bearer/);
  for (const header of ["Bearer wrong", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer "]) {
    const response = await node.app.request("/v1/snapshots", {
      headers: { Authorization: header },
    });
    assertEquals(response.status, 401, header);
    await response.body?.cancel();
  }
  const ok = await node.app.request("/v1/status", { headers: { Authorization: "Bearer s3cret" } });
  assertEquals(ok.status, 200);
  const status = await ok.json();
  assertEquals(status.nodeId, "test-node");
  assert(!JSON.stringify(status).includes("s3cret"));
  for (const path of ["/healthz", "/readyz", "/metrics"]) {
    const response = await node.app.request(path);
    assertEquals(response.status, 200, path);
    await response.body?.cancel();
  }
});

Deno.test("--max-file-size answers 413 with or without Content-Length, leaving nothing", async () => {
  await using node = await testNode({ "max-file-size": "1MiB" });
  const big = randomBytes(MiB + 1, 5);
  const declared = await node.request("/v1/snapshots/big/files/mem", { method: "PUT", body: big });
  assertEquals([declared.status, await errorCode(declared)], [413, "too_large"]);
  const streamed = await node.request("/v1/snapshots/big/files/mem", {
    method: "PUT",
    body: ReadableStream.from([big.subarray(0, MiB), big.subarray(MiB)]),
  });
  assertEquals([streamed.status, await errorCode(streamed)], [413, "too_large"]);
  assertEquals(node.agent.reservedBytes, 0);
  const blobs = `${node.dir}/drafts/big/blobs`;
  const left = await Deno.stat(blobs).then(() => [...Deno.readDirSync(blobs)], () => []);
  assertEquals(left, []);
});

Deno.test("the cache evicts least recently used unpinned snapshots, whole", async () => {
  await using node = await testNode({ "cache-size": "10MiB" });
  const blob = (seed: number) => randomBytes(3 * MiB, seed);
  assertEquals((await publish(node, "a", { mem: blob(1) })).status, 201);
  assertEquals((await publish(node, "b", { mem: blob(2) })).status, 201);
  assertEquals((await publish(node, "c", { mem: blob(3) })).status, 201);
  // Reading "a" makes "b" the least recently used.
  await (await node.request("/v1/snapshots/a/files/mem", { headers: { Range: "bytes=0-0" } }))
    .arrayBuffer();
  assertEquals((await publish(node, "d", { mem: blob(4) })).status, 201);
  const names = (await (await node.request("/v1/snapshots")).json()).map((s: { name: string }) =>
    s.name
  );
  assertEquals(names, ["a", "c", "d"]);
  assert(!(await Deno.stat(`${node.dir}/snapshots/b`).then(() => true, () => false)));
  const status = await (await node.request("/v1/status")).json();
  assertEquals(status.cache.evictions, 1);
  assert(status.cache.bytes <= 10 * MiB);

  // Pins survive eviction pressure; when only pinned data is left: 507, nothing half-written.
  for (const n of ["a", "c", "d"]) {
    assertEquals((await node.request(`/v1/snapshots/${n}/pin`, { method: "PUT" })).status, 200);
  }
  const full = await node.request("/v1/snapshots/e/files/mem", { method: "PUT", body: blob(5) });
  assertEquals([full.status, await errorCode(full)], [507, "insufficient_storage"]);
  assertEquals(node.agent.reservedBytes, 0);
  assertEquals((await (await node.request("/v1/snapshots")).json()).length, 3);
  assertEquals(
    await errorCode(await node.request("/v1/snapshots/e/commit", { method: "POST" })),
    "draft_not_found",
  );
  // Deleting a pinned snapshot needs force.
  const pinned = await node.request("/v1/snapshots/a", { method: "DELETE" });
  assertEquals([pinned.status, await errorCode(pinned)], [409, "snapshot_pinned"]);
  assertEquals(
    (await node.request("/v1/snapshots/a?force=true", { method: "DELETE" })).status,
    200,
  );
  assertEquals((await node.request("/v1/snapshots/c/pin", { method: "DELETE" })).status, 200);
  assertEquals((await publish(node, "e", { mem: blob(5) })).status, 201);
});

Deno.test("a file evicted while a reader streams it is delivered whole", async () => {
  await using node = await testNode();
  const data = randomBytes(8 * MiB, 9);
  await publish(node, "v", { mem: data });
  const response = await node.request("/v1/snapshots/v/files/mem");
  const reader = response.body!.getReader();
  const parts: Uint8Array[] = [];
  const first = await reader.read();
  parts.push(first.value!);
  assertEquals((await node.request("/v1/snapshots/v", { method: "DELETE" })).status, 200);
  assertEquals((await node.request("/v1/snapshots/v")).status, 404);
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
  }
  const got = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    got.set(p, at);
    at += p.length;
  }
  assertEquals(await sha256(got), await sha256(data));
});

Deno.test("import by path is confined to --import-root", async () => {
  const root = await Deno.makeTempDir({ prefix: "snapmesh-import-" });
  const outside = await Deno.makeTempDir({ prefix: "snapmesh-outside-" });
  try {
    const data = new Uint8Array(3 * MiB);
    data.set(randomBytes(1000, 2), MiB);
    await Deno.writeFile(`${root}/mem`, data);
    await Deno.writeFile(`${outside}/secret`, new TextEncoder().encode("secret"));
    await Deno.symlink(`${outside}/secret`, `${root}/link`);
    await Deno.mkdir(`${root}/dir`);
    {
      await using disabled = await testNode();
      const response = await disabled.request("/v1/snapshots/i/files/mem/import", {
        method: "POST",
        body: JSON.stringify({ path: `${root}/mem` }),
      });
      assertEquals([response.status, await errorCode(response)], [403, "path_not_allowed"]);
    }
    await using node = await testNode({ "import-root": root });
    const post = (path: unknown) =>
      node.request("/v1/snapshots/i/files/mem/import", {
        method: "POST",
        body: JSON.stringify({ path }),
      });
    for (
      const path of [
        `${outside}/secret`,
        `${root}/link`,
        `${root}/../${outside.split("/").pop()}/secret`,
        "/etc/passwd",
        root,
      ]
    ) {
      const response = await post(path);
      assertEquals([response.status, await errorCode(response)], [403, "path_not_allowed"], path);
    }
    for (const path of ["relative/mem", 42, `${root}/missing`, `${root}/dir`]) {
      const response = await post(path);
      assertEquals(
        [response.status, await errorCode(response)],
        [400, "invalid_body"],
        String(path),
      );
    }
    const ok = await post(`${root}/mem`);
    assertEquals(ok.status, 201);
    assertEquals((await ok.json()).sha256, await sha256(data));
    assertEquals((await node.request("/v1/snapshots/i/commit", { method: "POST" })).status, 201);
    const got = await node.request("/v1/snapshots/i/files/mem");
    assertEquals(await sha256(new Uint8Array(await got.arrayBuffer())), await sha256(data));
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("a commit while a file is still being written answers 409", async () => {
  await using node = await testNode();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(new Uint8Array(1000).fill(1));
      await gate;
      controller.close();
    },
  });
  const upload = node.request("/v1/snapshots/w/files/mem", { method: "PUT", body });
  await waitFor("the upload to start", () => blobs(node.dir, "w") === 1);
  const early = await node.request("/v1/snapshots/w/commit", { method: "POST" });
  assertEquals(early.status, 409);
  const error = (await early.json()).error;
  assertEquals(error.code, "upload_in_progress");
  assertEquals(error.message, 'Cannot commit snapshot "w": file "mem" is still being written');
  release();
  assertEquals((await upload).status, 201);
  assertEquals((await node.request("/v1/snapshots/w/commit", { method: "POST" })).status, 201);
});

Deno.test("state survives a reopen: snapshots, pins and LRU order", async () => {
  await using first = await testNode({ "cache-size": "10MiB" });
  for (const [name, seed] of [["a", 1], ["b", 2], ["c", 3]] as const) {
    await publish(first, name, { mem: randomBytes(3 * MiB, seed) });
  }
  await first.request("/v1/snapshots/b/pin", { method: "PUT" });
  await (await first.request("/v1/snapshots/a/files/mem")).arrayBuffer(); // order now: b, c, a
  const second = await first.reopen();
  try {
    const list = await (await second.request("/v1/snapshots")).json();
    assertEquals(list.map((s: { name: string }) => s.name), ["a", "b", "c"]);
    assertEquals(list.find((s: { name: string }) => s.name === "b").pinned, true);
    // b is pinned, so c (least recently used unpinned) is the one to go.
    assertEquals((await publish(second, "d", { mem: randomBytes(3 * MiB, 4) })).status, 201);
    const names = (await (await second.request("/v1/snapshots")).json()).map((
      s: { name: string },
    ) => s.name);
    assertEquals(names, ["a", "b", "d"]);
    const verify = await (await second.request("/v1/snapshots/a/verify", { method: "POST" }))
      .json();
    assertEquals(verify.ok, true);
  } finally {
    await second[Symbol.asyncDispose]();
  }
});

Deno.test("/metrics exposes the cache, journal and HTTP metrics", async () => {
  await using node = await testNode();
  await publish(node, "m", { a: new TextEncoder().encode("x") });
  await (await node.request("/v1/snapshots/m/files/a")).arrayBuffer();
  const text = await (await node.request("/metrics")).text();
  for (
    const name of [
      "snapmesh_cache_bytes",
      "snapmesh_cache_capacity_bytes",
      "snapmesh_cache_entries 1",
      "snapmesh_cache_hits_total",
      "snapmesh_cache_evictions_total",
      "snapmesh_journal_records_total",
      "snapmesh_http_requests_total",
      "snapmesh_http_request_duration_seconds_bucket",
      'route="/v1/snapshots/:name/files/:file"',
    ]
  ) {
    assert(text.includes(name), `missing ${name}`);
  }
});

Deno.test("abandoned drafts are dropped after --draft-ttl and free their space", async () => {
  await using node = await testNode({ "draft-ttl": "200ms" });
  await node.request("/v1/snapshots/old/files/mem", { method: "PUT", body: randomBytes(MiB, 1) });
  assertEquals(node.agent.reservedBytes, MiB);
  assertEquals(await node.agent.sweepDrafts(), []);
  // Once idle for the TTL, a sweep drops it (ours, or the periodic one).
  await waitFor("the idle draft to be dropped", async () => {
    await node.agent.sweepDrafts();
    return !(await Deno.stat(`${node.dir}/drafts/old`).then(() => true, () => false));
  });
  await node.request("/v1/snapshots/fresh/files/mem", {
    method: "PUT",
    body: randomBytes(1000, 2),
  });
  await node.agent.sweepDrafts(); // the periodic sweep may have been first
  assert(!(await Deno.stat(`${node.dir}/drafts/old`).then(() => true, () => false)));
  assertEquals(node.agent.reservedBytes, 1000);
  assertEquals(
    await errorCode(await node.request("/v1/snapshots/old/commit", { method: "POST" })),
    "draft_not_found",
  );
  assertEquals((await node.request("/v1/snapshots/fresh/commit", { method: "POST" })).status, 201);
});

Deno.test("a PUT that starts while a commit runs is refused and leaves nothing behind", async () => {
  await using node = await testNode();
  await node.request("/v1/snapshots/x/files/a", { method: "PUT", body: randomBytes(1000, 1) });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  // A body that finishes only after the commit has started.
  const slow = new ReadableStream<Uint8Array>({
    async pull(controller) {
      await gate;
      controller.enqueue(randomBytes(1000, 2));
      controller.close();
    },
  });
  const commit = node.request("/v1/snapshots/x/commit", { method: "POST" });
  let committed = false;
  commit.then(() => (committed = true), () => (committed = true));
  const put = node.request("/v1/snapshots/x/files/b", { method: "PUT", body: slow });
  // Both in flight: the body ends once the commit has answered or the upload has begun.
  await waitFor(
    "the commit to answer or the upload to begin",
    () => committed || blobs(node.dir, "x") === 2,
  );
  release();
  const [c, p] = await Promise.all([commit, put]);
  // Either the commit saw the upload (409) or the upload saw the commit (409); never both 2xx.
  const statuses = [c.status, p.status].sort();
  assert(statuses[0]! >= 200 && statuses[0]! < 300 && statuses[1] === 409, `statuses ${statuses}`);
  await c.body?.cancel();
  await p.body?.cancel();
  if (c.status === 201) {
    assertEquals(node.agent.reservedBytes, 0);
    assert(!(await Deno.stat(`${node.dir}/drafts/x`).then(() => true, () => false)));
  }
});

Deno.test("a commit into a nearly full cache never evicts the snapshot it creates", async () => {
  await using node = await testNode({ "cache-size": "2MiB" });
  assertEquals((await publish(node, "p", { f: randomBytes(MiB, 3) })).status, 201);
  await node.request("/v1/snapshots/p/pin", { method: "PUT" });
  const room = 2 * MiB - node.agent.usedBytes - 100; // the manifest will not fit on top
  const staged = await node.request("/v1/snapshots/q/files/f", {
    method: "PUT",
    body: randomBytes(room, 4),
  });
  assertEquals(staged.status, 201);
  const commit = await node.request("/v1/snapshots/q/commit", { method: "POST" });
  // Either refused for lack of room, or committed and still there.
  if (commit.status === 201) {
    assertEquals((await node.request("/v1/snapshots/q")).status, 200);
  } else {
    assertEquals([commit.status, await errorCode(commit)], [507, "insufficient_storage"]);
    assertEquals((await node.request("/v1/snapshots/q")).status, 404);
  }
  assert(node.agent.usedBytes <= 2 * MiB);
});

Deno.test("JSON bodies are capped while they are read, chunked or not", async () => {
  await using node = await testNode();
  await node.request("/v1/snapshots/j/files/a", { method: "PUT", body: "abc" });
  const huge = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(new TextEncoder().encode(" ".repeat(64 * 1024)));
    },
  });
  const response = await node.request("/v1/snapshots/j/commit", { method: "POST", body: huge });
  assertEquals([response.status, await errorCode(response)], [400, "invalid_body"]);
});

Deno.test("import refuses a file swapped for one outside the root while it is opened", async () => {
  const root = await Deno.makeTempDir({ prefix: "snapmesh-import-" });
  const outside = await Deno.makeTempDir({ prefix: "snapmesh-outside-" });
  try {
    await Deno.mkdir(`${root}/d`);
    await Deno.writeTextFile(`${root}/d/s`, "inside\n");
    await Deno.writeTextFile(`${outside}/s`, "secret\n");
    // A file system whose open() lands on the outside file, as if a directory
    // was swapped for a symlink just before the open and back just after.
    class SwappingFs extends DenoFileSystem {
      override async open(path: string, options?: OpenOptions) {
        if (path.startsWith(`${root}/d/`)) return await super.open(`${outside}/s`, options);
        return await super.open(path, options);
      }
    }
    await using node = await testNode({ "import-root": root }, { fs: new SwappingFs() });
    const response = await node.request("/v1/snapshots/i/files/s/import", {
      method: "POST",
      body: JSON.stringify({ path: `${root}/d/s` }),
    });
    assertEquals([response.status, await errorCode(response)], [403, "path_not_allowed"]);
    assertEquals(
      await errorCode(await node.request("/v1/snapshots/i/commit", { method: "POST" })),
      "draft_not_found",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("committing the same files with other labels or hot lists is other content: 409", async () => {
  await using node = await testNode({ "chunk-size": "64KiB" });
  const mem = randomBytes(256 * 1024, 9);
  const first = await publish(node, "l", { mem }, { labels: { fn: "a" }, hot: { mem: [1, 0] } });
  assertEquals(first.status, 201);
  const digest = (await first.json()).digest;
  // The same request again (a retried put): 200 with the committed manifest.
  const same = await publish(node, "l", { mem }, { labels: { fn: "a" }, hot: { mem: [1, 0] } });
  assertEquals(same.status, 200);
  assertEquals((await same.json()).digest, digest);
  // Without labels or hot lists, the committed ones are taken as they are.
  assertEquals((await publish(node, "l", { mem })).status, 200);
  const labels = await publish(node, "l", { mem }, { labels: { fn: "b" } });
  assertEquals(labels.status, 409);
  const body = (await labels.json()).error;
  assertEquals(body.code, "snapshot_exists");
  assertMatch(body.message, /other labels/);
  const hot = await publish(node, "l", { mem }, { hot: { mem: [2] } });
  assertEquals(hot.status, 409);
  assertMatch((await hot.json()).error.message, /hot list/);
  // Nothing changed.
  assertEquals((await (await node.request("/v1/snapshots/l")).json()).labels, { fn: "a" });
});

Deno.test("a known path with an unsupported method answers 405 with Allow; unknown paths 404", async (t) => {
  await using node = await testNode();
  const cases: [string, string, number, string, string | null][] = [
    ["POST", "/v1/snapshots", 405, "method_not_allowed", "GET"],
    ["DELETE", "/v1/snapshots", 405, "method_not_allowed", "GET"],
    ["POST", "/healthz", 405, "method_not_allowed", "GET"],
    ["PATCH", "/v1/snapshots/s/files/mem", 405, "method_not_allowed", "PUT, GET, HEAD"],
    ["POST", "/v1/snapshots/s", 405, "method_not_allowed", "GET, DELETE"],
    ["GET", "/v1/snapshots/s/pin", 405, "method_not_allowed", "PUT, DELETE"],
    ["GET", "/v1/pulls/events/x", 404, "not_found", null],
    ["GET", "/v1/nothing", 404, "not_found", null],
    // Names are checked first, whatever the method.
    ["POST", "/v1/snapshots/.hidden", 400, "invalid_name", null],
    ["PATCH", "/v1/snapshots/ok/files/.hidden", 400, "invalid_name", null],
  ];
  for (const [method, path, status, code, allow] of cases) {
    await t.step(`${method} ${path}`, async () => {
      const response = await node.request(path, { method });
      assertEquals([response.status, await errorCode(response)], [status, code]);
      assertEquals(response.headers.get("allow"), allow);
    });
  }
});

Deno.test("JSON bodies nesting deeper than 64 levels are refused before parsing", async () => {
  await using node = await testNode();
  await node.request("/v1/snapshots/j/files/a", { method: "PUT", body: "abc" });
  // Valid JSON, an object: JSON.parse would take it (and hundreds of MB).
  const deep = '{"labels":' + '{"a":'.repeat(150_000) + '"x"' + "}".repeat(150_001);
  const started = performance.now();
  const response = await node.request("/v1/snapshots/j/commit", { method: "POST", body: deep });
  const refusal = await response.json();
  assertEquals([response.status, refusal.error.code], [400, "invalid_body"]);
  assertMatch(refusal.error.message, /nests deeper than 64 levels/);
  assert(performance.now() - started < 1000, "refused without parsing");
  // Brackets in strings, escaped quotes included, do not nest.
  const tricky = JSON.stringify({ labels: { a: '"[[[['.repeat(100) + "\\" } });
  const ok = await node.request("/v1/snapshots/j/commit", { method: "POST", body: tricky });
  assertEquals(ok.status, 201, await ok.clone().text());
  assertEquals((await ok.json()).labels.a.length, 501);
});

Deno.test("/readyz while recovering is logged at debug; an upload cut short is 400 invalid_body at warn", async () => {
  await using node = await testNode();
  const lines: string[] = [];
  const log = createLogger({ level: "debug", write: (line) => lines.push(line) });
  let ready = false;
  const app = createApp({
    agent: Promise.resolve(node.agent),
    isReady: () => ready,
    token: null,
    metrics: new Metrics(),
    log,
    nodeId: "n",
    version: "test",
  });
  for (let i = 0; i < 3; i++) assertEquals((await app.request("/readyz")).status, 503);
  const levels = lines.map((l) => JSON.parse(l).level);
  assert(levels.length > 0 && levels.every((l) => l === "debug"), lines.join("\n"));

  ready = true;
  lines.length = 0;
  let sent = 0;
  const cut = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent++ < 3) controller.enqueue(new Uint8Array(64 * 1024).fill(7));
      else controller.error(new BodyAbortedError("Request body ended early: the client left"));
    },
  });
  const response = await app.request("/v1/snapshots/cut/files/mem", { method: "PUT", body: cut });
  const body = await response.json();
  assertEquals([response.status, body.error.code], [400, "invalid_body"]);
  assertMatch(body.error.message, /body ended early/);
  const warned = lines.map((l) => JSON.parse(l)).filter((l) => l.level !== "debug");
  assertEquals(warned.map((l) => [l.level, l.msg]), [["warn", "request body ended early"], [
    "info",
    "http",
  ]]);
  // Nothing of the cut upload is left.
  assertEquals([...Deno.readDirSync(`${node.dir}/drafts`)], []);
});
