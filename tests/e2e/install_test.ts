/**
 * scripts/install.sh, run for real into a temp directory with `--root`.
 *
 * No binary can be built here (Deno's runtime download is blocked), so the
 * main case installs `--from-source` and runs the installed wrapper; a fake
 * executable covers the `--binary` path (and SNAPMESH_TEST_BIN, when it names
 * a compiled snapmesh, covers it for real).
 *
 * Under `--root` the script creates no user and chowns nothing (a package's
 * post-install step does that on the target), so ownership is not checked
 * here: only modes. systemctl is never called. The installed wrapper finds
 * /opt/snapmesh relative to its own path, so the tree runs in place.
 *
 * Dependencies: SNAPMESH_DENO_DIR points install.sh and the wrapper at a
 * private Deno dir whose npm/ is the local cache's, so nothing is downloaded
 * and the local cache gains no entries for temp paths.
 *
 * Also covered: the random SNAPMESH_TOKEN of a new env file (kept on upgrade,
 * never printed); an upgrade is refused, with nothing changed, when the new
 * snapmesh rejects the config in place; snapmesh.previous; a data directory
 * at /var/cache/snapmesh survives --uninstall; --purge removes the drop-ins;
 * paths with a space, # or % in the checkout and the root.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { startAgent } from "../helpers/agent_process.ts";
import { tempDir } from "../helpers/temp.ts";
import { serveFlags, version } from "../../scripts/flags.ts";
import { parse as parseJsonc, type ParseError } from "jsonc-parser";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const INSTALL = `${ROOT}/scripts/install.sh`;

const BIN = "/usr/local/bin/snapmesh";
const CONFIG = "/etc/snapmesh/config.json";
const ENV_FILE = "/etc/snapmesh/env";
const DATA_DIR = "/var/lib/snapmesh";
const UNIT = "/etc/systemd/system/snapmesh.service";
const APP_DIR = "/opt/snapmesh";
const CACHE_DIR = "/var/cache/snapmesh";
const PREVIOUS = `${BIN}.previous`;
const DROPIN_DIR = `${UNIT}.d`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(exe: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const out = await new Deno.Command(exe, {
    args,
    env,
    cwd: "/",
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Runs the install.sh `script` and fails with its output unless it exits `code`. */
async function installWith(
  script: string,
  args: string[],
  env: Record<string, string> = {},
  code = 0,
): Promise<Run> {
  const result = await run(script, args, env);
  assertEquals(
    result.code,
    code,
    `install.sh ${args.join(" ")} exited ${result.code}\n${result.stdout}${result.stderr}`,
  );
  return result;
}

/** Runs this repository's install.sh (see installWith). */
function install(args: string[], env: Record<string, string> = {}, code = 0): Promise<Run> {
  return installWith(INSTALL, args, env, code);
}

/** The token of an env file's active SNAPMESH_TOKEN line; fails without one. */
function tokenOf(envText: string): string {
  const match = /^SNAPMESH_TOKEN=(.*)$/m.exec(envText);
  assert(match, `no active SNAPMESH_TOKEN line:\n${envText}`);
  return match[1]!;
}

/** Fails if install.sh showed the token. */
function assertTokenHidden(result: Run, token: string): void {
  assert(!(result.stdout + result.stderr).includes(token), "install.sh printed the token");
}

async function dirNames(path: string): Promise<string[]> {
  const names = [];
  for await (const entry of Deno.readDir(path)) names.push(entry.name);
  return names.sort();
}

/** A Deno dir of its own that shares the local npm (and remote) module cache. */
async function sharedDenoDir(path: string): Promise<string> {
  const info = await run(Deno.execPath(), ["info", "--json"]);
  assertEquals(info.code, 0, info.stderr);
  const { npmCache, modulesCache } = JSON.parse(info.stdout);
  await Deno.mkdir(path);
  for (const [name, target] of [["npm", npmCache], ["remote", modulesCache]]) {
    if (await exists(target)) await Deno.symlink(target, `${path}/${name}`);
  }
  return path;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

async function mode(path: string): Promise<string> {
  const info = await Deno.stat(path);
  return (info.mode! & 0o7777).toString(8).padStart(4, "0");
}

function parseConfig(text: string): Record<string, unknown> {
  const errors: ParseError[] = [];
  const value = parseJsonc(text, errors, { allowTrailingComma: true });
  assertEquals(errors, [], "the installed config does not parse");
  return value;
}

/** A word for a unit's command line: quoted, with \\, ", % and $ escaped. */
function systemdWord(word: string): string {
  const escaped = word.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/%/g, "%%")
    .replace(/\$/g, "$$$$");
  return `"${escaped}"`;
}

