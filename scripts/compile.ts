/**
 * `deno task compile`: builds dist/snapmesh with `deno compile` and exactly
 * the permission flags of `deno task start` (see scripts/flags.ts).
 *
 * `deno compile` needs Deno's runtime, `denort`, for this platform: it
 * downloads it, or uses the file named by DENORT_BIN. When neither works this
 * fails with a message that says what is missing and how to provide it.
 *
 * @module
 */

import { ROOT, serveFlags, version } from "./flags.ts";

/** Where `deno task compile` puts the binary. */
export const DEFAULT_OUT = `${ROOT}/dist/snapmesh`;
const target = `${Deno.build.arch}-unknown-linux-gnu`;
const denortUrl = `https://dl.deno.land/release/v${Deno.version.deno}/denort-${target}.zip`;

/** Builds the binary at `out` (tests build theirs outside the checkout); returns an exit code. */
export async function compile(output: string = DEFAULT_OUT): Promise<number> {
  const dir = output.slice(0, output.lastIndexOf("/"));
  await Deno.mkdir(dir, { recursive: true });
  const denort = Deno.env.get("DENORT_BIN");
  console.error(
    `compile: ${output} with ${serveFlags().join(" ")}` + (denort ? ` (DENORT_BIN=${denort})` : ""),
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["compile", ...serveFlags(), "--output", output, `${ROOT}/mod.ts`],
    cwd: ROOT,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) {
    await Deno.stderr.write(out.stderr);
    // deno compile leaves its temp file behind when it dies.
    const base = output.slice(dir.length + 1);
    for await (const entry of Deno.readDir(dir)) {
      if (entry.name.startsWith(`${base}.tmp-`)) await Deno.remove(`${dir}/${entry.name}`);
    }
    if (denort && !/dl\.deno\.land/.test(stderr)) {
      console.error(
        `\ncompile: deno compile failed with DENORT_BIN=${denort}. It must name Deno's standalone ` +
          `runtime (denort ${Deno.version.deno} for ${target}), not the deno CLI.`,
      );
      return 1;
    }
    if (/denort|dl\.deno\.land|Setting up base binary/i.test(stderr)) {
      console.error(
        `\ncompile: Deno ${Deno.version.deno} could not get its runtime (denort) for ${target}.\n` +
          (denort
            ? `  DENORT_BIN=${denort} could not be used.\n`
            : `  It downloads ${denortUrl}, which this machine cannot reach.\n`) +
          `  Fetch that zip where you can, unzip it here, and run:\n` +
          `    DENORT_BIN=/path/to/denort deno task compile\n` +
          `  (denort must match this Deno exactly: ${Deno.version.deno}, ${target}.)`,
      );
    }
    return 1;
  }
  // A binary that does not answer --version (for example one built on a full
  // deno binary given as DENORT_BIN, which starts a REPL) is no binary.
  const check = await new Deno.Command(output, {
    args: ["--version"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(15_000),
  }).output().catch(() => null);
  const answer = check ? new TextDecoder().decode(check.stdout).trim() : "";
  if (!check?.success || answer !== `snapmesh ${version()}`) {
    await Deno.remove(output).catch(() => {});
    console.error(
      `compile: the built binary does not run as snapmesh (it answered ${
        JSON.stringify(answer.slice(0, 60))
      }).\n` +
        `  DENORT_BIN must name Deno's standalone runtime (denort ${Deno.version.deno} for ${target}), ` +
        `not the deno CLI.`,
    );
    return 1;
  }
  console.error(`compile: ${output} (${answer})`);
  return 0;
}

if (import.meta.main) Deno.exit(await compile());
