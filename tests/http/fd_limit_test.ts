/**
 * raiseFdLimit() in a child process started with a low soft limit, with and
 * without the FFI permission.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { tempDir } from "../helpers/temp.ts";

const MODULE = new URL("../../src/http/fd_limit.ts", import.meta.url).href;

async function runWithSoftLimit(soft: number, permissions: string[]): Promise<unknown> {
  await using tmp = await tempDir();
  const script = `${tmp.path}/probe.ts`;
  await Deno.writeTextFile(
    script,
    `import { raiseFdLimit } from ${JSON.stringify(MODULE)};\n` +
      `console.log(JSON.stringify(raiseFdLimit()));\n`,
  );
  const out = await new Deno.Command("sh", {
    args: [
      "-c",
      `ulimit -S -n ${soft} && exec "$0" run --no-prompt --no-lock ${permissions.join(" ")} "$1"`,
      Deno.execPath(),
      script,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, stderr);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("raiseFdLimit() raises the soft open file limit to the hard one", async () => {
  const limits = await runWithSoftLimit(256, ["--allow-ffi", "--allow-read"]) as {
    soft: number;
    hard: number;
  };
  assert(limits !== null, "limits were read");
  assertEquals(limits.soft, limits.hard);
  assert(limits.soft >= 256, JSON.stringify(limits));
});

Deno.test("raiseFdLimit() without the FFI permission returns null and does not throw", async () => {
  assertEquals(await runWithSoftLimit(256, ["--allow-read"]), null);
});