/**
 * `systemd-analyze verify` on a copy of the unit whose ExecStart names the
 * binary inside `root` (verify insists that it exists). Returns false when
 * systemd-analyze is missing.
 */
async function verifyUnit(root: string, scratch: string): Promise<boolean> {
  const unit = await Deno.readTextFile(`${root}${UNIT}`);
  await Deno.mkdir(scratch);
  const copy = `${scratch}/snapmesh.service`;
  const execStart = `ExecStart=${BIN} `;
  assert(unit.includes(execStart), unit);
  await Deno.writeTextFile(
    copy,
    unit.replace(execStart, `ExecStart=${systemdWord(`${root}${BIN}`)} `),
  );
  let result: Run;
  try {
    result = await run("systemd-analyze", ["verify", copy]);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    console.log("systemd-analyze is not installed: skipping the unit verification");
    return false;
  }
  const output = result.stdout + result.stderr;
  assertEquals(result.code, 0, output);
  // verify exits 0 on unknown keys and bad values; it names the unit then.
  assert(!output.includes("snapmesh.service"), output);
  return true;
}

/**
 * Stands in for a compiled snapmesh: answers what install.sh asks. Before an
 * upgrade install.sh runs `serve --config FILE --print-config` with the env
 * file's variables and nothing of its own environment: the fake fails that
 * (exit 2, like a bad config) when `printConfigExit` says so, when
 * SNAPMESH_TOKEN did not come through, or when the caller's SNAPMESH_LISTEN
 * leaked in. It prints the token on stdout, which install.sh must never show.
 */
const FAKE_BINARY = (release: string, printConfigExit = 0) =>
  `#!/bin/sh
case "$1" in
  --version) echo "snapmesh ${release}" ;;
  serve)
    case "$2" in
      --config-template)
        shift 2
        printf '// fake template (${release})\\n{"args": "%s"}\\n' "$*"
        ;;
      --config)
        [ "$4" = --print-config ] && [ -r "$3" ] || exit 3
        printf '{"token": "%s"}\\n' "$SNAPMESH_TOKEN"
        [ -n "$SNAPMESH_TOKEN" ] || { echo "fake: SNAPMESH_TOKEN is not set" >&2; exit 2; }
        [ -z "$SNAPMESH_LISTEN" ] || { echo "fake: SNAPMESH_LISTEN leaked in" >&2; exit 2; }
        if [ ${printConfigExit} != 0 ]; then
          echo "Config error: unknown key cache-sise in $3" >&2
          exit ${printConfigExit}
        fi
        ;;
      *) exit 3 ;;
    esac
    ;;
  *) exit 3 ;;
esac
`;

