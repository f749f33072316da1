/**
 * End-to-end harness: runs the agent as a separate process exactly as users
 * do (`deno run` with the permission flags of `deno task start`, or the
 * compiled binary named by SNAPMESH_TEST_BIN), reads its listen line, and
 * always kills and drains it.
 *
 * @module
 */

import { serveFlags } from "../../scripts/flags.ts";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/** Permission flags of `deno task start`, the single source of truth. */
export function agentPermissionFlags(): string[] {
  return serveFlags();
}

/** The command that runs snapmesh: [executable, ...leading args]. */
export function snapmeshCommand(): [string, string[]] {
  const bin = Deno.env.get("SNAPMESH_TEST_BIN");
  if (bin) return [bin, []];
  return [Deno.execPath(), ["run", ...agentPermissionFlags(), `${ROOT}/mod.ts`]];
}

/** Options for {@linkcode startAgent}. */
export interface StartAgentOptions {
  dataDir: string;
  /** Run this instead of {@linkcode snapmeshCommand} (for example a compiled binary). */
  command?: [string, string[]];
  /** Extra `serve` flags. */
  args?: string[];
  env?: Record<string, string>;
  /** Wait for /readyz. @default true */
  waitReady?: boolean;
  /** Token for readiness probing of /v1. */
  token?: string;
  /** HTTP client for an https agent (its CA) while waiting for readiness. */
  client?: Deno.HttpClient;
}

/** A running agent process. */
export interface AgentProcess extends AsyncDisposable {
  url: string;
  dataDir: string;
  pid: number;
  /** Everything the agent wrote to stderr so far. */
  logs(): string;
  /** SIGKILL and wait. */
  kill(): Promise<Deno.CommandStatus>;
  /** SIGTERM and wait for a graceful exit. */
  stop(): Promise<Deno.CommandStatus>;
  status: Promise<Deno.CommandStatus>;
}

/** Output of a finished process. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs snapmesh to completion (for CLI tests and startup failures). */
export async function runSnapmesh(
  args: string[],
  options: {
    env?: Record<string, string>;
    stdin?: Uint8Array;
    cwd?: string;
    command?: [string, string[]];
  } = {},
): Promise<RunResult> {
  const [exe, lead] = options.command ?? snapmeshCommand();
  const child = new Deno.Command(exe, {
    args: [...lead, ...args],
    env: options.env ?? {},
    cwd: options.cwd ?? ROOT,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(options.stdin);
    await writer.close();
  }
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Starts an agent on 127.0.0.1:0 and waits for its listen line (and readiness). */
export async function startAgent(options: StartAgentOptions): Promise<AgentProcess> {
  const [exe, lead] = options.command ?? snapmeshCommand();
  const child = new Deno.Command(exe, {
    args: [
      ...lead,
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      options.dataDir,
      ...(options.args ?? []),
    ],
    env: { SNAPMESH_LOG_LEVEL: "debug", ...options.env },
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  let stderr = "";
  const decoder = new TextDecoder();
  const stderrDone = (async () => {
    for await (const chunk of child.stderr) stderr += decoder.decode(chunk, { stream: true });
  })();
  const status = child.status;

  let url: string;
  try {
    url = await readListenLine(child.stdout, status, () => stderr);
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await status;
    await stderrDone;
    throw err;
  }

  let finished = false;
  const finish = async (signal: Deno.Signal) => {
    if (!finished) {
      finished = true;
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
    }
    const result = await status;
    await stderrDone;
    return result;
  };

  const agent: AgentProcess = {
    url,
    dataDir: options.dataDir,
    pid: child.pid,
    logs: () => stderr,
    kill: () => finish("SIGKILL"),
    stop: () => finish("SIGTERM"),
    status,
    async [Symbol.asyncDispose]() {
      await finish("SIGKILL");
    },
  };
  if (options.waitReady ?? true) {
    try {
      await waitReady(url, 30_000, options.client);
    } catch (err) {
      await agent.kill();
      throw new Error(`${(err as Error).message}\n--- agent stderr ---\n${stderr}`);
    }
  }
  return agent;
}

async function readListenLine(
  stdout: ReadableStream<Uint8Array>,
  status: Promise<Deno.CommandStatus>,
  logs: () => string,
): Promise<string> {
  const reader = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const deadline = Date.now() + 30_000;
  let exited = false;
  status.then(() => (exited = true));
  let pending: Promise<ReadableStreamReadResult<string>> | null = null;
  while (Date.now() < deadline) {
    // Keep one read in flight across timeouts: a dropped read would lose its data.
    pending ??= reader.read();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((r) => (timer = setTimeout(() => r(null), 1000)));
    const next = await Promise.race([pending, timeout]);
    clearTimeout(timer);
    if (next === null) {
      if (exited) break;
      continue;
    }
    pending = null;
    if (next.done) break;
    buffer += next.value;
    const match = /snapmesh listening on (https?:\/\/\S+)/.exec(buffer);
    if (match) {
      // Keep draining stdout so the agent never blocks on a full pipe.
      (async () => {
        try {
          while (!(await reader.read()).done) { /* drain */ }
        } catch {
          // Process gone.
        }
      })();
      return match[1]!;
    }
  }
  throw new Error(
    `The agent did not print its listen line.\n--- stdout ---\n${buffer}\n--- stderr ---\n${logs()}`,
  );
}

/** Polls /readyz until it answers 200. */
export async function waitReady(
  url: string,
  timeoutMs = 30_000,
  client?: Deno.HttpClient,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${url}/readyz`, client ? { client } : {});
      await response.body?.cancel();
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} did not become ready within ${timeoutMs} ms`);
}

/** Repository root. */
export const REPO_ROOT = ROOT;
