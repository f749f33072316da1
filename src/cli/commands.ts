/**
 * Client subcommands: put, get, pull, ls, rm, pin, unpin, status, peers, verify, restore.
 * Each lives in its own module; this one names them and runs one.
 *
 * @module
 */

import type { ClientCommand, CommandIo } from "./_command.ts";
import { flagOption, type OptionSpec, parseCommandArgs, stringOption, UsageError } from "./args.ts";
import { CommandError, NodeClient } from "./client.ts";
import { get } from "./get_command.ts";
import { peers, status } from "./node_commands.ts";
import { pull } from "./pull_command.ts";
import { put } from "./put_command.ts";
import { restoreCommand } from "./restore_command.ts";
import { ls, pinCommand, rm, verify } from "./snapshot_commands.ts";

export type { ClientCommand, CommandIo } from "./_command.ts";

const COMMON: Record<string, OptionSpec> = {
  node: { type: "string" },
  token: { type: "string" },
  ca: { type: "string" },
  json: { type: "boolean" },
};

const COMMON_HELP = `Common options:
  --node URL     node to talk to (env SNAPMESH_NODE, default http://127.0.0.1:7070)
  --token T      bearer token (env SNAPMESH_TOKEN; a read token reads and pulls only)
  --ca FILE      PEM CA to verify an https node against (env SNAPMESH_CA)
  --json         print machine-readable JSON
  -h, --help     show this help`;

/** The client commands, by name. */
export const CLIENT_COMMANDS: Record<string, ClientCommand> = {
  put,
  get,
  pull,
  ls,
  rm,
  pin: pinCommand(true),
  unpin: pinCommand(false),
  status,
  peers,
  verify,
  restore: restoreCommand,
};

/** Runs a client command; throws {@linkcode UsageError} on bad usage. */
export async function runClientCommand(
  name: string,
  argv: string[],
  io: CommandIo,
): Promise<number> {
  const command = CLIENT_COMMANDS[name]!;
  const args = parseCommandArgs(argv, { ...COMMON, ...command.options });
  if (flagOption(args, "help")) {
    io.out(`${command.usage}\n\n${command.summary}\n\n${COMMON_HELP}`);
    return 0;
  }
  const node = stringOption(args, "node") ?? io.env.SNAPMESH_NODE ?? "http://127.0.0.1:7070";
  try {
    new URL(node);
  } catch {
    throw new UsageError(`--node expects a URL, got ${JSON.stringify(node)}`);
  }
  const token = stringOption(args, "token") ?? io.env.SNAPMESH_TOKEN;
  const caFile = stringOption(args, "ca") ?? io.env.SNAPMESH_CA;
  let ca: string | undefined;
  if (caFile !== undefined && caFile !== "") {
    try {
      ca = await Deno.readTextFile(caFile);
    } catch (err) {
      throw new CommandError(
        "bad_ca",
        `Cannot read the CA file ${caFile}: ${(err as Error).message}`,
      );
    }
  }
  const client = new NodeClient({
    node,
    ...(token === undefined ? {} : { token }),
    ...(ca === undefined ? {} : { ca }),
  });
  return await command.run(args, client, io);
}
