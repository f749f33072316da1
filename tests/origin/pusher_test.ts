/**
 * The pusher under a virtual clock, against an in-memory origin: files
 * first and the manifest last, retries with backoff, giving up on a
 * conflict, quarantine of a local copy that does not match its manifest,
 * and stop() with a grace time for uploads in flight.
 */

import {
  assert,
  assertBytes,
  assertEquals,
  assertMatch,
  assertRejects,
} from "../helpers/assert.ts";
import {
  chunkedBytes,
  type MemoryServices,
  memoryServices,
  preparedSnapshot,
} from "../helpers/memory_node.ts";
import { encodeManifest } from "../../src/manifest/mod.ts";
import { MemoryOrigin, PushConflictError, type UploadOptions } from "../../src/origin/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";

/** A MemoryOrigin that logs writes, and which keys existed when each was made. */
class LoggingOrigin extends MemoryOrigin {
  readonly writes: { key: string; existing: string[] }[] = [];

  override async putBytes(
    key: string,
    bytes: Uint8Array,
    options?: { signal?: AbortSignal },
  ): Promise<void> {
    this.writes.push({ key, existing: this.keys() });
    await super.putBytes(key, bytes, options);
  }

  override async uploadFile(key: string, options: UploadOptions): Promise<void> {
    this.writes.push({ key, existing: this.keys() });
    await super.uploadFile(key, options);
  }
}

async function setup(): Promise<MemoryServices & { origin: LoggingOrigin }> {
  const clock = new VirtualClock();
  const origin = new LoggingOrigin({ clock, prefix: "snaps" });
  const s = await memoryServices({ clock, origin, flags: { push: "async" } });
  return Object.assign(s, { origin });
}

/** Publishes `name` queued for upload; returns its digest. */
async function queued(s: MemoryServices, name: string, seed: number): Promise<string> {
  const request = await preparedSnapshot(
    s,
    name,
    { mem: chunkedBytes(3, seed, { zero: [1] }), "vm.json": chunkedBytes(1, seed + 1) },
    { push: true },
  );
  assert(await s.catalog.publish(request));
  return request.digest;
}

Deno.test("Pusher.push() uploads every file, then the manifest last, then journals it done", async () => {
  await using s = await setup();
  const digest = await queued(s, "a", 1);
  assertEquals(s.index.pushQueue(), [{ name: "a", digest }]);
  await s.run(s.pusher!.push("a", digest));
  const { origin } = s;
  const files = [origin.fileKey("a", "mem"), origin.fileKey("a", "vm.json")];
  assertEquals(origin.writes.map((w) => w.key).sort(), [...files, origin.manifestKey("a")].sort());
  const manifestWrite = origin.writes.at(-1)!;
  assertEquals(manifestWrite.key, origin.manifestKey("a"), "the manifest goes last");
  assertEquals(manifestWrite.existing.sort(), files.sort(), "every file was there before it");
  assertBytes(
    await origin.getObject(origin.manifestKey("a")),
    await s.fs.readFile(`${s.dir}/snapshots/a/manifest.json`),
  );
  assertBytes(
    await origin.getObject(origin.fileKey("a", "mem")),
    await s.fs.readFile(`${s.dir}/snapshots/a/files/mem`),
  );
  assertEquals(s.index.pushQueue(), []);
  // Done is durable: a replay of the journal does not queue it again.
  await using again = await memoryServices({ fs: s.fs, clock: s.clock, origin: s.origin });
  assertEquals(again.index.pushQueue(), []);
});

Deno.test("Pusher retries a failing origin with growing backoff, then drains the queue", async () => {
  await using s = await setup();
  const { origin, clock, pusher } = s;
  origin.faults.down = true;
  pusher!.start();
  const digest = await queued(s, "a", 3);
  pusher!.kick();
  await clock.advance(0);
  const waits: number[] = [];
  for (let attempt = 1; attempt <= 4; attempt++) {
    const failing = pusher!.status().failing;
    assertEquals(failing.length, 1);
    assertEquals(failing[0]!.attempts, attempt);
    assertMatch(failing[0]!.lastError, /connection refused/);
    const wait = failing[0]!.retryInMs;
    // 1 s, 2 s, 4 s, 8 s, each with jitter down to half.
    const ceiling = 1000 * 2 ** (attempt - 1);
    assert(wait >= ceiling / 2 && wait <= ceiling, `attempt ${attempt}: retry in ${wait} ms`);
    waits.push(wait);
    const requests = origin.stats.requests;
    await clock.advance(Math.floor(wait) - 1);
    assertEquals(origin.stats.requests, requests, "no attempt before the backoff ends");
    await clock.advance(Math.ceil(wait) - Math.floor(wait) + 1);
    assertEquals(origin.stats.requests, requests + 1, "one attempt when it ends");
  }
  origin.faults.down = false;
  await clock.runUntil(() => s.index.pushQueue().length === 0, { maxMs: 60_000 });
  assertEquals(pusher!.status(), { queued: 0, inProgress: [], failing: [] });
  assert(origin.keys().includes(origin.manifestKey("a")));
  assertEquals(s.index.pushQueue().find((q) => q.digest === digest), undefined);
});

