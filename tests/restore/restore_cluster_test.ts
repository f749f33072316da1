/**
 * Lazy restore across nodes: a working set recorded on A prefetched by a
 * restore on B that pulls from A, faults fetching chunks from a peer, and a
 * chunk no source can deliver ending the session (and the VM).
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { startCluster } from "../helpers/cluster.ts";
import { auth, CHUNK, memFile, publish } from "../helpers/fixtures.ts";
import { randomBytes, tempDir } from "../helpers/temp.ts";
import { startPlayer, waitFor } from "../helpers/vm_player.ts";

const CHUNKS = 40;
const SIZE = CHUNKS * CHUNK;
const PAGES_PER_CHUNK = CHUNK / 4096;

async function api(url: string, method: string, path: string, body?: unknown) {
  const r = await fetch(`${url}${path}`, {
    method,
    headers: { ...auth, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** Every page of each chunk, in order. */
function wholeChunks(chunks: number[]): [number, number][] {
  return chunks.map((c) => [c * CHUNK, CHUNK]);
}

Deno.test({
  name: "restore across nodes: working set recorded on A prefetched on B; peer faults; " +
    "a chunk nobody can deliver stops the VM",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using tmp = await tempDir();
    await using c = await startCluster({
      ids: ["a", "b"],
      dir: tmp.path,
      args: (id) => [
        "--chunk-size",
        "256KiB",
        // Long enough for the six touches below on a loaded machine.
        "--restore-record-window",
        "3s",
        "--restore-fault-timeout",
        "20s",
        // A serves slowly, so B's background pull is still running when its VM faults.
        ...(id === "a" ? ["--max-egress", "1MB"] : []),
      ],
    });
    const a = c.get("a");
    const b = c.get("b");
    const mem = memFile(CHUNKS, 11);
    const memPath = `${tmp.path}/mem.bin`;
    await Deno.writeFile(memPath, mem);
    await publish(a, "fn-ws", { mem, vmstate: randomBytes(20_000, 5) });

    // 1. On A (local), the first restore records the order chunks fault in.
    const order = [13, 7, 21, 4, 35, 17];
    const onA = await api(a.url, "POST", "/v1/snapshots/fn-ws/restore", {});
    assertEquals(onA.status, 201, JSON.stringify(onA.body));
    {
      await using vm = await startPlayer({ socket: onA.body.socket, file: memPath, size: SIZE });
      assertEquals((await vm.touch(wholeChunks(order))).mismatches, 0);
      await waitFor("A to store the recorded working set", async () => {
        const ws = await api(a.url, "GET", "/v1/snapshots/fn-ws/workingset");
        return ws.status === 200;
      });
      const ws = await api(a.url, "GET", "/v1/snapshots/fn-ws/workingset");
      assertEquals(ws.body.file, "mem");
      assertEquals(ws.body.chunks, order);
      assertEquals(ws.body.digest, onA.body.digest);
      await vm.exit();
    }

    // 2. On B (not local: A holds it), the restore prefetches A's working set.
    const onB = await api(b.url, "POST", "/v1/snapshots/fn-ws/restore", { file: "mem" });
    assertEquals(onB.status, 201, JSON.stringify(onB.body));
    {
      await using vm = await startPlayer({ socket: onB.body.socket, file: memPath, size: SIZE });
      const touchedPages = order.length * PAGES_PER_CHUNK;
      await waitFor("B to install the working set", async () => {
        const list = await api(b.url, "GET", "/v1/restores");
        return list.body[0]?.prefetchedPages === touchedPages;
      });
      const touched = await vm.touch(wholeChunks(order));
      assertEquals(touched.mismatches, 0);
      assertEquals(touched.pages, touchedPages);
      let [session] = (await api(b.url, "GET", "/v1/restores")).body;
      assertEquals(session.workingSet, "recorded");
      const faults = Object.values(session.faults as Record<string, number>)
        .reduce((n, x) => n + x, 0);
      assert(faults <= touchedPages * 0.05, `${faults} faults for ${touchedPages} pages`);
      // B keeps the working set it found, and serves it in turn.
      assertEquals((await api(b.url, "GET", "/v1/snapshots/fn-ws/workingset")).body.chunks, order);

      // Outside the working set, a fault is counted as such.
      assertEquals((await vm.touch([[CHUNK * 30, 4096]])).mismatches, 0);
      [session] = (await api(b.url, "GET", "/v1/restores")).body;
      assertEquals(session.outsideWorkingSet, 1);
      await vm.exit();
    }

    // 3. Faults on chunks B does not hold yet are fetched from A (its pull
    // runs at A's 1 MB/s)...
    const deadMem = memFile(CHUNKS, 12);
    const deadPath = `${tmp.path}/dead.bin`;
    await Deno.writeFile(deadPath, deadMem);
    await publish(a, "fn-dead", { mem: deadMem, vmstate: randomBytes(1000, 6) });
    const dead = await api(b.url, "POST", "/v1/snapshots/fn-dead/restore", {});
    assertEquals(dead.status, 201, JSON.stringify(dead.body));
    const vm = await startPlayer({ socket: dead.body.socket, file: deadPath, size: SIZE });
    const early = [39, 38, 29, 28, 19, 18].map((c): [number, number] => [c * CHUNK, 4096]);
    assertEquals((await vm.touch(early)).mismatches, 0);
    const [session] = (await api(b.url, "GET", "/v1/restores")).body;
    assert(session.faults.peer >= 1, JSON.stringify(session));
    // ...and once A is gone, a chunk no source can deliver ends the session:
    // the VM is killed, never left hanging or handed a wrong page.
    await a.kill();
    const data = Array.from({ length: CHUNKS }, (_, i) => i).filter((i) => i % 10 >= 3);
    const touching = vm.touch(wholeChunks(data), false).catch((e) => e);
    const status = await vm.status;
    assertEquals(status.signal, "SIGKILL");
    assert((await touching) instanceof Error, "the touch never completed");
    await vm.kill();
    await waitFor(
      "the failed session to be cleaned",
      async () => (await api(b.url, "GET", "/v1/restores")).body.length === 0,
    );
    assertEquals(await Deno.stat(dead.body.socket).catch(() => null), null);
    const metrics = await (await fetch(`${b.url}/metrics`)).text();
    assertMatch(metrics, /snapmesh_restore_sessions_total\{outcome="failed"\} 1/);
    assertMatch(b.logs(), /restore: session failed; stopping the VM/);
  },
});
