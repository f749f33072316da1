/**
 * Recovery at start, in process on an in-memory data directory: what the
 * journal does not know is moved aside (never deleted), damaged snapshots
 * leave the index, an empty journal or --rebuild-index rebuilds it from a
 * verified scan, and the checks run concurrently.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { openTestAgent } from "../helpers/in_process.ts";
import {
  chunkedBytes,
  type MemoryNode,
  memoryNode,
  memoryServices,
  preparedSnapshot,
} from "../helpers/memory_node.ts";
import { randomBytes } from "../helpers/temp.ts";
import { drive } from "../helpers/wait.ts";
import type { FileHandle, FileStat, FileSystem, OpenOptions } from "../../src/fs/mod.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { VirtualClock } from "../../src/util/clock.ts";

async function listed(node: MemoryNode): Promise<string[]> {
  return (await node.agent.listDetailed()).map((s) => s.name);
}

async function quarantined(node: MemoryNode): Promise<string[]> {
  return await node.fs.readDir(`${node.dir}/quarantine`).catch(() => []);
}

/** Flips one byte of a stored file in place (same size), as rot would. */
async function rot(fs: MemoryFileSystem, path: string, at: number): Promise<void> {
  const handle = await fs.open(path, { write: true });
  try {
    const one = new Uint8Array(1);
    await handle.readAt(one, at);
    one[0]! ^= 0xff;
    await handle.writeAt(one, at);
  } finally {
    handle.close();
  }
}

Deno.test("recovery moves a snapshot directory the journal has no record of to quarantine/, never listing it", async () => {
  const first = await memoryNode();
  await first.publish("kept", { mem: chunkedBytes(2, 1) });
  await first.close();
  // A commit that crashed between its rename and its journal record.
  const { fs, dir } = first;
  await fs.mkdir(`${dir}/snapshots/ghost/files`);
  await fs.link(`${dir}/snapshots/kept/files/mem`, `${dir}/snapshots/ghost/files/mem`);
  await fs.link(`${dir}/snapshots/kept/manifest.json`, `${dir}/snapshots/ghost/manifest.json`);
  // And leftovers of a publish in tmp/.
  await fs.mkdir(`${dir}/tmp/publish-junk`);
  await using node = await first.reopen();
  assertEquals(await listed(node), ["kept"]);
  assertEquals(node.agent.recovery.quarantinedDirs, 1);
  assertEquals(node.agent.recovery.removedTemp, 1);
  const moved = await quarantined(node);
  assertEquals(moved.length, 1);
  assertMatch(moved[0]!, /^ghost\.\d{4}-\d\d-\d\dT[\d-]+Z\.orphan-[0-9a-f]{6}$/);
  assert(fs.exists(`${dir}/quarantine/${moved[0]}/files/mem`), "moved, not deleted");
  assertEquals(await fs.readDir(`${dir}/tmp`), []);
});

Deno.test("recovery drops an indexed snapshot whose file is damaged on disk and moves it aside", async (t) => {
  const cases: { name: string; damage: (fs: MemoryFileSystem, path: string) => Promise<void> }[] = [
    { name: "a missing file", damage: (fs, path) => fs.remove(path) },
    {
      name: "a file of the wrong size",
      damage: async (fs, path) => {
        const handle = await fs.open(path, { write: true });
        await handle.truncate(1000);
        handle.close();
      },
    },
    {
      name: "a missing manifest",
      damage: (fs, path) => fs.remove(path.replace(/files\/mem$/, "manifest.json")),
    },
  ];
  for (const { name, damage } of cases) {
    await t.step(name, async () => {
      const first = await memoryNode();
      await first.publish("good", { mem: chunkedBytes(2, 2) });
      await first.publish("bad", { mem: chunkedBytes(2, 3), other: chunkedBytes(1, 4) });
      await first.close();
      await damage(first.fs, `${first.dir}/snapshots/bad/files/mem`);
      const node = await first.reopen();
      // Ready first, on the journal's word; the check follows in the background.
      await node.run(node.agent.checked);
      assertEquals(await listed(node), ["good"]);
      assertEquals(node.agent.recovery.quarantinedDirs, 1);
      const moved = await quarantined(node);
      assertMatch(moved[0] ?? "", /^bad\..*\.damaged-[0-9a-f]{6}$/);
      // The removal was journaled: the next start finds nothing more to do.
      const again = await node.reopen();
      await again.run(again.agent.checked);
      assertEquals(await listed(again), ["good"]);
      assertEquals(again.agent.recovery.quarantinedDirs, 0);
      await again.close();
    });
  }
});

