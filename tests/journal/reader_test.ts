import { assert, assertEquals } from "../helpers/assert.ts";
import {
  decodeCheckpoint,
  encodeCheckpoint,
  encodeJournalHeader,
  encodeRecord,
  RECORD_HEADER_BYTES,
  scanJournal,
} from "../../src/journal/mod.ts";

const encoder = new TextEncoder();

function journalImage(records: Uint8Array[], baseSeq = 1): Uint8Array {
  const parts = [encodeJournalHeader(baseSeq), ...records];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A durable record (appended with an fsync), as commits, deletes and pins are. */
function record(seq: number, text = `record ${seq}`): Uint8Array {
  return encodeRecord(seq, 1, encoder.encode(text), true);
}

/** A record appended without fsync (like an access-time batch). */
function unsynced(seq: number, text = `access ${seq}`): Uint8Array {
  return encodeRecord(seq, 1, encoder.encode(text), false);
}

Deno.test("scanJournal() reads a clean journal", () => {
  const image = journalImage([record(1), record(2), record(3)]);
  const scan = scanJournal(image)!;
  assertEquals(scan.damage, null);
  assertEquals(scan.records.map((r) => r.seq), [1, 2, 3]);
  assertEquals(scan.validEnd, image.length);
});

Deno.test("scanJournal() treats a cut at every byte offset of the last record as a torn tail", () => {
  const records = [record(1), record(2), record(3, "the last record, somewhat longer")];
  const full = journalImage(records);
  const lastStart = full.length - records[2]!.length;
  for (let cut = lastStart + 1; cut < full.length; cut++) {
    const scan = scanJournal(full.subarray(0, cut))!;
    assertEquals(scan.records.map((r) => r.seq), [1, 2], `cut at ${cut}`);
    assert(scan.damage?.tornTail, `cut at ${cut} must be a torn tail`);
    assertEquals(scan.damage?.offset, lastStart);
  }
});

Deno.test("scanJournal() treats zero-filled and garbage tails as torn", async (t) => {
  const base = journalImage([record(1), record(2)]);
  const cases: [string, Uint8Array][] = [
    ["zeros", new Uint8Array(4096)],
    ["one byte", new Uint8Array([7])],
    ["garbage", crypto.getRandomValues(new Uint8Array(200))],
  ];
  for (const [label, tail] of cases) {
    await t.step(label, () => {
      const image = new Uint8Array(base.length + tail.length);
      image.set(base);
      image.set(tail, base.length);
      const scan = scanJournal(image)!;
      assertEquals(scan.records.length, 2);
      assert(scan.damage?.tornTail);
      assertEquals(scan.damage?.offset, base.length);
    });
  }
});

Deno.test("scanJournal() reports a bad CRC in the middle, with valid records after it, as corruption", () => {
  const records = [record(1), record(2), record(3), record(4)];
  const image = journalImage(records);
  const second = 20 + records[0]!.length;
  image[second + RECORD_HEADER_BYTES + 2]! ^= 0x40; // flip a payload bit of record 2
  const scan = scanJournal(image)!;
  assertEquals(scan.records.map((r) => r.seq), [1]);
  assertEquals(scan.damage?.tornTail, false);
  assertEquals(scan.damage?.offset, second);
});

Deno.test("scanJournal() bounds a length field of 2^32-1 before allocating", async (t) => {
  await t.step("as the last record: torn tail", () => {
    const records = [record(1), record(2)];
    const image = journalImage(records);
    const last = image.length - records[1]!.length;
    new DataView(image.buffer).setUint32(last + 4, 0xffffffff, true);
    const scan = scanJournal(image)!;
    assertEquals(scan.records.length, 1);
    assert(scan.damage?.tornTail);
    assert(scan.damage?.detail.includes("bad length"));
  });
  await t.step("in the middle: corruption", () => {
    const records = [record(1), record(2), record(3)];
    const image = journalImage(records);
    const second = 20 + records[0]!.length;
    new DataView(image.buffer).setUint32(second + 4, 0xffffffff, true);
    const scan = scanJournal(image)!;
    assertEquals(scan.records.length, 1);
    assertEquals(scan.damage?.tornTail, false);
  });
});

Deno.test("scanJournal() treats damage followed only by unsynced records as a torn tail", () => {
  // After a power cut, unsynced appends can reach the disk out of order: a
  // lost page before a persisted one is not corruption of anything acknowledged.
  const records = [record(1), unsynced(2), unsynced(3), unsynced(4)];
  const image = journalImage(records);
  const second = 20 + records[0]!.length;
  image.fill(0, second, second + records[1]!.length);
  const scan = scanJournal(image)!;
  assertEquals(scan.records.map((r) => r.seq), [1]);
  assertEquals(scan.damage?.tornTail, true);
  assert(scan.damage?.detail.includes("only by 2 unsynced record(s)"), scan.damage?.detail);
  // One durable record after the damage makes it corruption again.
  const mixed = journalImage([record(1), unsynced(2), unsynced(3), record(4)]);
  mixed.fill(0, second, second + records[1]!.length);
  assertEquals(scanJournal(mixed)!.damage?.tornTail, false);
});

Deno.test("decodeRecordAt() keeps the durable flag out of the type", () => {
  const scan = scanJournal(journalImage([record(1), unsynced(2)]))!;
  assertEquals(scan.records.map((r) => [r.type, r.durable]), [[1, true], [1, false]]);
});

Deno.test("scanJournal() rejects a duplicated record", () => {
  const one = record(1);
  const two = record(2);
  const image = journalImage([one, two, two, record(3)]);
  const scan = scanJournal(image)!;
  assertEquals(scan.records.map((r) => r.seq), [1, 2]);
  assertEquals(scan.damage?.tornTail, false);
  assert(scan.damage?.detail.includes("sequence 2 where 3 was expected"));
});

Deno.test("scanJournal() rejects a valid record with the wrong sequence number, even last", () => {
  const image = journalImage([record(1), record(2), record(7)]);
  const scan = scanJournal(image)!;
  assertEquals(scan.records.map((r) => r.seq), [1, 2]);
  assertEquals(scan.damage?.tornTail, false);
});

Deno.test("scanJournal() starts at the header's base sequence", () => {
  const image = journalImage([record(41), record(42)], 41);
  const scan = scanJournal(image)!;
  assertEquals(scan.baseSeq, 41);
  assertEquals(scan.records.map((r) => r.seq), [41, 42]);
  assertEquals(scanJournal(journalImage([record(1)], 41))!.damage?.tornTail, false);
});

Deno.test("scanJournal() returns null for a damaged header", () => {
  const image = journalImage([record(1)]);
  image[3]! ^= 1;
  assertEquals(scanJournal(image), null);
  assertEquals(scanJournal(new Uint8Array(5)), null);
});

Deno.test("record CRC covers the sequence number and type", () => {
  const bytes = record(5);
  const moved = bytes.slice();
  new DataView(moved.buffer).setBigUint64(8, 6n, true);
  assertEquals(scanJournal(journalImage([moved], 6))!.records.length, 0);
  const retyped = bytes.slice();
  retyped[16] = 2;
  assertEquals(scanJournal(journalImage([retyped], 5))!.records.length, 0);
});

Deno.test("decodeCheckpoint() detects every kind of damage", async (t) => {
  const good = encodeCheckpoint(9, encoder.encode('{"v":1}'));
  await t.step("intact", () => {
    const decoded = decodeCheckpoint(good);
    assertEquals(typeof decoded === "string" ? decoded : decoded.seq, 9);
  });
  const cases: [string, (b: Uint8Array) => Uint8Array][] = [
    ["flipped payload bit", (b) => (b[b.length - 1]! ^= 1, b)],
    ["flipped sequence bit", (b) => (b[8]! ^= 1, b)],
    ["truncated", (b) => b.subarray(0, b.length - 1)],
    ["bad magic", (b) => (b[0] = 0, b)],
    ["empty", () => new Uint8Array(0)],
    ["huge length", (b) => (new DataView(b.buffer).setUint32(16, 0xffffffff, true), b)],
  ];
  for (const [label, damage] of cases) {
    await t.step(label, () => {
      assertEquals(typeof decodeCheckpoint(damage(good.slice())), "string");
    });
  }
});
