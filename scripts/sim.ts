/**
 * `deno task sim`: the swarm, simulated. Runs the agent's real swarm code
 * (scheduler, pull job, swarm session, tracker, upload slots, membership)
 * on a virtual clock over a simulated network (src/sim/), for fleets of
 * thousands of nodes, and reports the time every node needs to hold the
 * snapshot relative to one node alone, the origin's bytes, the load spread
 * and cross-zone bytes, with and without faults.
 *
 *   deno task sim                                  # every scenario at 8, 64, 256, 1000 nodes
 *   deno task sim --nodes 1000 --scenario owner-killed --json
 *   deno task sim --nodes 64 --seed 7 --no-write   # print only
 *   deno task sim --calibrate                      # against bench fleet (N = 1, 2, 4, 8)
 *
 * Options: --nodes N[,N…]  --scenario NAME[,NAME…]|all  --seed S  --json
 * --chunk-mib N  --cores N  --no-rack-labels (nodes are not told their rack)  --no-write. With the reference settings (seed
 * "snapmesh", 1 MiB chunks, measured cores) each run updates its rows in
 * bench/results/sim-latest.json (a scenario at a size replaces its earlier
 * row) and redraws bench/results/sim-latest.svg, unless --no-write.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { measureCpu } from "../src/sim/cpu.ts";
import { runFleet } from "../src/sim/fleet.ts";
import { jsonLine, plot, type Row, table, toRow } from "../src/sim/report.ts";
import {
  BENCH_FLEET_SNAPSHOT,
  REFERENCE_SNAPSHOT,
  scenario,
  SCENARIOS,
} from "../src/sim/scenarios.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const DEFAULT_NODES = "8,64,256,1000";

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      nodes: { type: "string", default: DEFAULT_NODES },
      scenario: { type: "string", default: "all" },
      seed: { type: "string", default: "snapmesh" },
      json: { type: "boolean", default: false },
      "chunk-mib": { type: "string", default: "1" },
      cores: { type: "string" },
      "no-write": { type: "boolean", default: false },
      "no-rack-labels": { type: "boolean", default: false },
      calibrate: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task sim [--nodes 8,64,256,1000] [--scenario all|" +
        `${Object.keys(SCENARIOS).join("|")}] [--seed S] [--json] [--chunk-mib 1] ` +
        "[--cores N] [--no-rack-labels] [--no-write] | --calibrate",
    );
    return 0;
  }
  if (values.calibrate) return await calibrate(values.seed!);
  const sizes = values.nodes!.split(",").map((s) => Number(s.trim()));
  if (sizes.some((n) => !Number.isInteger(n) || n < 1)) {
    console.error(`--nodes: expected positive integers, got "${values.nodes}"`);
    return 2;
  }
  const names = values.scenario === "all"
    ? Object.keys(SCENARIOS)
    : values.scenario!.split(",").map((s) => s.trim());
  for (const name of names) {
    if (!SCENARIOS[name]) {
      console.error(`--scenario: unknown "${name}"; known: ${Object.keys(SCENARIOS).join(", ")}`);
      return 2;
    }
  }
  const chunkMib = Number(values["chunk-mib"]);
  if (!(chunkMib > 0)) {
    console.error(`--chunk-mib: expected a positive number, got "${values["chunk-mib"]}"`);
    return 2;
  }
  const snapshot = { ...REFERENCE_SNAPSHOT, chunkSize: chunkMib * 1024 * 1024 };
  const rackLabels = !values["no-rack-labels"];
  const cpu = await measureCpu(values.cores ? { cores: Number(values.cores) } : {});
  const log = (text: string) => console.error(text);
  log(
    `sim: CPU per MiB measured here: receive ${cpu.receiveMsPerMiB.toFixed(2)} ms ` +
      `(sha256 + write), send ${cpu.sendMsPerMiB.toFixed(2)} ms, ${cpu.cores} cores per node`,
  );
  const seed = values.seed!;
  // One node alone: the same fleet's network, pulling from the origin only.
  const alone = await runFleet(
    scenario("baseline", { nodes: 1, cpu, seed, snapshot, rackLabels }),
  );
  const aloneSeconds = alone.seconds.p50;
  log(`sim: one node alone holds the snapshot in ${aloneSeconds.toFixed(2)} s (virtual)`);

  const rows: Row[] = [];
  for (const n of sizes) {
    for (const name of names) {
      log(`sim: ${name} at ${n} nodes…`);
      const result = await runFleet(
        scenario(name, { nodes: n, cpu, seed, snapshot, rackLabels }),
      );
      const row = toRow(result, aloneSeconds);
      rows.push(row);
      if (values.json) console.log(jsonLine(row));
      else log(`     ${jsonLine(row)}`);
    }
  }
  if (!values.json) console.log(table(rows));

  // Runs of the reference configuration update their rows of the committed
  // results (a scenario at a size replaces its earlier row), so the sweep
  // can be built one size at a time; other configurations only print.
  const reference = chunkMib === 1 && values.cores === undefined && seed === "snapmesh" &&
    rackLabels;
  if (!values["no-write"] && reference) {
    const path = `${ROOT}/bench/results/sim-latest.json`;
    await Deno.mkdir(`${ROOT}/bench/results`, { recursive: true });
    let earlier: (Row & { date?: string })[] = [];
    try {
      earlier = JSON.parse(await Deno.readTextFile(path)).rows ?? [];
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    const date = new Date().toISOString();
    const key = (r: Row) => `${r.scenario}@${r.nodes}`;
    const fresh = new Map(rows.map((r) => [key(r), { ...r, date, cpu }]));
    const merged = [...earlier.filter((r) => !fresh.has(key(r))), ...fresh.values()]
      .sort((x, y) => x.nodes - y.nodes || x.scenario.localeCompare(y.scenario));
    const result = {
      bench: "sim",
      command: "deno task sim [--nodes N] [--scenario NAME] (rows merged by scenario and size)",
      seed,
      snapshot,
      topology: scenario("baseline", { nodes: 1, cpu, seed }).topology,
      scenarios: Object.fromEntries(
        Object.entries(SCENARIOS).map(([name, known]) => [name, known.about]),
      ),
      rows: merged,
    };
    await Deno.writeTextFile(path, JSON.stringify(result, null, 2) + "\n");
    await Deno.writeTextFile(
      `${ROOT}/bench/results/sim-latest.svg`,
      plot(merged, "snapmesh swarm, simulated: 2 GiB snapshot, 10 Gbit/s NICs, 2 zones"),
    );
    log("sim: updated bench/results/sim-latest.json and bench/results/sim-latest.svg");
  }
  return rows.some((r) => r.failed > 0) ? 1 : 0;
}

/**
 * The simulation of this machine's shaped fleet (`benchFleetTopology`)
 * beside the last `deno task bench fleet` run, N = 1, 2, 4, 8: how close
 * the model comes to what real agents do. Writes
 * bench/results/sim-calibration-latest.json.
 */
