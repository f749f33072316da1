/**
 * `deno task bench ranges`: random 4 KiB range GETs of a cached file, the
 * reads a restoring VM's page faults turn into. snapmesh against nginx
 * serving the very same file from the cache directory, interleaved rounds
 * of `wrk` with 64 keep-alive connections; requests/s, latency percentiles
 * and CPU per request (user + system time of the server's processes over
 * the round divided by its requests).
 *
 * Options: --rounds N (default 3), --seconds S per round (default 10),
 * --connections N (default 64), --size-mib N (default 256),
 * --range-bytes N (default 4096).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  cpuSeconds,
  ensureRandomFile,
  have,
  median,
  MiB,
  saveResult,
  startAgent,
  table,
} from "./_harness.ts";
import { startNginx } from "./_nginx.ts";

/** One `wrk` round against one server. */
interface Round {
  requestsPerSecond: number;
  requests: number;
  /** Latency percentiles, microseconds. */
  p50Us: number;
  p99Us: number;
  /** Server CPU time (user + system) per request, microseconds. */
  cpuUsPerRequest: number;
  non2xx: number;
}

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      rounds: { type: "string", default: "3" },
      seconds: { type: "string", default: "10" },
      connections: { type: "string", default: "64" },
      "size-mib": { type: "string", default: "256" },
      "range-bytes": { type: "string", default: "4096" },
      work: { type: "string", default: "/tmp/snapmesh-bench-ranges" },
    },
  });
  const rounds = Number(values.rounds);
  const seconds = Number(values.seconds);
  const connections = Number(values.connections);
  const size = Number(values["size-mib"]) * MiB;
  const rangeBytes = Number(values["range-bytes"]);
  const work = values.work!;
  for (const tool of ["curl", "wrk", "nginx"]) {
    if (!(await have(tool))) {
      console.error(`bench ranges: ${tool} is required`);
      return 1;
    }
  }

  await Deno.mkdir(work, { recursive: true });
  const source = `${work}/source-${size}.bin`;
  await ensureRandomFile(source, size);
  const dataDir = `${work}/data`;
  await Deno.remove(dataDir, { recursive: true }).catch(() => {});

  await using agent = await startAgent(["--data-dir", dataDir, "--cache-size", "100GiB"]);
  await run("curl", ["-sf", "-T", source, `${agent.url}/v1/snapshots/ranges/files/mem`]);
  await run("curl", ["-sf", "-X", "POST", `${agent.url}/v1/snapshots/ranges/commit`]);
  // Read the file once so both servers start with it in the page cache.
  await run("sh", ["-c", `cat '${dataDir}/snapshots/ranges/files/mem' > /dev/null`]);
  await using nginx = await startNginx(`${work}/nginx`, `${dataDir}/snapshots/ranges/files`);

  const script = `${work}/ranges.lua`;
  await Deno.writeTextFile(script, wrkScript(size, rangeBytes));
  const ours = `${agent.url}/v1/snapshots/ranges/files/mem`;
  const theirs = `${nginx.url}/mem`;
  // Warm-up: the first serve of each chunk verifies it (once per process).
  await wrk(ours, script, { seconds: 2, connections, pids: () => [agent.pid] });
  await wrk(theirs, script, { seconds: 1, connections, pids: nginx.pids });

  const snapmesh: Round[] = [];
  const reference: Round[] = [];
  for (let i = 0; i < rounds; i++) {
    // Alternate which goes first, so a drift in machine load hits both alike.
    const order = i % 2 === 0 ? ["snapmesh", "nginx"] : ["nginx", "snapmesh"];
    for (const who of order) {
      if (who === "snapmesh") {
        snapmesh.push(await wrk(ours, script, { seconds, connections, pids: () => [agent.pid] }));
      } else {
        reference.push(await wrk(theirs, script, { seconds, connections, pids: nginx.pids }));
      }
      console.error(
        `bench ranges: round ${i + 1} ${who}: ` +
          JSON.stringify(who === "snapmesh" ? snapmesh.at(-1) : reference.at(-1)),
      );
    }
  }
  await Deno.remove(dataDir, { recursive: true }).catch(() => {});

  const ratios = {
    rps: snapmesh.map((s, i) => s.requestsPerSecond / reference[i]!.requestsPerSecond),
    cpu: snapmesh.map((s, i) => s.cpuUsPerRequest / reference[i]!.cpuUsPerRequest),
    p99: snapmesh.map((s, i) => s.p99Us / reference[i]!.p99Us),
  };
  const loadavg = Deno.loadavg();
  const result = {
    date: new Date().toISOString(),
    machine: { cpus: navigator.hardwareConcurrency, deno: Deno.version.deno, loadavg },
    fileBytes: size,
    rangeBytes,
    connections,
    secondsPerRound: seconds,
    rounds,
    snapmesh,
    nginx: reference,
    ratios,
  };
  const m = (rs: Round[], key: keyof Round) => median(rs.map((r) => r[key]));
  const spread = (xs: number[]) =>
    `${median(xs).toFixed(2)}x (${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)})`;
  console.log(table([
    ["measure (median of rounds)", "snapmesh", "nginx", "ratio (median, range)", "target"],
    [
      "requests/s",
      m(snapmesh, "requestsPerSecond").toFixed(0),
      m(reference, "requestsPerSecond").toFixed(0),
      spread(ratios.rps),
      ">= 0.6x",
    ],
    [
      "CPU per request (us)",
      m(snapmesh, "cpuUsPerRequest").toFixed(1),
      m(reference, "cpuUsPerRequest").toFixed(1),
      spread(ratios.cpu),
      "<= 2x",
    ],
    [
      "p50 latency (us)",
      m(snapmesh, "p50Us").toFixed(0),
      m(reference, "p50Us").toFixed(0),
      "",
      "",
    ],
    [
      "p99 latency (us)",
      m(snapmesh, "p99Us").toFixed(0),
      m(reference, "p99Us").toFixed(0),
      spread(ratios.p99),
      "<= 2 ms idle",
    ],
  ]));
  console.log(
    `\n${rounds} rounds of ${seconds} s, ${connections} connections, ` +
      `${rangeBytes}-byte ranges of a ${size / MiB} MiB file; load average at the end ` +
      loadavg.map((l) => l.toFixed(2)).join(" "),
  );
  console.log(`results: ${await saveResult("ranges", result, { latest: true })}`);
  return 0;
}

