/**
 * `deno task demo` as users run it: a subprocess that starts s3rver and
 * three agents, publishes and pulls, prints a table, and leaves nothing
 * behind, whether it finishes or is interrupted.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { REPO_ROOT } from "../helpers/agent_process.ts";
import { parseSize } from "../../src/config/size.ts";

const DEMO = `${REPO_ROOT}/scripts/demo.ts`;
/** Far more than the demo needs (about 10 s); a hung demo is killed (and cleans up) after it. */
const TIMEOUT_MS = 120_000;

/** What the demo printed about itself. */
interface DemoOutput {
  work: string;
  /** Label ("s3rver", "agent a", …) to pid. */
  pids: Map<string, number>;
  rows: Record<string, string>[];
}

function parseOutput(stdout: string): DemoOutput {
  const work = /work dir (\S+)/.exec(stdout)?.[1];
  assert(work, `no work dir in the output:\n${stdout}`);
  const pids = new Map<string, number>();
  for (const match of stdout.matchAll(/^(s3rver|agent [abc]): pid (\d+) /gm)) {
    pids.set(match[1]!, Number(match[2]));
  }
  const lines = stdout.split("\n").filter((line) => line.startsWith("|"));
  const cells = (line: string) => line.split("|").slice(1, -1).map((cell) => cell.trim());
  const rows: Record<string, string>[] = [];
  if (lines.length > 0) {
    const header = cells(lines[0]!);
    for (const line of lines.slice(2)) {
      const values = cells(line);
      rows.push(Object.fromEntries(header.map((key, i) => [key, values[i] ?? ""])));
    }
  }
  return { work, pids, rows };
}

/** Processes whose command line mentions `needle` (Linux /proc). */
async function processesMentioning(needle: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name) || Number(entry.name) === Deno.pid) continue;
    const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`).catch(() => "");
    if (cmdline.includes(needle)) found.push(`${entry.name}: ${cmdline.replaceAll("\0", " ")}`);
  }
  return found;
}

/** True while `pid` is still one of the processes the demo started (not a reused pid). */
async function stillRunning(pid: number, work: string): Promise<boolean> {
  const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => null);
  return cmdline !== null && (cmdline.includes(work) || cmdline.includes("_s3rver.ts"));
}

async function assertNothingLeft(output: DemoOutput, context: string): Promise<void> {
  for (const [label, pid] of output.pids) {
    assert(!(await stillRunning(pid, output.work)), `${label} (pid ${pid}) still runs\n${context}`);
  }
  assertEquals(await processesMentioning(output.work), [], context);
  assertEquals(await Deno.stat(output.work).catch(() => null), null, `work dir left\n${context}`);
}

/** Kills the demo (it then cleans up) if it runs longer than the timeout. */
function deadline(): { signal: AbortSignal; clear(): void } {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}

Deno.test("demo: peer and origin pulls verify, and nothing is left running", async () => {
  const limit = deadline();
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", DEMO, "--size", "16MiB"],
      cwd: REPO_ROOT,
      stdout: "piped",
      stderr: "piped",
      signal: limit.signal,
    }).output();
  } finally {
    limit.clear();
  }
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  const context = `stdout:\n${stdout}\nstderr:\n${stderr}`;
  assertEquals(out.code, 0, context);

  const output = parseOutput(stdout);
  assertEquals(
    [...output.pids.keys()].sort(),
    ["agent a", "agent b", "agent c", "s3rver"],
    context,
  );
  assertEquals(output.rows.length, 6, context);
  const bytes = (row: Record<string, string>, column: string) => parseSize(row[column]!);
  for (const row of output.rows) assertMatch(row.verify!, /^ok/, context);

  const peerPulls = output.rows.filter((r) => /^pull demo-peers-\d+$/.test(r.step!));
  assertEquals(peerPulls.map((r) => r.node), ["b", "c"], context);
  for (const row of peerPulls) {
    assert(bytes(row, "peer") > 0, `peer bytes on ${row.node}\n${context}`);
    assertEquals(bytes(row, "origin"), 0, `origin bytes on ${row.node}\n${context}`);
    assertEquals(bytes(row, "origin sent"), 0, `the origin sent bytes\n${context}`);
  }
  const again = output.rows.find((r) => /^pull demo-peers-\d+ \(again\)$/.test(r.step!));
  assert(again && bytes(again, "local") > 0 && bytes(again, "peer") === 0, context);

  const originPull = output.rows.find((r) => /^pull demo-origin-\d+$/.test(r.step!));
  assert(originPull, context);
  assertEquals(originPull.node, "b", context);
  assert(bytes(originPull, "origin") > 0, `origin bytes\n${context}`);
  assertEquals(bytes(originPull, "peer"), 0, context);
  assert(bytes(originPull, "origin sent") >= bytes(originPull, "origin"), context);

  await assertNothingLeft(output, context);
});

Deno.test("demo: SIGINT while the cluster is up stops everything", async () => {
  const limit = deadline();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", DEMO, "--size", "16MiB"],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
    signal: limit.signal,
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let stdout = "";
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    while (!stdout.includes("cluster up")) {
      const { done, value } = await reader.read();
      if (done) break;
      stdout += value;
    }
    child.kill("SIGINT");
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      stdout += value;
    }
  } catch (err) {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    throw err;
  } finally {
    await child.status;
    limit.clear();
  }
  const status = await child.status;
  const context = `stdout:\n${stdout}\nstderr:\n${await stderr}`;
  assert(stdout.includes("cluster up"), context);
  assertEquals(status.code, 130, context);
  assertMatch(await stderr, /interrupted by SIGINT/, context);
  const output = parseOutput(stdout);
  assertEquals(output.pids.size, 4, context);
  await assertNothingLeft(output, context);
});