Deno.test("install.sh --from-source installs a tree that runs, keeps edits, uninstalls and purges", async (t) => {
  await using tmp = await tempDir("snapmesh-install-");
  const root = `${tmp.path}/root`;
  const env = { SNAPMESH_DENO_DIR: await sharedDenoDir(`${tmp.path}/deno-dir`) };
  const snapmesh = `${root}${BIN}`;
  let token = "";

  await t.step("first install", async () => {
    const result = await install(["--root", root, "--from-source"], env);
    assertMatch(result.stdout, /no user created and nothing chowned/);
    assertMatch(result.stdout, /systemctl skipped/);
    assertEquals(await mode(snapmesh), "0755");
    assertEquals(await mode(`${root}${CONFIG}`), "0644");
    assertEquals(await mode(`${root}${ENV_FILE}`), "0600");
    assertEquals(await mode(`${root}${DATA_DIR}`), "0750");
    assertEquals(await mode(`${root}${UNIT}`), "0644");
    for (const file of ["mod.ts", "deno.json", "deno.lock", "src/cli/mod.ts"]) {
      assert(await exists(`${root}${APP_DIR}/${file}`), `${APP_DIR}/${file} is missing`);
    }
    assert(await exists(`${root}${APP_DIR}/.installed-by-snapmesh`), "the marker is missing");
    assert(await exists(`${root}${CACHE_DIR}`));
    assert(!(await exists(`${root}${PREVIOUS}`)), "nothing was replaced, nothing to keep");

    const envText = await Deno.readTextFile(`${root}${ENV_FILE}`);
    for (const name of ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) {
      assertMatch(envText, new RegExp(`^# ${name}=$`, "m"));
    }
    // The API is never open by default: a random token, active, in the 0600 file.
    token = tokenOf(envText);
    assert(token.length >= 32, `a short token: ${token.length} characters`);
    assertMatch(token, /^[A-Za-z0-9_-]+$/, "the token holds characters a shell would interpret");
    assertMatch(envText, /every client must use the same token/);
    assertTokenHidden(result, token);
    assertMatch(result.stdout, /SNAPMESH_TOKEN/);
  });

  await t.step("the wrapper runs mod.ts with the start task's flags", async () => {
    const wrapper = await Deno.readTextFile(snapmesh);
    const execLine = wrapper.split("\n").find((line) => line.startsWith("exec "));
    assert(execLine, wrapper);
    for (const flag of serveFlags()) {
      assert(execLine.includes(flag), `${flag} is missing from: ${execLine}`);
    }
    assert(!execLine.includes(root), "the wrapper must name real paths, not the --root ones");

    const versionRun = await run(snapmesh, ["--version"], env);
    assertEquals(versionRun.stdout.trim(), `snapmesh ${version()}`, versionRun.stderr);
  });

  await t.step("the config parses and serve --print-config reads it", async () => {
    const text = await Deno.readTextFile(`${root}${CONFIG}`);
    assertMatch(text, /^\/\/ /m, "the template explains itself in comments");
    const config = parseConfig(text);
    assertEquals(config["data-dir"], DATA_DIR);
    assertEquals(config.listen, "0.0.0.0:7070");
    assert(!("token" in config), "the token never goes into the config file");

    const printed = await run(
      snapmesh,
      ["serve", "--config", `${root}${CONFIG}`, "--print-config"],
      env,
    );
    assertEquals(printed.code, 0, printed.stderr);
    const effective = JSON.parse(printed.stdout);
    assertEquals(effective["data-dir"], DATA_DIR);
    assertEquals(effective.listen, "0.0.0.0:7070");
  });

  await t.step("the wrapper serves and exits 0 on SIGTERM (it execs deno)", async () => {
    await Deno.mkdir(`${tmp.path}/data`);
    const agent = await startAgent({
      dataDir: `${tmp.path}/data`,
      command: [snapmesh, []],
      env,
    });
    const status = await agent.stop();
    assertEquals(status.code, 0, agent.logs());
  });

  await t.step("the unit", async () => {
    const unit = await Deno.readTextFile(`${root}${UNIT}`);
    for (
      const line of [
        "Type=simple",
        `ExecStart=${BIN} serve --config ${CONFIG}`,
        `EnvironmentFile=-${ENV_FILE}`,
        "User=snapmesh",
        "Group=snapmesh",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=45",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        `ReadWritePaths=${DATA_DIR} ${CACHE_DIR}`,
        "PrivateTmp=yes",
        "WantedBy=multi-user.target",
      ]
    ) {
      assert(unit.split("\n").includes(line), `the unit lacks ${line}:\n${unit}`);
    }
    await verifyUnit(root, `${tmp.path}/verify-1`);
  });

  await t.step("reinstalling keeps an edited config and env file", async () => {
    const edited = (await Deno.readTextFile(`${root}${CONFIG}`)).replace(
      '// "cache-size": "200GiB",',
      '"cache-size": "1GiB",',
    );
    await Deno.writeTextFile(`${root}${CONFIG}`, edited);
    const envEdited = (await Deno.readTextFile(`${root}${ENV_FILE}`)).replace(
      "# AWS_ACCESS_KEY_ID=",
      "AWS_ACCESS_KEY_ID=AKIAEXAMPLE",
    );
    await Deno.writeTextFile(`${root}${ENV_FILE}`, envEdited);

    const result = await install(["--root", root, "--from-source"], env);
    assertMatch(result.stdout, /kept .*config\.json/);
    assertMatch(result.stdout, /the new snapmesh accepts .*config\.json/);
    assertEquals(await Deno.readTextFile(`${root}${CONFIG}`), edited);
    assertEquals(await Deno.readTextFile(`${root}${ENV_FILE}`), envEdited);
    assertEquals(tokenOf(envEdited), token, "the token changed");
    assertTokenHidden(result, token);
    assertEquals(await mode(`${root}${ENV_FILE}`), "0600");
    // A wrapper replaced by a wrapper: no rollback copy (it would run the new sources).
    assert(!(await exists(`${root}${PREVIOUS}`)));
    const fresh = await Deno.readTextFile(`${root}${CONFIG}.new`);
    assertEquals(await mode(`${root}${CONFIG}.new`), "0644");
    assertEquals(parseConfig(fresh)["cache-size"], undefined);
    assertEquals(parseConfig(edited)["cache-size"], "1GiB");
    await verifyUnit(root, `${tmp.path}/verify-2`);
  });

  await t.step("--uninstall keeps config, data, drop-ins, a data dir in the cache", async () => {
    await Deno.writeTextFile(`${root}${DATA_DIR}/marker`, "cached");
    await Deno.mkdir(`${root}${DROPIN_DIR}`);
    await Deno.writeTextFile(`${root}${DROPIN_DIR}/override.conf`, "[Service]\n");
    // An operator pointed data-dir at /var/cache/snapmesh: not ours to delete.
    await Deno.writeTextFile(`${root}${CACHE_DIR}/LOCK`, "");
    await Deno.mkdir(`${root}${CACHE_DIR}/journal`);
    await Deno.writeTextFile(`${root}${CACHE_DIR}/journal/wal`, "entries");

    const result = await install(["--root", root, "--uninstall"], env);
    for (const gone of [BIN, UNIT, APP_DIR]) {
      assert(!(await exists(`${root}${gone}`)), `${gone} is still there`);
    }
    for (
      const kept of [
        CONFIG,
        ENV_FILE,
        `${DATA_DIR}/marker`,
        `${DROPIN_DIR}/override.conf`,
        `${CACHE_DIR}/LOCK`,
        `${CACHE_DIR}/journal/wal`,
      ]
    ) {
      assert(await exists(`${root}${kept}`), `${kept} was removed`);
    }
    assertEquals(await Deno.readTextFile(`${root}${CACHE_DIR}/journal/wal`), "entries");
    assertMatch(result.stdout, /kept/);
    assertMatch(result.stderr, /warning: kept .*\/var\/cache\/snapmesh: .*data directory/);
    // Uninstalling twice is fine.
    await install(["--root", root, "--uninstall"], env);
  });

  await t.step("--uninstall --purge removes everything", async () => {
    await install(["--root", root, "--from-source"], env);
    await install(["--root", root, "--uninstall", "--purge"], env);
    for (
      const gone of [BIN, PREVIOUS, UNIT, DROPIN_DIR, APP_DIR, CACHE_DIR, "/etc/snapmesh", DATA_DIR]
    ) {
      assert(!(await exists(`${root}${gone}`)), `${gone} is still there`);
    }
  });
});

