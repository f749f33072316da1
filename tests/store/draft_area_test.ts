/**
 * The drafts area on an in-memory file system: staged meta replaces the
 * previous one durably, and repair removes exactly what a crash leaves.
 */

import { assertEquals } from "../helpers/assert.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { SnapshotStore } from "../../src/store/store.ts";
import type { DraftFile } from "../../src/store/draft_area.ts";

async function openStore(): Promise<{ fs: MemoryFileSystem; store: SnapshotStore }> {
  const fs = new MemoryFileSystem();
  await fs.mkdir("/data");
  const store = new SnapshotStore(fs, "/data");
  await store.init();
  return { fs, store };
}

function draft(file: string, blob: string | null): DraftFile {
  return {
    file,
    blob,
    size: 0,
    sha256: "0".repeat(64),
    chunks: [],
    storedBytes: 0,
    chunkSize: 4 << 20,
  };
}

Deno.test("writeFile returns the meta it replaced and read lists files sorted by name", async () => {
  const { store } = await openStore();
  const first = await store.drafts.createBlob("fn");
  first.handle.close();
  assertEquals(await store.drafts.writeFile("fn", draft("vmstate", first.id)), null);
  assertEquals(await store.drafts.writeFile("fn", draft("mem", null)), null);
  const second = await store.drafts.createBlob("fn");
  second.handle.close();
  const replaced = await store.drafts.writeFile("fn", draft("vmstate", second.id));
  assertEquals(replaced?.blob, first.id);
  assertEquals((await store.drafts.read("fn")).map((d) => [d.file, d.blob]), [
    ["mem", null],
    ["vmstate", second.id],
  ]);
  assertEquals(await store.drafts.list(), ["fn"]);
});

Deno.test("repair removes temp meta and unreferenced blobs, keeps referenced ones", async () => {
  const { fs, store } = await openStore();
  const kept = await store.drafts.createBlob("fn");
  kept.handle.close();
  const orphan = await store.drafts.createBlob("fn");
  orphan.handle.close();
  await store.drafts.writeFile("fn", draft("mem", kept.id));
  const tmp = await fs.open("/data/drafts/fn/meta/disk.json.abc.tmp", {
    write: true,
    createNew: true,
  });
  tmp.close();

  const files = await store.drafts.repair("fn");
  assertEquals(files.map((f) => f.file), ["mem"]);
  assertEquals(await fs.readDir("/data/drafts/fn/blobs"), [kept.id]);
  assertEquals(await fs.readDir("/data/drafts/fn/meta"), ["mem.json"]);
});

Deno.test("repair of a draft with no staged file drops the whole draft", async () => {
  const { fs, store } = await openStore();
  const orphan = await store.drafts.createBlob("fn");
  orphan.handle.close();
  assertEquals(await store.drafts.repair("fn"), []);
  assertEquals(fs.exists("/data/drafts/fn"), false);
  assertEquals(await store.drafts.list(), []);
  assertEquals(await store.drafts.touchedAt("fn"), null);
});
