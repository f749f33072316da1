/**
 * A `snapmesh` command from a checkout: `deno task install` into a temp
 * root, and `deno task snapmesh`, both run from a directory outside the
 * checkout; relative paths resolve from there. Real processes and a real
 * agent.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { runSnapmesh, startAgent } from "../helpers/agent_process.ts";
import { randomBytes, sha256, tempDir } from "../helpers/temp.ts";
import { ROOT, serveFlags, snapmeshTaskFlags } from "../../scripts/flags.ts";

/**
 * The environment of this process without INIT_CWD: `deno task` keeps an
 * INIT_CWD it inherits (as npm does), and this test may itself run under
 * `deno task test`.
 */
function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.INIT_CWD;
  return { ...env, ...extra };
}

async function denoTask(
  cwd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "--config", `${ROOT}/deno.json`, ...args],
    cwd,
    env: cleanEnv(env),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("the snapmesh task runs with exactly the start task's permission flags", () => {
  assertEquals(snapmeshTaskFlags(), serveFlags());
});

Deno.test("deno task install puts a snapmesh command in --root; it works from any directory", async () => {
  await using tmp = await tempDir();
  const root = `${tmp.path}/root`;
  const user = `${tmp.path}/user`;
  await Deno.mkdir(user);
  const installed = await denoTask(user, ["install", "--root", root]);
  assertEquals(installed.code, 0, installed.stderr);
  const command = `${root}/bin/snapmesh`;
  assertMatch(installed.stdout, new RegExp(`installed snapmesh: ${command}`));
  assert(installed.stdout.includes(`export PATH="${root}/bin:$PATH"`), installed.stdout);
  const shim = await Deno.readTextFile(command);
  for (const flag of serveFlags()) assert(shim.includes(flag), `${flag} in\n${shim}`);
  assert(shim.includes(`${ROOT}/mod.ts`), shim);

  const help = await runSnapmesh(["--help"], { command: [command, []], cwd: user });
  assertEquals(help.code, 0, help.stderr);
  assertMatch(help.stdout, /Usage: snapmesh <command>/);

  await using agent = await startAgent({ dataDir: `${tmp.path}/data` });
  const mem = randomBytes(2 * 1024 * 1024 + 7, 9);
  await Deno.writeFile(`${user}/mem`, mem);
  const env = { SNAPMESH_NODE: agent.url };
  const put = await runSnapmesh(["put", "fn-installed", "./mem"], {
    command: [command, []],
    cwd: user,
    env,
  });
  assertEquals(put.code, 0, put.stderr);
  assertMatch(put.stdout, /^committed fn-installed [0-9a-f]{64}/);
  await Deno.mkdir(`${user}/out`);
  const get = await runSnapmesh(["get", "fn-installed", "mem", "-o", "out/mem"], {
    command: [command, []],
    cwd: user,
    env,
  });
  assertEquals(get.code, 0, get.stderr);
  assertEquals(await sha256(await Deno.readFile(`${user}/out/mem`)), await sha256(mem));
});

Deno.test("deno task snapmesh resolves relative paths from where the user stands", async () => {
  await using tmp = await tempDir();
  const user = `${tmp.path}/user`;
  await Deno.mkdir(user);
  await using agent = await startAgent({ dataDir: `${tmp.path}/data` });
  const env = { SNAPMESH_NODE: agent.url };
  const mem = randomBytes(1024 * 1024, 10);
  await Deno.writeFile(`${user}/mem`, mem);
  const name = `fn-task-${crypto.randomUUID().slice(0, 8)}`;
  const out = `got-${name}`;

  const put = await denoTask(user, ["snapmesh", "put", name, "./mem"], env);
  assertEquals(put.code, 0, put.stderr);
  const get = await denoTask(user, ["snapmesh", "get", name, "mem", "-o", out], env);
  assertEquals(get.code, 0, get.stderr);
  assertEquals(await sha256(await Deno.readFile(`${user}/${out}`)), await sha256(mem));
  assert(!(await exists(`${ROOT}/${out}`)), "nothing written into the checkout");

  const config = await denoTask(user, ["snapmesh", "serve", "--data-dir", "./x", "--print-config"]);
  assertEquals(config.code, 0, config.stderr);
  assertEquals(JSON.parse(config.stdout)["data-dir"], `${user}/x`);
});
