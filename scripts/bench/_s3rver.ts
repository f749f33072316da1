/**
 * Runs s3rver in its own process for the benchmarks (so it does not share a
 * process with the client being measured). Prints "s3rver listening on
 * http://127.0.0.1:PORT" and serves until killed.
 *
 * Usage: deno run -A scripts/bench/_s3rver.ts DIR [PORT] [ADDRESS]
 *
 * @module
 */

import S3rver from "s3rver";

const [directory, port = "0", address = "127.0.0.1"] = Deno.args;
if (!directory) {
  console.error("usage: _s3rver.ts DIR [PORT] [ADDRESS]");
  Deno.exit(2);
}
const server = new S3rver({ port: Number(port), address, directory, silent: true });
const listening = await server.run();
console.log(`s3rver listening on http://${address}:${listening.port}`);
Deno.addSignalListener("SIGTERM", async () => {
  await server.close();
  Deno.exit(0);
});
