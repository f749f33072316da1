/**
 * The permission flags snapmesh runs with, in one place: the `start` task in
 * deno.json. The compiled binary, the tests' agents and the benchmarks all
 * use exactly these, so a missing permission fails a test either way.
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

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** The flags between `deno run` and `mod.ts serve` in the start task, unquoted. */
export function serveFlags(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`));
  const start: string = config.tasks.start;
  const match = /^deno run (.*) mod\.ts serve$/.exec(start);
  if (!match) throw new Error(`Unexpected start task in deno.json: ${start}`);
  return match[1]!.split(/\s+/).map((flag) => flag.replace(/^'(.*)'$/, "$1"));
}

/** The version from deno.json. */
export function version(): string {
  return JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).version;
}

export { ROOT };
