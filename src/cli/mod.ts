/**
 * The command line: `snapmesh <command>`. {@linkcode main} returns the exit
 * code (0 success, 1 failed operation, 2 bad usage); only `mod.ts` exits.
 *
 * @module
 */

import { ConfigError, envName, SETTINGS } from "../config/mod.ts";
import { VERSION } from "../version.ts";
import { UsageError } from "./args.ts";
import { CommandError, RequestError } from "./client.ts";
import { CLIENT_COMMANDS, type CommandIo, runClientCommand } from "./commands.ts";
import { keygenCommand } from "./keygen.ts";

const encoder = new TextEncoder();

function writeLine(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text + "\n");
  let at = 0;
  while (at < bytes.length) at += stream.writeSync(bytes.subarray(at));
}

/**
 * The environment variables snapmesh reads, and only those: the binary is
 * built with `--allow-env=SNAPMESH_*,AWS_*,…`, not access to everything.
 */
export function snapmeshEnv(): Record<string, string | undefined> {
  const names = [
    ...SETTINGS.map((s) => envName(s.flag)),
    "SNAPMESH_CONFIG",
    "SNAPMESH_NODE",
    "SNAPMESH_TOKEN",
    "SNAPMESH_CLUSTER_KEY",
    "SNAPMESH_CA",
  ];
  const env: Record<string, string | undefined> = {};
  for (const name of names) {
    try {
      env[name] = Deno.env.get(name);
    } catch {
      // Not permitted: treat as unset.
    }
  }
  return env;
}

/** Standard streams and the process environment. */
export function processIo(): CommandIo {
  return {
    out: (text) => writeLine(Deno.stdout, text),
    err: (text) => writeLine(Deno.stderr, text),
    env: snapmeshEnv(),
  };
}

/** Top-level help. */
export function mainHelp(): string {
  const commands = Object.entries(CLIENT_COMMANDS).map(([name, c]) =>
    `  ${name.padEnd(8)} ${c.summary}`
  );
  return [
    `snapmesh ${VERSION}: VM snapshots, cached locally, fetched from peers, backed by S3`,
    "",
    "Usage: snapmesh <command> [options]     (snapmesh <command> --help for details)",
    "",
    "Commands:",
    `  ${"serve".padEnd(8)} run the agent`,
    ...commands,
    `  ${
      "keygen".padEnd(8)
    } create a key pair for signed snapshots (--signing-key, --trusted-keys)`,
    "",
    "  --version  print the version",
  ].join("\n");
}

/**
 * The `--json` error object of a failure: the node's own error object when
 * it sent one, else `{code, message}`; `extra` fields are merged in.
 */
export function errorObject(err: unknown, code: string): { error: Record<string, unknown> } {
  const message = (err as Error)?.message ?? String(err);
  if (err instanceof CommandError) {
    const own = err instanceof RequestError && err.body ? err.body : {};
    return { error: { ...own, code: err.code, message, ...err.extra } };
  }
  return { error: { code, message } };
}

/** Runs the CLI and returns its exit code. */
export async function main(args: string[], io: CommandIo = processIo()): Promise<number> {
  const [command, ...rest] = args;
  // Under --json, a failure is one JSON error object on stderr (stdout keeps
  // only results), whatever failed: a usage error or the operation.
  const end = rest.indexOf("--");
  const jsonErrors = command !== undefined && Object.hasOwn(CLIENT_COMMANDS, command) &&
    (end < 0 ? rest : rest.slice(0, end)).includes("--json");
  try {
    if (command === "--version" || command === "-V" || command === "version") {
      io.out(`snapmesh ${VERSION}`);
      return 0;
    }
    if (command === "--help" || command === "-h" || command === "help") {
      io.out(mainHelp());
      return 0;
    }
    if (command === undefined) {
      io.err(mainHelp());
      return 2;
    }
    if (command === "serve") {
      // Loaded only here: client commands start without the agent and the S3 SDK.
      const { serveCommand } = await import("./serve_command.ts");
      return await serveCommand(rest, io);
    }
    if (command === "keygen") return await keygenCommand(rest, io);
    if (Object.hasOwn(CLIENT_COMMANDS, command)) return await runClientCommand(command, rest, io);
    throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  } catch (err) {
    if (err instanceof UsageError || err instanceof ConfigError) {
      const hint = command && command !== "--help" &&
          (command === "serve" || command === "keygen" || Object.hasOwn(CLIENT_COMMANDS, command))
        ? `snapmesh ${command} --help`
        : "snapmesh --help";
      if (jsonErrors) {
        const object = errorObject(err, "invalid_usage");
        object.error.message = `${err.message} (run '${hint}' for usage)`;
        io.err(JSON.stringify(object));
        return 2;
      }
      io.err(`snapmesh: ${err.message}`);
      io.err(`Run '${hint}' for usage.`);
      return 2;
    }
    if (jsonErrors) {
      io.err(JSON.stringify(errorObject(err, "failed")));
      return 1;
    }
    io.err(`snapmesh: ${(err as Error).message ?? String(err)}`);
    if (err instanceof CommandError) { for (const note of err.notes) io.err(`snapmesh: ${note}`); }
    return 1;
  }
}
