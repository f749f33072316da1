/**
 * Pulls under the faults a real fleet has: nodes that disagree on who is in
 * the cluster, peers that stall or lie, owners that die with nobody else
 * holding the snapshot, deletes racing pulls, and local files that rot
 * before they are pushed.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { startAgent } from "../helpers/agent_process.ts";
import { startCluster } from "../helpers/cluster.ts";
import { FaultProxy } from "../helpers/fault_proxy.ts";
import {
  auth,
  CHUNK,
  memFile,
  nonZeroBytes,
  originArgs,
  publish,
  pull,
  startOrigin,
  TOKEN,
} from "../helpers/fixtures.ts";
import { sha256, tempDir } from "../helpers/temp.ts";
import { waitFor } from "../helpers/wait.ts";
import type { PullReport } from "../../src/fetch/mod.ts";
import { rank } from "../../src/cluster/hrw.ts";

const BASE = ["--chunk-size", "256KiB", "--origin-stall-timeout", "2s"];

/** Waits until the node at `url` reports a running pull of `name` that `reached` accepts. */
async function pullReaches(
  url: string,
  name: string,
  reached: (pull: PullReport) => boolean,
): Promise<void> {
  await waitFor(`the pull of ${name} on ${url} to get under way`, async () => {
    const pulls: PullReport[] = await (await fetch(`${url}/v1/pulls`, { headers: auth })).json();
    return pulls.some((p) => p.name === name && p.state === "running" && reached(p));
  }, { intervalMs: 20 });
}

/** A name that `owner` ranks first among `ids` (so it is every node's primary). */
function nameOwnedBy(owner: string, ids: string[], prefix: string): string {
  for (let i = 0;; i++) {
    const name = `${prefix}-${i}`;
    if (rank(ids, name, (id) => id)[0] === owner) return name;
  }
}

async function metricsOf(url: string): Promise<string> {
  return await (await fetch(`${url}/metrics`, { headers: auth })).text();
}

Deno.test("nodes that disagree on who pulls still finish: no chunk is left as nobody's share", async () => {
  await using tmp = await tempDir();
  const ids = ["o", "m", "p", "q"];
  // p does not know m; everyone else knows everyone. m and q split the
  // chunks three ways (m, p, q), p splits them two ways (p, q): without a
  // way out, about a sixth of the chunks are nobody's share.
  await using c = await startCluster({
    ids,
    dir: tmp.path,
    // o sends slowly, so the pulls overlap long enough for the views to settle.
    args: (id) => ["--chunk-size", "64KiB", ...(id === "o" ? ["--max-egress", "4MB"] : [])],
    sees: (id) => id === "p" ? ["o", "q"] : ids,
  });
  const name = nameOwnedBy("o", ids, "fn-views");
  const mem = memFile(240, 21, 64 * 1024); // 168 non-zero chunks
  const manifest = await publish(c.get("o"), name, { mem });
  const results = await Promise.all(
    ["m", "p", "q"].map(async (id) => {
      const r = await fetch(`${c.get(id).url}/v1/snapshots/${name}/pull`, {
        method: "POST",
        headers: auth,
        signal: AbortSignal.timeout(30_000),
      });
      return { id, status: r.status, body: await r.json() };
    }),
  );
  for (const r of results) {
    assertEquals(r.status, 200, `${r.id}: ${JSON.stringify(r.body)}`);
    assertEquals(r.body.digest, manifest.digest);
    assertEquals(await sha256(await Deno.readFile(r.body.paths.mem)), await sha256(mem));
    assertEquals(r.body.bytes.peer, nonZeroBytes(mem, 64 * 1024));
  }
});

Deno.test("a peer that stalls (SIGSTOP) costs only its chunks in flight: the rest comes from the origin", async () => {
  await using o = await startOrigin();
  await using tmp = await tempDir();
  await using c = await startCluster({
    ids: ["a", "b"],
    dir: tmp.path,
    env: o.s3.env,
    args: (id) => [
      ...BASE,
      ...originArgs(o),
      "--push",
      "sync",
      ...(id === "a" ? ["--max-egress", "2MB"] : []),
    ],
  });
  const mem = memFile(40, 22); // 7 MiB non-zero at 2 MB/s from a: about 3.5 s
  const manifest = await publish(c.get("a"), "fn-frozen", { mem });
  o.proxy.resetCounters();
  const pulling = pull(c.get("b"), "fn-frozen");
  // A quarter of it from a, then a freezes.
  await pullReaches(c.get("b").url, "fn-frozen", (p) => p.bySource.peer >= p.bytesTotal / 4);
  Deno.kill(c.get("a").pid, "SIGSTOP");
  const stopped = Date.now();
  try {
    const result = await pulling;
    // Peers are given up on after min(--origin-stall-timeout, 10 s) of silence.
    assert(Date.now() - stopped < 8000, `finished ${Date.now() - stopped} ms after the stop`);
    assertEquals(result.status, 200, JSON.stringify(result.body));
    assertEquals(result.body.digest, manifest.digest);
    assertEquals(await sha256(await Deno.readFile(result.body.paths.mem)), await sha256(mem));
    assert(result.body.bytes.peer > 0, `some came from a: ${JSON.stringify(result.body.bytes)}`);
    assert(
      result.body.bytes.origin > 0,
      `the rest from the origin: ${JSON.stringify(result.body.bytes)}`,
    );
    assertEquals(result.body.bytes.peer + result.body.bytes.origin, nonZeroBytes(mem));
  } finally {
    Deno.kill(c.get("a").pid, "SIGCONT");
  }
});

