import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import { DenoFileSystem, type FileSystem } from "../../src/fs/mod.ts";
import {
  encodeRecord,
  Journal,
  JournalBrokenError,
  JournalCorruptError,
  type JournalRecord,
  type JournalStateMachine,
} from "../../src/journal/mod.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { FaultFileSystem } from "../helpers/fault_fs.ts";
import { sha256, tempDir } from "../helpers/temp.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A state machine that remembers every payload, in order. */
class Log implements JournalStateMachine {
  items: string[] = [];
  apply(record: JournalRecord): void {
    this.items.push(decoder.decode(record.payload));
  }
  snapshot(): Uint8Array {
    return encoder.encode(JSON.stringify(this.items));
  }
  restore(payload: Uint8Array | null): void {
    this.items = payload === null ? [] : JSON.parse(decoder.decode(payload));
  }
  isKnownType(type: number): boolean {
    return type === 1;
  }
}

async function open(
  dir: string,
  fs: FileSystem = new DenoFileSystem(),
  compactAfterBytes?: number,
) {
  const sm = new Log();
  const options = {
    fs,
    dir,
    log: silentLogger,
    ...(compactAfterBytes ? { compactAfterBytes } : {}),
  };
  const { journal, recovery } = await Journal.open(sm, options);
  return { sm, journal, recovery };
}

function append(journal: Journal, text: string, sync = true): Promise<number> {
  return journal.append(1, encoder.encode(text), { sync });
}

Deno.test("Journal replays appended records after a reopen", async () => {
  await using tmp = await tempDir();
  const a = await open(tmp.path);
  assertEquals(await append(a.journal, "one"), 1);
  assertEquals(await append(a.journal, "two"), 2);
  assertEquals(a.sm.items, ["one", "two"]);
  await a.journal.close();
  const b = await open(tmp.path);
  assertEquals(b.sm.items, ["one", "two"]);
  assertEquals(b.recovery.replayed, 2);
  assertEquals(await append(b.journal, "three"), 3);
  await b.journal.close();
  assertEquals((await open(tmp.path)).sm.items, ["one", "two", "three"]);
});

Deno.test("Journal group-commits concurrent appends in sequence order", async () => {
  await using tmp = await tempDir();
  const fs = new FaultFileSystem();
  const { sm, journal } = await open(tmp.path, fs);
  const syncsBefore = fs.counters.syncs;
  const seqs = await Promise.all(Array.from({ length: 50 }, (_, i) => append(journal, `r${i}`)));
  assertEquals(seqs, Array.from({ length: 50 }, (_, i) => i + 1));
  assertEquals(sm.items, Array.from({ length: 50 }, (_, i) => `r${i}`));
  assert(fs.counters.syncs - syncsBefore < 50, `expected batching, saw ${fs.counters.syncs} syncs`);
  await journal.close();
});

Deno.test("Journal checkpoints and compacts, and recovers from checkpoint plus tail", async () => {
  await using tmp = await tempDir();
  const a = await open(tmp.path, new DenoFileSystem(), 512);
  for (let i = 0; i < 40; i++) await append(a.journal, `item-${i}`);
  assert(a.journal.stats.checkpoints > 0, "expected automatic checkpoints");
  assert(a.journal.size < 512 + 64, `journal stayed large: ${a.journal.size}`);
  await a.journal.close();
  const b = await open(tmp.path);
  assertEquals(b.sm.items, Array.from({ length: 40 }, (_, i) => `item-${i}`));
  assert(b.recovery.checkpointSeq > 0);
  await b.journal.close();
});

Deno.test("Journal truncates a torn tail, logs it, and keeps appending after it", async () => {
  await using tmp = await tempDir();
  const a = await open(tmp.path);
  await append(a.journal, "kept");
  await append(a.journal, "torn");
  await a.journal.close();
  const wal = `${tmp.path}/wal`;
  const size = (await Deno.stat(wal)).size;
  await Deno.truncate(wal, size - 3);
  const b = await open(tmp.path);
  assertEquals(b.sm.items, ["kept"]);
  assert(b.recovery.truncatedBytes > 0);
  assertEquals(await append(b.journal, "after"), 2);
  await b.journal.close();
  assertEquals((await open(tmp.path)).sm.items, ["kept", "after"]);
});

Deno.test("Journal refuses to open with damage in the middle and changes nothing", async () => {
  await using tmp = await tempDir();
  const a = await open(tmp.path);
  for (const t of ["a", "b", "c"]) await append(a.journal, t);
  await a.journal.close();
  const wal = `${tmp.path}/wal`;
  const bytes = await Deno.readFile(wal);
  bytes[20 + 18 + 5]! ^= 0xff; // length field of the second record (each record is 18 bytes)
  await Deno.writeFile(wal, bytes);
  const err = await assertRejects(() => open(tmp.path));
  assert(err instanceof JournalCorruptError);
  assert(err.message.includes("damaged in the middle"), err.message);
  assert(err.message.includes("--rebuild-index"), err.message);
  assertEquals(await sha256(await Deno.readFile(wal)), await sha256(bytes));
});

