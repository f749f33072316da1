/**
 * Lazy restore end to end: a real agent, and a separate process playing
 * Firecracker's `Uffd` backend (userfaultfd, two regions with a gap, the
 * mappings and descriptor sent over the agent's socket).
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { startAgent } from "../helpers/agent_process.ts";
import { auth, CHUNK, memFile, publish, TOKEN } from "../helpers/fixtures.ts";
import { randomBytes, tempDir } from "../helpers/temp.ts";
import { startPlayer, waitFor } from "../helpers/vm_player.ts";

const CHUNKS = 40;
const SIZE = CHUNKS * CHUNK;

async function api(url: string, method: string, path: string, body?: unknown) {
  const r = await fetch(`${url}${path}`, {
    method,
    headers: { ...auth, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/**
 * The agent's descriptors a restore could leak: userfaultfds, pidfds,
 * eventfds, Unix sockets, and files of its data directory. (TCP sockets
 * come and go with the test's keep-alive connections.)
 */
function fdCount(pid: number): string[] {
  const unix = new Set(
    Deno.readTextFileSync(`/proc/${pid}/net/unix`).split("\n").slice(1)
      .map((line) => line.trim().split(/\s+/)[6]).filter((inode) => inode !== undefined),
  );
  const out: string[] = [];
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`);
    } catch {
      continue; // closed meanwhile
    }
    const socket = /^socket:\[(\d+)\]$/.exec(target);
    // The trash is emptied in the background after a publish replaces a
    // directory: those descriptors come and go on their own.
    if (/\/data\/tmp\/trash-/.test(target)) continue;
    if (socket ? unix.has(socket[1]!) : /userfaultfd|pidfd|eventfd|snapmesh-test-/.test(target)) {
      out.push(target);
    }
  }
  return out.sort();
}

/** Ranges (file offsets) of a few pages of each chunk in `chunks`. */
function pagesOf(chunks: number[], pages = 3): [number, number][] {
  return chunks.map((c) => [c * CHUNK + 4096, pages * 4096]);
}

Deno.test({
  name: "restore: a local snapshot served to a playing VM; zero chunks, balloon, exit, cleanup",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using tmp = await tempDir();
    const restoreDir = `${tmp.path}/restore`;
    await using agent = await startAgent({
      dataDir: `${tmp.path}/data`,
      args: ["--token", TOKEN, "--chunk-size", "256KiB", "--restore-dir", restoreDir],
    });
    const mem = memFile(CHUNKS, 7);
    const vmstate = randomBytes(100_000, 3);
    await publish(agent, "fn-local", { mem, vmstate });
    const memPath = `${tmp.path}/mem.bin`;
    await Deno.writeFile(memPath, mem);

    // Refusals first.
    const outside = await api(agent.url, "POST", "/v1/snapshots/fn-local/restore", {
      file: "mem",
      socket: `${tmp.path}/elsewhere.sock`,
    });
    assertEquals(outside.status, 403);
    assertEquals(outside.body.error.code, "path_not_allowed");
    const sneaky = await api(agent.url, "POST", "/v1/snapshots/fn-local/restore", {
      socket: `${restoreDir}/../x.sock`,
    });
    assertEquals(sneaky.body.error.code, "path_not_allowed");
    const missing = await api(agent.url, "POST", "/v1/snapshots/fn-nowhere/restore", {});
    assertEquals(missing.status, 404);
    assertEquals(missing.body.error.code, "snapshot_not_found");
    const noWs = await api(agent.url, "GET", "/v1/snapshots/fn-local/workingset");
    assertEquals(noWs.status, 404);

    const fdsBefore = fdCount(agent.pid);
    const created = await api(agent.url, "POST", "/v1/snapshots/fn-local/restore", {
      file: "mem",
    });
    assertEquals(created.status, 201, JSON.stringify(created.body));
    const { id, socket, paths } = created.body;
    assertEquals(created.body.name, "fn-local");
    assert(socket.startsWith(`${restoreDir}/`), socket);
    assertEquals(Object.keys(paths), ["vmstate"]);
    assertEquals(await Deno.readFile(paths.vmstate), vmstate);

    await using vm = await startPlayer({ socket, file: memPath, size: SIZE });
    // Data chunks (3..9 of every 10 are data) and zero chunks (0..2) in both regions.
    const touched = await vm.touch(pagesOf([3, 5, 0, 1, 25, 39, 30]));
    assertEquals(touched.mismatches, 0, JSON.stringify(touched));
    let list = await api(agent.url, "GET", "/v1/restores");
    assertEquals(list.body.length, 1);
    assertEquals(list.body[0].id, id);
    assertEquals(list.body[0].state, "serving");
    assertEquals(list.body[0].pid, vm.pid);
    assertEquals(list.body[0].faults.local, 12);
    assertEquals(list.body[0].faults.zero, 9);

    // The balloon takes pages back: touched again, they read as zeros.
    await vm.remove(3 * CHUNK, 16 * 4096);
    const zeros = await vm.zero([[3 * CHUNK + 4096, 3 * 4096]]);
    assertEquals(zeros.mismatches, 0);
    // Pages next to the removed range still hold the snapshot's bytes.
    assertEquals((await vm.touch([[3 * CHUNK + 20 * 4096, 4096]])).mismatches, 0);

    const status = await api(agent.url, "GET", "/v1/status");
    assertEquals(status.body.restores.map((r: { id: string }) => r.id), [id]);
    const metrics = await (await fetch(`${agent.url}/metrics`)).text();
    assertMatch(metrics, /snapmesh_restore_faults_total\{source="local"\} 1[0-9]/);
    assertMatch(metrics, /snapmesh_restore_sessions_active 1/);

    // The VM exits: the session ends and leaves nothing behind.
    await vm.exit();
    await waitFor("the session to end", async () => {
      list = await api(agent.url, "GET", "/v1/restores");
      return list.body.length === 0;
    });
    assertEquals(await Deno.stat(socket).catch(() => null), null);
    assertEquals(await Deno.stat(paths.vmstate).catch(() => null), null);
    // The working set it recorded is stored after the session ends: its
    // descriptors close once that write is done.
    const settled = () => JSON.stringify(fdCount(agent.pid)) === JSON.stringify(fdsBefore);
    await waitFor("the working set's write to finish", settled, 5_000).catch(() => {});
    assertEquals(fdCount(agent.pid), fdsBefore);
    const after = await (await fetch(`${agent.url}/metrics`)).text();
    assertMatch(after, /snapmesh_restore_sessions_total\{outcome="vm_exited"\} 1/);
  },
});

Deno.test({
  name:
    "restore: an older Firecracker (page_size_kib, socket closed at once) that dies mid-restore",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using tmp = await tempDir();
    await using agent = await startAgent({
      dataDir: `${tmp.path}/data`,
      args: ["--token", TOKEN, "--chunk-size", "256KiB"],
    });
    const mem = memFile(CHUNKS, 9);
    await publish(agent, "fn-old", { mem, vmstate: randomBytes(5000, 4) });
    const memPath = `${tmp.path}/mem.bin`;
    await Deno.writeFile(memPath, mem);
    const fdsBefore = fdCount(agent.pid);
    const created = await api(agent.url, "POST", "/v1/snapshots/fn-old/restore", {
      socket: `${tmp.path}/data/restore/vm1/uffd.sock`,
    });
    assertEquals(created.status, 201, JSON.stringify(created.body));
    const vm = await startPlayer({
      socket: created.body.socket,
      file: memPath,
      size: SIZE,
      pageSizeKib: true,
      closeSocket: true,
    });
    assertEquals((await vm.touch(pagesOf([4, 33]))).mismatches, 0);
    // The socket is closed, yet the session lives on: the VM still runs.
    assertEquals((await api(agent.url, "GET", "/v1/restores")).body.length, 1);
    await vm.kill();
    await waitFor(
      "the session to end",
      async () => (await api(agent.url, "GET", "/v1/restores")).body.length === 0,
    );
    // The working set it recorded is stored after the session ends (file,
    // fsync, rename, directory fsync): its descriptors close once that is done.
    const settled = () => JSON.stringify(fdCount(agent.pid)) === JSON.stringify(fdsBefore);
    await waitFor("the working set's write to finish", settled, 5_000).catch(() => {});
    assertEquals(fdCount(agent.pid), fdsBefore);
    assertEquals(await Deno.stat(created.body.socket).catch(() => null), null);
  },
});

Deno.test({
  name: "restore: the agent shuts down with a live session: the VM gets every page and runs on",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using tmp = await tempDir();
    const agent = await startAgent({
      dataDir: `${tmp.path}/data`,
      args: ["--token", TOKEN, "--chunk-size", "256KiB"],
    });
    const mem = memFile(CHUNKS, 13);
    const memPath = `${tmp.path}/mem.bin`;
    await Deno.writeFile(memPath, mem);
    await publish(agent, "fn-stay", { mem, vmstate: randomBytes(3000, 8) });
    const created = await api(agent.url, "POST", "/v1/snapshots/fn-stay/restore", {});
    assertEquals(created.status, 201, JSON.stringify(created.body));
    await using vm = await startPlayer({ socket: created.body.socket, file: memPath, size: SIZE });
    assertEquals((await vm.touch(pagesOf([3]))).mismatches, 0);
    await vm.remove(4 * CHUNK, 4096);
    const status = await agent.stop();
    assertEquals(status.code, 0, agent.logs().slice(-2000));
    assertMatch(agent.logs(), /"outcome":"detached"/);
    // No agent any more: every page is already in the VM, the removed one reads as zeros.
    const all = await vm.touch([[0, 4 * CHUNK], [4 * CHUNK + 4096, SIZE - 4 * CHUNK - 4096]]);
    assertEquals(all.mismatches, 0);
    assertEquals((await vm.zero([[4 * CHUNK, 4096]])).mismatches, 0);
  },
});