Deno.test("install.sh --binary installs the binary atomically and switches from a source install", async () => {
  await using tmp = await tempDir("snapmesh-install-");
  const root = `${tmp.path}/root`;
  const env = { SNAPMESH_DENO_DIR: await sharedDenoDir(`${tmp.path}/deno-dir`) };
  const fake = `${tmp.path}/snapmesh-fake`;

  // A leftover source install that the binary replaces.
  await install(["--root", root, "--from-source", "--no-start"], env);
  const token = tokenOf(await Deno.readTextFile(`${root}${ENV_FILE}`));

  // The config in place is checked with the env file's variables (the fake
  // fails without the token) and none of the caller's (SNAPMESH_LISTEN).
  await Deno.writeTextFile(fake, FAKE_BINARY("1.0.0-fake"), { mode: 0o755 });
  const callerEnv = { SNAPMESH_LISTEN: "127.0.0.1:1" };
  const first = await install(["--root", root, "--binary", fake], callerEnv);
  assertMatch(first.stdout, /snapmesh 1\.0\.0-fake/);
  assertMatch(first.stdout, /the new snapmesh accepts .*config\.json/);
  assertTokenHidden(first, token);
  const installed = `${root}${BIN}`;
  assertEquals(await Deno.readTextFile(installed), FAKE_BINARY("1.0.0-fake"));
  assertEquals(await mode(installed), "0755");
  // It replaced the source install's wrapper: no rollback copy of that.
  assertEquals(await dirNames(`${root}/usr/local/bin`), ["snapmesh"]);
  assert(!(await exists(`${root}${APP_DIR}`)), "the source tree is left over");
  assert(!(await exists(`${root}${CACHE_DIR}`)), "the Deno cache is left over");

  // The config came from the source install and is kept; the fake's template
  // went to config.json.new, with the flags install.sh asked for.
  const template = await Deno.readTextFile(`${root}${CONFIG}.new`);
  assertEquals(
    parseConfig(template),
    { args: `--data-dir ${DATA_DIR} --listen 0.0.0.0:7070` },
  );
  const unit = await Deno.readTextFile(`${root}${UNIT}`);
  assert(unit.split("\n").includes(`ReadWritePaths=${DATA_DIR}`), unit);
  await verifyUnit(root, `${tmp.path}/verify`);

  // Upgrade: a new file renamed over the old one, never rewritten in place
  // (a running binary cannot be written: ETXTBSY).
  const before = (await Deno.stat(installed)).ino;
  await Deno.writeTextFile(fake, FAKE_BINARY("2.0.0-fake"), { mode: 0o755 });
  const second = await install(["--root", root, "--binary", fake]);
  assertEquals(await Deno.readTextFile(installed), FAKE_BINARY("2.0.0-fake"));
  assert((await Deno.stat(installed)).ino !== before, "the binary was rewritten in place");
  // The replaced binary is kept for a rollback; no staged file is left.
  assertEquals(await dirNames(`${root}/usr/local/bin`), ["snapmesh", "snapmesh.previous"]);
  assertEquals(await Deno.readTextFile(`${root}${PREVIOUS}`), FAKE_BINARY("1.0.0-fake"));
  assertEquals(await mode(`${root}${PREVIOUS}`), "0755");
  assertMatch(second.stdout, /snapmesh\.previous/);
  assertTokenHidden(second, token);

  // An upgrade whose binary rejects the config in place changes nothing.
  const unitBefore = await Deno.readTextFile(`${root}${UNIT}`);
  const templateBefore = await Deno.readTextFile(`${root}${CONFIG}.new`);
  const inoBefore = (await Deno.stat(installed)).ino;
  const bad = `${tmp.path}/snapmesh-bad`;
  await Deno.writeTextFile(bad, FAKE_BINARY("3.0.0-fake", 2), { mode: 0o755 });
  const refused = await install(["--root", root, "--binary", bad], {}, 1);
  assertMatch(refused.stderr, /does not accept .*config\.json; nothing was changed/);
  assertMatch(refused.stderr, /unknown key cache-sise in .*config\.json/);
  assertTokenHidden(refused, token);
  assertEquals(await Deno.readTextFile(installed), FAKE_BINARY("2.0.0-fake"));
  assertEquals((await Deno.stat(installed)).ino, inoBefore, "the binary was replaced");
  assertEquals(await Deno.readTextFile(`${root}${PREVIOUS}`), FAKE_BINARY("1.0.0-fake"));
  assertEquals(await dirNames(`${root}/usr/local/bin`), ["snapmesh", "snapmesh.previous"]);
  assertEquals(await Deno.readTextFile(`${root}${UNIT}`), unitBefore);
  assertEquals(await Deno.readTextFile(`${root}${CONFIG}.new`), templateBefore);

  // The kept config's .new follows the upgrade; in a fresh root the template is the config.
  const template2 = await Deno.readTextFile(`${root}${CONFIG}.new`);
  assertMatch(template2, /2\.0\.0-fake/);
  await install(["--root", `${tmp.path}/root2`, "--binary", fake]);
  assertEquals(await Deno.readTextFile(`${tmp.path}/root2${CONFIG}`), template2);
  assert(!(await exists(`${tmp.path}/root2${CONFIG}.new`)));
});

