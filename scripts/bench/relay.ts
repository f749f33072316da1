/**
 * `deno task bench relay`: the CPU a peer-to-peer transfer costs, both sides.
 * Agent A holds a snapshot of random (incompressible, all non-zero) bytes;
 * agent B, which knows A as its only peer, pulls it. Against, in the same
 * rounds, interleaved: nginx (one worker, sendfile) serving the same file to
 * `curl | openssl dgst -sha256`, the cheapest way to move and check the same
 * bytes, and to `curl -o FILE` then `openssl dgst -sha256 FILE`, which also
 * writes them to disk as the agent must. CPU is user + system time from
 * /proc (the agents, nginx) and from the commands' rusage (curl, openssl).
 *
 * Options: --rounds 3  --size-mib 1024  --chunk-size 1MiB
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  cpuSeconds,
  ensureRandomFile,
  GiB,
  have,
  median,
  memoryOf,
  MiB,
  saveResult,
  sleep,
  startAgent,
  table,
} from "./_harness.ts";
import { startNginx } from "./_nginx.ts";

const TOKEN = "relay-bench";
const auth = { Authorization: `Bearer ${TOKEN}` };

interface Round {
  round: number;
  seconds: { snapmesh: number; reference: number };
  /** CPU seconds per GiB moved. */
  sender: number;
  receiver: number;
  nginx: number;
  curlOpenssl: number;
  /** curl writing the file, then openssl hashing it. */
  curlFileOpenssl: number;
  /** B's peak RSS during its pull, bytes. */
  receiverPeakRss: number;
}