Deno.test("a peer whose bytes fail verification is avoided: nothing wrong is cached or served", async () => {
  await using o = await startOrigin();
  await using tmp = await tempDir();
  const args = [...BASE, ...originArgs(o), "--token", TOKEN];
  await using a = await startAgent({
    dataDir: `${tmp.path}/a`,
    args: [...args, "--node-id", "a", "--push", "sync"],
    env: o.s3.env,
  });
  const mem = memFile(40, 23);
  const manifest = await publish(a, "fn-liar", { mem });
  // b reaches a only through a link that flips a byte in every chunk a sends.
  await using liar = await FaultProxy.start(a.url);
  liar.add({ kind: "flip", method: "GET", path: /\/v1\/peer\/.*\/files\//, afterBytes: 100 });
  await using b = await startAgent({
    dataDir: `${tmp.path}/b`,
    args: [...args, "--node-id", "b", "--peers", liar.url],
    env: o.s3.env,
  });
  const result = await pull(b, "fn-liar");
  assertEquals(result.status, 200, JSON.stringify(result.body));
  assertEquals(result.body.digest, manifest.digest);
  assertEquals(await sha256(await Deno.readFile(result.body.paths.mem)), await sha256(mem));
  assertEquals(result.body.bytes.origin, nonZeroBytes(mem), JSON.stringify(result.body.bytes));
  assert(liar.seen.some((r) => r.fault === "flip"), "the lie was told");
  assertMatch(
    await metricsOf(b.url),
    /snapmesh_verification_failures_total\{source="peer"\} [1-9]/,
  );
  // The damage was on the link: a's own copy is fine and stays cached.
  const list = await (await fetch(`${a.url}/v1/snapshots`, { headers: auth })).json();
  assertEquals(list.map((s: { name: string }) => s.name), ["fn-liar"]);
});

Deno.test("the only holder dies and there is no origin: the pull fails with 502, it does not hang", async () => {
  await using tmp = await tempDir();
  await using c = await startCluster({
    ids: ["a", "b"],
    dir: tmp.path,
    args: (id) => ["--chunk-size", "256KiB", ...(id === "a" ? ["--max-egress", "2MB"] : [])],
  });
  const mem = memFile(40, 24);
  await publish(c.get("a"), "fn-orphan", { mem });
  const started = Date.now();
  const pulling = pull(c.get("b"), "fn-orphan");
  await pullReaches(c.get("b").url, "fn-orphan", (p) => p.bytesDone > 0);
  await c.get("a").kill();
  const result = await pulling;
  assertEquals(result.status, 502, JSON.stringify(result.body));
  assertEquals(
    (result.body as unknown as { error: { code: string } }).error.code,
    "upstream_failed",
  );
  // The hopeless rule (2 s), not the 15 s stall rule, ends it.
  assert(Date.now() - started < 10_000, `failed after ${Date.now() - started} ms`);
  // Nothing half-pulled is visible.
  const list = await (await fetch(`${c.get("b").url}/v1/snapshots`, { headers: auth })).json();
  assertEquals(list, []);
});

Deno.test("manifest GET and HEAD find a snapshot a peer holds, without pulling it", async () => {
  await using tmp = await tempDir();
  await using c = await startCluster({ ids: ["a", "b"], dir: tmp.path, args: BASE });
  const mem = memFile(8, 25);
  const manifest = await publish(c.get("a"), "fn-look", { mem });
  const b = c.get("b").url;
  const got = await fetch(`${b}/v1/snapshots/fn-look`, { headers: auth });
  assertEquals(got.status, 200);
  assertEquals((await got.json()).digest, manifest.digest);
  const head = await fetch(`${b}/v1/snapshots/fn-look/files/mem`, {
    method: "HEAD",
    headers: auth,
  });
  assertEquals(head.status, 200);
  assertEquals(head.headers.get("content-length"), String(mem.length));
  assertEquals(head.headers.get("x-snapmesh-source"), "peer");
  assertEquals(await (await fetch(`${b}/v1/snapshots`, { headers: auth })).json(), []);
  const pulls = await (await fetch(`${b}/v1/pulls`, { headers: auth })).json();
  assertEquals(pulls, []);
});

Deno.test("DELETE during a pull stops it: no partial, no reservation, nothing published", async () => {
  await using o = await startOrigin();
  await using tmp = await tempDir();
  const args = [...BASE, ...originArgs(o)];
  {
    await using seeder = await startAgent({
      dataDir: `${tmp.path}/seed`,
      args: [...args, "--push", "sync"],
      env: o.s3.env,
    });
    const r = await fetch(`${seeder.url}/v1/snapshots/fn-gone/files/mem`, {
      method: "PUT",
      body: memFile(40, 26),
    });
    assertEquals(r.status, 201);
    assertEquals(
      (await fetch(`${seeder.url}/v1/snapshots/fn-gone/commit`, { method: "POST" })).status,
      201,
    );
  }
  await using b = await startAgent({
    dataDir: `${tmp.path}/b`,
    args: [...args, "--max-origin-rate", "1MB"],
    env: o.s3.env,
  });
  const pulling = fetch(`${b.url}/v1/snapshots/fn-gone/pull`, { method: "POST" });
  await pullReaches(b.url, "fn-gone", (p) => p.bytesDone > 0);
  const deleted = await fetch(`${b.url}/v1/snapshots/fn-gone`, { method: "DELETE" });
  await deleted.body?.cancel();
  const answer = await pulling;
  const body = await answer.json();
  assertEquals(answer.status, 404, JSON.stringify(body));
  assertEquals(body.error.code, "snapshot_not_found");
  assertEquals(await (await fetch(`${b.url}/v1/snapshots`)).json(), []);
  const active = await (await fetch(`${b.url}/v1/pulls`)).json();
  assertEquals(active, []);
  assertEquals([...Deno.readDirSync(`${tmp.path}/b/partial`)], []);
  const status = await (await fetch(`${b.url}/v1/status`)).json();
  assertEquals(status.cache.bytes + status.cache.reservedBytes, 0, JSON.stringify(status.cache));
});

Deno.test("a local file that rots before its push is quarantined, and no manifest reaches the origin", async () => {
  await using o = await startOrigin();
  await using tmp = await tempDir();
  await using a = await startAgent({
    dataDir: `${tmp.path}/a`,
    args: [...BASE, ...originArgs(o), "--push", "async"],
    env: o.s3.env,
  });
  // The origin takes no upload for now.
  o.proxy.add({ kind: "stall", method: "PUT" });
  const mem = memFile(16, 27);
  const put = await fetch(`${a.url}/v1/snapshots/fn-rot/files/mem`, { method: "PUT", body: mem });
  assertEquals(put.status, 201);
  assertEquals(
    (await fetch(`${a.url}/v1/snapshots/fn-rot/commit`, { method: "POST" })).status,
    201,
  );
  // Bit rot in the cached copy while the upload waits.
  const path = `${tmp.path}/a/snapshots/fn-rot/files/mem`;
  await Deno.chmod(path, 0o644);
  const file = await Deno.open(path, { read: true, write: true });
  await file.seek(5 * CHUNK + 77, Deno.SeekMode.Start);
  await file.write(new Uint8Array([0x5a]));
  file.close();
  o.proxy.clear(); // the origin is back
  // The snapshot leaves the index (journaled) before its directory moves to
  // quarantine/: wait for both, or the directory can be caught mid-move.
  const quarantined = () => {
    try {
      return [...Deno.readDirSync(`${tmp.path}/a/quarantine`)].map((e) => e.name);
    } catch {
      return [];
    }
  };
  await waitFor(
    "the damaged snapshot to leave the cache for quarantine/",
    async () =>
      quarantined().length > 0 &&
      (await (await fetch(`${a.url}/v1/snapshots`)).json()).length === 0,
    { context: () => a.logs().slice(-2000) },
  );
  assertEquals(await o.s3.get("fn-rot/manifest.json"), null, "no manifest was written");
  assertEquals(quarantined().length, 1);
  const metrics = await metricsOf(a.url);
  assertMatch(metrics, /snapmesh_push_failures_total\{reason="corrupt"\} 1/);
  const status = await (await fetch(`${a.url}/v1/status`)).json();
  assertEquals(status.origin.push.queued, 0);
});
