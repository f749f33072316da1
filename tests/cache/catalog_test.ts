/**
 * The catalog on an in-memory data directory: the one durable publish path,
 * removal and quarantine, pins, batched access times, chunk locations, and a
 * journal that refuses writes until the disk has room again.
 */

import { assert, assertBytes, assertEquals, assertRejects } from "../helpers/assert.ts";
import {
  buildManifest,
  chunkedBytes,
  type MemoryServices,
  memoryServices,
  preparedSnapshot,
  writeSparse,
} from "../helpers/memory_node.ts";
import { hasCode } from "../../src/errors.ts";
import { encodeManifest } from "../../src/manifest/mod.ts";

/** Opens the services again on the same file system, as after a crash (nothing closed). */
function crashAndReopen(s: MemoryServices): Promise<MemoryServices> {
  return memoryServices({ fs: s.fs, clock: s.clock, dir: s.dir });
}

/** Publishes `files` as `name`; resolves with what publish answered and the request. */
async function publish(s: MemoryServices, name: string, files: Record<string, Uint8Array>) {
  const request = await preparedSnapshot(s, name, files);
  return { published: await s.catalog.publish(request), request };
}

function tmpEntries(s: MemoryServices): Promise<string[]> {
  return s.fs.readDir(`${s.dir}/tmp`);
}

Deno.test("Catalog.publish() renames a prepared directory into snapshots/, journals it, then shows it", async () => {
  await using s = await memoryServices();
  const mem = chunkedBytes(3, 1, { zero: [1] });
  const request = await preparedSnapshot(s, "a", { mem });
  const append = s.journal.append.bind(s.journal);
  let inPlaceWhenJournaled: boolean | null = null;
  s.journal.append = (type, payload, options) => {
    inPlaceWhenJournaled = s.fs.exists(`${s.dir}/snapshots/a/manifest.json`);
    assert(!s.catalog.has("a"), "not visible before its record");
    return append(type, payload, options);
  };
  let visibleWhenHandedBack: boolean | null = null;
  const published = await s.catalog.publish({
    ...request,
    onPublished: () => (visibleWhenHandedBack = s.catalog.has("a")),
  });
  assert(published);
  assertEquals(inPlaceWhenJournaled, true, "the rename comes before the journal record");
  assertEquals(
    visibleWhenHandedBack,
    true,
    "the reservation goes back once it counts in the index",
  );
  assertEquals(await tmpEntries(s), [], "the prepared directory left tmp/");
  assertEquals(s.catalog.get("a")?.digest, request.digest);
  assertEquals(s.catalog.get("a")?.bytes, request.bytes);
  assertEquals(s.catalog.cachedManifest(request.digest)?.name, "a");
  // Every chunk was hashed on its way in: trusted at once.
  assertEquals(s.catalog.trust.trustedChunks, 3);
  assertBytes(await s.fs.readFile(`${s.dir}/snapshots/a/files/mem`), mem);
  // Durable: a journal replay knows it.
  await using again = await crashAndReopen(s);
  assertEquals(again.catalog.get("a")?.digest, request.digest);
});

Deno.test("Catalog.publish() publishes a finished partial directory (a pull)", async () => {
  await using s = await memoryServices();
  const mem = chunkedBytes(2, 2);
  const { manifest, prepared } = await preparedSnapshot(s, "pulled", { mem });
  await s.store.discard(prepared);
  const key = manifest.digest;
  await s.store.preparePartial(key, {
    name: "pulled",
    digest: manifest.digest,
    manifest: new TextDecoder().decode(encodeManifest(manifest)),
    files: [{ name: "mem", size: mem.length }],
    reservedBytes: mem.length,
  });
  await writeSparse(s.fs, s.store.partialFilePath(key, "mem"), mem);
  const manifestBytes = await s.store.finishPartial(key, manifest);
  const published = await s.catalog.publish({
    name: "pulled",
    manifest,
    digest: manifest.digest,
    bytes: mem.length + manifestBytes.length,
    source: "peer",
    push: false,
    from: { kind: "partial", key },
  });
  assert(published);
  assertEquals(await s.fs.readDir(`${s.dir}/partial`), []);
  assertEquals((await s.fs.readDir(`${s.dir}/snapshots/pulled`)).sort(), [
    "files",
    "manifest.json",
  ]);
  assertEquals(s.catalog.get("pulled")?.source, "peer");
  assertEquals((await s.store.readManifest("pulled", manifest.digest)).digest, manifest.digest);
});

