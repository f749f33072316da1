/**
 * `deno task bench security`: the cost of trust between nodes, same run.
 *
 * A 1 GiB snapshot (random bytes: every chunk moves) is pulled node to node,
 * from agent A to agent B on loopback, in four modes:
 *
 * - plain: HTTP, the bearer token (peers as before roles existed);
 * - tls: HTTPS (Deno's rustls listener), peers verified against the CA;
 * - mtls: HTTPS with `--peer-mtls` (node:tls listener, client certificates);
 * - signed: HTTP, every peer request signed with the cluster key.
 *
 * Each mode has its own pair of agents, all running at once; rounds
 * interleave the modes (B drops its copy, then pulls it again), so a busy
 * moment of a shared machine hits every mode alike. Reported per mode:
 * wall time and CPU seconds per GiB of both processes (utime + stime from
 * /proc/<pid>/stat), and ratios to plain in the same round (median, range).
 * Target: TLS costs at most 1.3x the CPU of plain HTTP.
 *
 * Options: --rounds N (default 3), --size-gib N (default 1), --work DIR.
 * Writes bench/results/security-latest.json.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { agentFlags, ensureRandomFile, GiB, have, median, ROOT, table } from "./_harness.ts";

type Mode = "plain" | "tls" | "mtls" | "signed";
const MODES: Mode[] = ["plain", "tls", "mtls", "signed"];
const TOKEN = "bench-token";
const CLUSTER_KEY = "bench-cluster-key-" + "b".repeat(40);

interface Agent extends AsyncDisposable {
  url: string;
  pid: number;
}

interface Pair {
  mode: Mode;
  a: Agent;
  b: Agent;
  client: Deno.HttpClient | undefined;
}

interface Round {
  seconds: number;
  cpuA: number;
  cpuB: number;
}

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      rounds: { type: "string", default: "3" },
      "size-gib": { type: "string", default: "1" },
      work: { type: "string", default: "/tmp/snapmesh-bench-security" },
    },
  });
  const rounds = Number(values.rounds);
  const size = Number(values["size-gib"]) * GiB;
  const work = values.work!;
  for (const tool of ["curl", "openssl"]) {
    if (!(await have(tool))) {
      console.error(`bench security: ${tool} is required`);
      return 1;
    }
  }
  await Deno.remove(work, { recursive: true }).catch(() => {});
  await Deno.mkdir(work, { recursive: true });
  const source = `${work}/snapshot-${size}.bin`;
  console.error(`bench security: preparing ${size / GiB} GiB of random data and a CA`);
  await ensureRandomFile(source, size);
  const tls = await makeCerts(work);
  const clockTicks = Number((await output("getconf", ["CLK_TCK"])).trim()) || 100;

  const pairs: Pair[] = [];
  const result: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: { cpus: navigator.hardwareConcurrency, deno: Deno.version.deno },
    sizeBytes: size,
    rounds,
  };
  try {
    for (const mode of MODES) {
      console.error(`bench security: starting the ${mode} pair and publishing on A`);
      pairs.push(await startPair(mode, work, tls));
      const { a, client } = pairs.at(-1)!;
      await upload(a.url, source, tls.ca, client !== undefined);
    }
    for (const pair of pairs) await waitForPeer(pair);

    const measured = new Map<Mode, Round[]>(MODES.map((m) => [m, []]));
    for (let round = 0; round < rounds; round++) {
      // Rotated order: no mode always runs first (or right after another).
      const order = MODES.map((_, i) => MODES[(i + round) % MODES.length]!);
      for (const mode of order) {
        const pair = pairs.find((p) => p.mode === mode)!;
        await request(pair, pair.b.url, "DELETE", "/v1/snapshots/bench");
        const before = [cpuTicks(pair.a.pid), cpuTicks(pair.b.pid)];
        const started = performance.now();
        await request(pair, pair.b.url, "POST", "/v1/snapshots/bench/pull");
        const seconds = (performance.now() - started) / 1000;
        const cpuA = (cpuTicks(pair.a.pid) - before[0]!) / clockTicks;
        const cpuB = (cpuTicks(pair.b.pid) - before[1]!) / clockTicks;
        measured.get(mode)!.push({ seconds, cpuA, cpuB });
        console.error(
          `bench security: round ${round + 1} ${mode.padEnd(6)} ${seconds.toFixed(2)} s, ` +
            `CPU A ${cpuA.toFixed(2)} s + B ${cpuB.toFixed(2)} s`,
        );
      }
    }

    const gib = size / GiB;
    const plain = measured.get("plain")!;
    const rows: (string | number)[][] = [[
      "mode",
      "pull time (s, median)",
      "CPU s/GiB A+B (median)",
      "serving A / pulling B",
      "CPU vs plain (median, range)",
      "time vs plain (median)",
    ]];
    const summary: Record<string, unknown> = {};
    for (const mode of MODES) {
      const runs = measured.get(mode)!;
      const cpu = runs.map((r) => (r.cpuA + r.cpuB) / gib);
      const cpuRatios = runs.map((r, i) => (r.cpuA + r.cpuB) / (plain[i]!.cpuA + plain[i]!.cpuB));
      const timeRatios = runs.map((r, i) => r.seconds / plain[i]!.seconds);
      summary[mode] = {
        runs,
        cpuSecondsPerGiB: cpu,
        cpuRatioToPlain: cpuRatios,
        timeRatioToPlain: timeRatios,
      };
      rows.push([
        mode,
        median(runs.map((r) => r.seconds)).toFixed(2),
        median(cpu).toFixed(2),
        `${median(runs.map((r) => r.cpuA / gib)).toFixed(2)} / ${
          median(runs.map((r) => r.cpuB / gib)).toFixed(2)
        }`,
        mode === "plain"
          ? "1.00x"
          : `${median(cpuRatios).toFixed(2)}x (${Math.min(...cpuRatios).toFixed(2)}-${
            Math.max(...cpuRatios).toFixed(2)
          })`,
        mode === "plain" ? "1.00x" : `${median(timeRatios).toFixed(2)}x`,
      ]);
    }
    result.modes = summary;
    result.target = "tls CPU <= 1.3x plain";
    console.log(table(rows));
    await Deno.mkdir(`${ROOT}/bench/results`, { recursive: true });
    const path = `${ROOT}/bench/results/security-latest.json`;
    await Deno.writeTextFile(path, JSON.stringify(result, null, 2) + "\n");
    console.log(`\nresults: ${path}`);
    return 0;
  } finally {
    for (const pair of pairs) {
      await pair.a[Symbol.asyncDispose]();
      await pair.b[Symbol.asyncDispose]();
      pair.client?.close();
    }
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** utime + stime of a process, in clock ticks. */
function cpuTicks(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name (which may hold spaces): state is field 3.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

interface Certs {
  ca: string;
  caPem: string;
  a: { cert: string; key: string };
  b: { cert: string; key: string };
}

async function makeCerts(dir: string): Promise<Certs> {
  const run = (args: string[]) => output("openssl", args, dir);
  await run([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=bench CA",
  ]);
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
  );
  for (const name of ["a", "b"]) {
    await run([
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
      "-subj",
      `/CN=node-${name}`,
    ]);
    await run([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-extfile",
      "ext.cnf",
    ]);
  }
  return {
    ca: `${dir}/ca.pem`,
    caPem: await Deno.readTextFile(`${dir}/ca.pem`),
    a: { cert: `${dir}/a.pem`, key: `${dir}/a.key` },
    b: { cert: `${dir}/b.pem`, key: `${dir}/b.key` },
  };
}