Deno.test("recovery with an emptied journal rebuilds the index from a verified scan: good snapshots adopted, others quarantined", async () => {
  const first = await memoryNode();
  const good = chunkedBytes(3, 5, { zero: [1] });
  await first.publish("good", { mem: good });
  await first.publish("rotten", { mem: chunkedBytes(2, 6) });
  await first.agent.setPinned("good", true);
  await first.close();
  const { fs, dir } = first;
  for (const file of await fs.readDir(`${dir}/journal`)) await fs.remove(`${dir}/journal/${file}`);
  await rot(fs, `${dir}/snapshots/rotten/files/mem`, 70_000);
  await using node = await first.reopen();
  const rebuild = node.agent.recovery.rebuild;
  assert(rebuild !== null);
  assertEquals(rebuild.reason, "journal_empty");
  assertEquals(rebuild.adopted, ["good"]);
  assertEquals(rebuild.quarantined, ["rotten"]);
  assertEquals(rebuild.pinsRestored, [], "pins cannot be known without a journal");
  assertMatch(rebuild.unknown, /every snapshot is unpinned/);
  const list = await node.agent.listDetailed();
  assertEquals(list.map((s) => [s.name, s.pinned]), [["good", false]]);
  assertMatch((await quarantined(node))[0] ?? "", /^rotten\..*\.unverified-/);
  const verify = await node.run(node.agent.verify("good"));
  assert(verify.ok);
  // Journaled again: the next start replays it and rebuilds nothing.
  const again = await node.reopen();
  assertEquals(again.agent.recovery.rebuild, null);
  assertEquals(await listed(again), ["good"]);
  await again.close();
});

Deno.test("recovery with --rebuild-index keeps pins and the journal's readable state, and sets the old journal aside", async () => {
  const first = await memoryNode();
  await first.publish("a", { mem: chunkedBytes(1, 7) });
  await first.publish("b", { mem: chunkedBytes(1, 8) });
  await first.agent.setPinned("a", true);
  await first.close();
  await using node = await first.reopen({ flags: { "rebuild-index": true } });
  const rebuild = node.agent.recovery.rebuild!;
  assertEquals(rebuild.reason, "requested");
  assertEquals(rebuild.adopted, ["a", "b"]);
  assertEquals(rebuild.pinsRestored, ["a"]);
  assertEquals(rebuild.damagedRegions, 0);
  assertMatch(rebuild.unknown, /read in full/);
  assertEquals(
    (await node.agent.listDetailed()).map((s) => [s.name, s.pinned]),
    [["a", true], ["b", false]],
  );
  const aside = (await node.fs.readDir(node.dir)).filter((n) => n.startsWith("journal.broken-"));
  assertEquals(aside.length, 1);
  assert(node.fs.exists(`${node.dir}/${aside[0]}/wal`), "the old journal is kept");
});

/** A MemoryFileSystem whose reads under `slow` each take `delayMs` of virtual time. */
class SlowFileSystem implements FileSystem {
  readonly inner: MemoryFileSystem;
  readonly #clock: VirtualClock;
  readonly #slow: string;
  readonly #delayMs: number;

  constructor(inner: MemoryFileSystem, clock: VirtualClock, slow: string, delayMs: number) {
    this.inner = inner;
    this.#clock = clock;
    this.#slow = slow;
    this.#delayMs = delayMs;
  }

