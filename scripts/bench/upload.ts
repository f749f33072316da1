/**
 * `deno task bench upload`: one node, the same file uploaded three ways in
 * interleaved rounds, with `sha256sum` of the file as the speed of the machine:
 *
 * - sized: `curl -sf -T FILE` (`Content-Length`), then `POST …/commit`;
 * - chunked: the same with `-H 'Transfer-Encoding: chunked'`, then the commit;
 * - put: `snapmesh put NAME FILE --node URL` as the `snapmesh` task runs it
 *   (`deno run` with its permission flags; the CLI commits by itself);
 * - sha256sum: `sha256sum FILE`.
 *
 * Each round runs the four in another order (a balanced Latin square, below).
 * While each runs, the agent's VmRSS, and for `put` the CLI's, is read from
 * /proc every 20 ms; the agent's VmHWM is reset before each (clear_refs) where
 * the kernel lets us, so a peak between two samples is caught as well. Each
 * snapshot is checked against the file's sha256 and deleted once measured,
 * outside the timing, so every upload starts from the same cache. The agent
 * keeps what its heap has grown to between runs, so a mode's peak also holds
 * what earlier runs left: the table gives the largest rise within one run too.
 *
 * Targets (the chunked-upload issue): chunked ≤ 1.2× sized and `put` ≤ 1.2×
 * sized (median of the per-round ratios); agent peak RSS ≤ 150 MiB in every mode.
 *
 * After the rounds, `snapmesh put --help` is timed as often, to show what
 * `put` pays for starting Deno and loading mod.ts.
 *
 * Options: --reps N rounds (default 5, at least 3), --size-mib N (default 256),
 * --work DIR (default /tmp/snapmesh-bench-upload).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { snapmeshTaskFlags } from "../flags.ts";
import {
  ensureRandomFile,
  have,
  median,
  memoryOf,
  MiB,
  ROOT,
  saveResult,
  sleep,
  startAgent,
  table,
} from "./_harness.ts";

const MODES = ["sized", "chunked", "put", "sha256sum"] as const;
type Mode = typeof MODES[number];

const LABELS: Record<Mode, string> = {
  sized: "sized: curl -T, commit",
  chunked: "chunked: curl -T, TE: chunked, commit",
  put: "snapmesh put (CLI)",
  sha256sum: "sha256sum (reference)",
};

/**
 * The order of the modes in round r is ORDERS[r % 4], indexes into MODES: a
 * Williams design, so over four rounds each mode runs once in each place and
 * follows each other mode exactly once (no mode always runs after the
 * upload that just filled the disk's write-back, or always first).
 */
const ORDERS: readonly (readonly number[])[] = [
  [0, 1, 3, 2],
  [1, 2, 0, 3],
  [2, 3, 1, 0],
  [3, 0, 2, 1],
];

const SAMPLE_MS = 20;
const TIME_TARGET = 1.2;
const RSS_TARGET_MIB = 150;

/** One timed run of one mode. */
interface Sample {
  /** Round number; -1 for the untimed warm-up. */
  round: number;
  /** Place in the round, from 0. */
  position: number;
  mode: Mode;
  snapshot: string | null;
  seconds: number;
  /** Each command of the run and its wall time. */
  steps: { command: string; seconds: number }[];
  /**
   * The agent while it ran: VmRSS just before, max sampled VmRSS, VmHWM
   * since the reset (null without a reset).
   */
  agent: { startRssMiB: number; rssMiB: number; hwmMiB: number | null; samples: number };
  /** The CLI's own memory (`put` only): max sampled VmRSS and the last VmHWM read before it exited. */
  cli: { rssMiB: number; hwmMiB: number; samples: number } | null;
}

interface Peak {
  rss: number;
  hwm: number;
  samples: number;
}

