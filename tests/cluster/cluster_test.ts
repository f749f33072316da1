import { assert, assertEquals } from "../helpers/assert.ts";
import { decodeBitmap, encodeBitmap, hasBit, rank } from "../../src/cluster/mod.ts";
import { seededRandom } from "../../src/util/random.ts";

Deno.test("rank: every node ranks members the same way for a key, whatever the input order", () => {
  const members = ["n1", "n2", "n3", "n4", "n5"];
  for (const key of ["fn-a", "fn-b", "fn-c"]) {
    const a = rank(members, key, (m) => m);
    const b = rank([...members].reverse(), key, (m) => m);
    assertEquals(a, b);
    assertEquals([...a].sort(), members);
  }
});

Deno.test("rank: removing a member moves only the keys it owned", () => {
  const members = ["n1", "n2", "n3", "n4", "n5", "n6"];
  const keys = Array.from({ length: 600 }, (_, i) => `fn-${i}`);
  const before = new Map(keys.map((k) => [k, rank(members, k, (m) => m)[0]!]));
  const after = new Map(
    keys.map((k) => [k, rank(members.filter((m) => m !== "n3"), k, (m) => m)[0]!]),
  );
  let moved = 0;
  for (const k of keys) {
    if (before.get(k) !== after.get(k)) {
      moved++;
      assertEquals(before.get(k), "n3", `${k} moved although n3 did not own it`);
    }
  }
  // About a sixth of the keys were n3's; spread is roughly even.
  assert(moved > 60 && moved < 140, `${moved} keys moved`);
});

Deno.test("bitmaps round-trip and answer bit by bit", () => {
  const bits = Array.from({ length: 77 }, (_, i) => i % 3 === 0 || i === 76);
  const decoded = decodeBitmap(encodeBitmap(bits));
  for (let i = 0; i < bits.length; i++) assertEquals(hasBit(decoded, i), bits[i]);
  assertEquals(hasBit(decoded, 1000), false, "past the end is not held");
});

Deno.test("decodeBitmap refuses what is not base64", () => {
  let code = "";
  try {
    decodeBitmap("not base64!!");
  } catch (err) {
    code = (err as { code: string }).code;
  }
  assertEquals(code, "invalid_body");
});

Deno.test("Membership: probes mark peers up, down (a refused token at once), and drop this node's own URL", async () => {
  const { FileDiscovery, HttpPeerTransport, Membership } = await import(
    "../../src/cluster/mod.ts"
  );
  const { DenoFileSystem } = await import("../../src/fs/mod.ts");
  const { systemClock } = await import("../../src/util/clock.ts");
  const { silentLogger } = await import("../../src/log/mod.ts");
  const { tempDir } = await import("../helpers/temp.ts");
  const serve = (answer: (req: Request) => Response) =>
    Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, answer);
  const hello = (nodeId: string) => (req: Request) =>
    req.headers.get("authorization") === "Bearer t"
      ? Response.json({ nodeId, version: "test", advertise: null })
      : new Response("{}", { status: 401 });
  const up = serve(hello("peer-1"));
  const self = serve(hello("me"));
  const stranger = serve(() => new Response("{}", { status: 401 }));
  const url = (s: Deno.HttpServer<Deno.NetAddr>) => `http://127.0.0.1:${s.addr.port}`;
  await using tmp = await tempDir();
  const file = `${tmp.path}/peers`;
  await Deno.writeTextFile(
    file,
    `# the cluster\n${url(up)}\n${url(self)}\nnot a url\n${url(stranger)}  # another cluster\n`,
  );
  const membership = new Membership({
    nodeId: "me",
    discovery: [new FileDiscovery(file, { fs: new DenoFileSystem(), log: silentLogger })],
    transport: new HttpPeerTransport({ token: "t" }),
    clock: systemClock,
    random: seededRandom(1),
    log: silentLogger,
  });
  try {
    await membership.start();
    const status = membership.status();
    assertEquals(status.map((p) => p.url).sort(), [url(up), url(stranger)].sort());
    const one = status.find((p) => p.url === url(up))!;
    assertEquals([one.id, one.healthy], ["peer-1", true]);
    const other = status.find((p) => p.url === url(stranger))!;
    assertEquals(other.healthy, false);
    assert(/401/.test(other.lastError ?? ""), other.lastError ?? "");
    assertEquals(membership.rank("fn").length, 2, "this node and the one healthy peer");
  } finally {
    membership.stop();
    await Promise.all([up.shutdown(), self.shutdown(), stranger.shutdown()]);
  }
});
