/**
 * The agent over a fault-injecting file system: failures are never
 * acknowledged, leave nothing half-written, and recover on reopen.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { FaultFileSystem } from "../helpers/fault_fs.ts";
import { errorCode, publish, testNode } from "../helpers/in_process.ts";
import { randomBytes, sha256 } from "../helpers/temp.ts";

const MiB = 1024 * 1024;

function exists(path: string): Promise<boolean> {
  return Deno.stat(path).then(() => true, () => false);
}

Deno.test("a failed journal fsync during commit is not acknowledged and leaves nothing visible", async () => {
  const fs = new FaultFileSystem();
  await using node = await testNode({}, { fs });
  const data = randomBytes(MiB, 1);
  assertEquals(
    (await node.request("/v1/snapshots/a/files/mem", { method: "PUT", body: data })).status,
    201,
  );
  fs.faults = { match: (p) => p.endsWith("/journal/wal"), failSyncIn: 1 };
  const commit = await node.request("/v1/snapshots/a/commit", { method: "POST" });
  assertEquals(commit.status, 500);
  assertEquals(await errorCode(commit), "journal_failed");
  assertEquals((await node.request("/v1/snapshots/a")).status, 404);
  // The journal refuses writes (readiness says why) until it has repaired
  // itself: a fresh checkpoint of what was acknowledged, and a new file.
  const put = await node.request("/v1/snapshots/other/files/f", { method: "PUT", body: "x" });
  assertEquals(put.status, 201); // staging does not need the journal
  const deadline = Date.now() + 10_000;
  while ((await node.request("/readyz")).status !== 200) {
    assert(Date.now() < deadline, "the journal did not repair itself");
    await new Promise((r) => setTimeout(r, 50));
  }
  assertEquals((await node.request("/v1/snapshots/other/commit", { method: "POST" })).status, 201);
  const second = await node.reopen();
  try {
    const names = (await (await second.request("/v1/snapshots")).json()).map((
      s: { name: string },
    ) => s.name);
    assertEquals(names, ["other"]);
    // The staged file was acknowledged and survives: the commit can be retried.
    const retry = await second.request("/v1/snapshots/a/commit", { method: "POST" });
    assertEquals(retry.status, 201);
    const got = await second.request("/v1/snapshots/a/files/mem");
    assertEquals(await sha256(new Uint8Array(await got.arrayBuffer())), await sha256(data));
  } finally {
    await second[Symbol.asyncDispose]();
  }
});

Deno.test("a failed file fsync during upload answers an error and leaves no blob", async () => {
  const fs = new FaultFileSystem();
  await using node = await testNode({}, { fs });
  fs.faults = { match: (p) => p.includes("/blobs/"), failSyncIn: 1 };
  const put = await node.request("/v1/snapshots/b/files/mem", {
    method: "PUT",
    body: randomBytes(3 * MiB, 2),
  });
  assertEquals(put.status, 500);
  await put.body?.cancel();
  assertEquals(node.agent.reservedBytes, 0);
  assert(!(await exists(`${node.dir}/drafts/b`)), "the failed upload leaves no draft behind");
  assertEquals(
    await errorCode(await node.request("/v1/snapshots/b/commit", { method: "POST" })),
    "draft_not_found",
  );
});

Deno.test("ENOSPC during upload answers 507 and leaves nothing half-written", async () => {
  const fs = new FaultFileSystem();
  await using node = await testNode({}, { fs });
  fs.faults = { match: (p) => p.includes("/blobs/"), spaceLeft: 2 * MiB };
  const put = await node.request("/v1/snapshots/c/files/mem", {
    method: "PUT",
    body: randomBytes(5 * MiB, 3),
  });
  assertEquals(put.status, 507);
  assertEquals(await errorCode(put), "insufficient_storage");
  assertEquals(node.agent.reservedBytes, 0);
  assert(!(await exists(`${node.dir}/drafts/c`)), "the failed upload leaves no draft behind");
  fs.faults = {};
  assertEquals((await publish(node, "c", { mem: randomBytes(MiB, 4) })).status, 201);
});

Deno.test("a failed rename while publishing is not acknowledged; the draft stays committable", async () => {
  const fs = new FaultFileSystem();
  await using node = await testNode({}, { fs });
  assertEquals(
    (await node.request("/v1/snapshots/d/files/mem", { method: "PUT", body: "bytes" })).status,
    201,
  );
  fs.faults = { match: (p) => p.includes("/snapshots/d"), failRenameIn: 1 };
  const commit = await node.request("/v1/snapshots/d/commit", { method: "POST" });
  assertEquals(commit.status, 500);
  await commit.body?.cancel();
  assertEquals((await node.request("/v1/snapshots/d")).status, 404);
  assert([...Deno.readDirSync(`${node.dir}/tmp`)].every((e) => e.name.startsWith("trash-")));
  fs.faults = {};
  assertEquals((await node.request("/v1/snapshots/d/commit", { method: "POST" })).status, 201);
});

Deno.test("ENOSPC on the journal: 507 and /readyz 503 with the reason; writes come back on their own once space is freed", async () => {
  const fs = new FaultFileSystem();
  await using node = await testNode({}, { fs });
  assertEquals((await publish(node, "before", { mem: randomBytes(MiB, 20) })).status, 201);
  assertEquals(
    (await node.request("/v1/snapshots/later/files/mem", {
      method: "PUT",
      body: randomBytes(MiB, 21),
    })).status,
    201,
  );
  fs.faults = { match: (p) => p.includes("/journal/"), spaceLeft: 0 };
  const commit = await node.request("/v1/snapshots/later/commit", { method: "POST" });
  assertEquals(commit.status, 507);
  assertEquals(await errorCode(commit), "insufficient_storage");
  const notReady = await node.request("/readyz");
  assertEquals(notReady.status, 503);
  const why = (await notReady.json()).error;
  assertEquals(why.code, "not_ready");
  assert(why.message.includes("journal cannot write"), why.message);
  // Still full: still refused, never acknowledged.
  assertEquals(
    (await node.request("/v1/snapshots/later/commit", { method: "POST" })).status,
    507,
  );
  fs.faults = {};
  const deadline = Date.now() + 10_000;
  while ((await node.request("/readyz")).status !== 200) {
    assert(Date.now() < deadline, "the journal did not repair itself after space was freed");
    await new Promise((r) => setTimeout(r, 50));
  }
  assertEquals((await node.request("/v1/snapshots/later/commit", { method: "POST" })).status, 201);
  const reopened = await node.reopen();
  try {
    const names = (await (await reopened.request("/v1/snapshots")).json()).map((
      s: { name: string },
    ) => s.name);
    assertEquals(names, ["before", "later"]);
  } finally {
    await reopened[Symbol.asyncDispose]();
  }
});

Deno.test("ENOSPC while publishing a commit answers 507, not 500, and nothing is visible", async () => {
  const fs = new FaultFileSystem();
  await using node = await testNode({}, { fs });
  assertEquals(
    (await node.request("/v1/snapshots/full/files/mem", {
      method: "PUT",
      body: randomBytes(MiB, 22),
    })).status,
    201,
  );
  fs.faults = { match: (p) => p.includes("/tmp/publish"), spaceLeft: 0 };
  const commit = await node.request("/v1/snapshots/full/commit", { method: "POST" });
  assertEquals(commit.status, 507);
  assertEquals(await errorCode(commit), "insufficient_storage");
  assertEquals((await node.request("/v1/snapshots/full")).status, 404);
  fs.faults = {};
  assertEquals((await node.request("/v1/snapshots/full/commit", { method: "POST" })).status, 201);
});