Deno.test("Journal refuses a corrupt checkpoint", async () => {
  await using tmp = await tempDir();
  const a = await open(tmp.path);
  await append(a.journal, "x");
  await a.journal.checkpoint();
  await a.journal.close();
  const path = `${tmp.path}/checkpoint`;
  const bytes = await Deno.readFile(path);
  bytes[bytes.length - 2]! ^= 1;
  await Deno.writeFile(path, bytes);
  const err = await assertRejects(() => open(tmp.path));
  assert(err instanceof JournalCorruptError && err.message.includes("Checkpoint"), String(err));
});

Deno.test("Journal refuses a gap between checkpoint and journal", async () => {
  await using tmp = await tempDir();
  const a = await open(tmp.path);
  await append(a.journal, "x");
  await a.journal.close();
  // A journal that claims to start at record 5 with no checkpoint behind it.
  const { encodeJournalHeader } = await import("../../src/journal/mod.ts");
  const image = new Uint8Array([
    ...encodeJournalHeader(5),
    ...encodeRecord(5, 1, encoder.encode("y")),
  ]);
  await Deno.writeFile(`${tmp.path}/wal`, image);
  await assertRejects(() => open(tmp.path), (e) => e instanceof JournalCorruptError);
});

Deno.test("Journal never acknowledges after a failed fsync and refuses later writes", async () => {
  await using tmp = await tempDir();
  const fs = new FaultFileSystem();
  const { journal } = await open(tmp.path, fs);
  await append(journal, "durable");
  fs.faults.failSyncIn = 1;
  await assertRejects(() => append(journal, "lost"), (e) => e instanceof JournalBrokenError);
  await assertRejects(() => append(journal, "later"), (e) => e instanceof JournalBrokenError);
  assert(journal.broken !== null);
  await journal.close();
  // Reopening recovers: what was written but not fsynced may or may not be there.
  const again = await open(tmp.path);
  assertEquals(again.sm.items[0], "durable");
  assert(again.sm.items.length <= 2);
  await again.journal.close();
});

Deno.test("Journal recovers a torn write as a torn tail", async () => {
  await using tmp = await tempDir();
  const fs = new FaultFileSystem();
  const { journal } = await open(tmp.path, fs);
  await append(journal, "first");
  fs.faults.tearWriteIn = 1;
  fs.faults.tearBytes = 9;
  await assertRejects(() => append(journal, "second, torn"));
  await journal.close();
  const again = await open(tmp.path);
  assertEquals(again.sm.items, ["first"]);
  assertEquals(again.recovery.truncatedBytes, 9);
  await again.journal.close();
});

Deno.test("Journal survives power loss: fsynced records stay, unsynced may go", async () => {
  await using tmp = await tempDir();
  const fs = new FaultFileSystem();
  const { journal } = await open(tmp.path, fs);
  await append(journal, "a");
  await append(journal, "b");
  await append(journal, "access-1", false);
  await append(journal, "access-2", false);
  await fs.dropUnsyncedAppends([`${tmp.path}/wal`]);
  journal.close().catch(() => {});
  const again = await open(tmp.path);
  assertEquals(again.sm.items, ["a", "b"]);
  await again.journal.close();
});

Deno.test("Journal stops writing when compaction fails halfway, and reopens cleanly", async () => {
  await using tmp = await tempDir();
  const fs = new FaultFileSystem();
  const { journal } = await open(tmp.path, fs);
  await append(journal, "a");
  await append(journal, "b");
  // The checkpoint's rename succeeds; the fresh journal's rename fails.
  fs.faults.match = (p) => p.endsWith("/wal");
  fs.faults.failRenameIn = 1;
  await assertRejects(() => journal.checkpoint());
  assert(journal.broken !== null);
  await assertRejects(() => append(journal, "c"), (e) => e instanceof JournalBrokenError);
  await journal.close();
  const again = await open(tmp.path);
  assertEquals(again.sm.items, ["a", "b"]);
  assertEquals(await append(again.journal, "c"), 3);
  await again.journal.close();
  assertEquals((await open(tmp.path)).sm.items, ["a", "b", "c"]);
});

Deno.test("Journal handles a crash between checkpoint and compaction", async () => {
  await using tmp = await tempDir();
  const a = await open(tmp.path);
  await append(a.journal, "a");
  await append(a.journal, "b");
  const walBefore = await Deno.readFile(`${tmp.path}/wal`);
  await a.journal.checkpoint();
  await a.journal.close();
  // Put the pre-compaction journal back, as if the crash hit right after the checkpoint rename.
  await Deno.writeFile(`${tmp.path}/wal`, walBefore);
  const b = await open(tmp.path);
  assertEquals(b.sm.items, ["a", "b"]);
  assertEquals(b.recovery.replayed, 0);
  assertEquals(await append(b.journal, "c"), 3);
  await b.journal.close();
  assertEquals((await open(tmp.path)).sm.items, ["a", "b", "c"]);
});
