/**
 * `snapmesh serve`: flags → config (with env and file) → agent.
 *
 * @module
 */

import {
  ConfigError,
  describeConfig,
  envName,
  resolveServeConfig,
  type ServeConfig,
  SETTINGS,
} from "../config/mod.ts";
import { runServe } from "../serve.ts";
import { type OptionSpec, parseCommandArgs, stringOption, UsageError } from "./args.ts";
import type { CommandIo } from "./commands.ts";

/** Help text of `snapmesh serve`. */
export function serveHelp(): string {
  const lines = SETTINGS.map((s) => {
    const flag = s.kind === "bool"
      ? `--${s.flag}`
      : `--${s.flag} ${s.kind === "size" ? "BYTES" : "VALUE"}`;
    return `  ${flag.padEnd(30)} ${s.help} (default ${s.defaultText}; env ${envName(s.flag)})`;
  });
  return [
    "snapmesh serve [options]",
    "",
    "Run the agent. Settings come from flags, then SNAPMESH_* environment variables,",
    "then the JSON file given by --config (keys are the flag names); flags win.",
    "",
    "Options:",
    `  ${"--config PATH".padEnd(30)} JSON config file (env SNAPMESH_CONFIG)`,
    `  ${"--print-config".padEnd(30)} print the effective config (secrets redacted) and exit`,
    ...lines,
    "  -h, --help                     show this help",
  ].join("\n");
}

/** Parses serve arguments into a resolved config (pure apart from reading the config file). */
export async function loadServeConfig(
  argv: string[],
  io: CommandIo,
): Promise<{ config: ServeConfig; printConfig: boolean } | "help"> {
  const options: Record<string, OptionSpec> = {
    config: { type: "string" },
    "print-config": { type: "boolean" },
  };
  for (const s of SETTINGS) options[s.flag] = { type: s.kind === "bool" ? "boolean" : "string" };
  const args = parseCommandArgs(argv, options);
  if (args.values.help) return "help";
  if (args.positionals.length > 0) {
    throw new UsageError(`unexpected argument ${JSON.stringify(args.positionals[0])}`);
  }
  const flags: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    if (args.values[s.flag] !== undefined) flags[s.flag] = args.values[s.flag];
  }
  const configPath = stringOption(args, "config") ?? io.env.SNAPMESH_CONFIG;
  let file: unknown = null;
  if (configPath !== undefined && configPath !== "") {
    let text: string;
    try {
      text = await Deno.readTextFile(configPath);
    } catch (err) {
      throw new ConfigError(`Cannot read config file ${configPath}: ${(err as Error).message}`);
    }
    try {
      file = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(`Config file ${configPath} is not JSON: ${(err as Error).message}`);
    }
  }
  const config = resolveServeConfig({
    flags,
    env: io.env,
    file,
    cwd: Deno.cwd(),
    hostname: safeHostname(),
  });
  return { config, printConfig: args.values["print-config"] === true };
}

/** Runs `snapmesh serve`. */
export async function serveCommand(argv: string[], io: CommandIo): Promise<number> {
  const loaded = await loadServeConfig(argv, io);
  if (loaded === "help") {
    io.out(serveHelp());
    return 0;
  }
  if (loaded.printConfig) {
    io.out(JSON.stringify(describeConfig(loaded.config), null, 2));
    return 0;
  }
  return await runServe(loaded.config);
}

function safeHostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "snapmesh";
  }
}
