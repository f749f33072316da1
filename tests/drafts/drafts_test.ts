/**
 * Drafts: staging on an in-memory data directory (replacing a file, failed
 * uploads, abandoned drafts under a virtual clock), and imports by path on
 * the real file system, where a path can be swapped for a symlink or another
 * file while it is being opened.
 */

import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import { testNode } from "../helpers/in_process.ts";
import { bodyOf } from "../helpers/in_process_cluster.ts";
import { chunkedBytes, memoryServices } from "../helpers/memory_node.ts";
import { randomBytes, sha256, tempDir } from "../helpers/temp.ts";
import { hasCode } from "../../src/errors.ts";
import { DenoFileSystem, type FileHandle, type OpenOptions } from "../../src/fs/mod.ts";

const CHUNK = 64 * 1024;

Deno.test("Drafts.stage() replacing a staged file gives the old file's bytes back to the budget", async () => {
  await using s = await memoryServices({ flags: { "chunk-size": "64KiB" } });
  const first = chunkedBytes(3, 1, { zero: [1] }); // 2 chunks stored, 1 hole
  const staged = await s.drafts.stage("a", "mem", bodyOf(first), { contentLength: first.length });
  assertEquals(staged, { file: "mem", size: first.length, sha256: await sha256(first) });
  assertEquals(s.budget.reserved, 2 * CHUNK);
  assertEquals(s.drafts.totalBytes, 2 * CHUNK);
  const second = chunkedBytes(1, 2);
  await s.drafts.stage("a", "mem", bodyOf(second), { contentLength: second.length });
  assertEquals(s.budget.reserved, CHUNK);
  assertEquals(s.drafts.totalBytes, CHUNK);
  assertEquals((await s.fs.readDir(`${s.dir}/drafts/a/blobs`)).length, 1, "the old blob is gone");
  const [draft] = await s.store.drafts.read("a");
  assertEquals(draft?.sha256, await sha256(second));
});

Deno.test("Drafts.stage() that fails leaves no blob, no draft and no reservation", async (t) => {
  await using s = await memoryServices({
    flags: { "chunk-size": "64KiB", "max-file-size": "1MiB" },
  });
  await t.step("a body shorter than its Content-Length", async () => {
    const bytes = chunkedBytes(2, 3);
    const err = await assertRejects(() =>
      s.drafts.stage("short", "mem", bodyOf(bytes), { contentLength: bytes.length + 1 })
    );
    assert(hasCode(err, "invalid_body"), String(err));
    assert(!s.fs.exists(`${s.dir}/drafts/short`));
  });
  await t.step("a Content-Length over --max-file-size, refused before a byte is read", async () => {
    let pulled = false;
    const body = new ReadableStream<Uint8Array>(
      { pull: () => void (pulled = true) },
      { highWaterMark: 0 },
    );
    const err = await assertRejects(() =>
      s.drafts.stage("big", "mem", body, { contentLength: 2 * 1024 * 1024 })
    );
    assert(hasCode(err, "too_large"), String(err));
    assert(!pulled);
    assert(!s.fs.exists(`${s.dir}/drafts/big`));
  });
  await t.step("a disk that fills up", async () => {
    s.fs.capacityBytes = s.fs.usedBytes + CHUNK;
    const bytes = chunkedBytes(4, 4);
    const err = await assertRejects(() => s.drafts.stage("full", "mem", bodyOf(bytes)));
    assert(hasCode(err, "insufficient_storage"), String(err));
    assert(!s.fs.exists(`${s.dir}/drafts/full`));
    s.fs.capacityBytes = Infinity;
  });
  assertEquals(s.budget.reserved, 0);
  assertEquals(s.drafts.totalBytes, 0);
});

Deno.test("Drafts.sweep() drops drafts idle for --draft-ttl and frees their bytes (virtual time)", async () => {
  await using s = await memoryServices({ flags: { "chunk-size": "64KiB", "draft-ttl": "10m" } });
  const old = chunkedBytes(2, 5);
  await s.drafts.stage("old", "mem", bodyOf(old));
  await s.clock.advance(9 * 60_000);
  const fresh = chunkedBytes(1, 6);
  await s.drafts.stage("fresh", "mem", bodyOf(fresh));
  assertEquals(await s.drafts.sweep(), []);
  await s.clock.advance(60_001);
  assertEquals(await s.drafts.sweep(), ["old"]);
  assert(!s.fs.exists(`${s.dir}/drafts/old`));
  assertEquals(s.budget.reserved, CHUNK);
  await s.clock.advance(10 * 60_000);
  assertEquals(await s.drafts.sweep(), ["fresh"]);
  assertEquals(s.budget.reserved, 0);
});

