/**
 * Recovery never deletes acknowledged data: a damaged durable record, a
 * deleted or emptied journal, a damaged pin record and an unknown snapshot
 * directory, each against a real agent process killed with SIGKILL.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { runSnapmesh, startAgent } from "../helpers/agent_process.ts";
import { randomBytes, sha256, tempDir } from "../helpers/temp.ts";
import { decodeStateRecord } from "../../src/cache/mod.ts";
import { JOURNAL_HEADER_BYTES, RECORD_HEADER_BYTES, scanJournal } from "../../src/journal/mod.ts";

const KiB = 1024;
const ARGS = ["--chunk-size", "64KiB", "--scrub-rate", "0"];

async function publish(url: string, name: string, bytes: Uint8Array<ArrayBuffer>): Promise<void> {
  const put = await fetch(`${url}/v1/snapshots/${name}/files/mem`, { method: "PUT", body: bytes });
  assertEquals(put.status, 201, await put.text());
  const commit = await fetch(`${url}/v1/snapshots/${name}/commit`, { method: "POST" });
  assertEquals(commit.status, 201, await commit.text());
}

async function read(url: string, name: string): Promise<Uint8Array> {
  const r = await fetch(`${url}/v1/snapshots/${name}/files/mem`);
  assertEquals(r.status, 200);
  return new Uint8Array(await r.arrayBuffer());
}

async function names(url: string): Promise<string[]> {
  return (await (await fetch(`${url}/v1/snapshots`)).json()).map((s: { name: string }) => s.name);
}

/** Waits until `check` holds (polling), or fails naming `what`. */
async function waitFor(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

/** Flips one payload byte of the journal record `pick` selects; returns its sequence number. */
async function flipRecord(
  dataDir: string,
  pick: (record: { t: string; name?: string }) => boolean,
): Promise<number> {
  const path = `${dataDir}/journal/wal`;
  const bytes = await Deno.readFile(path);
  const scan = scanJournal(bytes)!;
  assertEquals(scan.damage, null);
  let offset = JOURNAL_HEADER_BYTES;
  for (const record of scan.records) {
    const state = decodeStateRecord(record);
    if (pick(state)) {
      bytes[offset + RECORD_HEADER_BYTES + 3]! ^= 0x20;
      await Deno.writeFile(path, bytes);
      return record.seq;
    }
    offset += RECORD_HEADER_BYTES + record.payload.length;
  }
  throw new Error("no such record in the journal");
}

Deno.test("a damaged durable commit record is not a torn tail: the agent refuses to start, nothing is deleted, --rebuild-index adopts it", async () => {
  await using tmp = await tempDir();
  const dataDir = `${tmp.path}/data`;
  const mem = randomBytes(300 * KiB, 1);
  {
    await using a = await startAgent({ dataDir, args: ARGS });
    await publish(a.url, "x", mem);
    await read(a.url, "x");
    // The read's access time is journaled (unsynced) after the commit record.
    const sizeAfterCommit = (await Deno.stat(`${dataDir}/journal/wal`)).size;
    await waitFor(
      "the access-time record",
      async () => (await Deno.stat(`${dataDir}/journal/wal`)).size > sizeAfterCommit,
    );
    await a.kill();
  }
  await flipRecord(dataDir, (r) => r.t === "add" && r.name === "x");

  const refused = await runSnapmesh(["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir]);
  assertEquals(refused.code, 1, refused.stderr);
  assertMatch(refused.stderr, /durable record \d+ fails its checksum/);
  assertMatch(refused.stderr, /--rebuild-index/);
  assert(
    (await Deno.stat(`${dataDir}/snapshots/x/files/mem`)).isFile,
    "the refused start left the snapshot's files",
  );

  await using b = await startAgent({ dataDir, args: [...ARGS, "--rebuild-index"] });
  assertEquals(await names(b.url), ["x"]);
  assertEquals(await sha256(await read(b.url, "x")), await sha256(mem));
  const journal = (await (await fetch(`${b.url}/v1/status`)).json()).journal;
  assertEquals(journal.rebuild.reason, "requested");
  assertEquals(journal.rebuild.adopted, ["x"]);
  assert(journal.rebuild.damagedRegions >= 1, JSON.stringify(journal.rebuild));
});

Deno.test("a deleted or emptied journal never deletes snapshots: the index is rebuilt from a verified scan, loudly", async (t) => {
  for (const how of ["journal directory removed", "wal cut to its header"] as const) {
    await t.step(how, async () => {
      await using tmp = await tempDir();
      const dataDir = `${tmp.path}/data`;
      const files = { a: randomBytes(200 * KiB, 2), b: randomBytes(150 * KiB, 3) };
      {
        await using agent = await startAgent({ dataDir, args: ARGS });
        for (const [name, bytes] of Object.entries(files)) await publish(agent.url, name, bytes);
        await fetch(`${agent.url}/v1/snapshots/b/pin`, { method: "PUT" });
        await agent.kill();
      }
      if (how === "journal directory removed") {
        await Deno.remove(`${dataDir}/journal`, { recursive: true });
      } else {
        await Deno.truncate(`${dataDir}/journal/wal`, JOURNAL_HEADER_BYTES);
        await Deno.remove(`${dataDir}/journal/checkpoint`).catch(() => {});
      }
      await using agent = await startAgent({ dataDir, args: ARGS });
      assertEquals(await names(agent.url), ["a", "b"]);
      for (const [name, bytes] of Object.entries(files)) {
        assertEquals(await sha256(await read(agent.url, name)), await sha256(bytes));
      }
      const journal = (await (await fetch(`${agent.url}/v1/status`)).json()).journal;
      assertEquals(journal.rebuild.reason, "journal_empty");
      assertEquals(journal.rebuild.adopted, ["a", "b"]);
      // The pin could not be known: reported, not guessed.
      assertEquals(journal.rebuild.pinsRestored, []);
      assertMatch(journal.rebuild.unknown, /unpinned/);
      assertMatch(agent.logs(), /"level":"error".*journal holds no state/);
    });
  }
});

Deno.test("a damaged pin record is never silently dropped: refused, then rebuilt with the loss reported", async () => {
  await using tmp = await tempDir();
  const dataDir = `${tmp.path}/data`;
  const mem = randomBytes(100 * KiB, 4);
  {
    await using a = await startAgent({ dataDir, args: ARGS });
    await publish(a.url, "p", mem);
    await publish(a.url, "q", randomBytes(100 * KiB, 5));
    assertEquals((await fetch(`${a.url}/v1/snapshots/q/pin`, { method: "PUT" })).status, 200);
    assertEquals((await fetch(`${a.url}/v1/snapshots/p/pin`, { method: "PUT" })).status, 200);
    await a.kill();
  }
  await flipRecord(dataDir, (r) => r.t === "pin" && r.name === "p");
  const refused = await runSnapmesh(["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir]);
  assertEquals(refused.code, 1, refused.stderr);
  assertMatch(refused.stderr, /fails its checksum/);

  await using b = await startAgent({ dataDir, args: [...ARGS, "--rebuild-index"] });
  const list = await (await fetch(`${b.url}/v1/snapshots`)).json();
  assertEquals(list.map((s: { name: string }) => s.name), ["p", "q"]);
  // q's pin record is intact and is kept; p's is unreadable, and that is reported.
  assertEquals(list.find((s: { name: string }) => s.name === "q").pinned, true);
  const rebuild = (await (await fetch(`${b.url}/v1/status`)).json()).journal.rebuild;
  assertEquals(rebuild.pinsRestored, ["q"]);
  assert(rebuild.damagedRegions >= 1);
  assertMatch(rebuild.unknown, /check the pins/);
});

Deno.test("a snapshot directory the journal does not know is moved aside, never deleted or listed", async () => {
  await using tmp = await tempDir();
  const dataDir = `${tmp.path}/data`;
  const mem = randomBytes(100 * KiB, 6);
  {
    await using a = await startAgent({ dataDir, args: ARGS });
    await publish(a.url, "known", mem);
    await a.stop();
  }
  // As a commit that crashed between its rename and its journal record leaves it.
  await Deno.mkdir(`${dataDir}/snapshots/ghost/files`, { recursive: true });
  await Deno.copyFile(
    `${dataDir}/snapshots/known/files/mem`,
    `${dataDir}/snapshots/ghost/files/mem`,
  );
  await using b = await startAgent({ dataDir, args: ARGS });
  assertEquals(await names(b.url), ["known"]);
  const aside = [...Deno.readDirSync(`${dataDir}/quarantine`)].map((e) => e.name);
  assertEquals(aside.length, 1);
  assertMatch(aside[0]!, /^ghost\..*orphan/);
  assertEquals(
    await sha256(await Deno.readFile(`${dataDir}/quarantine/${aside[0]}/files/mem`)),
    await sha256(mem),
  );
  const status = await (await fetch(`${b.url}/v1/status`)).json();
  assertEquals(status.journal.quarantinedDirs, 1);
});