async function calibrate(seed: string): Promise<number> {
  let bench: { n: number; snapmesh: number }[] = [];
  try {
    const fleet = JSON.parse(await Deno.readTextFile(`${ROOT}/bench/results/fleet-latest.json`));
    bench = fleet.summary ?? [];
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    console.error("sim: no bench/results/fleet-latest.json; run deno task bench fleet first");
  }
  const rows: { nodes: number; sim: number; simOwnCpu: number; bench: number | undefined }[] = [];
  for (const nodes of [1, 2, 4, 8]) {
    const spec = scenario("baseline", {
      nodes,
      cpu: { receiveMsPerMiB: 0, sendMsPerMiB: 0, cores: 1 }, // the topology brings its own
      seed,
      snapshot: BENCH_FLEET_SNAPSHOT,
      topology: "bench-fleet",
    });
    const result = await runFleet(spec);
    // The same fleet with a machine (two cores) per node, as it would run in production.
    const own = await runFleet({
      ...spec,
      topology: { ...spec.topology, cpu: { ...spec.topology.cpu, shared: false } },
    });
    rows.push({
      nodes,
      sim: result.seconds.max,
      simOwnCpu: own.seconds.max,
      bench: bench.find((b) => b.n === nodes)?.snapmesh,
    });
  }
  const sim1 = rows[0]!.sim;
  const bench1 = rows[0]!.bench;
  const fmt = (x: number | undefined, d = 1) => (x === undefined ? "-" : x.toFixed(d));
  console.log(
    "| N | simulated (s) | sim vs N=1 | bench fleet (s, median) | bench vs N=1 | sim / bench | " +
      "simulated, a machine per node (vs N=1) |\n" +
      "|---|---|---|---|---|---|---|\n" +
      rows.map((r) =>
        `| ${r.nodes} | ${fmt(r.sim)} | ${fmt(r.sim / sim1, 2)}x | ${fmt(r.bench)} | ${
          r.bench && bench1 ? `${(r.bench / bench1).toFixed(2)}x` : "-"
        } | ${r.bench ? `${(r.sim / r.bench).toFixed(2)}x` : "-"} | ${fmt(r.simOwnCpu)} (${
          fmt(r.simOwnCpu / rows[0]!.simOwnCpu, 2)
        }x) |`
      ).join("\n"),
  );
  await Deno.writeTextFile(
    `${ROOT}/bench/results/sim-calibration-latest.json`,
    JSON.stringify(
      {
        bench: "sim --calibrate",
        date: new Date().toISOString(),
        topology: scenario("baseline", {
          nodes: 8,
          cpu: { receiveMsPerMiB: 0, sendMsPerMiB: 0, cores: 1 },
          seed,
          topology: "bench-fleet",
        }).topology,
        snapshot: BENCH_FLEET_SNAPSHOT,
        rows,
      },
      null,
      2,
    ) + "\n",
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
