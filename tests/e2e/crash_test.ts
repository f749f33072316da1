/**
 * Crash campaign: a mixed workload (uploads, commits, deletes, pins, LRU
 * evictions) against a real agent process, SIGKILLed at random moments.
 * After each restart every acknowledged snapshot must be present and verify
 * byte for byte, nothing unacknowledged may be visible, and pins must hold.
 *
 * The model tracks each name as present, absent or uncertain (an operation
 * was in flight when the process died). Evictions are read from the agent's
 * log: "evicting" (before the journal record) makes a name uncertain,
 * "evicted" (after it is durable) makes it absent.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { type AgentProcess, startAgent } from "../helpers/agent_process.ts";
import { randomBytes, sha256, tempDir } from "../helpers/temp.ts";

const ROUNDS = Number(Deno.env.get("SNAPMESH_CRASH_ROUNDS") ?? 55);
const KiB = 1024;

type State = "present" | "absent" | "uncertain";

interface Model {
  state: State;
  /** Pin state when known; null while a pin change is in flight. */
  pinned: boolean | null;
  files: Record<string, Uint8Array<ArrayBuffer>>;
}

/** Deterministic, partly sparse contents for a snapshot name. */
function contentsFor(name: string): Record<string, Uint8Array<ArrayBuffer>> {
  let seed = 0;
  for (const c of name) seed = (seed * 31 + c.charCodeAt(0)) >>> 0;
  const size = 64 * KiB + (seed % 40) * 64 * KiB; // 64 KiB .. 2.5 MiB
  const mem = new Uint8Array(size);
  for (let at = 0; at < size; at += 256 * KiB) {
    if ((seed >> (at / (256 * KiB)) % 16) & 1) continue; // leave zero chunks
    mem.set(randomBytes(Math.min(256 * KiB, size - at), seed + at), at);
  }
  return { mem, "info.json": new TextEncoder().encode(JSON.stringify({ name, seed })) };
}

function random(n: number): number {
  return Math.floor(Math.random() * n);
}

class Campaign {
  readonly models = new Map<string, Model>();
  /** Names whose staged files were acknowledged but not committed. */
  readonly staged = new Set<string>();
  /** Names a commit was attempted for (their drafts may linger after a kill). */
  readonly attempted = new Set<string>();
  counter = 0;
  /** Operations that ended (either way) since the campaign started. */
  done = 0;
  stats = {
    commits: 0,
    deletes: 0,
    pins: 0,
    evictions: 0,
    inFlightAtKill: 0,
    rejected: {} as Record<number, number>,
  };

  reject(status: number): void {
    this.stats.rejected[status] = (this.stats.rejected[status] ?? 0) + 1;
  }

  model(name: string): Model {
    let m = this.models.get(name);
    if (!m) {
      m = { state: "absent", pinned: false, files: contentsFor(name) };
      this.models.set(name, m);
    }
    return m;
  }

  /** Applies evictions the agent logged. */
  readLog(logs: string): void {
    for (const line of logs.split("\n")) {
      if (!line.startsWith("{")) continue;
      let entry: { msg?: string; name?: string };
      try {
        entry = JSON.parse(line);
      } catch {
        continue; // the last line may be cut by the kill
      }
      if (!entry.name) continue;
      if (entry.msg === "evicting") {
        const m = this.models.get(entry.name);
        if (m && m.state === "present") m.state = "uncertain";
      } else if (entry.msg === "evicted") {
        const m = this.models.get(entry.name);
        if (m) {
          m.state = "absent";
          this.stats.evictions++;
        }
      }
    }
  }
}

async function worker(c: Campaign, agent: AgentProcess, stop: { killed: boolean }): Promise<void> {
  while (!stop.killed) {
    const roll = random(100);
    try {
      if (roll < 45) await commitNew(c, agent, stop);
      else if (roll < 60) await deleteOne(c, agent);
      else if (roll < 75) await pinOne(c, agent);
      else if (roll < 90) await readOne(c, agent);
      else await stageOnly(c, agent);
    } catch {
      // The process died under us: whatever was in flight is uncertain (set below).
    }
    c.done++;
  }
}