Deno.test("Pusher gives up on other content under the name in the origin, and never uploads over it", async () => {
  await using s = await setup();
  const { origin, clock, pusher } = s;
  const digest = await queued(s, "a", 5);
  const theirs = await preparedSnapshot(s, "a", { mem: chunkedBytes(1, 9) });
  await s.store.discard(theirs.prepared);
  origin.seed(origin.manifestKey("a"), encodeManifest(theirs.manifest));
  const err = await assertRejects(() => s.run(pusher!.push("a", digest)));
  assert(err instanceof PushConflictError, String(err));
  assertMatch(err.message, new RegExp(`other content under "a" \\(digest ${theirs.digest}\\)`));
  assertEquals(s.index.pushQueue(), [], "off the queue: no retry can fix it");
  const [failing] = pusher!.status().failing;
  assertEquals(failing?.attempts, 1);
  assertMatch(failing?.lastError ?? "", /other content/);
  pusher!.start();
  const requests = origin.stats.requests;
  await clock.advance(60_000); // a retry would have come within 1 s
  assertEquals(origin.stats.requests, requests, "never tried again");
  assertEquals(origin.keys(), [origin.manifestKey("a")], "nothing uploaded over it");
  assertBytes(await origin.getObject(origin.manifestKey("a")), encodeManifest(theirs.manifest));
});

Deno.test("Pusher takes the origin's manifest of the same files as done, uploading nothing", async () => {
  await using s = await setup();
  const files = { mem: chunkedBytes(2, 11) };
  const mine = await preparedSnapshot(s, "a", files, {
    push: true,
    createdAt: "2024-01-01T00:00:00.000Z",
  });
  assert(await s.catalog.publish(mine));
  const theirs = await preparedSnapshot(s, "a", files, { createdAt: "2020-01-01T00:00:00.000Z" });
  await s.store.discard(theirs.prepared);
  s.origin.seed(s.origin.manifestKey("a"), encodeManifest(theirs.manifest));
  await s.run(s.pusher!.push("a", mine.digest));
  assertEquals(s.origin.writes, []);
  assertEquals(s.index.pushQueue(), []);
});

Deno.test("Pusher quarantines a snapshot whose local file no longer matches its manifest; no manifest reaches the origin", async () => {
  await using s = await setup();
  const digest = await queued(s, "a", 7);
  // Rot after the commit, before the upload: same size, one byte changed.
  const handle = await s.fs.open(`${s.dir}/snapshots/a/files/mem`, { write: true });
  await handle.writeAt(new Uint8Array([0x5a]), 200);
  handle.close();
  const err = await assertRejects(() => s.run(s.pusher!.push("a", digest)));
  assertEquals((err as Error).name, "CorruptFileError");
  assert(!s.origin.keys().includes(s.origin.manifestKey("a")), "no manifest for bad bytes");
  assert(!s.catalog.has("a"));
  assertEquals(s.index.pushQueue(), []);
  const moved = await s.fs.readDir(`${s.dir}/quarantine`);
  assert(moved.length === 1 && moved[0]!.startsWith("a."), String(moved));
});

Deno.test("Pusher.push() of a snapshot deleted before its upload journals it done without uploading", async () => {
  await using s = await setup();
  const digest = await queued(s, "a", 13);
  await s.store.removeSnapshot("a"); // its files are gone (a delete that raced the queue)
  await s.run(s.pusher!.push("a", digest));
  assertEquals(s.origin.writes, []);
  assertEquals(s.index.pushQueue(), []);
});

Deno.test("Pusher.stop() gives uploads in flight their grace, then aborts them; they stay queued", async (t) => {
  await using s = await setup();
  const { origin, clock, pusher } = s;
  await t.step("nothing in flight: stop() returns at once", async () => {
    const idle = await memoryServices({ clock, origin: new MemoryOrigin({ clock }) });
    idle.pusher!.start();
    let stopped = false;
    idle.pusher!.stop(5000).then(() => (stopped = true));
    await clock.settle();
    assert(stopped);
    await idle.close();
  });
  await t.step("an upload that hangs", async () => {
    origin.faults.hang = true;
    const digest = await queued(s, "a", 15);
    pusher!.start();
    pusher!.kick();
    await clock.advance(0);
    assertEquals(pusher!.status().inProgress, ["a"]);
    const started = clock.monotonic();
    let stopped = false;
    pusher!.stop(5000).then(() => (stopped = true));
    await clock.advance(4999);
    assert(!stopped, "uploads in flight get their grace");
    await clock.advance(1);
    await clock.settle();
    assert(stopped, "then they are aborted");
    assertEquals(clock.monotonic() - started, 5000);
    assertEquals(pusher!.status().inProgress, []);
    assertEquals(s.index.pushQueue(), [{ name: "a", digest }], "still queued for the next start");
    assertEquals(origin.keys(), []);
  });
});
