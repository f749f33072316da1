/**
 * `deno task bench restore`: lazy restore against today's path. A 1 GiB
 * memory file (30% zero chunks) is held by peer A, in its own network
 * namespace behind a veth link shaped with tc (1 Gbit/s each way); node B
 * (on the other end of the link) restores it. Its working set is 10% of the
 * pages: runs of ten consecutive 1 MiB chunks at random places, touched in a
 * recorded (shuffled) order of runs. Side by side, each on a fresh B:
 *
 * - (a) full pull, then the working set touched through a private mapping
 *   of the pulled file (Firecracker's `File` backend);
 * - (b) lazy restore (UFFD) without a working set;
 * - (c) lazy restore with the recorded working set (found on A).
 *
 * Reported: time from the request to the working set touched, bytes B
 * received by then, and, once B's copy is complete, the service time of
 * faults on local chunks (agent side, and as the VM saw them).
 *
 * Needs root (namespaces, veth, tc); prints a skip message otherwise.
 * Options: --size-mib 1024 --rate 1gbit --local-faults 4000
 *
 * @module
 */

import { parseArgs } from "node:util";
import { have, MiB, ROOT, saveResult, startAgent, table, writeMemFile } from "./_harness.ts";

const NET = "10.89.0";
const A_IP = `${NET}.2`;
const B_IP = `${NET}.1`;
const TOKEN = "restore-bench";
const PLAYER = `${ROOT}/tests/helpers/firecracker_player.ts`;
const PAGE = 4096;

