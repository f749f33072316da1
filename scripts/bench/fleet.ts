/**
 * `deno task bench fleet`: a shaped fleet on one machine. N agents, each in
 * its own network namespace behind a veth link limited with tc (200 Mbit/s
 * each way by default), the S3 server (s3rver) in a namespace of its own with
 * the same limit; a 256 MiB snapshot with about 30% zero chunks; all N pull
 * at the same moment. Against: the same N nodes each downloading the object
 * directly from the S3 server (today's vHive remote mode).
 *
 * Rounds are interleaved (every size, snapmesh then direct, in each round)
 * and each ratio is taken within its round, so a noisy moment of this shared
 * machine moves one round, not the comparison.
 *
 * Needs root (namespaces, veth, tc); prints a skip message otherwise.
 * Options: --sizes 1,2,4,8  --rounds 3  --snapshot-mib 256  --rate 200mbit  --chunk-size 1MiB
 * --no-direct (skip the S3 reference)  --trace (progress each second, bytes served, CPU)
 *
 * @module
 */

import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { parseArgs } from "node:util";
import {
  agentFlags,
  cpuSeconds,
  have,
  median,
  MiB,
  ROOT,
  saveResult,
  sleep,
  startAgent,
  table,
  writeMemFile,
} from "./_harness.ts";

const NET = "10.88.0";
const S3_IP = `${NET}.2`;
const TOKEN = "fleet-bench";
const CREDENTIALS = {
  AWS_ACCESS_KEY_ID: "S3RVER",
  AWS_SECRET_ACCESS_KEY: "S3RVER",
  AWS_REGION: "us-east-1",
};

