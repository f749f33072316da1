import { assert, assertEquals } from "../helpers/assert.ts";
import { encodeStateRecord, SnapshotIndex, type StateRecord } from "../../src/cache/mod.ts";
import { silentLogger } from "../../src/log/mod.ts";

let seq = 0;
function apply(index: SnapshotIndex, record: StateRecord): void {
  const { type, payload } = encodeStateRecord(record);
  index.apply({ seq: ++seq, type, payload });
}

function add(index: SnapshotIndex, name: string, bytes: number): void {
  apply(index, {
    t: "add",
    name,
    digest: `d-${name}`,
    bytes,
    size: bytes,
    files: 1,
    source: "local",
    at: seq,
  });
}

Deno.test("SnapshotIndex keeps LRU order and byte totals", () => {
  const index = new SnapshotIndex(silentLogger);
  add(index, "a", 100);
  add(index, "b", 200);
  add(index, "c", 300);
  assertEquals(index.totalBytes, 600);
  apply(index, { t: "touch", names: ["a"], times: [99] });
  index.goLive();
  assertEquals(index.entries().map((e) => e.name), ["b", "c", "a"]);
  apply(index, { t: "remove", name: "b", digest: "d-b", reason: "evict" });
  assertEquals(index.totalBytes, 400);
  // A remove for another digest of the name is stale and ignored.
  apply(index, { t: "remove", name: "c", digest: "other", reason: "evict" });
  assert(index.has("c"));
});

Deno.test("SnapshotIndex.planEviction() takes least recent first and skips pinned and kept", () => {
  const index = new SnapshotIndex(silentLogger);
  for (const [name, bytes] of [["a", 100], ["b", 100], ["c", 100], ["d", 100]] as const) {
    add(index, name, bytes);
  }
  apply(index, { t: "pin", name: "a" });
  assertEquals(index.planEviction(150, new Set())!.map((e) => e.name), ["b", "c"]);
  assertEquals(index.planEviction(150, new Set(["b"]))!.map((e) => e.name), ["c", "d"]);
  assertEquals(index.planEviction(301, new Set()), null);
  apply(index, { t: "unpin", name: "a" });
  assertEquals(index.planEviction(400, new Set())!.length, 4);
});

Deno.test("SnapshotIndex round-trips through a checkpoint with order, pins and push queue", () => {
  const index = new SnapshotIndex(silentLogger);
  add(index, "x", 10);
  add(index, "y", 20);
  add(index, "z", 30);
  apply(index, { t: "pin", name: "y" });
  apply(index, { t: "touch", names: ["x"], times: [1234] });
  index.goLive();
  apply(index, { t: "push_queued", name: "z", digest: "d-z" });
  const copy = new SnapshotIndex(silentLogger);
  copy.restore(index.snapshot());
  assertEquals(copy.entries(), index.entries());
  assertEquals(copy.entries().map((e) => e.name), ["y", "z", "x"]);
  assert(copy.get("y")!.pinned);
  assertEquals(copy.pushQueue(), [{ name: "z", digest: "d-z" }]);
  apply(copy, { t: "push_done", name: "z", digest: "d-z" });
  assertEquals(copy.pushQueue(), []);
});

Deno.test("SnapshotIndex orders replayed touches by access time, not by journal position", () => {
  const index = new SnapshotIndex(silentLogger);
  const at = (name: string, time: number) =>
    apply(index, {
      t: "add",
      name,
      digest: `d-${name}`,
      bytes: 1,
      size: 1,
      files: 1,
      source: "local",
      at: time,
    });
  at("a", 50);
  at("b", 100);
  at("c", 300);
  // "a" was read at 200, between the adds of b and c, but its touch batch
  // reached the journal after c's add.
  apply(index, { t: "touch", names: ["a"], times: [200] });
  index.goLive();
  assertEquals(index.entries().map((e) => e.name), ["b", "a", "c"]);
});

Deno.test("SnapshotIndex applies touches live, and only replays them from the journal", () => {
  const index = new SnapshotIndex(silentLogger);
  add(index, "a", 1);
  add(index, "b", 1);
  index.goLive();
  index.touch("a", 5);
  assertEquals(index.entries().map((e) => e.name), ["b", "a"]);
  // The record persisting that touch (and an older one) must not reorder again.
  apply(index, { t: "touch", names: ["b"], times: [4] });
  assertEquals(index.entries().map((e) => e.name), ["b", "a"]);
});
