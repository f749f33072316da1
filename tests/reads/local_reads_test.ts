/**
 * Client reads of local snapshots through the agent, on an in-memory data
 * directory: no byte is served before its chunk was verified in this
 * process's lifetime; a damaged copy is quarantined (and fetched again when
 * the origin has it); pulls of local snapshots and verify.
 */

import { assert, assertBytes, assertEquals, assertRejects } from "../helpers/assert.ts";
import { chunkedBytes, type MemoryNode, memoryNode } from "../helpers/memory_node.ts";
import { sha256 } from "../helpers/temp.ts";
import { hasCode } from "../../src/errors.ts";
import { MemoryOrigin } from "../../src/origin/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const CHUNK = 64 * 1024;
const FLAGS = { "chunk-size": "64KiB" };

/** Flips one byte of chunk `index` of a committed file, as a failing disk would. */
async function rot(node: MemoryNode, name: string, file: string, index: number): Promise<void> {
  const handle = await node.fs.open(`${node.dir}/snapshots/${name}/files/${file}`, { write: true });
  try {
    const one = new Uint8Array(1);
    await handle.readAt(one, index * CHUNK + 7);
    one[0]! ^= 0xff;
    await handle.writeAt(one, index * CHUNK + 7);
  } finally {
    handle.close();
  }
}

async function readAll(node: MemoryNode, stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await node.run(new Response(stream).arrayBuffer()));
}

/** A node with `mem` committed as "a", restarted (so nothing is trusted any more). */
async function restartedWith(
  mem: Uint8Array,
  options: { clock?: VirtualClock; origin?: MemoryOrigin } = {},
): Promise<MemoryNode> {
  const first = await memoryNode({
    clock: options.clock ?? new VirtualClock(),
    origin: options.origin ?? null,
    flags: { ...FLAGS, ...(options.origin ? { push: "sync" } : {}) },
  });
  await first.publish("a", { mem });
  return await first.reopen();
}

Deno.test("Reads.openFile() verifies each chunk before its first serve, then trusts it", async () => {
  const mem = chunkedBytes(4, 1, { zero: [1] });
  await using node = await restartedWith(mem);
  assertEquals(node.agent.cacheStatus().trustedChunks, 0);
  const opened = await node.run(node.agent.openFile("a", "mem"));
  assertEquals([opened.size, opened.sha256, opened.source], [
    mem.length,
    await sha256(mem),
    "local",
  ]);
  // The chunk a response starts in is checked before its status line.
  await node.run(opened.ready(2 * CHUNK + 5, mem.length - 1));
  assertEquals(node.agent.cacheStatus().trustedChunks, 1);
  const bytes = await readAll(node, opened.stream(2 * CHUNK + 5, mem.length - 1));
  assertBytes(bytes, mem.subarray(2 * CHUNK + 5));
  assertEquals(node.agent.cacheStatus().trustedChunks, 2, "chunks 2 and 3");
  const whole = await node.run(node.agent.openFile("a", "mem"));
  assertBytes(await readAll(node, whole.stream(0, mem.length - 1)), mem);
  assertEquals(node.agent.cacheStatus().trustedChunks, 4);
  assertEquals(node.agent.cacheStatus().hits, 2);
});

Deno.test("Reads.openFile() with a corrupt first chunk answers verification_failed and quarantines the snapshot", async () => {
  const mem = chunkedBytes(3, 2);
  await using node = await restartedWith(mem);
  await rot(node, "a", "mem", 1);
  const opened = await node.run(node.agent.openFile("a", "mem"));
  const err = await assertRejects(() => node.run(opened.ready(CHUNK, 2 * CHUNK - 1)));
  assert(hasCode(err, "verification_failed"), String(err));
  assert(/it was quarantined/.test((err as Error).message));
  opened.close();
  assertEquals(await node.agent.listDetailed(), []);
  const moved = await node.fs.readDir(`${node.dir}/quarantine`);
  assert(moved.length === 1 && moved[0]!.startsWith("a."), String(moved));
  const gone = await assertRejects(() => node.run(node.agent.openFile("a", "mem")));
  assert(hasCode(gone, "snapshot_not_found"), String(gone));
});