/** A wrk script asking for random aligned ranges of `rangeBytes` within `size`. */
function wrkScript(size: number, rangeBytes: number): string {
  const slots = Math.floor(size / rangeBytes);
  return `math.randomseed(os.time())
request = function()
  local start = math.random(0, ${slots - 1}) * ${rangeBytes}
  return wrk.format("GET", nil, { ["Range"] = "bytes=" .. start .. "-" .. (start + ${
    rangeBytes - 1
  }) })
end
done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("RESULT %d %f %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), non2xx))
end
`;
}

/** Runs wrk against `url` and measures the CPU time `pids` use meanwhile. */
async function wrk(
  url: string,
  script: string,
  options: { seconds: number; connections: number; pids: () => number[] },
): Promise<Round> {
  const before = cpuSeconds(options.pids());
  const out = await new Deno.Command("wrk", {
    args: [
      "-t1",
      `-c${options.connections}`,
      `-d${options.seconds}s`,
      "-s",
      script,
      url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const after = cpuSeconds(options.pids());
  const text = new TextDecoder().decode(out.stdout);
  const line = /RESULT (\d+) ([\d.]+) (\d+) (\d+) (\d+)/.exec(text);
  if (!out.success || !line) {
    throw new Error(`wrk failed: ${text}${new TextDecoder().decode(out.stderr)}`);
  }
  const requests = Number(line[1]);
  const duration = Number(line[2]) / 1e6;
  return {
    requestsPerSecond: requests / duration,
    requests,
    p50Us: Number(line[3]),
    p99Us: Number(line[4]),
    cpuUsPerRequest: ((after - before) * 1e6) / requests,
    non2xx: Number(line[5]),
  };
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}
