/**
 * `snapmesh serve`: flags → config (with env and file) → agent.
 *
 * @module
 */

import {
  ConfigError,
  configTemplate,
  describeConfig,
  envName,
  loadSecretFiles,
  resolveServeConfig,
  type ServeConfig,
  SETTINGS,
} from "../config/mod.ts";
import { parse as parseJsonc, type ParseError, printParseErrorCode } from "jsonc-parser";
import { runServe } from "../serve.ts";
import { type OptionSpec, parseCommandArgs, stringOption, UsageError } from "./args.ts";
import type { CommandIo } from "./_command.ts";

/** What `--help` shows after a flag, by kind of value. */
const PLACEHOLDER: Record<string, string> = { size: "BYTES", ms: "DURATION", count: "N" };

/** Help text of `snapmesh serve`. */
export function serveHelp(): string {
  const lines = SETTINGS.map((s) => {
    const flag = s.kind === "bool"
      ? `--${s.flag}`
      : `--${s.flag} ${PLACEHOLDER[s.kind] ?? "VALUE"}`;
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
    `  ${"--print-config".padEnd(30)} print the effective config (secrets shown as [set]) and exit`,
    `  ${"--config-template".padEnd(30)} print a commented config file (settings given as flags`,
    `  ${"".padEnd(30)} become keys; tokens never do) and exit`,
    ...lines,
    "  -h, --help                     show this help",
  ].join("\n");
}

/** Parses serve arguments into a resolved config (pure apart from reading the config file). */
export async function loadServeConfig(
  argv: string[],
  io: CommandIo,
): Promise<
  { config: ServeConfig; printConfig: boolean; warnings: string[] } | { template: string } | "help"
> {
  const options: Record<string, OptionSpec> = {
    config: { type: "string" },
    "print-config": { type: "boolean" },
    "config-template": { type: "boolean" },
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
  if (args.values["config-template"] === true) {
    // Validate what was given, so a template never holds a bad value.
    resolveServeConfig({ flags, env: {}, file: null, cwd: "/", hostname: "snapmesh" });
    return { template: configTemplate(flags) };
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
    file = parseConfigText(text, configPath);
  }
  const resolved = resolveServeConfig({
    flags,
    env: io.env,
    file,
    cwd: Deno.cwd(),
    hostname: safeHostname(),
  });
  const { config, warnings } = await loadSecretFiles(resolved);
  return { config, printConfig: args.values["print-config"] === true, warnings };
}

/** Runs `snapmesh serve`. */
export async function serveCommand(argv: string[], io: CommandIo): Promise<number> {
  const loaded = await loadServeConfig(argv, io);
  if (loaded === "help") {
    io.out(serveHelp());
    return 0;
  }
  if ("template" in loaded) {
    io.out(loaded.template.trimEnd());
    return 0;
  }
  if (loaded.printConfig) {
    for (const warning of loaded.warnings) io.err(`snapmesh: warning: ${warning}`);
    io.out(JSON.stringify(describeConfig(loaded.config), null, 2));
    return 0;
  }
  // Bounded: 10 s for open requests, 5 s for uploads, then the checkpoint.
  return await runServe(loaded.config, { hardExitMs: 30_000, warnings: loaded.warnings });
}

/**
 * Parses a config file: JSON, with `//` and `/* *\/` comments and trailing
 * commas allowed (the installed file explains every key in comments).
 */
export function parseConfigText(text: string, path: string): unknown {
  const errors: ParseError[] = [];
  const value = parseJsonc(text, errors, { allowTrailingComma: true, disallowComments: false });
  const first = errors[0];
  if (first) {
    const before = text.slice(0, first.offset);
    const line = before.split("\n").length;
    const column = first.offset - before.lastIndexOf("\n");
    throw new ConfigError(
      `Config file ${path} is not valid JSON at line ${line}, column ${column}: ` +
        `${printParseErrorCode(first.error)} (comments and trailing commas are allowed)`,
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(`Config file ${path} must hold a JSON object of settings`);
  }
  return value;
}

function safeHostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "snapmesh";
  }
}
