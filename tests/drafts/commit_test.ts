/**
 * Commits through the agent on an in-memory data directory, with an
 * in-memory origin where the origin has a say: uploads in progress, the
 * same or other content under a committed name, labels and hot lists, the
 * origin's own manifest of the name, rechunking, and a sync push that fails.
 */

import { assert, assertEquals, assertMatch, assertRejects } from "../helpers/assert.ts";
import { bodyOf } from "../helpers/in_process_cluster.ts";
import { buildManifest, chunkedBytes, memoryNode } from "../helpers/memory_node.ts";
import { sha256 } from "../helpers/temp.ts";
import { statusOf } from "../../src/api/errors.ts";
import { SnapmeshError } from "../../src/errors.ts";
import { decodeManifest, encodeManifest } from "../../src/manifest/mod.ts";
import { MemoryOrigin } from "../../src/origin/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const CHUNK = 64 * 1024;
const FLAGS = { "chunk-size": "64KiB" };

/** The error a rejected promise carries, with the HTTP status the API would answer. */
async function failure(
  work: () => Promise<unknown>,
): Promise<{ code: string; status: number; message: string }> {
  const err = await assertRejects(work);
  assert(err instanceof SnapmeshError, String(err));
  return { code: err.code, status: statusOf(err.code), message: err.message };
}

Deno.test("commit while a file of the draft is still being written answers 409 upload_in_progress", async () => {
  await using node = await memoryNode({ flags: FLAGS });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let reading = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      reading = true;
      controller.enqueue(chunkedBytes(1, 1));
      await gate;
      controller.close();
    },
  }, { highWaterMark: 0 });
  const upload = node.agent.stageFile("w", "mem", body);
  await node.clock.runUntil(() => reading);
  const early = await failure(() => node.agent.commit("w"));
  assertEquals(early, {
    code: "upload_in_progress",
    status: 409,
    message: 'Cannot commit snapshot "w": file "mem" is still being written',
  });
  release();
  await node.run(upload);
  const { created } = await node.run(node.agent.commit("w"));
  assert(created);
});

Deno.test("commit of a committed name: the same content answers created false, other content 409", async (t) => {
  await using node = await memoryNode({ flags: FLAGS });
  const mem = chunkedBytes(2, 2);
  const first = await node.publish("a", { mem });
  assert(first.created);
  await t.step("the same files again", async () => {
    const again = await node.publish("a", { mem });
    assertEquals(again.created, false);
    assertEquals(again.manifest.digest, first.manifest.digest);
    assertEquals(node.agent.reservedBytes, 0, "nothing left staged");
  });
  await t.step("other bytes under a file of the snapshot", async () => {
    const other = chunkedBytes(2, 3);
    const err = await failure(() =>
      node.run(node.agent.stageFile("a", "mem", bodyOf(other), { contentLength: other.length }))
    );
    assertEquals([err.code, err.status], ["snapshot_exists", 409]);
    assertMatch(err.message, /already committed with other content: "mem" differs/);
  });
  await t.step("a file the snapshot does not have", async () => {
    const err = await failure(() => node.run(node.agent.stageFile("a", "extra", bodyOf(mem))));
    assertEquals([err.code, err.status], ["snapshot_exists", 409]);
    assertMatch(err.message, /it has no file "extra"/);
  });
  assertEquals((await node.agent.listDetailed()).map((s) => s.digest), [first.manifest.digest]);
});

Deno.test("commit compares labels and hot lists only when the request names them", async (t) => {
  await using node = await memoryNode({ flags: FLAGS });
  const mem = chunkedBytes(4, 4);
  const first = await node.publish("a", { mem }, { labels: { fn: "x" }, hot: { mem: [2, 0] } });
  assertEquals(first.manifest.labels, { fn: "x" });
  assertEquals(first.manifest.files[0]!.hot, [2, 0]);
  const cases: { name: string; request: Record<string, unknown>; conflict: RegExp | null }[] = [
    { name: "no labels, no hot list", request: {}, conflict: null },
    {
      name: "the same labels and hot list",
      request: { labels: { fn: "x" }, hot: { mem: [2, 0] } },
      conflict: null,
    },
    { name: "other labels", request: { labels: { fn: "y" } }, conflict: /other labels/ },
    {
      name: "another hot list",
      request: { hot: { mem: [0, 2] } },
      conflict: /another hot list for "mem"/,
    },
    {
      name: "no hot list where one was committed",
      request: { hot: {} },
      conflict: /another hot list/,
    },
  ];
  for (const { name, request, conflict } of cases) {
    await t.step(name, async () => {
      await node.run(node.agent.stageFile("a", "mem", bodyOf(mem)));
      if (conflict === null) {
        const again = await node.run(node.agent.commit("a", request));
        assertEquals([again.created, again.manifest.digest], [false, first.manifest.digest]);
      } else {
        const err = await failure(() => node.run(node.agent.commit("a", request)));
        assertEquals([err.code, err.status], ["snapshot_exists", 409]);
        assertMatch(err.message, conflict);
        await node.run(node.agent.dropDraft("a"));
      }
    });
  }
});