Deno.test("Reads.openFile() cuts a response short at a corrupt later chunk, never serving its bytes", async () => {
  const mem = chunkedBytes(4, 3);
  await using node = await restartedWith(mem);
  await rot(node, "a", "mem", 2);
  const opened = await node.run(node.agent.openFile("a", "mem"));
  await node.run(opened.ready(0, mem.length - 1));
  const reader = opened.stream(0, mem.length - 1).getReader();
  let got = 0;
  const err = await assertRejects(async () => {
    while (true) {
      const { done, value } = await node.run(reader.read());
      if (done) break;
      got += value.length;
    }
  });
  assert(err instanceof Error);
  assertEquals(got, 2 * CHUNK, "the two good chunks, nothing of the bad one");
  await node.clock.advance(0);
  assertEquals(await node.agent.listDetailed(), []);
});

Deno.test("Reads.openFile() after a quarantine: a good copy comes back from the origin in the background", async () => {
  const clock = new VirtualClock();
  const origin = new MemoryOrigin({ clock });
  const mem = chunkedBytes(3, 4);
  await using node = await restartedWith(mem, { clock, origin });
  await rot(node, "a", "mem", 0);
  const opened = await node.run(node.agent.openFile("a", "mem"));
  const err = await assertRejects(() => node.run(opened.ready(0, 10)));
  assert(hasCode(err, "verification_failed"), String(err));
  opened.close();
  await clock.runUntil(() => node.agent.cacheStatus().entries === 1, { maxMs: 60_000 });
  const again = await node.run(node.agent.openFile("a", "mem"));
  assertBytes(await readAll(node, again.stream(0, mem.length - 1)), mem);
  assert((await node.run(node.agent.verify("a"))).ok);
});

Deno.test("Reads.pull() of a local snapshot answers at once with source local and its paths", async () => {
  const mem = chunkedBytes(3, 5, { zero: [0] });
  await using node = await restartedWith(mem);
  const result = await node.run(node.agent.pull("a"));
  assert(!("state" in result));
  assertEquals(result.source, "local");
  assertEquals(result.bytes, { local: 2 * CHUNK, peer: 0, origin: 0 });
  assertEquals(result.complete, true);
  assertEquals(result.paths, { mem: `${node.dir}/snapshots/a/files/mem` });
  assertEquals(result.digest, (await node.agent.listDetailed())[0]!.digest);
  assertEquals(node.agent.cacheStatus().hits, 1);
  const missing = await assertRejects(() => node.run(node.agent.pull("nope")));
  assert(hasCode(missing, "snapshot_not_found"), String(missing));
});

Deno.test("Reads.verify() trusts every chunk of a good copy and quarantines a bad one", async (t) => {
  await t.step("good", async () => {
    await using node = await restartedWith(chunkedBytes(4, 6));
    const result = await node.run(node.agent.verify("a"));
    assert(result.ok);
    assertEquals(result.files.map((f) => [f.file, f.ok, f.badChunks]), [["mem", true, []]]);
    assertEquals(node.agent.cacheStatus().trustedChunks, 4);
  });
  await t.step("bad", async () => {
    await using node = await restartedWith(chunkedBytes(4, 7));
    await rot(node, "a", "mem", 3);
    const result = await node.run(node.agent.verify("a"));
    assertEquals(result.ok, false);
    assertEquals(result.files[0]!.badChunks, [3]);
    assertEquals(await node.agent.listDetailed(), []);
    assertEquals((await node.fs.readDir(`${node.dir}/quarantine`)).length, 1);
  });
});

/** Reads bytes `start..end` through `OpenedFile.body()`, whichever form it answers in. */
async function bodyBytes(
  node: MemoryNode,
  name: string,
  start: number,
  end: number,
): Promise<Uint8Array> {
  const opened = await node.run(node.agent.openFile(name, "mem"));
  const body = await node.run(opened.body(start, end));
  return body instanceof Uint8Array ? body : await readAll(node, body);
}

