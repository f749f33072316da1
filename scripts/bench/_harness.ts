/**
 * Shared pieces of the benchmarks: running the agent, timing commands,
 * sampling memory, medians and result files.
 *
 * @module
 */

import { serveFlags } from "../flags.ts";

export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/** Permission flags of `deno task start` (the agent runs as users run it). */
export function agentFlags(): string[] {
  return serveFlags();
}

/** `snapmesh serve` as users run it, optionally inside a network namespace. */
export function agentCommand(args: string[], netns?: string): Deno.Command {
  const serve = [Deno.execPath(), "run", ...agentFlags(), `${ROOT}/mod.ts`, "serve", ...args];
  const [cmd, ...rest] = netns ? ["ip", "netns", "exec", netns, ...serve] : serve;
  return new Deno.Command(cmd!, {
    args: rest,
    stdout: "piped",
    stderr: "null",
    env: { SNAPMESH_LOG_LEVEL: "warn" },
  });
}

/** A running agent. */
export interface BenchAgent extends AsyncDisposable {
  url: string;
  pid: number;
}

/** Starts an agent (on a free loopback port unless `--listen` is given) and waits for its listen line. */
export async function startAgent(args: string[], netns?: string): Promise<BenchAgent> {
  const listen = args.includes("--listen") ? [] : ["--listen", "127.0.0.1:0"];
  const child = agentCommand([...listen, ...args], netns).spawn();
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
  for (let i = 0; i < 200; i++) {
    const r = await fetch(`${url}/readyz`).catch(() => null);
    await r?.body?.cancel();
    if (r?.ok) break;
    await sleep(50);
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

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Runs a command, returns wall seconds; throws on failure. */
export async function timed(cmd: string, args: string[]): Promise<number> {
  const started = performance.now();
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  const seconds = (performance.now() - started) / 1000;
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return seconds;
}

/** Runs a command and returns stdout. */
export async function output(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** True when `cmd` is on PATH. */
export async function have(cmd: string): Promise<boolean> {
  const out = await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
    .output();
  return out.success;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** User + system CPU seconds of processes (all their threads). */
export function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      // Fields after the command name, which may hold spaces: state is field 3.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
    } catch {
      // exited
    }
  }
  return ticks / TICKS_PER_SECOND;
}

/** Resident and peak resident memory of a process, in bytes. */
export function memoryOf(pid: number): { rss: number; peak: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), peak: kb("VmHWM") };
}

/** Creates `path` with `bytes` pseudo-random bytes (unless it exists with that size). */
export async function ensureRandomFile(path: string, bytes: number): Promise<void> {
  const stat = await Deno.stat(path).catch(() => null);
  if (stat?.size === bytes) return;
  await new Deno.Command("sh", {
    args: ["-c", `head -c ${bytes} /dev/urandom > '${path}'`],
  }).output();
}

/** Options for {@linkcode saveResult}. */
export interface SaveResultOptions {
  /**
   * Write `<name>-latest.json` (kept in git, overwritten by the next run)
   * instead of `<name>-<timestamp>.json` (ignored by git).
   * @default false
   */
  latest?: boolean;
}

/** Writes a result file and returns its path. */
export async function saveResult(
  name: string,
  result: unknown,
  options: SaveResultOptions = {},
): Promise<string> {
  await Deno.mkdir(`${ROOT}/bench/results`, { recursive: true });
  const stamp = options.latest ? "latest" : new Date().toISOString().replace(/[:.]/g, "-");
  const path = `${ROOT}/bench/results/${name}-${stamp}.json`;
  await Deno.writeTextFile(path, JSON.stringify(result, null, 2) + "\n");
  return path;
}

/** Formats a markdown table. */
export function table(rows: (string | number)[][]): string {
  const text = rows.map((r) => r.map(String));
  const widths = text[0]!.map((_, i) => Math.max(...text.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [
    line(text[0]!),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...text.slice(1).map(line),
  ]
    .join("\n");
}

export const MiB = 1024 * 1024;

/**
 * Writes a synthetic guest-memory file of `bytes` (a multiple of 1 MiB):
 * 1 MiB pieces, 3 of every 10 all zero (left as holes), the rest random
 * and distinct. Returns the bytes in non-zero pieces.
 */
export async function writeMemFile(path: string, bytes: number): Promise<number> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const piece = new Uint8Array(MiB);
    let nonZero = 0;
    for (let i = 0; i < bytes / MiB; i++) {
      if (i % 10 < 3) continue;
      crypto.getRandomValues(piece.subarray(0, 65536));
      for (let at = 65536; at < MiB; at *= 2) piece.copyWithin(at, 0, at);
      piece[0] = i & 0xff;
      piece[1] = (i >> 8) & 0xff;
      await file.seek(i * MiB, Deno.SeekMode.Start);
      await file.write(piece);
      nonZero += MiB;
    }
    await file.truncate(bytes);
    return nonZero;
  } finally {
    file.close();
  }
}
export const GiB = 1024 * MiB;
