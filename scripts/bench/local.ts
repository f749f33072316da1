/**
 * `deno task bench local`: one node, side by side in the same run.
 *
 * - cached GET of a 1 GiB file through snapmesh vs nginx (sendfile) serving
 *   the very same file from the cache directory;
 * - ingest (PUT + commit, durable) vs `sha256sum` of the same file;
 * - peak RSS of the agent while it ingests and serves a 4 GiB file.
 *
 * Options: --reps N (default 5), --size-gib N (default 1), --rss-gib N (default 4).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
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
  timed,
} from "./_harness.ts";

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      reps: { type: "string", default: "5" },
      "size-gib": { type: "string", default: "1" },
      "rss-gib": { type: "string", default: "4" },
      work: { type: "string", default: "/tmp/snapmesh-bench-local" },
    },
  });
  const reps = Number(values.reps);
  const size = Number(values["size-gib"]) * GiB;
  const rssSize = Number(values["rss-gib"]) * GiB;
  const work = values.work!;

  for (const tool of ["curl", "sha256sum"]) {
    if (!(await have(tool))) {
      console.error(`bench local: ${tool} is required`);
      return 1;
    }
  }
  if (!(await have("nginx"))) {
    if (Deno.uid() === 0 && await have("apt-get")) {
      console.error("bench local: installing nginx-light from Debian's packages");
      await timed("sh", [
        "-c",
        "apt-get install -y nginx-light >/dev/null 2>&1 || (apt-get update >/dev/null && apt-get install -y nginx-light >/dev/null)",
      ]);
    } else {
      console.error("bench local: nginx is required (apt-get install nginx-light); skipping");
      return 0;
    }
  }

  await Deno.mkdir(work, { recursive: true });
  const source = `${work}/source-${size}.bin`;
  console.error(`bench local: preparing ${size / GiB} GiB of random data`);
  await ensureRandomFile(source, size);
  await timed("sh", ["-c", `cat '${source}' > /dev/null`]); // warm the page cache for both sides

  const dataDir = `${work}/data`;
  await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  const result: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: { cpus: navigator.hardwareConcurrency, deno: Deno.version.deno },
    sizeBytes: size,
    reps,
  };

  // --- ingest vs sha256sum --------------------------------------------------
  const ingest: number[] = [];
  const hashing: number[] = [];
  {
    await using agent = await startAgent(["--data-dir", dataDir, "--cache-size", "100GiB"]);
    for (let i = 0; i < reps; i++) {
      const name = `ingest${i}`;
      hashing.push(await timed("sha256sum", [source]));
      ingest.push(
        await timed("sh", [
          "-c",
          `curl -sf -T '${source}' ${agent.url}/v1/snapshots/${name}/files/mem >/dev/null && ` +
          `curl -sf -X POST ${agent.url}/v1/snapshots/${name}/commit >/dev/null`,
        ]),
      );
    }

    // --- cached GET vs nginx sendfile on the same file -----------------------
    const cached = `${dataDir}/snapshots/ingest0/files`;
    const nginxDir = `${work}/nginx`;
    await Deno.mkdir(nginxDir, { recursive: true });
    const port = 18000 + Math.floor(Math.random() * 1000);
    await Deno.writeTextFile(
      `${nginxDir}/nginx.conf`,
      `worker_processes 1;\ndaemon off;\npid ${nginxDir}/nginx.pid;\nerror_log ${nginxDir}/error.log;\n` +
        `events { worker_connections 64; }\nhttp {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n` +
        `  server { listen 127.0.0.1:${port}; root ${cached}; }\n}\n`,
    );
    const nginx = new Deno.Command("nginx", {
      args: ["-c", `${nginxDir}/nginx.conf`],
      stderr: "null",
    }).spawn();
    try {
      await sleep(500);
      const speed = async (url: string) => {
        const seconds = await timed("curl", ["-sf", "-o", "/dev/null", url]);
        return size / seconds / 1e6;
      };
      const ours: number[] = [];
      const theirs: number[] = [];
      await speed(`${agent.url}/v1/snapshots/ingest0/files/mem`); // warm-up
      await speed(`http://127.0.0.1:${port}/mem`);
      for (let i = 0; i < reps; i++) {
        ours.push(await speed(`${agent.url}/v1/snapshots/ingest0/files/mem`));
        theirs.push(await speed(`http://127.0.0.1:${port}/mem`));
      }
      result.get = {
        snapmeshMBps: ours,
        nginxMBps: theirs,
        medianRatio: median(ours) / median(theirs),
      };
    } finally {
      nginx.kill("SIGTERM");
      await nginx.status;
    }
  }
  result.ingest = {
    snapmeshSeconds: ingest,
    sha256sumSeconds: hashing,
    medianRatio: median(hashing) / median(ingest),
  };
  await Deno.remove(dataDir, { recursive: true });

  // --- RSS while ingesting and serving a large file --------------------------
  if (rssSize > 0) {
    const big = `${work}/source-${rssSize}.bin`;
    console.error(`bench local: preparing ${rssSize / GiB} GiB for the memory run`);
    await ensureRandomFile(big, rssSize);
    await using agent = await startAgent(["--data-dir", dataDir, "--cache-size", "100GiB"]);
    const idle = memoryOf(agent.pid).rss;
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, memoryOf(agent.pid).rss);
        await sleep(20);
      }
    })();
    const ingestSeconds = await timed("sh", [
      "-c",
      `curl -sf -T '${big}' ${agent.url}/v1/snapshots/big/files/mem >/dev/null && ` +
      `curl -sf -X POST ${agent.url}/v1/snapshots/big/commit >/dev/null`,
    ]);
    const serveSeconds = await timed("curl", [
      "-sf",
      "-o",
      "/dev/null",
      `${agent.url}/v1/snapshots/big/files/mem`,
    ]);
    for (let i = 0; i < 20; i++) {
      const start = Math.floor(Math.random() * (rssSize - 8 * MiB));
      await timed("curl", [
        "-sf",
        "-o",
        "/dev/null",
        "-r",
        `${start}-${start + 8 * MiB - 1}`,
        `${agent.url}/v1/snapshots/big/files/mem`,
      ]);
    }
    sampling = false;
    await sampler;
    const hwm = memoryOf(agent.pid).peak;
    result.memory = {
      fileBytes: rssSize,
      idleRssMiB: idle / MiB,
      peakRssMiB: Math.max(peak, hwm) / MiB,
      ingestSeconds,
      serveSeconds,
    };
    await Deno.remove(dataDir, { recursive: true });
  }

  const get = result.get as { snapmeshMBps: number[]; nginxMBps: number[]; medianRatio: number };
  const ing = result.ingest as {
    snapmeshSeconds: number[];
    sha256sumSeconds: number[];
    medianRatio: number;
  };
  const mem = result.memory as
    | { idleRssMiB: number; peakRssMiB: number; fileBytes: number }
    | undefined;
  const rows: (string | number)[][] = [
    ["measure", "snapmesh (median)", "reference (median)", "ratio", "target"],
    [
      `cached GET ${size / GiB} GiB (MB/s)`,
      median(get.snapmeshMBps).toFixed(0),
      `nginx ${median(get.nginxMBps).toFixed(0)}`,
      `${get.medianRatio.toFixed(2)}x`,
      ">= 0.6x",
    ],
    [
      `ingest ${size / GiB} GiB, PUT+commit (s)`,
      median(ing.snapmeshSeconds).toFixed(2),
      `sha256sum ${median(ing.sha256sumSeconds).toFixed(2)}`,
      `${ing.medianRatio.toFixed(2)}x`,
      "(report)",
    ],
  ];
  if (mem) {
    rows.push([
      `peak RSS, ingest+serve ${mem.fileBytes / GiB} GiB (MiB)`,
      mem.peakRssMiB.toFixed(0),
      `idle ${mem.idleRssMiB.toFixed(0)}`,
      "",
      "<= 150 MiB",
    ]);
  }
  console.log(table(rows));
  console.log(`\nresults: ${await saveResult("local", result, { latest: true })}`);
  return 0;
}
