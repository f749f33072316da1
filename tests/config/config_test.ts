import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertThrows,
} from "../helpers/assert.ts";
import { main } from "../../src/cli/mod.ts";
import { parseConfigText } from "../../src/cli/serve_command.ts";
import {
  ConfigError,
  type ConfigSources,
  configTemplate,
  describeConfig,
  loadSecretFiles,
  parseListen,
  parseSize,
  peerAuthMode,
  resolveServeConfig,
  SETTINGS,
} from "../../src/config/mod.ts";

const base: ConfigSources = { flags: {}, env: {}, file: null, cwd: "/work", hostname: "node-1" };

Deno.test("parseSize() accepts bytes, decimal and binary units", async (t) => {
  const cases: [string | number, number][] = [
    ["0", 0],
    ["1048576", 1048576],
    [4096, 4096],
    ["64KiB", 65536],
    ["64k", 65536],
    ["500MB", 500_000_000],
    ["500mb", 500_000_000],
    ["10GiB", 10 * 1024 ** 3],
    ["1.5GiB", 1.5 * 1024 ** 3],
    ["50GiB", 50 * 1024 ** 3],
    ["2TB", 2e12],
    [" 1 MiB ", 1048576],
  ];
  for (const [text, bytes] of cases) {
    await t.step(String(text), () => assertEquals(parseSize(text), bytes));
  }
  for (const bad of ["", "MiB", "-1", "10XB", "1e3", "ten", "1.2.3GB"]) {
    await t.step(`rejects ${JSON.stringify(bad)}`, () => {
      assertThrows(() => parseSize(bad), (e) => e instanceof SyntaxError);
    });
  }
});

Deno.test("parseListen() handles IPv4, IPv6 and all-interfaces forms", () => {
  assertEquals(parseListen("127.0.0.1:7070"), { hostname: "127.0.0.1", port: 7070 });
  assertEquals(parseListen("[::1]:0"), { hostname: "::1", port: 0 });
  assertEquals(parseListen(":8080"), { hostname: "0.0.0.0", port: 8080 });
  assertEquals(parseListen("localhost:99999"), null);
  assertEquals(parseListen("7070"), null);
});

Deno.test("resolveServeConfig() applies the documented defaults", () => {
  const c = resolveServeConfig(base);
  assertEquals(c.listen, { hostname: "127.0.0.1", port: 7070 });
  assertEquals(c.dataDir, "/work/snapmesh-data");
  assertEquals(c.cacheSize, 10 * 1024 ** 3);
  assertEquals(c.nodeId, "node-1");
  assertEquals(c.chunkSize, 1048576);
  assertEquals(c.push, "off");
  assertEquals(c.token, null);
  assertEquals(c.peers, []);
  assertEquals(c.logLevel, "info");
  assertEquals(c.draftTtlMs, 24 * 3_600_000);
  assertEquals(c.originStallTimeoutMs, 30_000);
});

Deno.test("resolveServeConfig() parses durations in ms, s, m and h", () => {
  for (
    const [text, ms] of [["1500", 1500], ["30s", 30_000], ["15m", 900_000], [
      "2h",
      7_200_000,
    ]] as const
  ) {
    assertEquals(resolveServeConfig({ ...base, flags: { "draft-ttl": text } }).draftTtlMs, ms);
  }
  assertThrows(() => resolveServeConfig({ ...base, flags: { "draft-ttl": "soon" } }));
});

Deno.test("resolveServeConfig(): flags win over env, env over file", () => {
  const c = resolveServeConfig({
    ...base,
    flags: { "cache-size": "1GiB" },
    env: {
      SNAPMESH_CACHE_SIZE: "2GiB",
      SNAPMESH_NODE_ID: "from-env",
      SNAPMESH_DATA_DIR: "rel/dir",
    },
    file: {
      "cache-size": "3GiB",
      "node-id": "from-file",
      "log-level": "debug",
      peers: ["http://b:7070/"],
    },
  });
  assertEquals(c.cacheSize, 1024 ** 3);
  assertEquals(c.nodeId, "from-env");
  assertEquals(c.logLevel, "debug");
  assertEquals(c.dataDir, "/work/rel/dir");
  assertEquals(c.peers, ["http://b:7070"]);
});

