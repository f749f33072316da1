import { assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import {
  DnsDiscovery,
  FileDiscovery,
  normalizePeerUrl,
  type Resolver,
  StaticDiscovery,
} from "../../src/cluster/mod.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { silentLogger } from "../../src/log/mod.ts";

const encoder = new TextEncoder();

Deno.test("normalizePeerUrl() takes scheme://host:port and nothing else", async (t) => {
  const good: [string, string][] = [
    ["http://10.0.0.1:7070", "http://10.0.0.1:7070"],
    ["https://node-2.fleet:7443/", "https://node-2.fleet:7443"],
    ["http://[fd00::1]:7070", "http://[fd00::1]:7070"],
  ];
  for (const [input, output] of good) {
    await t.step(input, () => assertEquals(normalizePeerUrl(input), output));
  }
  const bad: [string, RegExp][] = [
    ["ftp://x:21", /http\(s\)/],
    ["http://user:secret@node:7070", /credentials/],
    ["http://node:7070/steal", /path, query/],
    ["http://node:7070?token=1", /path, query/],
    ["http://node:7070#x", /path, query/],
    ["not a url", /not a URL/],
  ];
  for (const [input, pattern] of bad) {
    await t.step(`refuses ${input}`, () => {
      const err = assertThrows(() => normalizePeerUrl(input));
      assertMatch((err as Error).message, pattern);
    });
  }
});

Deno.test("StaticDiscovery answers its list, normalised", async () => {
  const d = new StaticDiscovery(["http://a:1/", "http://b:2"]);
  assertEquals(await d.peers(), ["http://a:1", "http://b:2"]);
  assertEquals(d.refreshMs, 0);
});

Deno.test("FileDiscovery reads one URL a line, skips comments and bad lines, follows changes", async () => {
  const fs = new MemoryFileSystem();
  await fs.mkdir("/etc");
  const write = async (text: string) => {
    const f = await fs.open("/etc/peers", { write: true, create: true, truncate: true });
    await f.writeAt(encoder.encode(text), 0);
    f.close();
  };
  await write("# fleet\nhttp://a:7070\n\nhttp://u:p@evil:1\nhttp://b:7070 # rack 2\n");
  const d = new FileDiscovery("/etc/peers", { fs, log: silentLogger });
  assertEquals(await d.peers(), ["http://a:7070", "http://b:7070"]);
  await write("http://c:7070\n");
  assertEquals(await d.peers(), ["http://c:7070"]);
  await fs.remove("/etc/peers");
  assertEquals(await d.peers(), []);
});

Deno.test("DnsDiscovery: A/AAAA records with a port, SRV records with theirs", async () => {
  const resolver: Resolver = {
    resolve: (name, type) =>
      Promise.resolve(
        name !== "peers.local" ? [] : type === "A" ? ["10.0.0.1", "10.0.0.2"] : ["fd00::7"],
      ),
    resolveSrv: (name) =>
      Promise.resolve(
        name === "_snapmesh._tcp.fleet"
          ? [{ target: "n1.fleet", port: 7070 }, { target: "n2.fleet", port: 7071 }]
          : [],
      ),
  };
  const a = new DnsDiscovery("peers.local:7070", { log: silentLogger, resolver });
  assertEquals(await a.peers(), [
    "http://10.0.0.1:7070",
    "http://10.0.0.2:7070",
    "http://[fd00::7]:7070",
  ]);
  const srv = new DnsDiscovery("srv:_snapmesh._tcp.fleet", {
    log: silentLogger,
    resolver,
    scheme: "https",
  });
  assertEquals(await srv.peers(), ["https://n1.fleet:7070", "https://n2.fleet:7071"]);
  assertThrows(() => new DnsDiscovery("no-port.local", { log: silentLogger, resolver }));
});
