/**
 * No wrong byte is served from the local disk either: each chunk is verified
 * before its first serve in a process's lifetime, a chunk that rotted cuts
 * the response short and quarantines the snapshot, the background scrub
 * finds rot nobody read, and a good copy comes back from the origin.
 */

import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import { memFile, originArgs, startOrigin } from "../helpers/fixtures.ts";
import { publish, testNode } from "../helpers/in_process.ts";
import { randomBytes, sha256 } from "../helpers/temp.ts";

const CHUNK = 64 * 1024;

/** Flips a byte in chunk `index` of a committed file, as a failing disk would. */
async function rot(dir: string, name: string, file: string, index: number): Promise<void> {
  const path = `${dir}/snapshots/${name}/files/${file}`;
  const f = await Deno.open(path, { read: true, write: true });
  try {
    const at = index * CHUNK + 100;
    const one = new Uint8Array(1);
    await f.seek(at, Deno.SeekMode.Start);
    await f.read(one);
    one[0]! ^= 0xff;
    await f.seek(at, Deno.SeekMode.Start);
    await f.write(one);
  } finally {
    f.close();
  }
}

function quarantined(dir: string): string[] {
  try {
    return [...Deno.readDirSync(`${dir}/quarantine`)].map((e) => e.name);
  } catch {
    return [];
  }
}

Deno.test("a chunk that rotted after the first is never served: the response is cut short and the snapshot quarantined", async () => {
  const flags = { "chunk-size": "64KiB", "scrub-rate": "0" };
  await using first = await testNode(flags);
  const mem = randomBytes(4 * CHUNK, 1);
  assertEquals((await publish(first, "a", { mem })).status, 201);
  // A restart: nothing is trusted any more; the next read verifies.
  const node = await first.reopen();
  try {
    await rot(node.dir, "a", "mem", 2);
    const get = await node.request("/v1/snapshots/a/files/mem");
    assertEquals(get.status, 200);
    await assertRejects(() => get.arrayBuffer());
    assertEquals((await node.request("/v1/snapshots/a")).status, 404);
    assertEquals(quarantined(node.dir).length, 1);
  } finally {
    await node[Symbol.asyncDispose]();
  }
});

Deno.test("a rotted first chunk is caught before the status line: the read is served from the origin instead", async () => {
  await using o = await startOrigin();
  for (const [key, value] of Object.entries(o.s3.env)) Deno.env.set(key, value);
  const args = originArgs(o);
  const flags: Record<string, string> = { "chunk-size": "64KiB", "scrub-rate": "0" };
  for (let i = 0; i < args.length; i += 2) flags[args[i]!.slice(2)] = args[i + 1]!;
  await using first = await testNode({ ...flags, push: "sync" });
  const mem = memFile(8, 2, CHUNK);
  assertEquals((await publish(first, "b", { mem })).status, 201);
  const node = await first.reopen();
  try {
    await rot(node.dir, "b", "mem", 3);
    const get = await node.request("/v1/snapshots/b/files/mem", {
      headers: { Range: `bytes=${3 * CHUNK}-${4 * CHUNK - 1}` },
    });
    assertEquals(get.status, 206);
    assertEquals(get.headers.get("x-snapmesh-source"), "origin");
    assertEquals(
      await sha256(new Uint8Array(await get.arrayBuffer())),
      await sha256(mem.subarray(3 * CHUNK, 4 * CHUNK)),
    );
    assertEquals(quarantined(node.dir).length, 1);
    // The refetch left a good local copy.
    const pulled = await (await node.request("/v1/snapshots/b/pull", { method: "POST" })).json();
    assertEquals(await sha256(await Deno.readFile(pulled.paths.mem)), await sha256(mem));
  } finally {
    await node[Symbol.asyncDispose]();
  }
});

Deno.test("chunks verified once are trusted afterwards; the scrub still finds rot nobody reads", async () => {
  await using first = await testNode({ "chunk-size": "64KiB", "scrub-rate": "0" });
  assertEquals((await publish(first, "c", { mem: randomBytes(4 * CHUNK, 3) })).status, 201);
  assertEquals((await publish(first, "d", { mem: randomBytes(4 * CHUNK, 4) })).status, 201);
  const status = async (n: typeof first) => (await (await n.request("/v1/status")).json()).cache;
  assertEquals((await status(first)).trustedChunks, 8, "hashed at commit: trusted");
  await first.agent.close();
  await rot(first.dir, "d", "mem", 1);
  const node = await testNode({ "chunk-size": "64KiB", "scrub-rate": "64MiB" }, {
    dir: first.dir,
  });
  try {
    const deadline = Date.now() + 10_000;
    while ((await node.request("/v1/snapshots/d")).status !== 404) {
      assert(Date.now() < deadline, "the scrub did not find the rotted chunk");
      await new Promise((r) => setTimeout(r, 20));
    }
    const cache = await status(node);
    assertEquals(cache.scrubCorrupt, 1);
    assertEquals(cache.entries, 1);
    assertEquals((await node.request("/v1/snapshots/c")).status, 200);
  } finally {
    await node[Symbol.asyncDispose]();
  }
});