Deno.test("Reads.openFile() keeps one open handle per hot file for small ranges", async () => {
  const mem = chunkedBytes(4, 6);
  await using node = await memoryNode({ flags: FLAGS });
  await node.publish("a", { mem });
  const opensBefore = node.fs.counters.opens;
  const handlesBefore = node.fs.openHandles;
  for (const start of [0, 4096, 3 * CHUNK + 100, CHUNK - 10]) {
    const opened = await node.run(node.agent.openFile("a", "mem"));
    const body = await node.run(opened.body(start, start + 4095));
    assert(body instanceof Uint8Array, "a small range comes as one buffer");
    assertBytes(body, mem.subarray(start, start + 4096));
  }
  assertEquals(node.fs.counters.opens - opensBefore, 1, "opened once, then reused");
  assertEquals(node.fs.openHandles - handlesBefore, 1, "kept open between reads");
  // A large range streams through a handle of its own, closed at its end.
  assertBytes(await bodyBytes(node, "a", 0, mem.length - 1), mem);
  assertEquals(node.fs.openHandles - handlesBefore, 1);
});

Deno.test("Reads.openFile(): deleting a snapshot closes its cached handles and frees its bytes", async () => {
  const mem = chunkedBytes(4, 7);
  await using node = await memoryNode({ flags: FLAGS });
  const handlesBefore = node.fs.openHandles;
  const usedBefore = node.fs.usedBytes;
  await node.publish("a", { mem });
  assertBytes(await bodyBytes(node, "a", 10, 20), mem.subarray(10, 21));
  assertEquals(node.fs.openHandles - handlesBefore, 1);
  await node.run(node.agent.remove("a"));
  assertEquals(node.fs.openHandles, handlesBefore, "closed with its snapshot");
  await node.clock.advance(0);
  assert(node.fs.usedBytes - usedBefore < mem.length, "the unlinked file is freed");
});

Deno.test("Reads.openFile(): a read that started before a delete gets the right bytes", async (t) => {
  const mem = chunkedBytes(4, 8);
  for (const [label, start, end] of [["small range", 5, 4100], ["stream", 0, mem.length - 1]]) {
    await t.step(label as string, async () => {
      await using node = await memoryNode({ flags: FLAGS });
      const handlesBefore = node.fs.openHandles;
      await node.publish("a", { mem });
      const opened = await node.run(node.agent.openFile("a", "mem"));
      await node.run(node.agent.remove("a"));
      assertEquals(node.fs.openHandles - handlesBefore, 1, "still leased by the reader");
      const gone = await assertRejects(() => node.run(node.agent.openFile("a", "mem")));
      assert(hasCode(gone, "snapshot_not_found"), String(gone));
      const body = await node.run(opened.body(start as number, end as number));
      const bytes = body instanceof Uint8Array ? body : await readAll(node, body);
      assertBytes(bytes, mem.subarray(start as number, (end as number) + 1));
      assertEquals(node.fs.openHandles, handlesBefore, "closed once the reader is done");
    });
  }
});

Deno.test("Reads.openFile() after a restart verifies the chunk of a small range before serving it", async () => {
  const mem = chunkedBytes(3, 9);
  await using node = await restartedWith(mem);
  await rot(node, "a", "mem", 2);
  // Good chunks are served (and trusted) as their first read verifies them.
  assertBytes(
    await bodyBytes(node, "a", CHUNK + 1, CHUNK + 4096),
    mem.subarray(CHUNK + 1, CHUNK + 4097),
  );
  assertEquals(node.agent.cacheStatus().trustedChunks, 1);
  // A range across a good and a rotted chunk fails whole: no byte of it is served.
  const opened = await node.run(node.agent.openFile("a", "mem"));
  const err = await assertRejects(() => node.run(opened.body(2 * CHUNK - 100, 2 * CHUNK + 100)));
  assert(hasCode(err, "verification_failed"), String(err));
  assertEquals(await node.agent.listDetailed(), []);
});