async function sh(command: string, check = true): Promise<string> {
  const out = await new Deno.Command("sh", {
    args: ["-c", command],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  if (check && !out.success) {
    throw new Error(`${command}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** A namespace with one veth into the bridge, shaped both ways. */
async function addHost(ns: string, ip: string, rate: string): Promise<void> {
  const host = `${ns}-h`.slice(0, 15);
  await sh(`ip netns add ${ns}`);
  await sh(`ip link add ${host} type veth peer name eth0 netns ${ns}`);
  await sh(`ip link set ${host} master smbr0 up`);
  await sh(`ip netns exec ${ns} ip link set lo up`);
  await sh(`ip netns exec ${ns} ip link set eth0 up`);
  await sh(`ip netns exec ${ns} ip addr add ${ip}/24 dev eth0`);
  // Egress of the namespace, and egress of the bridge port towards it.
  const tbf = `tbf rate ${rate} burst 256kb latency 100ms`;
  await sh(`ip netns exec ${ns} tc qdisc add dev eth0 root ${tbf}`);
  await sh(`tc qdisc add dev ${host} root ${tbf}`);
}

async function teardown(namespaces: string[]): Promise<void> {
  for (const ns of namespaces) {
    await sh(`ip netns del ${ns}`, false);
    // A namespace a process still holds outlives its name: drop our end too.
    await sh(`ip link del ${`${ns}-h`.slice(0, 15)}`, false);
  }
  await sh("ip link del smbr0", false);
}

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      sizes: { type: "string", default: "1,2,4,8" },
      rounds: { type: "string", default: "3" },
      "no-direct": { type: "boolean", default: false },
      "snapshot-mib": { type: "string", default: "256" },
      rate: { type: "string", default: "200mbit" },
      "chunk-size": { type: "string", default: "1MiB" },
      work: { type: "string", default: "/tmp/snapmesh-bench-fleet" },
      trace: { type: "boolean", default: false },
    },
  });
  if (Deno.uid() !== 0 || !(await have("ip")) || !(await have("tc"))) {
    console.log(
      "bench fleet: skipped: it needs root with ip and tc (network namespaces, veth, tc shaping)",
    );
    return 0;
  }
  const sizes = values.sizes!.split(",").map(Number);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) {
    console.error(`--rounds: expected a positive integer, got "${values.rounds}"`);
    return 2;
  }
  const snapshotBytes = Number(values["snapshot-mib"]) * MiB;
  const rate = values.rate!;
  const work = values.work!;
  const maxN = Math.max(...sizes);
  const nodes = Array.from(
    { length: maxN },
    (_, i) => ({ ns: `smn${i + 1}`, ip: `${NET}.${11 + i}`, id: `n${i + 1}` }),
  );
  const namespaces = ["sms3", ...nodes.map((n) => n.ns)];
  for (const [k, v] of Object.entries(CREDENTIALS)) Deno.env.set(k, v);

  await teardown(namespaces);
  await Deno.remove(work, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${work}/s3`, { recursive: true });
  const children: Deno.ChildProcess[] = [];
  try {
    await sh("ip link add smbr0 type bridge");
    await sh(`ip addr add ${NET}.1/24 dev smbr0`);
    await sh("ip link set smbr0 up");
    await addHost("sms3", S3_IP, rate);
    for (const n of nodes) await addHost(n.ns, n.ip, rate);

    // The origin, in its own namespace.
    const s3 = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        "sms3",
        Deno.execPath(),
        "run",
        "-A",
        `${ROOT}/scripts/bench/_s3rver.ts`,
        `${work}/s3`,
        "9000",
        S3_IP,
      ],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    children.push(s3);
    const reader = s3.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let line = "";
    while (!line.includes("listening on")) line += (await reader.read()).value ?? "";
    (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })();
    const endpoint = `http://${S3_IP}:9000`;
    const client = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true });
    await client.send(new CreateBucketCommand({ Bucket: "fleet" }));
    client.destroy();

    // The snapshot: 1 MiB pieces, 3 of every 10 zero, uploaded by an agent outside the fleet.
    console.error(`bench fleet: uploading a ${snapshotBytes / MiB} MiB snapshot to the origin`);
    const mem = `${work}/mem`;
    const nonZero = await writeMemFile(mem, snapshotBytes);
    const common = [
      "--origin-endpoint",
      endpoint,
      "--origin-bucket",
      "fleet",
      "--chunk-size",
      values["chunk-size"]!,
      "--token",
      TOKEN,
      "--cache-size",
      "100GiB",
    ];
    {
      await using uploader = await startAgent([
        "--data-dir",
        `${work}/up`,
        "--push",
        "sync",
        ...common,
      ]);
      const put = await new Deno.Command("curl", {
        args: [
          "-sf",
          "-H",
          `Authorization: Bearer ${TOKEN}`,
          "-T",
          mem,
          `${uploader.url}/v1/snapshots/fleet-fn/files/mem`,
        ],
        stdout: "null",
      }).output();
      if (!put.success) throw new Error("upload failed");
      const commit = await fetch(`${uploader.url}/v1/snapshots/fleet-fn/commit`, {
        method: "POST",
        headers: { Authorization: `Bearer ${TOKEN}` },
      });
      if (commit.status !== 201) throw new Error(`commit failed: ${await commit.text()}`);
      await commit.body?.cancel();
    }

    const rows: Sample[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const n of sizes) {
        const fleet = nodes.slice(0, n);
        // snapmesh: N agents that know each other, all pulling at once.
        const peersFile = `${work}/peers-${n}.txt`;
        await Deno.writeTextFile(
          peersFile,
          fleet.map((f) => `http://${f.ip}:7070`).join("\n") + "\n",
        );
        const agents = [];
        for (const f of fleet) {
          await Deno.remove(`${work}/data-${f.id}`, { recursive: true }).catch(() => {});
          agents.push(
            await startAgent(
              [
                "--listen",
                `${f.ip}:7070`,
                "--data-dir",
                `${work}/data-${f.id}`,
                "--node-id",
                f.id,
                "--peers-file",
                peersFile,
                ...common,
              ],
              f.ns,
            ),
          );
        }
        try {
          // Every node sees all the others before the pulls start.
          for (const agent of agents) {
            for (let i = 0; i < 100; i++) {
              const status = await (await fetch(`${agent.url}/v1/status`, {
                headers: { Authorization: `Bearer ${TOKEN}` },
              })).json();
              if (
                status.peers.filter((p: { healthy: boolean }) => p.healthy).length === n - 1
              ) break;
              await sleep(100);
            }
          }
          const cpuBefore = agents.map((a) => cpuSeconds([a.pid]));
          const s3Before = cpuSeconds([s3.pid]);
          const machineBefore = machineBusySeconds();
          const started = performance.now();
          let tracing = values.trace === true;
          const tracer = (async () => {
            while (tracing) {
              await sleep(1000);
              const line = await Promise.all(agents.map(async (agent, i) => {
                const status = await (await fetch(`${agent.url}/v1/status`, {
                  headers: { Authorization: `Bearer ${TOKEN}` },
                })).json();
                const p = status.pulls[0];
                return p
                  ? `${fleet[i]!.id}:${(p.bytesDone / MiB).toFixed(0)}(o${
                    (p.bySource.origin / MiB).toFixed(0)
                  }/p${(p.bySource.peer / MiB).toFixed(0)})`
                  : `${fleet[i]!.id}:done`;
              }));
              console.error(
                `  t=${((performance.now() - started) / 1000).toFixed(1)}s ${line.join(" ")}`,
              );
            }
          })();
          const results = await Promise.all(agents.map(async (agent) => {
            const r = await fetch(`${agent.url}/v1/snapshots/fleet-fn/pull`, {
              method: "POST",
              headers: { Authorization: `Bearer ${TOKEN}` },
            });
            const body = await r.json();
            if (r.status !== 200) {
              throw new Error(`pull failed on ${agent.url}: ${JSON.stringify(body)}`);
            }
            return {
              seconds: (performance.now() - started) / 1000,
              origin: body.bytes.origin as number,
            };
          }));
          tracing = false;
          await tracer;
          const served = await Promise.all(agents.map(async (agent) => {
            const text = await (await fetch(`${agent.url}/metrics`)).text();
            return Number(/^snapmesh_served_bytes_total (\d+)/m.exec(text)?.[1] ?? 0);
          }));
          if (values.trace) {
            console.error(
              `  served MiB: ${
                served.map((s, i) => `${fleet[i]!.id}:${(s / MiB).toFixed(0)}`).join(" ")
              }`,
            );
            console.error(
              `  cpu s: ${
                agents.map((a, i) =>
                  `${fleet[i]!.id}:${(cpuSeconds([a.pid]) - cpuBefore[i]!).toFixed(1)}`
                ).join(" ")
              } ` +
                `s3rver:${(cpuSeconds([s3.pid]) - s3Before).toFixed(1)} machine:${
                  (machineBusySeconds() - machineBefore).toFixed(1)
                }`,
            );
          }
          const seconds = Math.max(...results.map((r) => r.seconds));
          const originBytes = results.reduce((sum, r) => sum + r.origin, 0);

          // Direct: each node downloads the object from the S3 server itself.
          const directStarted = performance.now();
          if (!values["no-direct"]) {
            await Promise.all(fleet.map(async (f) => {
              const out = await new Deno.Command("ip", {
                args: [
                  "netns",
                  "exec",
                  f.ns,
                  Deno.execPath(),
                  "run",
                  "-A",
                  `${ROOT}/scripts/bench/_s3get.ts`,
                  endpoint,
                  "fleet",
                  "fleet-fn/files/mem",
                  `${work}/direct-${f.id}`,
                ],
                stdout: "null",
                stderr: "piped",
              }).output();
              if (!out.success) {
                throw new Error(`direct download failed: ${new TextDecoder().decode(out.stderr)}`);
              }
              await Deno.remove(`${work}/direct-${f.id}`);
            }));
          }
          const direct = values["no-direct"] ? null : (performance.now() - directStarted) / 1000;
          rows.push({
            round,
            n,
            snapmesh: seconds,
            direct,
            originBytes,
            perNode: results.map((r) => r.seconds),
            servedBytes: served,
          });
          console.error(
            `bench fleet: round ${round}, N=${n}: snapmesh ${seconds.toFixed(1)} s, direct ${
              direct?.toFixed(1) ?? "-"
            } s, origin ${(originBytes / MiB).toFixed(0)} MiB`,
          );
        } finally {
          for (const agent of agents) await agent[Symbol.asyncDispose]();
          for (const f of fleet) {
            await Deno.remove(`${work}/data-${f.id}`, { recursive: true }).catch(() => {});
          }
        }
      }
    }

    const summary = summarize(rows, sizes, nonZero);
    console.log(table([
      [
        "N",
        "snapmesh: all hold it (s, median)",
        "direct from S3 (s, median)",
        "snapmesh vs N=1 (median, range)",
        "direct / snapmesh (median, range)",
        "origin / non-zero (max)",
      ],
      ...summary.map((r) => [
        r.n,
        r.snapmesh.toFixed(1),
        r.direct?.toFixed(1) ?? "-",
        spread(r.vsOne),
        r.speedup.length > 0 ? spread(r.speedup) : "-",
        `${r.originRatio.toFixed(2)}x`,
      ]),
    ]));
    console.log(`\n${rounds} interleaved round(s); ratios are taken within each round.`);
    const svg = plot(summary);
    await Deno.mkdir(`${ROOT}/bench/results`, { recursive: true });
    const svgPath = `${ROOT}/bench/results/fleet.svg`;
    await Deno.writeTextFile(svgPath, svg);
    const path = await saveResult("fleet", {
      date: new Date().toISOString(),
      rounds,
      rate,
      snapshotBytes,
      nonZeroBytes: nonZero,
      chunkSize: values["chunk-size"],
      agentFlags: agentFlags(),
      summary,
      rows,
    }, { latest: true });
    console.log(`\nresults: ${path}\nplot: ${svgPath}`);
    return 0;
  } finally {
    for (const child of children) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    }
    await teardown(namespaces);
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** One measurement: one fleet size in one round. */
interface Sample {
  round: number;
  n: number;
  snapmesh: number;
  direct: number | null;
  originBytes: number;
  perNode: number[];
  servedBytes: number[];
}