function modeArgs(mode: Mode, node: "a" | "b", certs: Certs): string[] {
  const args = ["--token", TOKEN];
  if (mode === "tls" || mode === "mtls") {
    const { cert, key } = certs[node];
    args.push("--tls-cert", cert, "--tls-key", key, "--tls-ca", certs.ca);
  }
  if (mode === "mtls") args.push("--peer-mtls");
  return args;
}

async function startPair(mode: Mode, work: string, certs: Certs): Promise<Pair> {
  const dir = `${work}/${mode}`;
  await Deno.mkdir(dir, { recursive: true });
  const peers = `${dir}/peers`;
  await Deno.writeTextFile(peers, "");
  const client = mode === "tls" || mode === "mtls"
    ? Deno.createHttpClient({ caCerts: [certs.caPem] })
    : undefined;
  const env: Record<string, string> = mode === "signed"
    ? { SNAPMESH_CLUSTER_KEY: CLUSTER_KEY }
    : {};
  const start = (node: "a" | "b") =>
    startAgent(
      [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        `${dir}/${node}`,
        "--node-id",
        `${mode}-${node}`,
        "--cache-size",
        "20GiB",
        "--peers-file",
        peers,
        ...modeArgs(mode, node, certs),
      ],
      env,
      client,
    );
  const a = await start("a");
  const b = await start("b");
  await Deno.writeTextFile(peers, `${a.url}\n${b.url}\n`);
  return { mode, a, b, client };
}

/** Starts an agent as the other benchmarks do, https or not. */
async function startAgent(
  args: string[],
  env: Record<string, string>,
  client: Deno.HttpClient | undefined,
): Promise<Agent> {
  // As the harness runs the agent (the flags of `deno task start`), with env.
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...agentFlags(), `${ROOT}/mod.ts`, "serve", ...args],
    stdout: "piped",
    stderr: "null",
    env: { SNAPMESH_LOG_LEVEL: "warn", ...env },
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening on (https?:\/\/\S+)/.test(text)) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`agent exited before listening: ${text}`);
    text += value;
  }
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
  const url = /listening on (https?:\/\/\S+)/.exec(text)![1]!;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const r = await fetch(`${url}/readyz`, client ? { client } : {}).catch(() => null);
    await r?.body?.cancel();
    if (r?.ok) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url,
    pid: child.pid,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    },
  };
}

async function upload(url: string, file: string, ca: string, https: boolean): Promise<void> {
  const curl = (extra: string[]) =>
    output("curl", [
      "-sf",
      ...(https ? ["--cacert", ca] : []),
      "-H",
      `Authorization: Bearer ${TOKEN}`,
      ...extra,
    ]);
  await curl(["-T", file, `${url}/v1/snapshots/bench/files/mem`]);
  await curl(["-X", "POST", `${url}/v1/snapshots/bench/commit`]);
}

async function waitForPeer(pair: Pair): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const response = await fetch(`${pair.b.url}/v1/status`, {
      headers: { Authorization: `Bearer ${TOKEN}` },
      ...(pair.client ? { client: pair.client } : {}),
    });
    const status = await response.json();
    if (status.peers?.some((p: { healthy: boolean }) => p.healthy)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${pair.mode}: B never saw A healthy`);
}

async function request(pair: Pair, url: string, method: string, path: string): Promise<void> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}` },
    ...(pair.client ? { client: pair.client } : {}),
  });
  const text = await response.text();
  if (!response.ok && !(method === "DELETE" && response.status === 404)) {
    throw new Error(`${pair.mode}: ${method} ${path} answered ${response.status}: ${text}`);
  }
}

async function output(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    ...(cwd ? { cwd } : {}),
  }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}
