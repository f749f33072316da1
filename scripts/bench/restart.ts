/**
 * `deno task bench restart`: how long an agent takes to be ready (`/readyz`
 * answers 200) on a data directory holding N committed snapshots, after a
 * clean stop (SIGTERM) and after `kill -9`, against the same agent starting
 * on an empty data directory in the same round (the floor: process start,
 * module loading, listening).
 *
 * Each snapshot has four files (`mem` 256 KiB, one data chunk and three zero
 * chunks; `vmstate` 16 KiB; `disk.patch` 128 KiB of holes; `info.json`),
 * 64 KiB chunks. The files are hard links to one set of template files (the
 * agent only looks at sizes at start), the journal holds one record per
 * snapshot, checkpointed; directories are made once per size and reused.
 * Before each `kill -9` the agent serves a few reads, so the journal has
 * records past its checkpoint to replay.
 *
 * Options: --sizes 1000,10000,50000 --rounds 3 --work /tmp/snapmesh-bench-restart
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DenoFileSystem } from "../../src/fs/mod.ts";
import { Journal } from "../../src/journal/mod.ts";
import { encodeStateRecord, SnapshotIndex } from "../../src/cache/mod.ts";
import { silentLogger } from "../../src/log/mod.ts";
import {
  chunkDigest,
  encodeManifest,
  type Manifest,
  MANIFEST_SCHEMA,
  manifestDigest,
  sha256Hex,
  ZERO_CHUNK,
} from "../../src/manifest/mod.ts";
import { agentFlags, median, ROOT, saveResult, sleep, table } from "./_harness.ts";

const CHUNK = 64 * 1024;

/** One start of the agent. */
interface Start {
  /** Spawn to the first `/readyz` 200, ms. */
  readyMs: number;
  /** Recovery as the agent logs it (`recovered` line), ms. */
  recoveryMs: number | null;
}

interface SizeResult {
  snapshots: number;
  empty: Start[];
  clean: Start[];
  killed: Start[];
}

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      sizes: { type: "string", default: "1000,10000,50000" },
      rounds: { type: "string", default: "3" },
      work: { type: "string", default: "/tmp/snapmesh-bench-restart" },
    },
  });
  const sizes = values.sizes!.split(",").map(Number);
  const rounds = Number(values.rounds);
  const work = values.work!;
  await Deno.mkdir(work, { recursive: true });
  const template = await writeTemplate(`${work}/template`);

  const results: SizeResult[] = [];
  for (const n of sizes) {
    const dir = `${work}/data-${n}`;
    await ensureDataDir(dir, n, template);
    const empty = `${work}/empty`;
    const result: SizeResult = { snapshots: n, empty: [], clean: [], killed: [] };
    // Warm-up: module cache, page cache of the directory.
    await stop(await start(dir), "SIGTERM");
    for (let round = 0; round < rounds; round++) {
      await Deno.remove(empty, { recursive: true }).catch(() => {});
      const reference = await start(empty);
      await stop(reference, "SIGTERM");
      result.empty.push(reference.start);

      const clean = await start(dir);
      result.clean.push(clean.start);
      // Reads journal access times (not fsynced) past the checkpoint.
      for (let i = 0; i < 20; i++) {
        const r = await fetch(`${clean.url}/v1/snapshots/s${(i * 7919) % n}`);
        await r.body?.cancel();
      }
      await sleep(300); // the access times are flushed to the journal in batches
      await stop(clean, "SIGKILL");
      const killed = await start(dir);
      result.killed.push(killed.start);
      await stop(killed, "SIGTERM");
      console.error(
        `bench restart: ${n} snapshots, round ${round + 1}: empty ${
          fmt(reference.start)
        }, clean stop ${fmt(clean.start)}, kill -9 ${fmt(killed.start)}`,
      );
    }
    results.push(result);
  }

  const med = (starts: Start[]) => median(starts.map((s) => s.readyMs));
  const range = (starts: Start[]) => {
    const ms = starts.map((s) => s.readyMs);
    return `${(Math.min(...ms) / 1000).toFixed(2)}-${(Math.max(...ms) / 1000).toFixed(2)}`;
  };
  const recovery = (starts: Start[]) => median(starts.map((s) => s.recoveryMs ?? NaN));
  const rows: (string | number)[][] = [[
    "snapshots",
    "ready after clean stop (s, median, range)",
    "ready after kill -9 (s, median, range)",
    "empty data dir (s, median)",
    "recovery as logged: clean / kill -9 (ms, median)",
  ]];
  for (const r of results) {
    rows.push([
      r.snapshots,
      `${(med(r.clean) / 1000).toFixed(2)} (${range(r.clean)})`,
      `${(med(r.killed) / 1000).toFixed(2)} (${range(r.killed)})`,
      (med(r.empty) / 1000).toFixed(2),
      `${recovery(r.clean).toFixed(0)} / ${recovery(r.killed).toFixed(0)}`,
    ]);
  }
  console.log(table(rows));
  console.log(
    "\ntargets at 10,000 snapshots: ready <= 0.5 s after a clean stop, <= 1 s after kill -9",
  );
  const path = await saveResult("restart", {
    date: new Date().toISOString(),
    machine: {
      cpus: navigator.hardwareConcurrency,
      deno: Deno.version.deno,
      loadavg: Deno.loadavg(),
    },
    rounds,
    results,
  }, { latest: true });
  console.log(`results: ${path}`);
  return 0;
}

function fmt(s: Start): string {
  return `${(s.readyMs / 1000).toFixed(2)} s (recovery ${s.recoveryMs} ms)`;
}