Deno.test("install.sh works when the checkout's and the root's paths hold a space, # and %", async () => {
  await using tmp = await tempDir("snapmesh-install-");
  const repo = `${tmp.path}/snap mesh #1 100%`;
  const root = `${tmp.path}/root dir 100%`;
  const env = { SNAPMESH_DENO_DIR: await sharedDenoDir(`${tmp.path}/deno-dir`) };

  // A checkout at an awkward path: what --from-source reads, and the script.
  await Deno.mkdir(`${repo}/scripts`, { recursive: true });
  for (const file of ["mod.ts", "deno.json", "deno.lock", "scripts/install.sh"]) {
    await Deno.copyFile(`${ROOT}/${file}`, `${repo}/${file}`);
  }
  await Deno.chmod(`${repo}/scripts/install.sh`, 0o755);
  const copy = await run("cp", ["-R", `${ROOT}/src`, `${repo}/src`]);
  assertEquals(copy.code, 0, copy.stderr);
  const script = `${repo}/scripts/install.sh`;

  await installWith(script, ["--root", root, "--from-source"], env);
  const wrapper = await Deno.readTextFile(`${root}${BIN}`);
  const execLine = wrapper.split("\n").find((line) => line.startsWith("exec "));
  assert(execLine, wrapper);
  for (const flag of serveFlags()) {
    assert(execLine.includes(flag), `${flag} is missing from: ${execLine}`);
  }
  const versionRun = await run(`${root}${BIN}`, ["--version"], env);
  assertEquals(versionRun.stdout.trim(), `snapmesh ${version()}`, versionRun.stderr);
  await verifyUnit(root, `${tmp.path}/verify-1`);

  // An upgrade to a binary in the same root: staged, checked and verified there.
  const fake = `${tmp.path}/snapmesh-fake`;
  await Deno.writeTextFile(fake, FAKE_BINARY("1.0.0-fake"), { mode: 0o755 });
  const upgrade = await installWith(script, ["--root", root, "--binary", fake]);
  assertMatch(upgrade.stdout, /unit verified/);
  assertEquals(await Deno.readTextFile(`${root}${BIN}`), FAKE_BINARY("1.0.0-fake"));
  await verifyUnit(root, `${tmp.path}/verify-2`);
});

