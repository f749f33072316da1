/**
 * `deno task bench <name>`: benchmarks that run snapmesh side by side with a
 * reference in the same run and report ratios. Results go to bench/results/.
 *
 * @module
 */

const BENCHES: Record<string, string> = {
  local: "./bench/local.ts",
  ranges: "./bench/ranges.ts",
  restart: "./bench/restart.ts",
  origin: "./bench/origin.ts",
  fleet: "./bench/fleet.ts",
  relay: "./bench/relay.ts",
  upload: "./bench/upload.ts",
  restore: "./bench/restore.ts",
  security: "./bench/security.ts",
};

const [name, ...rest] = Deno.args;
if (name === undefined || !Object.hasOwn(BENCHES, name)) {
  console.error(`usage: deno task bench <${Object.keys(BENCHES).join("|")}> [options]`);
  Deno.exit(2);
}
const bench = await import(BENCHES[name]!);
Deno.exit(await bench.main(rest));