Deno.test("Catalog.publish() answers false when the name was taken meanwhile and discards the new directory", async (t) => {
  await using s = await memoryServices();
  const { request: first } = await publish(s, "a", { mem: chunkedBytes(2, 3) });
  await t.step("prepared", async () => {
    const other = await preparedSnapshot(s, "a", { mem: chunkedBytes(2, 4) });
    assertEquals(await s.catalog.publish(other), false);
    assert(!s.fs.exists(other.prepared.dir), "the new directory is gone");
    assertEquals(await tmpEntries(s), []);
  });
  await t.step("partial", async () => {
    await s.store.preparePartial("k", {
      name: "a",
      digest: null,
      manifest: null,
      files: [{ name: "mem", size: 10 }],
      reservedBytes: 10,
    });
    const manifest = buildManifest("a", { mem: chunkedBytes(1, 5) });
    const published = await s.catalog.publish({
      name: "a",
      manifest,
      digest: manifest.digest,
      bytes: 1,
      source: "origin",
      push: false,
      from: { kind: "partial", key: "k" },
    });
    assertEquals(published, false);
    assert(!s.fs.exists(`${s.dir}/partial/k`), "the partial directory is gone");
  });
  // The snapshot that held the name is untouched.
  assertEquals(s.catalog.get("a")?.digest, first.digest);
  assertEquals((await s.store.readManifest("a", first.digest)).digest, first.digest);
  await tmpDrained(s);
});

/** The trash in tmp/ is deleted in the background; on a MemoryFileSystem within a turn. */
async function tmpDrained(s: MemoryServices): Promise<void> {
  await s.clock.settle();
  assertEquals(await tmpEntries(s), []);
}

Deno.test("Catalog.publish() takes the directory back out when the journal fails after the rename: nothing is visible", async () => {
  await using s = await memoryServices();
  const request = await preparedSnapshot(s, "a", { mem: chunkedBytes(2, 6) });
  // The directory is prepared; the disk fills before its journal record.
  s.fs.capacityBytes = s.fs.usedBytes;
  let handedBack = false;
  const err = await assertRejects(() =>
    s.catalog.publish({ ...request, onPublished: () => (handedBack = true) })
  );
  assert(hasCode(err, "insufficient_storage"), String(err));
  assert(!handedBack, "a reservation is handed back only once the snapshot is journaled");
  assert(!s.catalog.has("a"));
  assert(!s.fs.exists(`${s.dir}/snapshots/a`), "the renamed directory was taken back out");
  assertEquals(s.catalog.cachedManifest(request.digest), undefined);
  assertEquals(s.catalog.trust.trustedChunks, 0);
  await tmpDrained(s);
  // Not acknowledged, so not there after a restart either.
  s.fs.capacityBytes = Infinity;
  await using again = await crashAndReopen(s);
  assert(!again.catalog.has("a"));
});

Deno.test("Catalog.removeLocked() journals the removal before the directory moves", async (t) => {
  await using s = await memoryServices();
  await publish(s, "a", { mem: chunkedBytes(2, 7) });
  await publish(s, "b", { mem: chunkedBytes(2, 8) });
  const remove = (name: string) => {
    const entry = s.catalog.get(name)!;
    return s.catalog.lock.run(() => s.catalog.removeLocked(entry, "delete"));
  };
  await t.step("a journal failure leaves the snapshot and its files", async () => {
    s.fs.capacityBytes = s.fs.usedBytes;
    const err = await assertRejects(() => remove("a"));
    assert(hasCode(err, "insufficient_storage"), String(err));
    assert(s.catalog.has("a"));
    assert(s.fs.exists(`${s.dir}/snapshots/a/files/mem`));
    s.fs.capacityBytes = Infinity;
    await s.clock.advance(1000); // the journal repairs itself
    assertEquals(s.catalog.unhealthyReason(), null);
  });
  await t.step("the directory leaves after the record", async () => {
    const append = s.journal.append.bind(s.journal);
    let dirAtRecord: boolean | null = null;
    s.journal.append = (type, payload, options) => {
      dirAtRecord = s.fs.exists(`${s.dir}/snapshots/b`);
      return append(type, payload, options);
    };
    await remove("b");
    assertEquals(dirAtRecord, true);
    assert(!s.catalog.has("b"));
    assert(!s.fs.exists(`${s.dir}/snapshots/b`));
    await tmpDrained(s);
  });
  await using again = await crashAndReopen(s);
  assertEquals(again.catalog.entries().map((e) => e.name), ["a"]);
});

Deno.test("Catalog.quarantine() moves the directory to quarantine/ and forgets manifest, chunk locations and trust", async () => {
  await using s = await memoryServices();
  const mem = chunkedBytes(2, 9);
  const { request } = await publish(s, "a", { mem });
  const chunk = request.manifest.files[0]!.chunks[0]!;
  assert(s.catalog.locate(chunk));
  // A stale digest (another snapshot under the name since) changes nothing.
  await s.catalog.quarantine("a", "0".repeat(64), "test");
  assert(s.catalog.has("a"));
  await s.catalog.quarantine("a", request.digest, "test: rot");
  assert(!s.catalog.has("a"));
  assert(!s.fs.exists(`${s.dir}/snapshots/a`));
  const moved = await s.fs.readDir(`${s.dir}/quarantine`);
  assertEquals(moved.length, 1);
  assert(moved[0]!.startsWith("a."), moved[0]);
  assertBytes(await s.fs.readFile(`${s.dir}/quarantine/${moved[0]}/files/mem`), mem);
  assertEquals(s.catalog.cachedManifest(request.digest), undefined);
  assertEquals(s.catalog.locate(chunk), undefined);
  assertEquals(s.catalog.trust.trustedChunks, 0);
  await using again = await crashAndReopen(s);
  assert(!again.catalog.has("a"), "the quarantine was journaled");
});