Deno.test("install.sh --binary with a compiled snapmesh (SNAPMESH_TEST_BIN)", async () => {
  const bin = Deno.env.get("SNAPMESH_TEST_BIN");
  if (!bin) {
    console.log("SNAPMESH_TEST_BIN is not set (no compiled binary): skipping");
    return;
  }
  await using tmp = await tempDir("snapmesh-install-");
  const root = `${tmp.path}/root`;
  await install(["--root", root, "--binary", bin]);
  const printed = await run(`${root}${BIN}`, [
    "serve",
    "--config",
    `${root}${CONFIG}`,
    "--print-config",
  ]);
  assertEquals(printed.code, 0, printed.stderr);
  assertEquals(JSON.parse(printed.stdout)["data-dir"], DATA_DIR);
  await verifyUnit(root, `${tmp.path}/verify`);
});

Deno.test("install.sh refuses what it cannot install, with a clear message", async (t) => {
  await using tmp = await tempDir("snapmesh-install-");
  const root = `${tmp.path}/root`;

  await t.step("--help", async () => {
    const result = await install(["--help"]);
    assertMatch(result.stdout, /^Usage: /);
  });

  await t.step("bad usage exits 2", async () => {
    for (
      const args of [
        ["--purge"],
        ["--bogus"],
        ["--binary"],
        ["--binary", "x", "--from-source"],
        ["--uninstall", "--from-source"],
      ]
    ) {
      const result = await install(["--root", root, ...args], {}, 2);
      assertMatch(result.stderr, /--help/);
    }
  });

  await t.step("no binary and no --from-source", async () => {
    // A checkout without dist/snapmesh.
    await Deno.mkdir(`${tmp.path}/repo/scripts`, { recursive: true });
    await Deno.copyFile(INSTALL, `${tmp.path}/repo/scripts/install.sh`);
    await Deno.chmod(`${tmp.path}/repo/scripts/install.sh`, 0o755);
    const result = await run(`${tmp.path}/repo/scripts/install.sh`, ["--root", root]);
    assertEquals(result.code, 1, result.stdout + result.stderr);
    assertMatch(result.stderr, /no snapmesh binary/);
    assertMatch(result.stderr, /deno task compile/);
    assertMatch(result.stderr, /--from-source/);
  });

  await t.step("--binary that is missing or not snapmesh", async () => {
    const missing = await install(["--root", root, "--binary", `${tmp.path}/nope`], {}, 1);
    assertMatch(missing.stderr, /no such file/);
    const other = `${tmp.path}/other`;
    await Deno.writeTextFile(other, "#!/bin/sh\necho hello\n", { mode: 0o755 });
    const wrong = await install(["--root", root, "--binary", other], {}, 1);
    assertMatch(wrong.stderr, /does not run as snapmesh/);
  });

  // Nothing was installed by the failures.
  assert(!(await exists(`${root}${BIN}`)));
  assert(!(await exists(`${root}${UNIT}`)));
});