interface Running {
  url: string;
  child: Deno.ChildProcess;
  start: Start;
}

/** Spawns the agent on `dir` and waits until `/readyz` answers 200. */
async function start(dir: string): Promise<Running> {
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...agentFlags(),
      `${ROOT}/mod.ts`,
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dir,
      "--cache-size",
      "1TiB",
    ],
    stdout: "piped",
    stderr: "piped",
    env: { SNAPMESH_LOG_LEVEL: "info" },
  }).spawn();
  let recoveryMs: number | null = null;
  const logs = (async () => {
    const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (true) {
      const { done, value } = await lines.read();
      if (done) break;
      text += value;
      let newline;
      while ((newline = text.indexOf("\n")) !== -1) {
        const line = text.slice(0, newline);
        text = text.slice(newline + 1);
        if (line.includes('"msg":"recovered"')) recoveryMs = JSON.parse(line).ms ?? null;
      }
    }
  })();
  logs.catch(() => {});
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
  while (true) {
    const r = await fetch(`${url}/readyz`).catch(() => null);
    await r?.body?.cancel();
    if (r?.ok) break;
    await sleep(2);
  }
  const readyMs = performance.now() - started;
  // The recovered line comes before readiness; give the log reader a moment.
  for (let i = 0; i < 50 && recoveryMs === null; i++) await sleep(5);
  return { url, child, start: { readyMs, recoveryMs } };
}

async function stop(running: Running, signal: "SIGTERM" | "SIGKILL"): Promise<void> {
  try {
    running.child.kill(signal);
  } catch { /* gone */ }
  await running.child.status;
}

/** The files every snapshot links to, and their manifest entries. */
interface Template {
  dir: string;
  files: Manifest["files"];
}

async function writeTemplate(dir: string): Promise<Template> {
  await Deno.mkdir(dir, { recursive: true });
  const data = new Uint8Array(CHUNK);
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff;
  const vmstate = data.subarray(0, 16 * 1024);
  const info = new TextEncoder().encode('{"vcpus":2,"memMiB":256}');
  // mem: one data chunk, then three zero chunks (holes).
  await Deno.writeFile(`${dir}/mem`, data);
  await Deno.truncate(`${dir}/mem`, 4 * CHUNK);
  await Deno.writeFile(`${dir}/vmstate`, vmstate);
  await Deno.writeFile(`${dir}/disk.patch`, new Uint8Array(0));
  await Deno.truncate(`${dir}/disk.patch`, 2 * CHUNK);
  await Deno.writeFile(`${dir}/info.json`, info);
  const mem = new Uint8Array(4 * CHUNK);
  mem.set(data);
  const files: Manifest["files"] = [
    { name: "disk.patch", bytes: new Uint8Array(2 * CHUNK) },
    { name: "info.json", bytes: info },
    { name: "mem", bytes: mem },
    { name: "vmstate", bytes: vmstate },
  ].map(({ name, bytes }) => {
    const chunks: string[] = [];
    for (let at = 0; at < bytes.length; at += CHUNK) {
      chunks.push(chunkDigest(bytes.subarray(at, at + CHUNK)));
    }
    return { name, size: bytes.length, sha256: sha256Hex(bytes), chunks };
  });
  return { dir, files };
}

/**
 * Makes a data directory with `n` committed snapshots (unless one is there
 * already): snapshot directories as a commit leaves them, and a journal
 * holding their records, checkpointed, as a clean stop leaves it.
 */
async function ensureDataDir(dir: string, n: number, template: Template): Promise<void> {
  const marker = `${dir}/.bench-complete`;
  if (await Deno.stat(marker).catch(() => null)) return;
  console.error(`bench restart: writing a data directory with ${n} snapshots`);
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  for (const sub of ["snapshots", "drafts", "partial", "tmp", "journal"]) {
    await Deno.mkdir(`${dir}/${sub}`, { recursive: true });
  }
  const fs = new DenoFileSystem();
  const index = new SnapshotIndex(silentLogger);
  const { journal } = await Journal.open(index, { fs, dir: `${dir}/journal`, log: silentLogger });
  const created = Date.parse("2026-01-01T00:00:00Z");
  const stored = template.files.reduce(
    (bytes, f) => bytes + f.chunks.filter((c) => c !== ZERO_CHUNK).length * CHUNK,
    0,
  );
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const name = `s${i}`;
      const manifest: Manifest = {
        schema: MANIFEST_SCHEMA,
        name,
        createdAt: new Date(created + i * 1000).toISOString(),
        chunkSize: CHUNK,
        labels: { function: `fn-${i % 100}` },
        files: template.files,
      };
      const bytes = encodeManifest(manifest);
      const snapshot = `${dir}/snapshots/${name}`;
      await Deno.mkdir(`${snapshot}/files`, { recursive: true });
      for (const file of template.files) {
        await Deno.link(`${template.dir}/${file.name}`, `${snapshot}/files/${file.name}`);
      }
      await Deno.writeFile(`${snapshot}/manifest.json`, bytes, { mode: 0o444 });
      const { type, payload } = encodeStateRecord({
        t: "add",
        name,
        digest: manifestDigest(manifest),
        bytes: stored + bytes.length,
        size: template.files.reduce((s, f) => s + f.size, 0),
        files: template.files.length,
        source: "local",
        at: created + i * 1000,
        push: false,
      });
      await journal.append(type, payload, { sync: false });
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  await journal.close({ checkpoint: true });
  await Deno.writeTextFile(marker, `${n}\n`);
}
