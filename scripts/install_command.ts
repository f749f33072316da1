/**
 * `deno task install [--root DIR]`: puts a `snapmesh` command on this
 * machine with `deno install --global --force --name snapmesh`, running this
 * checkout's mod.ts with exactly the permission flags of `deno task start`
 * (scripts/flags.ts). It runs where the user stands, so relative paths
 * (`snapmesh put fn-a ./mem`, `--data-dir ./x`, `get … -o out`) mean what
 * they say.
 *
 * The root is `--root DIR`, else DENO_INSTALL_ROOT, else ~/.deno (as for
 * `deno install` itself); the command lands in `<root>/bin`. It prints where
 * it went and how to put that directory on the PATH.
 *
 * (This installs a command for a user of a checkout; scripts/install.sh
 * installs the agent as a system service.)
 *
 * @module
 */

import { ROOT, serveFlags } from "./flags.ts";

/** The `deno` arguments that install the command (under `root`, when given). */
export function installArgs(root?: string): string[] {
  return [
    "install",
    "--global",
    "--force",
    "--name",
    "snapmesh",
    // The import map lives in deno.json; a global install ignores it unless named.
    "--config",
    `${ROOT}/deno.json`,
    ...(root === undefined ? [] : ["--root", root]),
    ...serveFlags(),
    `${ROOT}/mod.ts`,
  ];
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** Parses `[--root DIR]`; anything else is a usage error (null). */
function parseArgs(args: string[]): { root?: string } | null {
  if (args.length === 0) return {};
  if (args.length === 2 && args[0] === "--root" && args[1]) return { root: args[1] };
  if (args.length === 1 && args[0]!.startsWith("--root=") && args[0]!.length > 7) {
    return { root: args[0]!.slice(7) };
  }
  return null;
}

/** Installs the command; returns the exit code. */
export async function install(args: string[]): Promise<number> {
  const parsed = parseArgs(args);
  if (parsed === null) {
    console.error(
      "usage: deno task install [--root DIR]   (default: $DENO_INSTALL_ROOT or ~/.deno)",
    );
    return 2;
  }
  const home = env("HOME");
  const root = parsed.root ?? env("DENO_INSTALL_ROOT") ?? (home ? `${home}/.deno` : undefined);
  if (root === undefined) {
    console.error("install: HOME is not set: give the root with --root DIR");
    return 2;
  }
  const absoluteRoot = root.startsWith("/") ? root : `${Deno.cwd()}/${root}`;
  const result = await new Deno.Command(Deno.execPath(), {
    args: installArgs(absoluteRoot),
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!result.success) {
    console.error(`install: deno install failed (exit code ${result.code}); see above`);
    return 1;
  }
  const bin = `${absoluteRoot}/bin`;
  const command = `${bin}/snapmesh${Deno.build.os === "windows" ? ".cmd" : ""}`;
  try {
    await Deno.stat(command);
  } catch {
    console.error(`install: deno install succeeded but ${command} is not there`);
    return 1;
  }
  const onPath = (env("PATH") ?? "").split(":").includes(bin);
  console.log(
    [
      "",
      `installed snapmesh: ${command}`,
      `  it runs ${ROOT}/mod.ts with: ${serveFlags().join(" ")}`,
      "  (keep this checkout where it is; after changing deno.json, run deno task install again)",
      onPath
        ? `  ${bin} is on your PATH: try 'snapmesh --help'`
        : `  ${bin} is not on your PATH; add it (for example in ~/.profile or ~/.bashrc):\n` +
          `    export PATH="${bin}:$PATH"`,
    ].join("\n"),
  );
  return 0;
}

if (import.meta.main) Deno.exit(await install(Deno.args));