Deno.test("resolveServeConfig() names the key and the accepted form on errors", async (t) => {
  const cases: [string, Partial<ConfigSources>, RegExp][] = [
    ["unknown file key", { file: { "cache-sise": "1GiB" } }, /Unknown key "cache-sise"/],
    [
      "bad size flag",
      { flags: { "cache-size": "lots" } },
      /--cache-size: .*like 1048576, 500MB or 10GiB/,
    ],
    ["bad env", { env: { SNAPMESH_PUSH: "sometimes" } }, /SNAPMESH_PUSH: .*async, sync or off/],
    ["bad level in file", { file: { "log-level": "loud" } }, /"log-level" in the config file/],
    ["chunk too small", { flags: { "chunk-size": "4KiB" } }, /chunk-size/],
    ["bad listen", { flags: { listen: "nowhere" } }, /HOST:PORT/],
    ["bad peer", { flags: { peers: "ftp://x" } }, /not an http\(s\) URL/],
    ["peer with credentials", { flags: { peers: "http://u:p@peer:7070" } }, /credentials/],
    ["peer with a path", { flags: { peers: "http://peer:7070/x?y" } }, /path, query/],
    ["bad peers-dns", { flags: { "peers-dns": "peers.local" } }, /NAME:PORT/],
    ["push without origin", { flags: { push: "sync" } }, /needs an origin/],
    [
      "create-bucket without origin",
      { env: { SNAPMESH_ORIGIN_CREATE_BUCKET: "true" } },
      /origin-create-bucket needs an origin/,
    ],
    ["endpoint without bucket", { flags: { "origin-endpoint": "http://s3:9000" } }, /together/],
    ["file not an object", { file: [1] }, /JSON object/],
    ["zero idle timeout", { flags: { "idle-timeout": "0" } }, /idle-timeout 0ms is out of range/],
    [
      "huge header timeout",
      { env: { SNAPMESH_HEADER_TIMEOUT: "2h" } },
      /header-timeout .*100ms to 1h/,
    ],
    ["bad body timeout", { file: { "body-timeout": "soon" } }, /"body-timeout" in the config file/],
    ["zero connections", { flags: { "max-connections": "0" } }, /--max-connections: .*at least 1/],
    ["bad uploads", { flags: { "max-uploads": "many" } }, /--max-uploads: .*whole number/],
  ];
  for (const [label, sources, pattern] of cases) {
    await t.step(label, () => {
      const err = assertThrows(() => resolveServeConfig({ ...base, ...sources }));
      assert(err instanceof ConfigError, String(err));
      assert(pattern.test(err.message), err.message);
    });
  }
});

Deno.test("resolveServeConfig() reads HTTP timeouts and caps from flags, env and file", () => {
  const defaults = resolveServeConfig(base);
  assertEquals(
    [
      defaults.idleTimeoutMs,
      defaults.headerTimeoutMs,
      defaults.bodyTimeoutMs,
      defaults.maxConnections,
      defaults.maxUploads,
    ],
    [60_000, 10_000, 30_000, 1024, 64],
  );
  const c = resolveServeConfig({
    ...base,
    flags: { "idle-timeout": "500ms", "max-connections": "10" },
    env: { SNAPMESH_HEADER_TIMEOUT: "10s", SNAPMESH_MAX_UPLOADS: "3" },
    file: { "body-timeout": "2m", "max-uploads": 9 },
  });
  assertEquals(
    [c.idleTimeoutMs, c.headerTimeoutMs, c.bodyTimeoutMs, c.maxConnections, c.maxUploads],
    [500, 10_000, 120_000, 10, 3],
  );
  const printed = describeConfig(c);
  assertEquals([printed["idle-timeout"], printed["max-uploads"]], [500, 3]);
});

Deno.test("serve --help lists the HTTP flags; a bad value exits 2", async () => {
  const out: string[] = [];
  const io = { out: (t: string) => out.push(t), err: (t: string) => out.push(t), env: {} };
  assertEquals(await main(["serve", "--help"], io), 0);
  const help = out.join("\n");
  for (
    const flag of [
      "--idle-timeout DURATION",
      "--header-timeout DURATION",
      "--body-timeout DURATION",
      "--max-connections N",
      "--max-uploads N",
    ]
  ) {
    assert(help.includes(flag), flag);
  }
  assertMatch(help, /--idle-timeout DURATION .*default 60s; env SNAPMESH_IDLE_TIMEOUT/);
  out.length = 0;
  assertEquals(await main(["serve", "--body-timeout", "1d"], io), 2);
  assertMatch(out.join("\n"), /--body-timeout: invalid value "1d"/);
});

Deno.test("resolveServeConfig() defaults push to async when an origin is set", () => {
  const c = resolveServeConfig({
    ...base,
    flags: {
      "origin-endpoint": "http://127.0.0.1:9000",
      "origin-bucket": "snaps",
      "origin-prefix": "/a/b/",
    },
  });
  assertEquals(c.push, "async");
  assertEquals(c.originPrefix, "a/b");
});