/** User + system CPU seconds a shell command and its children used. */
async function rusage(command: string): Promise<number> {
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "TIME %U %S", "sh", "-c", command],
    stdout: "null",
    stderr: "piped",
  }).output();
  const times = /TIME ([\d.]+) ([\d.]+)/.exec(new TextDecoder().decode(out.stderr));
  if (!out.success || !times) throw new Error(`${command} failed`);
  return Number(times[1]) + Number(times[2]);
}

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      rounds: { type: "string", default: "3" },
      "size-mib": { type: "string", default: "1024" },
      "chunk-size": { type: "string", default: "1MiB" },
      work: { type: "string", default: "/tmp/snapmesh-bench-relay" },
    },
  });
  for (const tool of ["nginx", "curl", "openssl"]) {
    if (!(await have(tool))) {
      console.log(`bench relay: skipped: ${tool} is not installed`);
      return 0;
    }
  }
  const rounds = Number(values.rounds);
  const size = Number(values["size-mib"]) * MiB;
  const work = values.work!;
  await Deno.mkdir(`${work}/www`, { recursive: true });
  const file = `${work}/www/mem`;
  await ensureRandomFile(file, size);
  const gib = size / GiB;

  const common = [
    "--token",
    TOKEN,
    "--chunk-size",
    values["chunk-size"]!,
    "--cache-size",
    "100GiB",
  ];
  await Deno.remove(`${work}/a`, { recursive: true }).catch(() => {});
  await using a = await startAgent(["--data-dir", `${work}/a`, "--node-id", "a", ...common]);
  console.error(`bench relay: publishing ${size / MiB} MiB on A`);
  const put = await new Deno.Command("curl", {
    args: [
      "-sf",
      "-H",
      `Authorization: Bearer ${TOKEN}`,
      "-T",
      file,
      `${a.url}/v1/snapshots/relay/files/mem`,
    ],
    stdout: "null",
  }).output();
  if (!put.success) throw new Error("upload to A failed");
  const commit = await fetch(`${a.url}/v1/snapshots/relay/commit`, {
    method: "POST",
    headers: auth,
  });
  if (commit.status !== 201) throw new Error(`commit failed: ${await commit.text()}`);
  await commit.body?.cancel();
  // The sender serves from its cache: read the file once so both servers start warm.
  await new Deno.Command("cat", { args: [file], stdout: "null" }).output();
  await using nginx = await startNginx(`${work}/nginx`, `${work}/www`);

  const results: Round[] = [];
  for (let round = 1; round <= rounds; round++) {
    // snapmesh: a fresh B pulls from A.
    await Deno.remove(`${work}/b`, { recursive: true }).catch(() => {});
    await Deno.writeTextFile(`${work}/peers`, `${a.url}\n`);
    const b = await startAgent([
      "--data-dir",
      `${work}/b`,
      "--node-id",
      "b",
      "--peers-file",
      `${work}/peers`,
      ...common,
    ]);
    let pulled: { seconds: number; sender: number; receiver: number; peak: number };
    try {
      for (let i = 0; i < 100; i++) {
        const status = await (await fetch(`${b.url}/v1/status`, { headers: auth })).json();
        if (status.peers.some((p: { healthy: boolean }) => p.healthy)) break;
        await sleep(100);
      }
      const aBefore = cpuSeconds([a.pid]);
      const bBefore = cpuSeconds([b.pid]);
      const started = performance.now();
      const r = await fetch(`${b.url}/v1/snapshots/relay/pull`, { method: "POST", headers: auth });
      const body = await r.json();
      if (r.status !== 200 || body.bytes.peer !== size) {
        throw new Error(`pull failed or not from the peer: ${JSON.stringify(body)}`);
      }
      pulled = {
        seconds: (performance.now() - started) / 1000,
        sender: cpuSeconds([a.pid]) - aBefore,
        receiver: cpuSeconds([b.pid]) - bBefore,
        peak: memoryOf(b.pid).peak,
      };
    } finally {
      await b[Symbol.asyncDispose]();
      await Deno.remove(`${work}/b`, { recursive: true }).catch(() => {});
    }

    // References: nginx to curl | openssl dgst -sha256, then with the file written.
    const nginxBefore = cpuSeconds(nginx.pids());
    const started = performance.now();
    const pipeline = await rusage(`curl -sf ${nginx.url}/mem | openssl dgst -sha256`);
    const refSeconds = (performance.now() - started) / 1000;
    const nginxCpu = cpuSeconds(nginx.pids()) - nginxBefore;
    const written = await rusage(
      `curl -sf -o ${work}/copy ${nginx.url}/mem && openssl dgst -sha256 ${work}/copy && sync`,
    );
    await Deno.remove(`${work}/copy`).catch(() => {});

    const row: Round = {
      round,
      seconds: { snapmesh: pulled.seconds, reference: refSeconds },
      sender: pulled.sender / gib,
      receiver: pulled.receiver / gib,
      nginx: nginxCpu / gib,
      curlOpenssl: pipeline / gib,
      curlFileOpenssl: written / gib,
      receiverPeakRss: pulled.peak,
    };
    results.push(row);
    console.error(
      `bench relay: round ${round}: snapmesh ${pulled.seconds.toFixed(2)} s (sender ${
        row.sender.toFixed(2)
      }, receiver ${row.receiver.toFixed(2)} CPU s/GiB), reference ${
        refSeconds.toFixed(2)
      } s (nginx ${row.nginx.toFixed(2)}, curl+openssl ${row.curlOpenssl.toFixed(2)})`,
    );
  }

  const spread = (xs: number[]) =>
    `${median(xs).toFixed(2)}x (${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)})`;
  const m = (f: (r: Round) => number) => median(results.map(f)).toFixed(2);
  console.log(table([
    ["CPU s per GiB (median)", "snapmesh", "reference", "ratio (median, range)", "target"],
    [
      "receiver (B) vs curl | openssl",
      m((r) => r.receiver),
      m((r) => r.curlOpenssl),
      spread(results.map((r) => r.receiver / r.curlOpenssl)),
      "-",
    ],
    [
      "receiver (B) vs curl -o, openssl (disk)",
      m((r) => r.receiver),
      m((r) => r.curlFileOpenssl),
      spread(results.map((r) => r.receiver / r.curlFileOpenssl)),
      "-",
    ],
    [
      "sender (A) vs nginx",
      m((r) => r.sender),
      m((r) => r.nginx),
      spread(results.map((r) => r.sender / r.nginx)),
      "≤ 3x",
    ],
    [
      "both sides vs all three",
      m((r) => r.sender + r.receiver),
      m((r) => r.nginx + r.curlOpenssl),
      spread(results.map((r) => (r.sender + r.receiver) / (r.nginx + r.curlOpenssl))),
      "≤ 1.3x",
    ],
    [
      "wall seconds",
      m((r) => r.seconds.snapmesh),
      m((r) => r.seconds.reference),
      spread(results.map((r) => r.seconds.snapmesh / r.seconds.reference)),
      "-",
    ],
  ]));
  const peak = Math.max(...results.map((r) => r.receiverPeakRss));
  console.log(`\nreceiver peak RSS: ${(peak / MiB).toFixed(0)} MiB (pull of ${size / MiB} MiB)`);
  const path = await saveResult("relay", {
    date: new Date().toISOString(),
    rounds,
    sizeBytes: size,
    chunkSize: values["chunk-size"],
    results,
  }, { latest: true });
  console.log(`results: ${path}`);
  await Deno.remove(`${work}/a`, { recursive: true }).catch(() => {});
  return 0;
}