/** Per size: medians, and the ratios each round gives (against N=1 and against direct). */
function summarize(rows: Sample[], sizes: number[], nonZero: number) {
  return sizes.map((n) => {
    const mine = rows.filter((r) => r.n === n);
    const vsOne: number[] = [];
    const speedup: number[] = [];
    for (const r of mine) {
      const one = rows.find((x) => x.round === r.round && x.n === Math.min(...sizes));
      if (one) vsOne.push(r.snapmesh / one.snapmesh);
      if (r.direct !== null) speedup.push(r.direct / r.snapmesh);
    }
    const directs = mine.flatMap((r) => (r.direct === null ? [] : [r.direct]));
    return {
      n,
      snapmesh: median(mine.map((r) => r.snapmesh)),
      direct: directs.length > 0 ? median(directs) : null,
      vsOne,
      speedup,
      originRatio: Math.max(...mine.map((r) => r.originBytes / nonZero)),
    };
  });
}

function spread(xs: number[]): string {
  return `${median(xs).toFixed(2)}x (${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)})`;
}

/** CPU seconds of the whole machine (all cores), busy time only. */
function machineBusySeconds(): number {
  const fields = Deno.readTextFileSync("/proc/stat").split("\n")[0]!.trim().split(/\s+/).slice(1)
    .map(Number);
  const idle = fields[3]! + fields[4]!;
  return (fields.reduce((a, b) => a + b, 0) - idle) / 100;
}