Deno.test("origin-create-bucket: off by default; flag, env and file turn it on", async (t) => {
  const origin = { "origin-endpoint": "http://127.0.0.1:9000", "origin-bucket": "snaps" };
  assertEquals(resolveServeConfig({ ...base, flags: origin }).originCreateBucket, false);
  const cases: [string, Partial<ConfigSources>][] = [
    ["flag", { flags: { ...origin, "origin-create-bucket": true } }],
    ["env", { flags: origin, env: { SNAPMESH_ORIGIN_CREATE_BUCKET: "yes" } }],
    ["file", { file: { ...origin, "origin-create-bucket": true } }],
  ];
  for (const [label, sources] of cases) {
    await t.step(label, () => {
      const c = resolveServeConfig({ ...base, ...sources });
      assertEquals(c.originCreateBucket, true);
      assertEquals(describeConfig(c)["origin-create-bucket"], true);
    });
  }
  assert(configTemplate().includes('// "origin-create-bucket": true,'), "in the template");
});

Deno.test("describeConfig() shows the token as [set]", () => {
  const c = resolveServeConfig({ ...base, flags: { token: "s3cret" } });
  const text = JSON.stringify(describeConfig(c));
  assert(!text.includes("s3cret"));
  assert(text.includes("[set]"));
});

Deno.test("parseConfigText() takes comments and trailing commas, and points at errors", () => {
  const value = parseConfigText(
    '// header\n{\n  /* block */ "cache-size": "1GiB", // why\n  "peers": ["http://a:1",],\n}\n',
    "c.json",
  );
  assertEquals(value, { "cache-size": "1GiB", peers: ["http://a:1"] });
  assertThrows(
    () => parseConfigText('{\n  "cache-size": "1GiB"\n  "push": "off"\n}', "/etc/x.json"),
    (e) =>
      e instanceof ConfigError && /\/etc\/x\.json/.test(e.message) &&
      /line 3, column 3/.test(e.message),
  );
});

Deno.test("configTemplate(): every example is valid, given flags become keys, never the token", () => {
  const template = configTemplate({ "data-dir": "/var/lib/snapmesh", token: "sekret" });
  assert(!template.includes("sekret"), "the token is never written");
  // As printed: only the given keys are active.
  const active = resolveServeConfig({ ...base, file: parseConfigText(template, "t") });
  assertEquals(active.dataDir, "/var/lib/snapmesh");
  assertEquals(active.cacheSize, 10 * 1024 ** 3);
  // Every commented example, uncommented, is a valid setting.
  const uncommented = template.replace(/^( *)\/\/ ("[a-z-]+": )/gm, "$1$2");
  const file = parseConfigText(uncommented, "t") as Record<string, unknown>;
  const documented = SETTINGS.map((s) => s.flag).filter((f) => f !== "token" && f !== "read-token");
  assertEquals(Object.keys(file).sort(), documented.sort());
  const all = resolveServeConfig({ ...base, file });
  assertEquals(all.peers, ["http://10.0.0.18:7070", "http://10.0.0.19:7070"]);
  assertEquals(all.originEndpoint, "http://minio.internal:9000");
  assertEquals(all.token, null);
});

Deno.test("describeConfig() redacts passwords in URLs", () => {
  const c = resolveServeConfig({
    ...base,
    flags: {
      "origin-endpoint": "http://key:s3cret@minio:9000",
      "origin-bucket": "b",
      peers: "http://peer-1:7070,http://peer-2:7070",
    },
  });
  const text = JSON.stringify(describeConfig(c));
  assert(!text.includes("s3cret"), text);
  assert(text.includes("http://key:[redacted]@minio:9000"), text);
  assert(text.includes("http://peer-2:7070"), text);
});

Deno.test("parseConfigText() wants an object of settings", () => {
  for (const text of ["null", "[]", '"x"', "3", ""]) {
    assertThrows(
      () => parseConfigText(text, "c.json"),
      (e) => e instanceof ConfigError && /c\.json/.test(e.message),
    );
  }
});

