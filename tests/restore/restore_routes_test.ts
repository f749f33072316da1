/**
 * Restore routes in process (no VM connects): a live session holds its
 * snapshot in the cache, working sets are checked against the manifest,
 * the configuration resolves.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { errorCode, publish, testNode } from "../helpers/in_process.ts";
import { randomBytes } from "../helpers/temp.ts";
import { resolveServeConfig } from "../../src/config/mod.ts";

Deno.test({
  name: "restore routes: a snapshot with a live session is never evicted; working sets are checked",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using node = await testNode({ "cache-size": "3MiB", "chunk-size": "256KiB" });
    const x = await publish(node, "fn-x", { mem: randomBytes(2 * 1024 * 1024, 1) });
    assertEquals(x.status, 201);
    const created = await node.request("/v1/snapshots/fn-x/restore", {
      method: "POST",
      body: JSON.stringify({ file: "mem" }),
    });
    assertEquals(created.status, 201);
    const session = await created.json();
    assertEquals(session.paths, {});
    assert((await Deno.stat(session.socket)).isSocket, "the socket listens");
    const listed = await (await node.request("/v1/restores")).json();
    assertEquals(listed.map((r: { id: string; state: string }) => [r.id, r.state]), [
      [session.id, "listening"],
    ]);

    // Room for fn-y would mean evicting fn-x, which a session uses: refused.
    const refused = await publish(node, "fn-y", { mem: randomBytes(2 * 1024 * 1024, 2) })
      .catch((err) => err as Error);
    assert(
      refused instanceof Error ? /507/.test(refused.message) : refused.status === 507,
      String(refused),
    );
    assertEquals((await node.request("/v1/snapshots/fn-x")).status, 200);

    // Working sets: checked against the manifest, then stored and read back.
    const bad = await node.request("/v1/snapshots/fn-x/workingset", {
      method: "PUT",
      body: JSON.stringify({ file: "mem", chunks: [1, 99] }),
    });
    assertEquals(bad.status, 400);
    assertEquals(await errorCode(bad), "invalid_body");
    const put = await node.request("/v1/snapshots/fn-x/workingset", {
      method: "PUT",
      body: JSON.stringify({ file: "mem", chunks: [3, 1, 3, 0] }),
    });
    assertEquals(put.status, 200);
    const ws = await (await node.request("/v1/snapshots/fn-x/workingset")).json();
    assertEquals(ws.chunks, [3, 1, 0]);
    assertEquals(ws.file, "mem");

    // Ending the session releases the snapshot and cleans the socket.
    const ended = await node.request(`/v1/restores/${session.id}`, { method: "DELETE" });
    assertEquals(ended.status, 200);
    assertEquals((await ended.json()).outcome, "ended");
    assertEquals(await Deno.stat(session.socket).catch(() => null), null);
    assertEquals((await (await node.request("/v1/restores")).json()).length, 0);
    const gone = await node.request(`/v1/restores/${session.id}`, { method: "DELETE" });
    assertEquals(gone.status, 404);
    await gone.body?.cancel();
    const y = await publish(node, "fn-y", { mem: randomBytes(2 * 1024 * 1024, 2) });
    assertEquals(y.status, 201);
    await y.body?.cancel();
  },
});

Deno.test("restore settings: --restore-dir defaults under the data dir; durations parse", () => {
  const base = { env: {}, file: null, cwd: "/work", hostname: "h" };
  const defaults = resolveServeConfig({ ...base, flags: { "data-dir": "/d" } });
  assertEquals(defaults.restoreDir, "/d/restore");
  assertEquals(defaults.restoreFaultTimeoutMs, 30_000);
  assertEquals(defaults.restoreRecordWindowMs, 10_000);
  const given = resolveServeConfig({
    ...base,
    flags: { "restore-dir": "jails", "restore-record-window": "0" },
    env: { SNAPMESH_RESTORE_FAULT_TIMEOUT: "2s" },
  });
  assertEquals(given.restoreDir, "/work/jails");
  assertEquals(given.restoreRecordWindowMs, 0);
  assertEquals(given.restoreFaultTimeoutMs, 2000);
});