/** A small line chart: seconds against N, snapmesh and direct (medians). */
function plot(summary: { n: number; snapmesh: number; direct: number | null }[]): string {
  const rows = summary.map((r) => ({ ...r, direct: r.direct ?? 0 }));
  const w = 560;
  const h = 340;
  const pad = { l: 60, r: 150, t: 30, b: 50 };
  const maxY = Math.max(...rows.flatMap((r) => [r.snapmesh, r.direct])) * 1.1;
  const ns = rows.map((r) => r.n);
  const x = (n: number) =>
    pad.l +
    ((Math.log2(n) - Math.log2(Math.min(...ns))) /
        Math.max(1, Math.log2(Math.max(...ns)) - Math.log2(Math.min(...ns)))) * (w - pad.l - pad.r);
  const y = (s: number) => h - pad.b - (s / maxY) * (h - pad.t - pad.b);
  const line = (key: "snapmesh" | "direct", color: string) =>
    `<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${
      rows.map((r) => `${x(r.n).toFixed(1)},${y(r[key]).toFixed(1)}`).join(" ")
    }"/>` +
    rows.map((r) =>
      `<circle cx="${x(r.n).toFixed(1)}" cy="${y(r[key]).toFixed(1)}" r="4" fill="${color}"/>`
    ).join("");
  const ticks = Array.from({ length: 6 }, (_, i) => (maxY * i) / 5);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="${pad.l}" y="18" font-size="14" font-weight="bold">Time until all N nodes hold the snapshot</text>
${
    ticks.map((t) =>
      `<line x1="${pad.l}" x2="${w - pad.r}" y1="${y(t).toFixed(1)}" y2="${
        y(t).toFixed(1)
      }" stroke="#ddd"/><text x="${pad.l - 8}" y="${(y(t) + 4).toFixed(1)}" text-anchor="end">${
        t.toFixed(0)
      }</text>`
    ).join("\n")
  }
${
    ns.map((n) =>
      `<text x="${x(n).toFixed(1)}" y="${h - pad.b + 18}" text-anchor="middle">${n}</text>`
    ).join("\n")
  }
<text x="${(pad.l + w - pad.r) / 2}" y="${
    h - 12
  }" text-anchor="middle">nodes pulling at once (N)</text>
<text x="16" y="${(pad.t + h - pad.b) / 2}" transform="rotate(-90 16 ${
    (pad.t + h - pad.b) / 2
  })" text-anchor="middle">seconds</text>
${line("direct", "#c0392b")}
${line("snapmesh", "#2471a3")}
<rect x="${w - pad.r + 15}" y="${pad.t + 10}" width="12" height="12" fill="#2471a3"/><text x="${
    w - pad.r + 33
  }" y="${pad.t + 20}">snapmesh</text>
<rect x="${w - pad.r + 15}" y="${pad.t + 32}" width="12" height="12" fill="#c0392b"/><text x="${
    w - pad.r + 33
  }" y="${pad.t + 42}">each node from S3</text>
</svg>
`;
}