  async #wait(path: string): Promise<void> {
    if (path.startsWith(this.#slow)) await this.#clock.sleep(this.#delayMs);
  }

  async open(path: string, options?: OpenOptions): Promise<FileHandle> {
    await this.#wait(path);
    return await this.inner.open(path, options);
  }
  async readFile(path: string): Promise<Uint8Array> {
    await this.#wait(path);
    return await this.inner.readFile(path);
  }
  async stat(path: string): Promise<FileStat> {
    await this.#wait(path);
    return await this.inner.stat(path);
  }
  async statOrNull(path: string): Promise<FileStat | null> {
    await this.#wait(path);
    return await this.inner.statOrNull(path);
  }
  readDir(path: string): Promise<string[]> {
    return this.inner.readDir(path);
  }
  mkdir(path: string): Promise<void> {
    return this.inner.mkdir(path);
  }
  rename(from: string, to: string): Promise<void> {
    return this.inner.rename(from, to);
  }
  remove(path: string): Promise<void> {
    return this.inner.remove(path);
  }
  link(existing: string, created: string): Promise<void> {
    return this.inner.link(existing, created);
  }
  chmod(path: string, mode: number): Promise<void> {
    return this.inner.chmod(path, mode);
  }
  realPath(path: string): Promise<string> {
    return this.inner.realPath(path);
  }
  syncDir(path: string): Promise<void> {
    return this.inner.syncDir(path);
  }
}

Deno.test("recovery checks 200 snapshots concurrently, after the agent is ready", async () => {
  const clock = new VirtualClock();
  const fs = new MemoryFileSystem({ now: clock.now });
  const dir = "/data";
  {
    await using s = await memoryServices({ clock, fs, dir });
    for (let i = 0; i < 200; i++) {
      const name = `s${String(i).padStart(3, "0")}`;
      assert(
        await s.catalog.publish(await preparedSnapshot(s, name, { mem: randomBytes(100, i) })),
      );
    }
  }
  // Every manifest read and file stat under snapshots/ takes 5 virtual ms:
  // one after another, 200 snapshots would take at least 2000 ms.
  const slow = new SlowFileSystem(fs, clock, `${dir}/snapshots/`, 5);
  const startedVirtual = clock.monotonic();
  const startedReal = performance.now();
  const { agent } = await drive(
    clock,
    openTestAgent({ "scrub-rate": "0" }, { dir, fs: slow, origin: null, clock }),
  );
  // Ready on the checkpointed index: nothing was read per snapshot.
  assertEquals(clock.monotonic() - startedVirtual, 0);
  await drive(clock, agent.checked);
  const virtualMs = clock.monotonic() - startedVirtual;
  const realMs = performance.now() - startedReal;
  try {
    assertEquals((await drive(clock, agent.listDetailed())).length, 200);
    assertEquals(agent.recovery.quarantinedDirs, 0);
    // 500 ms of delay, then 200 snapshots 8 at a time (two 5 ms operations each).
    assert(virtualMs <= 800, `the check took ${virtualMs} virtual ms on the slow disk`);
    // About 60 ms on an idle machine; the bound only catches something
    // quadratic, as this machine is shared (the virtual bound above is the test).
    assert(realMs < 10_000, `recovery took ${Math.round(realMs)} ms of real time`);
  } finally {
    await drive(clock, agent.close());
  }
});

Deno.test("recovery trusts the index, and rot in a snapshot's bytes is still caught on first serve", async () => {
  const first = await memoryNode({ flags: { "chunk-size": "64KiB" } });
  const mem = chunkedBytes(3, 5);
  await first.publish("a", { mem });
  await first.close();
  // Same size, one byte flipped: only reading the bytes can tell.
  await rot(first.fs, `${first.dir}/snapshots/a/files/mem`, 64 * 1024 + 3);
  await using node = await first.reopen();
  const opened = await node.run(node.agent.openFile("a", "mem"));
  const good = await node.run(opened.body(0, 4095));
  assertEquals(good instanceof Uint8Array ? good.length : -1, 4096);
  const again = await node.run(node.agent.openFile("a", "mem"));
  const err = await node.run(again.body(64 * 1024, 64 * 1024 + 4095)).catch((e) => e);
  assertMatch(String(err), /damaged on this node/);
  await node.run(node.agent.checked);
  assertEquals(await listed(node), []);
});