Deno.test("security settings: files, env and the combinations that make sense", async (t) => {
  await t.step("paths become absolute; the cluster key comes from the env or a file", () => {
    const c = resolveServeConfig({
      ...base,
      flags: {
        "tls-cert": "tls/node.pem",
        "tls-key": "tls/node.key",
        "tls-ca": "tls/ca.pem",
        "peer-mtls": true,
        "signing-key": "keys/s.key",
        "trusted-keys": "keys/trusted",
        "token-file": "token",
      },
    });
    assertEquals(c.tlsCert, "/work/tls/node.pem");
    assertEquals(c.tlsCa, "/work/tls/ca.pem");
    assertEquals(c.peerMtls, true);
    assertEquals(c.tokenFile, "/work/token");
    assertEquals(c.clusterKey, null);
    assertEquals(peerAuthMode(c), { kind: "peer", signed: false, mtls: true });
    const fromEnv = resolveServeConfig({ ...base, env: { SNAPMESH_CLUSTER_KEY: "k".repeat(40) } });
    assertEquals(fromEnv.clusterKey, "k".repeat(40));
    assertEquals(peerAuthMode(fromEnv), { kind: "peer", signed: true, mtls: false });
    assertEquals(peerAuthMode(resolveServeConfig(base)), { kind: "legacy" });
    const closed = resolveServeConfig({ ...base, flags: { token: "a", "read-token": "b" } });
    assertEquals(peerAuthMode(closed), { kind: "closed" });
  });
  await t.step("refused combinations name what is missing", () => {
    const cases: [Record<string, unknown>, Record<string, string>, RegExp][] = [
      [{ token: "a", "token-file": "/t" }, {}, /token and token-file/],
      [{ "read-token": "r" }, {}, /read-token needs a full-access token/],
      [{ token: "same", "read-token": "same" }, {}, /must differ/],
      [{ "tls-cert": "/c" }, {}, /tls-cert and tls-key/],
      [{ "tls-ca": "/ca" }, {}, /tls-ca needs tls-cert/],
      [{ "tls-cert": "/c", "tls-key": "/k", "peer-mtls": true }, {}, /peer-mtls needs tls-ca/],
      [
        { token: "a", "read-token": "r", peers: "http://p:1" },
        {},
        /cluster-key-file .* or peer-mtls/,
      ],
      [
        { "cluster-key-file": "/k" },
        { SNAPMESH_CLUSTER_KEY: "k".repeat(40) },
        /cluster key once/,
      ],
    ];
    for (const [flags, env, message] of cases) {
      assertThrows(
        () => resolveServeConfig({ ...base, flags, env }),
        (e) => e instanceof ConfigError && message.test(e.message),
      );
    }
    // Roles with peers are fine once peers have credentials.
    resolveServeConfig({
      ...base,
      flags: { token: "a", "read-token": "r", peers: "http://p:1" },
      env: { SNAPMESH_CLUSTER_KEY: "k".repeat(40) },
    });
  });
  await t.step("secrets are [set] in --print-config; key files are paths", () => {
    const c = resolveServeConfig({
      ...base,
      flags: { token: "full-s3cret", "read-token": "read-s3cret", "cluster-key-file": "/k" },
    });
    const text = JSON.stringify(describeConfig(c));
    assert(!text.includes("s3cret"), text);
    assertEquals(describeConfig(c)["read-token"], "[set]");
    assertEquals(describeConfig(c)["cluster-key-file"], "/k");
  });
  await t.step("secret files are read at start, checked, and lax modes warned about", async () => {
    const c = resolveServeConfig({
      ...base,
      flags: { "token-file": "/etc/snapmesh/token", "cluster-key-file": "/etc/snapmesh/ck" },
    });
    const files: Record<string, string> = {
      "/etc/snapmesh/token": "tok-from-file\n",
      "/etc/snapmesh/ck": `# cluster key\n${"c".repeat(48)}\n`,
    };
    const reader = {
      readTextFile: (path: string) =>
        path in files ? Promise.resolve(files[path]!) : Promise.reject(new Error("no such file")),
      mode: (path: string) => Promise.resolve(path.endsWith("ck") ? 0o644 : 0o640),
    };
    const { config, warnings } = await loadSecretFiles(c, reader);
    assertEquals(config.token, "tok-from-file");
    assertEquals(config.clusterKey, files["/etc/snapmesh/ck"]);
    assertEquals(warnings.length, 1);
    assertMatch(warnings[0]!, /\/etc\/snapmesh\/ck can be read by any user \(mode 644\)/);
    files["/etc/snapmesh/ck"] = "short\n";
    await assertRejects(
      () => loadSecretFiles(c, reader),
      (e) => e instanceof ConfigError && /at least 32/.test(e.message),
    );
    files["/etc/snapmesh/token"] = "two words\n";
    await assertRejects(() => loadSecretFiles(c, reader), (e) => e instanceof ConfigError);
    delete files["/etc/snapmesh/token"];
    await assertRejects(
      () => loadSecretFiles(c, reader),
      (e) => e instanceof ConfigError && /Cannot read the token file/.test(e.message),
    );
  });
});
