/**
 * snapmesh: moves VM snapshots around a serverless fleet. One binary per
 * node: `snapmesh serve` runs the agent; the other commands are its client.
 *
 * @module
 */

import { main } from "./src/cli/mod.ts";

export { main };
export { Agent } from "./src/agent/mod.ts";
export { createApp } from "./src/api/mod.ts";
export { resolveServeConfig } from "./src/config/mod.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