async function sh(command: string, check = true): Promise<string> {
  const out = await new Deno.Command("sh", {
    args: ["-c", command],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (check && !out.success) {
    throw new Error(`${command}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function teardown(): Promise<void> {
  await sh("ip netns del smra", false);
  await sh("ip link del smra-h", false);
}

/** Namespace `smra` with one veth to the root namespace, shaped both ways. */
async function setup(rate: string): Promise<void> {
  await sh("ip netns add smra");
  await sh("ip link add smra-h type veth peer name eth0 netns smra");
  await sh(`ip addr add ${B_IP}/24 dev smra-h`);
  await sh("ip link set smra-h up");
  await sh("ip netns exec smra ip link set lo up");
  await sh("ip netns exec smra ip link set eth0 up");
  await sh(`ip netns exec smra ip addr add ${A_IP}/24 dev eth0`);
  const tbf = `tbf rate ${rate} burst 512kb latency 50ms`;
  await sh(`ip netns exec smra tc qdisc add dev eth0 root ${tbf}`);
  await sh(`tc qdisc add dev smra-h root ${tbf}`);
}

async function call(url: string, method: string, path: string, body?: unknown) {
  const r = await fetch(`${url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function ingested(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let total = 0;
  for (
    const m of text.matchAll(/^snapmesh_ingested_bytes_total\{source="(peer|origin)"\} (\S+)/gm)
  ) {
    total += Number(m[2]);
  }
  return total;
}

interface Player {
  send(command: unknown): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

async function player(args: string[]): Promise<Player> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-read", PLAYER, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const writer = child.stdin.getWriter();
  let buffer = "";
  const line = async () => {
    while (!buffer.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("player exited");
      buffer += value;
    }
    const at = buffer.indexOf("\n");
    const text = buffer.slice(0, at);
    buffer = buffer.slice(at + 1);
    return JSON.parse(text);
  };
  await line();
  return {
    async send(command) {
      await writer.write(new TextEncoder().encode(JSON.stringify(command) + "\n"));
      return await line();
    },
    async close() {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      await reader.cancel().catch(() => {});
    },
  };
}

/** Runs of ten 1 MiB chunks at random places, 10% of the file, in a shuffled order. */
function workingSet(chunks: number): number[] {
  const runs = Math.max(1, Math.round(chunks / 10 / 10));
  const starts = new Set<number>();
  const slots = Math.floor(chunks / 10);
  while (starts.size < runs) starts.add(Math.floor(Math.random() * slots) * 10);
  return [...starts].sort(() => Math.random() - 0.5).flatMap((s) =>
    Array.from({ length: 10 }, (_, i) => s + i)
  );
}

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      "size-mib": { type: "string", default: "1024" },
      rate: { type: "string", default: "1gbit" },
      "local-faults": { type: "string", default: "4000" },
      work: { type: "string", default: "/tmp/snapmesh-bench-restore" },
    },
  });
  if (Deno.uid() !== 0 || !(await have("ip")) || !(await have("tc"))) {
    console.log("bench restore: skipped: it needs root with ip and tc (namespaces, veth, tc)");
    return 0;
  }
  const size = Number(values["size-mib"]) * MiB;
  const chunks = size / MiB;
  const work = values.work!;
  await teardown();
  await Deno.remove(work, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${work}/import`, { recursive: true });
  const memPath = `${work}/import/mem`;
  const nonZero = await writeMemFile(memPath, size);
  await Deno.writeFile(`${work}/import/vmstate`, crypto.getRandomValues(new Uint8Array(65536)));
  const ws = workingSet(chunks);
  const wsRanges: [number, number][] = ws.map((c) => [c * MiB, MiB]);
  const wsPages = ws.length * (MiB / PAGE);
  const results: Record<string, unknown>[] = [];
  const disposers: AsyncDisposable[] = [];
  try {
    await setup(values.rate!);
    const common = ["--token", TOKEN, "--chunk-size", "1MiB", "--cache-size", "8GiB"];
    await Deno.writeTextFile(`${work}/peers-a`, `http://${B_IP}:7071\n`);
    await Deno.writeTextFile(`${work}/peers-b`, `http://${A_IP}:7070\n`);
    const a = await startAgent([
      ...common,
      "--node-id",
      "a",
      "--listen",
      `${A_IP}:7070`,
      "--data-dir",
      `${work}/a`,
      "--import-root",
      `${work}/import`,
      "--peers-file",
      `${work}/peers-a`,
    ], "smra");
    disposers.push(a);
    // Two names for the same bytes: one without a working set (a, b), one with (c).
    for (const name of ["bench-plain", "bench-ws"]) {
      for (const file of ["mem", "vmstate"]) {
        await call(a.url, "POST", `/v1/snapshots/${name}/files/${file}/import`, {
          path: `${work}/import/${file}`,
        });
      }
      await call(a.url, "POST", `/v1/snapshots/${name}/commit`, {});
    }
    await call(a.url, "PUT", "/v1/snapshots/bench-ws/workingset", { file: "mem", chunks: ws });

    for (const scenario of ["a", "b", "c"] as const) {
      await Deno.remove(`${work}/b`, { recursive: true }).catch(() => {});
      const b = await startAgent([
        ...common,
        "--node-id",
        "b",
        "--listen",
        `${B_IP}:7071`,
        "--data-dir",
        `${work}/b`,
        "--peers-file",
        `${work}/peers-b`,
        "--restore-record-window",
        "0",
      ]);
      try {
        for (let i = 0;; i++) {
          const s = await call(b.url, "GET", "/v1/status");
          if (s.peers.some((p: { healthy: boolean }) => p.healthy)) break;
          if (i === 100) throw new Error(`B does not see A: ${JSON.stringify(s.peers)}`);
          await new Promise((r) => setTimeout(r, 100));
        }
        const name = scenario === "c" ? "bench-ws" : "bench-plain";
        const started = performance.now();
        let vm: Player;
        let sessionId: string | null = null;
        if (scenario === "a") {
          const pulled = await call(b.url, "POST", `/v1/snapshots/${name}/pull`);
          vm = await player(["--map-file", pulled.paths.mem, "--size", String(size)]);
        } else {
          const created = await call(b.url, "POST", `/v1/snapshots/${name}/restore`, {});
          sessionId = created.id;
          vm = await player(["--socket", created.socket, "--size", String(size)]);
        }
        const touch = await vm.send({ op: "touch", ranges: wsRanges, check: false });
        const seconds = (performance.now() - started) / 1000;
        const bytes = await ingested(b.url);
        const row: Record<string, unknown> = {
          scenario,
          seconds,
          bytesBeforeTouched: bytes,
          touchedPages: touch.pages,
          touchMs: touch.ms,
        };
        if (sessionId) {
          const [s] = await call(b.url, "GET", "/v1/restores");
          row.faults = s.faults;
          row.prefetchedPages = s.prefetchedPages;
          row.workingSet = s.workingSet;
          // Once B's copy is complete, faults on local chunks.
          for (let i = 0; i < 600; i++) {
            if ((await call(b.url, "GET", "/v1/snapshots")).length > 0) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          const wsSet = new Set(ws);
          const local: [number, number][] = [];
          const n = Number(values["local-faults"]);
          const used = new Set<number>();
          while (local.length < n) {
            const page = Math.floor(Math.random() * (size / PAGE));
            const chunk = Math.floor((page * PAGE) / MiB);
            if (chunk % 10 < 3 || wsSet.has(chunk) || used.has(page)) continue;
            used.add(page);
            local.push([page * PAGE, PAGE]);
          }
          const before = (await call(b.url, "GET", "/v1/restores"))[0].faults.local;
          const localTouch = await vm.send({ op: "touch", ranges: local, check: false });
          const [after] = await call(b.url, "GET", "/v1/restores");
          row.localFaults = after.faults.local - before;
          row.localServiceUs = after.latencyUs.local;
          row.localVmUs = localTouch.latencyUs;
        }
        results.push(row);
        await vm.close();
        console.error(`scenario ${scenario}:`, JSON.stringify(row));
      } finally {
        await b[Symbol.asyncDispose]();
      }
    }
  } finally {
    for (const d of disposers.reverse()) {
      await Promise.resolve(d[Symbol.asyncDispose]()).catch(() => {});
    }
    await teardown();
  }
  const base = results[0]!.seconds as number;
  const mib = (b: unknown) => `${((b as number) / MiB).toFixed(0)} MiB`;
  const us = (v: unknown) => {
    const l = v as { p50: number; p99: number } | undefined;
    return l ? `${l.p50.toFixed(0)} / ${l.p99.toFixed(0)}` : "-";
  };
  const names = {
    a: "(a) full pull, then touch (File backend)",
    b: "(b) UFFD, no working set",
    c: "(c) UFFD, recorded working set",
  };
  console.log(
    `\n${size / MiB} MiB memory file (${(nonZero / MiB).toFixed(0)} MiB non-zero), ` +
      `working set ${ws.length} chunks = ${wsPages} pages (${
        ((100 * wsPages * PAGE) / size).toFixed(1)
      }% of the pages), peer behind ${values.rate}\n`,
  );
  console.log(table([
    [
      "scenario",
      "working set touched after",
      "vs (a)",
      "bytes received by then",
      "faults (local/peer/origin/zero)",
      "local fault p50/p99 µs (agent)",
      "local fault p50/p99 µs (VM)",
    ],
    ...results.map((r) => {
      const f = r.faults as Record<string, number> | undefined;
      return [
        names[r.scenario as keyof typeof names],
        `${(r.seconds as number).toFixed(2)} s`,
        `${((r.seconds as number) / base).toFixed(3)}×`,
        mib(r.bytesBeforeTouched),
        f ? `${f.local}/${f.peer}/${f.origin}/${f.zero}` : "-",
        us(r.localServiceUs),
        us(r.localVmUs),
      ];
    }),
  ]));
  const result = {
    bench: "restore",
    at: new Date().toISOString(),
    sizeBytes: size,
    nonZeroBytes: nonZero,
    rate: values.rate,
    workingSetChunks: ws.length,
    workingSetPages: wsPages,
    results,
    ratioCtoA: (results[2]!.seconds as number) / base,
  };
  const path = await saveResult("restore", result);
  await Deno.writeTextFile(
    `${ROOT}/bench/results/restore-latest.json`,
    JSON.stringify(result, null, 2) + "\n",
  );
  console.log(`\nwrote ${path} and bench/results/restore-latest.json`);
  return 0;
}