Deno.test("Catalog.setPinned() journals a change once and refuses unknown names", async () => {
  await using s = await memoryServices();
  await publish(s, "a", { mem: chunkedBytes(1, 10) });
  assertEquals(await s.catalog.setPinned("a", true), { name: "a", pinned: true });
  const seq = s.journal.lastSeq;
  await s.catalog.setPinned("a", true);
  assertEquals(s.journal.lastSeq, seq, "no record for a pin that does not change");
  assert(s.catalog.get("a")!.pinned);
  const err = await assertRejects(() => s.catalog.setPinned("nope", true));
  assert(hasCode(err, "snapshot_not_found"), String(err));
  await using again = await crashAndReopen(s);
  assert(again.catalog.get("a")!.pinned);
  await again.catalog.setPinned("a", false);
  await using third = await crashAndReopen(again);
  assertEquals(third.catalog.get("a")!.pinned, false);
});

Deno.test("Catalog.touch() journals access times in one batch after the delay; LRU order survives a crash", async () => {
  await using s = await memoryServices({ touchFlushMs: 100 });
  for (const [name, seed] of [["a", 11], ["b", 12], ["c", 13]] as const) {
    await publish(s, name, { mem: chunkedBytes(1, seed) });
    await s.clock.advance(10); // distinct times
  }
  const seq = s.journal.lastSeq;
  s.catalog.touch("a");
  await s.clock.advance(10);
  s.catalog.touch("b");
  // In memory at once, in the journal only later.
  assertEquals(s.catalog.entries().map((e) => e.name), ["c", "a", "b"]);
  await s.clock.advance(89);
  assertEquals(s.journal.lastSeq, seq, "nothing journaled before the delay");
  await s.clock.advance(1);
  assertEquals(s.journal.lastSeq, seq + 1, "one record for both reads");
  // A crash now (no close, no checkpoint): the replay restores the order.
  await using again = await crashAndReopen(s);
  assertEquals(again.catalog.entries().map((e) => e.name), ["c", "a", "b"]);
});

Deno.test("Catalog.locate() finds a chunk in another snapshot once the first is gone", async () => {
  await using s = await memoryServices();
  const shared = chunkedBytes(1, 14);
  const a = await publish(s, "a", { mem: shared });
  const b = await publish(s, "b", { other: chunkedBytes(1, 15), mem: shared });
  const chunk = a.request.manifest.files[0]!.chunks[0]!;
  assertEquals(b.request.manifest.files.find((f) => f.name === "mem")!.chunks[0], chunk);
  assertEquals(s.catalog.locate(chunk), { path: `${s.dir}/snapshots/a/files/mem`, offset: 0 });
  const entry = s.catalog.get("a")!;
  await s.catalog.lock.run(() => s.catalog.removeLocked(entry, "evict"));
  assertEquals(s.catalog.locate(chunk), { path: `${s.dir}/snapshots/b/files/mem`, offset: 0 });
  assertEquals(s.catalog.locate("f".repeat(64)), undefined);
});

Deno.test("Catalog.unhealthyReason() names a failed journal write and clears once a repair succeeds", async () => {
  await using s = await memoryServices();
  await publish(s, "a", { mem: chunkedBytes(1, 16) });
  assertEquals(s.catalog.unhealthyReason(), null);
  s.fs.capacityBytes = s.fs.usedBytes;
  const err = await assertRejects(() => s.catalog.setPinned("a", true));
  assert(hasCode(err, "insufficient_storage"), String(err));
  const reason = s.catalog.unhealthyReason();
  assert(reason !== null && /journal cannot write/.test(reason), String(reason));
  assert(/No space left on device/.test(reason), reason);
  // Still full: the repair (every second) fails and writes stay refused.
  await s.clock.advance(3000);
  assert(s.catalog.unhealthyReason() !== null);
  const refused = await assertRejects(() => s.catalog.setPinned("a", true));
  assert(hasCode(refused, "insufficient_storage"), String(refused));
  // Space freed: the next repair takes writes again, without a restart.
  s.fs.capacityBytes = Infinity;
  await s.clock.advance(1000);
  assertEquals(s.catalog.unhealthyReason(), null);
  await s.catalog.setPinned("a", true);
  await using again = await crashAndReopen(s);
  assert(again.catalog.get("a")!.pinned);
});
