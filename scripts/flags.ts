/**
 * The permission flags snapmesh runs with, in one place: the `start` task in
 * deno.json. The compiled binary, the tests' agents, the benchmarks and the
 * command `deno task install` puts on the PATH all use exactly these, so a
 * missing permission fails a test either way. The `snapmesh` task repeats
 * them (a task cannot refer to another's flags); a test keeps the two equal.
 *
 * Measured (by running the origin path with each narrower set): the AWS SDK
 * reads AWS_* variables, HOME, USERPROFILE, HOMEPATH and HOMEDRIVE (it looks
 * for ~/.aws through all four), _X_AMZN_TRACE_ID,
 * and the OS release (its user agent); snapmesh itself reads SNAPMESH_*
 * variables and the hostname (the default node id), and calls libc's
 * getrlimit/setrlimit over FFI to raise its open file limit (src/http/fd_limit.ts;
 * without --allow-ffi it runs on with the limit it has). Network, read and
 * write stay open: the data directory, peers and origin are runtime settings.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** The checkout's root directory (decoded: it may hold spaces, # or %). */
const ROOT = fileURLToPath(new URL("../", import.meta.url)).replace(/\/$/, "");

function tasks(): Record<string, string> {
  return JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).tasks;
}

function flagsOf(name: string, task: string, pattern: RegExp): string[] {
  const match = pattern.exec(task);
  if (!match) throw new Error(`Unexpected ${name} task in deno.json: ${task}`);
  return match[1]!.split(/\s+/).map((flag) => flag.replace(/^'(.*)'$/, "$1"));
}

/** The flags between `deno run` and `mod.ts serve` in the start task, unquoted. */
export function serveFlags(): string[] {
  return flagsOf("start", tasks().start!, /^deno run (.*) mod\.ts serve$/);
}

/** The flags the `snapmesh` task runs mod.ts with (they must equal {@linkcode serveFlags}). */
export function snapmeshTaskFlags(): string[] {
  return flagsOf("snapmesh", tasks().snapmesh!, /&& deno run (.*) "\$ROOT\/mod\.ts"$/);
}

/** The version from deno.json. */
export function version(): string {
  return JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).version;
}

export { ROOT };