/**
 * The real file system, with a hook that runs before a chosen operation on a
 * path: the moment an attacker would swap the path.
 */
class RacingFileSystem extends DenoFileSystem {
  beforeOpen: ((path: string) => Promise<void>) | null = null;
  afterOpen: ((path: string) => Promise<void>) | null = null;

  override async open(path: string, options?: OpenOptions): Promise<FileHandle> {
    const before = this.beforeOpen;
    this.beforeOpen = null;
    await before?.(path);
    const handle = await super.open(path, options);
    const after = this.afterOpen;
    this.afterOpen = null;
    await after?.(path);
    return handle;
  }
}

Deno.test("Drafts.importFile() imports only regular files under the import root, whatever happens to the path meanwhile", async (t) => {
  await using root = await tempDir("snapmesh-import-");
  await using outside = await tempDir("snapmesh-outside-");
  const inside = `${root.path}/vm.mem`;
  const content = randomBytes(3 * CHUNK + 5, 7);
  await Deno.writeFile(inside, content);
  await Deno.writeFile(`${outside.path}/secret`, randomBytes(1000, 8));
  const fs = new RacingFileSystem();
  await using node = await testNode({ "import-root": root.path, "chunk-size": "64KiB" }, { fs });
  const refused = async (path: string, code: string) => {
    const err = await assertRejects(() => node.agent.importFile("fn", "mem", path));
    assert(hasCode(err, code as "path_not_allowed"), `${path}: ${err}`);
    assertEquals(node.agent.reservedBytes, 0, "nothing staged");
    return err as Error;
  };

  await t.step("a file under the root is staged", async () => {
    const staged = await node.agent.importFile("fn", "mem", inside);
    assertEquals(staged.sha256, await sha256(content));
    await node.agent.dropDraft("fn");
  });
  await t.step("a path outside the root, existing or not", async () => {
    await refused(`${outside.path}/secret`, "path_not_allowed");
    await refused(`${outside.path}/missing`, "path_not_allowed");
    await refused(`${root.path}/../${outside.path.split("/").pop()}/secret`, "path_not_allowed");
  });
  await t.step("a relative path or a directory", async () => {
    await refused("vm.mem", "invalid_body");
    await Deno.mkdir(`${root.path}/dir`);
    await refused(`${root.path}/dir`, "invalid_body");
  });
  await t.step("a symlink under the root that leads outside", async () => {
    await Deno.symlink(`${outside.path}/secret`, `${root.path}/link`);
    await refused(`${root.path}/link`, "path_not_allowed");
    await Deno.symlink(outside.path, `${root.path}/dir-link`);
    await refused(`${root.path}/dir-link/secret`, "path_not_allowed");
  });
  await t.step("the file swapped for a symlink to outside just before the open", async () => {
    const victim = `${root.path}/swapped-before`;
    await Deno.writeFile(victim, content);
    fs.beforeOpen = async (path) => {
      await Deno.remove(path);
      await Deno.symlink(`${outside.path}/secret`, path);
    };
    // Caught by the second resolution (now outside) or by the inode check.
    const err = await refused(victim, "path_not_allowed");
    assert(/changed while it was being opened|only files under/.test(err.message), err.message);
  });
  await t.step("the file swapped for another one just after the open", async () => {
    const victim = `${root.path}/swapped-after`;
    await Deno.writeFile(victim, content);
    fs.afterOpen = async (path) => {
      await Deno.rename(path, `${path}.old`);
      await Deno.writeFile(path, randomBytes(100, 9));
    };
    const err = await refused(victim, "path_not_allowed");
    assert(/changed while it was being opened/.test(err.message), err.message);
  });
});

Deno.test("Drafts.importFile() is refused when the node has no import root", async () => {
  await using node = await testNode();
  const err = await assertRejects(() => node.agent.importFile("fn", "mem", "/etc/hostname"));
  assert(hasCode(err, "path_not_allowed"), String(err));
  assert(/--import-root/.test((err as Error).message));
});