Deno.test("commit asks the origin: another manifest under the name is 409, the same files take the origin's manifest", async (t) => {
  const clock = new VirtualClock();
  const origin = new MemoryOrigin({ clock });
  await using node = await memoryNode({ clock, origin, flags: { ...FLAGS, push: "async" } });
  const mem = chunkedBytes(3, 5, { zero: [1] });
  await t.step("other content in the origin", async () => {
    const theirs = buildManifest("taken", { mem: chunkedBytes(3, 6) });
    origin.seed(origin.manifestKey("taken"), encodeManifest(theirs));
    await node.run(node.agent.stageFile("taken", "mem", bodyOf(mem)));
    const err = await failure(() => node.run(node.agent.commit("taken")));
    assertEquals([err.code, err.status], ["snapshot_exists", 409]);
    assertMatch(err.message, new RegExp(`already exists in the origin .*digest ${theirs.digest}`));
    assertEquals(await node.agent.listDetailed(), []);
  });
  await t.step("the same files in the origin, made elsewhere (other time and labels)", async () => {
    const theirs = buildManifest("same", { mem }, {
      createdAt: "2020-02-02T00:00:00.000Z",
      labels: { by: "elsewhere" },
    });
    origin.seed(origin.manifestKey("same"), encodeManifest(theirs));
    const { manifest, created } = await node.publish("same", { mem });
    assert(created);
    assertEquals(manifest.digest, theirs.digest, "one digest everywhere");
    assertEquals(manifest.createdAt, "2020-02-02T00:00:00.000Z");
    assertEquals(manifest.labels, { by: "elsewhere" });
    // Nothing to upload: the origin has it.
    assertEquals(node.agent.originStatus()?.push.queued, 0);
  });
  await t.step("the same files at the origin's chunk size (128 KiB here)", async () => {
    const theirs = buildManifest("bigger", { mem }, { chunkSize: 2 * CHUNK });
    origin.seed(origin.manifestKey("bigger"), encodeManifest(theirs));
    const { manifest } = await node.publish("bigger", { mem });
    assertEquals([manifest.chunkSize, manifest.digest], [2 * CHUNK, theirs.digest]);
    const verify = await node.run(node.agent.verify("bigger"));
    assert(verify.ok, JSON.stringify(verify));
  });
});

Deno.test("commit rechunks staged files when the chunk size changed since they were staged", async () => {
  const first = await memoryNode({ flags: FLAGS });
  const mem = chunkedBytes(4, 7, { zero: [3] });
  await first.run(first.agent.stageFile("a", "mem", bodyOf(mem)));
  await first.close();
  await using node = await memoryNode({
    clock: first.clock,
    fs: first.fs,
    flags: { "chunk-size": "128KiB" },
  });
  const { manifest } = await node.run(node.agent.commit("a"));
  assertEquals(manifest.chunkSize, 2 * CHUNK);
  assertEquals(
    manifest.files[0]!.chunks,
    buildManifest("a", { mem }, { chunkSize: 2 * CHUNK }).files[0]!.chunks,
  );
  assertEquals(manifest.files[0]!.sha256, await sha256(mem));
  assert((await node.run(node.agent.verify("a"))).ok);
});

Deno.test("commit with push sync: an origin that fails answers upstream_failed, yet the snapshot is committed and stays queued", async () => {
  const clock = new VirtualClock();
  const origin = new MemoryOrigin({ clock });
  await using node = await memoryNode({ clock, origin, flags: { ...FLAGS, push: "sync" } });
  const mem = chunkedBytes(2, 8);
  await node.run(node.agent.stageFile("a", "mem", bodyOf(mem)));
  origin.faults.down = true;
  const err = await failure(() => node.run(node.agent.commit("a"), 500));
  assertEquals([err.code, err.status], ["upstream_failed", 502]);
  assertMatch(err.message, /is committed locally .* It stays queued and is retried/);
  assertEquals((await node.agent.listDetailed()).map((s) => s.name), ["a"]);
  assertEquals(node.agent.originStatus()?.push.queued, 1);
  assertEquals(origin.keys(), []);
  // The origin comes back: the queue drains on its own, manifest included.
  origin.faults.down = false;
  await clock.runUntil(() => node.agent.originStatus()?.push.queued === 0, { maxMs: 60_000 });
  assertEquals(origin.keys(), [origin.fileKey("a", "mem"), origin.manifestKey("a")].sort());
  const stored = decodeManifest((await origin.getObject(origin.manifestKey("a")))!);
  assertEquals(stored.digest, (await node.agent.listDetailed())[0]!.digest);
});