async function commitNew(
  c: Campaign,
  agent: AgentProcess,
  stop: { killed: boolean },
): Promise<void> {
  const name = `s${c.counter++}`;
  const m = c.model(name);
  c.attempted.add(name);
  for (const [file, bytes] of Object.entries(m.files)) {
    const r = await fetch(`${agent.url}/v1/snapshots/${name}/files/${file}`, {
      method: "PUT",
      body: bytes,
    });
    await r.body?.cancel();
    if (r.status !== 201) {
      c.reject(r.status);
      return;
    }
  }
  if (stop.killed) return;
  m.state = "uncertain";
  const r = await fetch(`${agent.url}/v1/snapshots/${name}/commit`, { method: "POST" });
  await r.body?.cancel();
  if (r.status === 201 || r.status === 200) {
    m.state = "present";
    c.stats.commits++;
  } else {
    m.state = "absent";
    c.reject(r.status);
  }
}

function pick(c: Campaign, filter: (m: Model) => boolean): string | null {
  const names = [...c.models].filter(([, m]) => filter(m)).map(([n]) => n);
  return names.length === 0 ? null : names[random(names.length)]!;
}

async function deleteOne(c: Campaign, agent: AgentProcess): Promise<void> {
  const name = pick(c, (m) => m.state === "present");
  if (!name) return;
  const m = c.model(name);
  m.state = "uncertain";
  const r = await fetch(`${agent.url}/v1/snapshots/${name}?force=true`, { method: "DELETE" });
  await r.body?.cancel();
  if (r.status === 200 || r.status === 404) {
    m.state = "absent";
    c.stats.deletes++;
  }
}

async function pinOne(c: Campaign, agent: AgentProcess): Promise<void> {
  const name = pick(c, (m) => m.state === "present" && m.pinned !== null);
  if (!name) return;
  const m = c.model(name);
  const want = !m.pinned;
  // Keep most of the cache evictable so evictions keep happening.
  if (
    want &&
    [...c.models.values()].filter((x) => x.pinned !== false && x.state !== "absent").length >= 3
  ) return;
  m.pinned = null;
  const r = await fetch(`${agent.url}/v1/snapshots/${name}/pin`, {
    method: want ? "PUT" : "DELETE",
  });
  await r.body?.cancel();
  if (r.status === 200) {
    m.pinned = want;
    c.stats.pins++;
  } else if (r.status === 404) {
    m.pinned = false;
  }
}

async function readOne(c: Campaign, agent: AgentProcess): Promise<void> {
  const name = pick(c, (m) => m.state === "present");
  if (!name) return;
  const r = await fetch(`${agent.url}/v1/snapshots/${name}/files/mem`, {
    headers: { Range: "bytes=0-4095" },
  });
  await r.body?.cancel();
}

async function stageOnly(c: Campaign, agent: AgentProcess): Promise<void> {
  const name = `draft${c.counter++}`;
  const r = await fetch(`${agent.url}/v1/snapshots/${name}/files/mem`, {
    method: "PUT",
    body: randomBytes(10 * KiB, c.counter),
  });
  await r.body?.cancel();
  if (r.status === 201) c.staged.add(name);
}