/** Reads `pid`'s VmRSS and VmHWM every {@linkcode SAMPLE_MS} until stopped or until it is gone. */
function samplePeak(pid: number): { stop(): Promise<Peak> } {
  const peak: Peak = { rss: 0, hwm: 0, samples: 0 };
  let running = true;
  const read = () => {
    try {
      const m = memoryOf(pid);
      // A process that has exited but not been reaped has no VmRSS line (0).
      if (m.rss === 0) return;
      peak.rss = Math.max(peak.rss, m.rss);
      peak.hwm = Math.max(peak.hwm, m.peak);
      peak.samples++;
    } catch {
      running = false; // gone
    }
  };
  const loop = (async () => {
    while (running) {
      read();
      await sleep(SAMPLE_MS);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      read();
      return peak;
    },
  };
}

/**
 * Resets `pid`'s VmHWM to its VmRSS (Linux ≥ 4.0, clear_refs "5"), first
 * folding the VmHWM it ends into `seen.bytes`, so that the peak over the
 * agent's whole life is still known; false when the kernel does not allow it.
 */
function resetPeak(pid: number, seen: { bytes: number }): boolean {
  seen.bytes = Math.max(seen.bytes, memoryOf(pid).peak);
  try {
    Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** Runs one command to completion; throws with its stderr when it fails. */
async function step(
  cmd: string,
  args: string[],
  onSpawn?: (pid: number) => void,
): Promise<{ seconds: number; stdout: string }> {
  const started = performance.now();
  const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).spawn();
  onSpawn?.(child.pid);
  const out = await child.output();
  const seconds = (performance.now() - started) / 1000;
  const decoder = new TextDecoder();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (exit ${out.code}): ${decoder.decode(out.stderr)}`,
    );
  }
  return { seconds, stdout: decoder.decode(out.stdout) };
}

interface Context {
  url: string;
  agentPid: number;
  source: string;
  size: number;
  sha256: string;
  /** The agent's VmHWM before each reset, folded (bytes). */
  agentHwm: { bytes: number };
  /** `deno run` and its flags, as the `snapmesh` task runs mod.ts. */
  cli: string[];
}

/** The commands of one run of `mode`, run one after the other and timed together. */
function commandsOf(mode: Mode, snapshot: string, ctx: Context): [string, string[]][] {
  const files = `${ctx.url}/v1/snapshots/${snapshot}/files/mem`;
  const commit = `${ctx.url}/v1/snapshots/${snapshot}/commit`;
  switch (mode) {
    case "sized":
      return [
        ["curl", ["-sf", "-o", "/dev/null", "-T", ctx.source, files]],
        ["curl", ["-sf", "-o", "/dev/null", "-X", "POST", commit]],
      ];
    case "chunked":
      return [
        ["curl", [
          "-sf",
          "-o",
          "/dev/null",
          "-T",
          ctx.source,
          "-H",
          "Transfer-Encoding: chunked",
          files,
        ]],
        ["curl", ["-sf", "-o", "/dev/null", "-X", "POST", commit]],
      ];
    case "put": {
      const [deno, ...flags] = ctx.cli;
      return [[deno!, [...flags, "put", snapshot, ctx.source, "--node", ctx.url]]];
    }
    case "sha256sum":
      return [["sha256sum", [ctx.source]]];
  }
}

/** Runs `mode` once, uploading under `snapshot`; checks what the node stored and deletes it. */
async function runMode(
  mode: Mode,
  snapshot: string,
  ctx: Context,
): Promise<Omit<Sample, "round" | "position">> {
  const resetOk = resetPeak(ctx.agentPid, ctx.agentHwm);
  const steps: Sample["steps"] = [];
  const samplers: { cli?: { stop(): Promise<Peak> } } = {};
  const startRss = memoryOf(ctx.agentPid).rss;
  const agentSampler = samplePeak(ctx.agentPid);
  const started = performance.now();
  for (const [cmd, args] of commandsOf(mode, snapshot, ctx)) {
    const { seconds, stdout } = await step(
      cmd,
      args,
      mode === "put" ? (pid) => (samplers.cli = samplePeak(pid)) : undefined,
    );
    steps.push({ command: [cmd, ...args].join(" "), seconds });
    if (mode === "put" && !stdout.startsWith(`committed ${snapshot} `)) {
      throw new Error(`snapmesh put printed ${JSON.stringify(stdout)}`);
    }
    if (mode === "sha256sum" && !stdout.startsWith(ctx.sha256)) {
      throw new Error(`sha256sum printed ${JSON.stringify(stdout)}, expected ${ctx.sha256}`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const agent = await agentSampler.stop();
  const hwm = resetOk ? memoryOf(ctx.agentPid).peak : null;
  const cli = samplers.cli ? await samplers.cli.stop() : null;

  if (mode !== "sha256sum") await checkAndDelete(ctx, snapshot);
  return {
    mode,
    snapshot: mode === "sha256sum" ? null : snapshot,
    seconds,
    steps,
    agent: {
      startRssMiB: startRss / MiB,
      rssMiB: agent.rss / MiB,
      hwmMiB: hwm === null ? null : Math.max(hwm, agent.hwm) / MiB,
      samples: agent.samples,
    },
    cli: cli === null
      ? null
      : { rssMiB: cli.rss / MiB, hwmMiB: cli.hwm / MiB, samples: cli.samples },
  };
}

/** The committed snapshot must hold the file whole; then it is deleted. */
async function checkAndDelete(ctx: Context, snapshot: string): Promise<void> {
  const r = await fetch(`${ctx.url}/v1/snapshots/${snapshot}`);
  const manifest = await r.json() as { files?: { size: number; sha256: string }[] };
  const file = manifest.files?.[0];
  if (
    !r.ok || manifest.files?.length !== 1 || file?.size !== ctx.size || file.sha256 !== ctx.sha256
  ) {
    throw new Error(`Snapshot ${snapshot} does not hold the file: ${JSON.stringify(manifest)}`);
  }
  const d = await fetch(`${ctx.url}/v1/snapshots/${snapshot}`, { method: "DELETE" });
  await d.body?.cancel();
  if (!d.ok) throw new Error(`Cannot delete snapshot ${snapshot}: ${d.status}`);
}

function loadAverage(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

const fmt = (n: number, digits = 2) => n.toFixed(digits);
const range = (values: number[], digits = 2, unit = "") =>
  `${fmt(Math.min(...values), digits)}–${fmt(Math.max(...values), digits)}${unit}`;

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      reps: { type: "string", default: "5" },
      "size-mib": { type: "string", default: "256" },
      work: { type: "string", default: "/tmp/snapmesh-bench-upload" },
    },
  });
  const rounds = Number(values.reps);
  const size = Number(values["size-mib"]) * MiB;
  const work = values.work!;
  if (!Number.isInteger(rounds) || rounds < 3) {
    console.error(`bench upload: --reps must be an integer of at least 3, got ${values.reps}`);
    return 2;
  }
  if (!Number.isInteger(size) || size <= 0) {
    console.error(`bench upload: --size-mib must be a positive number, got ${values["size-mib"]}`);
    return 2;
  }
  for (const tool of ["curl", "sha256sum"]) {
    if (!(await have(tool))) {
      console.error(`bench upload: ${tool} is required`);
      return 1;
    }
  }

  await Deno.mkdir(work, { recursive: true });
  const source = `${work}/source-${size}.bin`;
  console.error(`bench upload: preparing ${size / MiB} MiB of random data`);
  await ensureRandomFile(source, size);
  // Also warms the page cache, for every mode alike.
  const sha256 = (await step("sha256sum", [source])).stdout.split(" ")[0]!;

  const dataDir = `${work}/data`;
  await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  const loadBefore = loadAverage();
  const samples: Sample[] = [];
  let idleRssMiB = 0;
  let hwmEndMiB = 0;
  const agentHwm = { bytes: 0 };
  let hwmReset = false;
  const cliStartupSeconds: number[] = [];
  {
    await using agent = await startAgent(["--data-dir", dataDir, "--cache-size", "100GiB"]);
    const ctx: Context = {
      url: agent.url,
      agentPid: agent.pid,
      source,
      size,
      sha256,
      agentHwm,
      cli: [Deno.execPath(), "run", ...snapmeshTaskFlags(), `${ROOT}/mod.ts`],
    };
    idleRssMiB = memoryOf(agent.pid).rss / MiB;
    hwmReset = resetPeak(agent.pid, agentHwm);
    // One untimed run of each first: the CLI's first start compiles its modules.
    for (const [position, mode] of MODES.entries()) {
      console.error(`bench upload: warm-up ${mode}`);
      samples.push({ round: -1, position, ...await runMode(mode, `warmup-${mode}`, ctx) });
    }
    for (let round = 0; round < rounds; round++) {
      const order = ORDERS[round % ORDERS.length]!.map((i) => MODES[i]!);
      console.error(`bench upload: round ${round + 1}/${rounds}: ${order.join(", ")}`);
      for (const [position, mode] of order.entries()) {
        samples.push({ round, position, ...await runMode(mode, `upload-${round}-${mode}`, ctx) });
      }
    }
    // Its VmHWM over its whole life: the last reading and those taken before each reset.
    hwmEndMiB = Math.max(agentHwm.bytes, memoryOf(agent.pid).peak) / MiB;
    // What `put` pays before it sends a byte: starting Deno and loading mod.ts.
    for (let i = 0; i < rounds; i++) {
      const [deno, ...flags] = ctx.cli;
      cliStartupSeconds.push((await step(deno!, [...flags, "put", "--help"])).seconds);
    }
  }
  await Deno.remove(dataDir, { recursive: true });
  const loadAfter = loadAverage();

  // --- summary -----------------------------------------------------------------
  const timedSamples = samples.filter((s) => s.round >= 0);
  const of = (mode: Mode) => timedSamples.filter((s) => s.mode === mode);
  const sizedBy = new Map(of("sized").map((s) => [s.round, s.seconds]));
  const summary = Object.fromEntries(MODES.map((mode) => {
    const runs = of(mode);
    const seconds = runs.map((s) => s.seconds);
    const ratios = runs.map((s) => s.seconds / sizedBy.get(s.round)!);
    const peaks = runs.map((s) => Math.max(s.agent.rssMiB, s.agent.hwmMiB ?? 0));
    return [mode, {
      seconds,
      medianSeconds: median(seconds),
      ratiosToSized: ratios,
      medianRatio: median(ratios),
      agentPeakRssMiB: Math.max(...runs.map((s) => s.agent.rssMiB)),
      agentPeakHwmMiB: hwmReset ? Math.max(...runs.map((s) => s.agent.hwmMiB ?? 0)) : null,
      agentPeakMiB: Math.max(...peaks),
      agentMaxRiseMiB: Math.max(...runs.map((s, i) => peaks[i]! - s.agent.startRssMiB)),
      cliPeakMiB: mode === "put"
        ? Math.max(...runs.map((s) => Math.max(s.cli?.rssMiB ?? 0, s.cli?.hwmMiB ?? 0)))
        : null,
    }];
  })) as Record<Mode, {
    seconds: number[];
    medianSeconds: number;
    ratiosToSized: number[];
    medianRatio: number;
    agentPeakRssMiB: number;
    agentPeakHwmMiB: number | null;
    agentPeakMiB: number;
    agentMaxRiseMiB: number;
    cliPeakMiB: number | null;
  }>;
  const uploads: Mode[] = ["sized", "chunked", "put"];
  const targets = {
    chunked: {
      target: `chunked ≤ ${TIME_TARGET}× sized`,
      value: summary.chunked.medianRatio,
      pass: summary.chunked.medianRatio <= TIME_TARGET,
    },
    rss: {
      target: `agent RSS ≤ ${RSS_TARGET_MIB} MiB in every mode`,
      value: Math.max(...uploads.map((m) => summary[m].agentPeakMiB)),
      pass: uploads.every((m) => summary[m].agentPeakMiB <= RSS_TARGET_MIB),
    },
    put: {
      target: `snapmesh put ≤ ${TIME_TARGET}× sized`,
      value: summary.put.medianRatio,
      pass: summary.put.medianRatio <= TIME_TARGET,
    },
  };

  const rows: (string | number)[][] = [[
    "mode",
    "median (s)",
    "range (s)",
    "× sized, median",
    "× sized, range",
    hwmReset ? "agent peak RSS (MiB): sampled / VmHWM" : "agent peak RSS (MiB)",
    "agent rise in one run (MiB, max)",
    "CLI peak RSS (MiB)",
  ]];
  for (const mode of MODES) {
    const s = summary[mode];
    rows.push([
      LABELS[mode],
      fmt(s.medianSeconds),
      range(s.seconds),
      `${fmt(s.medianRatio)}×`,
      range(s.ratiosToSized, 2, "×"),
      fmt(s.agentPeakRssMiB, 0) +
      (s.agentPeakHwmMiB === null ? "" : ` / ${fmt(s.agentPeakHwmMiB, 0)}`),
      fmt(s.agentMaxRiseMiB, 1),
      s.cliPeakMiB === null ? "" : fmt(s.cliPeakMiB, 0),
    ]);
  }
  console.log(table(rows));
  console.log(
    `\n${size / MiB} MiB, ${rounds} interleaved rounds after one warm-up; agent idle RSS ` +
      `${fmt(idleRssMiB, 0)} MiB, VmHWM over the whole run ${fmt(hwmEndMiB, 0)} MiB; ` +
      `load average ${loadBefore} before, ${loadAfter} after`,
  );
  console.log(
    `CLI start-up alone (snapmesh put --help): ${fmt(median(cliStartupSeconds))} s median ` +
      `(${range(cliStartupSeconds)} s)`,
  );
  const pass = (ok: boolean) => (ok ? "PASS" : "MISS");
  console.log(
    `${pass(targets.chunked.pass)} ${targets.chunked.target}: ${fmt(targets.chunked.value)}× ` +
      `(median of per-round ratios; ${range(summary.chunked.ratiosToSized, 2, "×")})`,
  );
  console.log(
    `${pass(targets.rss.pass)} ${targets.rss.target}: ` +
      uploads.map((m) => `${m} ${fmt(summary[m].agentPeakMiB, 0)}`).join(", ") + " MiB",
  );
  console.log(
    `${pass(targets.put.pass)} ${targets.put.target}: ${fmt(targets.put.value)}× ` +
      `(median of per-round ratios; ${range(summary.put.ratiosToSized, 2, "×")})`,
  );

  const result = {
    date: new Date().toISOString(),
    command: `deno task bench upload ${args.join(" ")}`.trim(),
    machine: {
      cpus: navigator.hardwareConcurrency,
      deno: Deno.version.deno,
      kernel: Deno.osRelease(),
      loadAverageBefore: loadBefore,
      loadAverageAfter: loadAfter,
      note: "shared and noisy; client, agent and disk on the same machine",
    },
    sizeBytes: size,
    sha256,
    rounds,
    sampleMs: SAMPLE_MS,
    agentHwmResetPerRun: hwmReset,
    orders: ORDERS.map((o) => o.map((i) => MODES[i])),
    agent: { idleRssMiB, vmHwmWholeRunMiB: hwmEndMiB },
    summary,
    cliStartupSeconds,
    targets,
    samples,
  };
  console.log(`\nresults: ${await saveResult("upload", result, { latest: true })}`);
  return 0;
}