async function check(c: Campaign, agent: AgentProcess, round: number): Promise<void> {
  const list: { name: string; pinned: boolean; digest: string }[] =
    await (await fetch(`${agent.url}/v1/snapshots`)).json();
  const visible = new Map(list.map((s) => [s.name, s]));
  for (const name of visible.keys()) {
    assert(
      c.models.has(name) && !name.startsWith("draft"),
      `round ${round}: "${name}" was never committed but is visible`,
    );
  }
  for (const [name, m] of c.models) {
    const shown = visible.get(name);
    if (m.state === "present") assert(shown, `round ${round}: acknowledged "${name}" is missing`);
    if (m.state === "absent") {
      assert(
        !shown,
        `round ${round}: "${name}" is visible but was never acknowledged or was removed`,
      );
    }
    if (shown) {
      if (m.pinned !== null && m.state === "present") {
        assertEquals(shown.pinned, m.pinned, `round ${round}: pin state of "${name}"`);
      }
      const verify =
        await (await fetch(`${agent.url}/v1/snapshots/${name}/verify`, { method: "POST" })).json();
      assert(verify.ok, `round ${round}: "${name}" does not verify: ${JSON.stringify(verify)}`);
      for (const [file, bytes] of Object.entries(m.files)) {
        const got = new Uint8Array(
          await (await fetch(`${agent.url}/v1/snapshots/${name}/files/${file}`)).arrayBuffer(),
        );
        assertEquals(
          await sha256(got),
          await sha256(bytes),
          `round ${round}: bytes of ${name}/${file}`,
        );
      }
      m.state = "present";
      m.pinned = shown.pinned;
    } else {
      m.state = "absent";
      m.pinned = false;
    }
  }
  // Acknowledged drafts survive too: they can still be committed.
  for (const name of c.staged) {
    c.staged.delete(name);
    const r = await fetch(`${agent.url}/v1/snapshots/${name}/commit`, { method: "POST" });
    await r.body?.cancel();
    assert(
      r.status === 201 || r.status === 507,
      `round ${round}: draft "${name}" lost (${r.status})`,
    );
    if (r.status === 201) {
      const del = await fetch(`${agent.url}/v1/snapshots/${name}?force=true`, { method: "DELETE" });
      await del.body?.cancel();
    }
  }
  // Drop drafts whose upload finished just before a kill (never acknowledged to us).
  for (const name of c.attempted) {
    if (c.model(name).state !== "absent") continue;
    const r = await fetch(`${agent.url}/v1/snapshots/${name}/draft`, { method: "DELETE" });
    await r.body?.cancel();
    assert(
      r.status === 200 || r.status === 404,
      `round ${round}: dropping draft ${name}: ${r.status}`,
    );
  }
  c.attempted.clear();
  // No publish staging or other temp leftovers (trash may still be deleting).
  for (const entry of Deno.readDirSync(`${agent.dataDir}/tmp`)) {
    assert(entry.name.startsWith("trash-"), `round ${round}: leftover tmp/${entry.name}`);
  }
}

Deno.test({
  name: `crash campaign: ${ROUNDS} SIGKILLs during a mixed workload lose nothing acknowledged`,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using tmp = await tempDir();
    const c = new Campaign();
    const args = ["--cache-size", "12MiB", "--chunk-size", "64KiB"];
    for (let round = 0; round < ROUNDS; round++) {
      const agent = await startAgent({ dataDir: tmp.path, args });
      try {
        await check(c, agent, round);
        const stop = { killed: false };
        const workers = [worker(c, agent, stop), worker(c, agent, stop), worker(c, agent, stop)];
        // Kill after a random number of operations (so the workload does not
        // depend on how fast this machine is), then at a random moment, so
        // the kill lands inside operations as often as between them.
        const target = c.done + 1 + random(12);
        const deadline = Date.now() + 10_000;
        while (c.done < target && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 2));
        }
        await new Promise((r) => setTimeout(r, random(40)));
        stop.killed = true;
        await agent.kill();
        await Promise.allSettled(workers);
        c.readLog(agent.logs());
        c.stats.inFlightAtKill += [...c.models.values()].filter((m) =>
          m.state === "uncertain"
        ).length;
      } catch (err) {
        await agent.kill();
        throw new Error(
          `${(err as Error).message}\n--- agent log (tail) ---\n${agent.logs().slice(-4000)}`,
        );
      }
    }
    const final = await startAgent({ dataDir: tmp.path, args });
    try {
      await check(c, final, ROUNDS);
    } finally {
      await final.stop();
    }
    console.log(`crash campaign: ${ROUNDS} kills, ${JSON.stringify(c.stats)}`);
    assert(c.stats.commits > ROUNDS, "the workload should commit more than once per round");
    assert(c.stats.evictions > 0, "the workload should cause evictions");
    assert(c.stats.deletes > 0 && c.stats.pins > 0);
  },
});
