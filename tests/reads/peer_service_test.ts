/**
 * What a node answers its peers, through the agent on an in-memory data
 * directory: manifests and availability (local, pulling, unknown), chunk
 * aligned reads, reads from a pull in progress, and suspect reports.
 */

import { assert, assertBytes, assertEquals, assertRejects } from "../helpers/assert.ts";
import {
  buildManifest,
  chunkedBytes,
  type MemoryNode,
  memoryNode,
} from "../helpers/memory_node.ts";
import { decodeBitmap, hasBit } from "../../src/cluster/mod.ts";
import { hasCode } from "../../src/errors.ts";
import { decodeManifest, encodeManifest } from "../../src/manifest/mod.ts";
import { MemoryOrigin } from "../../src/origin/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const CHUNK = 64 * 1024;
const FLAGS = { "chunk-size": "64KiB" };

/** An origin whose reads of ranges that `hold` picks never answer (until aborted). */
class GatedOrigin extends MemoryOrigin {
  hold: (key: string, range: [number, number] | undefined) => boolean = () => false;

  override async getObject(
    key: string,
    options: { range?: [number, number]; signal?: AbortSignal } = {},
  ): Promise<Uint8Array | null> {
    if (this.hold(key, options.range)) {
      await new Promise<never>((_, reject) => {
        options.signal?.addEventListener("abort", () => reject(options.signal!.reason), {
          once: true,
        });
      });
    }
    return await super.getObject(key, options);
  }
}

async function read(
  node: MemoryNode,
  name: string,
  request: { digest: string; file: string; range: string | undefined; wait: boolean },
): Promise<Uint8Array> {
  const answer = await node.run(node.agent.peerRead(name, request));
  return new Uint8Array(await node.run(new Response(answer.stream).arrayBuffer()));
}

/** Flips one byte of chunk `index` of a committed file. */
async function rot(node: MemoryNode, name: string, index: number): Promise<void> {
  const handle = await node.fs.open(`${node.dir}/snapshots/${name}/files/mem`, { write: true });
  const one = new Uint8Array(1);
  await handle.readAt(one, index * CHUNK + 3);
  one[0]! ^= 0xff;
  await handle.writeAt(one, index * CHUNK + 3);
  handle.close();
}

Deno.test("PeerService answers a local snapshot's manifest and availability; null for others", async () => {
  await using node = await memoryNode({ flags: FLAGS });
  const { manifest } = await node.publish("a", { mem: chunkedBytes(2, 1) });
  const answer = await node.run(node.agent.peerManifest("a", false));
  assert(answer !== null);
  assertEquals([answer.digest, answer.complete, answer.have], [manifest.digest, true, {}]);
  assertEquals(decodeManifest(new TextEncoder().encode(answer.manifest)).digest, manifest.digest);
  assertEquals(node.agent.peerAvailability("a", manifest.digest), {
    digest: manifest.digest,
    complete: true,
    have: {},
  });
  assertEquals(node.agent.peerAvailability("a", "0".repeat(64)), null, "another digest");
  assertEquals(node.agent.peerAvailability("nope", manifest.digest), null);
  assertEquals(await node.run(node.agent.peerManifest("nope", false)), null);
  // Asked to fetch it (as an owner), with nowhere to fetch from: still null.
  assertEquals(await node.run(node.agent.peerManifest("nope", true)), null);
});

Deno.test("PeerService reads cover whole chunks only", async (t) => {
  await using node = await memoryNode({ flags: FLAGS });
  const mem = chunkedBytes(3, 2, { tail: 1000 }); // the last chunk is short
  const { manifest } = await node.publish("a", { mem });
  const ask = (range: string | undefined) =>
    read(node, "a", { digest: manifest.digest, file: "mem", range, wait: false });
  const cases: [string, string | undefined, [number, number] | null][] = [
    ["no range: the whole file", undefined, [0, mem.length]],
    ["one chunk", `bytes=${CHUNK}-${2 * CHUNK - 1}`, [CHUNK, 2 * CHUNK]],
    ["the short last chunk, to the end", `bytes=${2 * CHUNK}-${mem.length - 1}`, [
      2 * CHUNK,
      mem.length,
    ]],
    ["a start inside a chunk", `bytes=100-${CHUNK - 1}`, null],
    ["an end inside a chunk", "bytes=0-1000", null],
    ["an end inside the last chunk", `bytes=${2 * CHUNK}-${mem.length - 2}`, null],
  ];
  for (const [name, range, expected] of cases) {
    await t.step(name, async () => {
      if (expected === null) {
        const err = await assertRejects(() => ask(range));
        assert(hasCode(err, "invalid_range"), String(err));
      } else {
        assertBytes(await ask(range), mem.subarray(...expected));
      }
    });
  }
  await t.step("a file the snapshot does not have", async () => {
    const err = await assertRejects(() =>
      read(node, "a", { digest: manifest.digest, file: "other", range: undefined, wait: false })
    );
    assert(hasCode(err, "file_not_found"), String(err));
  });
  await t.step("another digest of the name", async () => {
    const err = await assertRejects(() =>
      read(node, "a", { digest: "0".repeat(64), file: "mem", range: undefined, wait: false })
    );
    assert(hasCode(err, "snapshot_not_found"), String(err));
  });
});

Deno.test("PeerService answers from a pull in progress: its manifest, what it holds, and chunk_unavailable for the rest", async () => {
  const clock = new VirtualClock();
  const origin = new GatedOrigin({ clock });
  // 80 chunks: more than one 4 MiB origin request, so some requests complete.
  const chunks = 80;
  const mem = chunkedBytes(chunks, 3);
  const manifest = buildManifest("big", { mem });
  origin.seed(origin.fileKey("big", "mem"), mem);
  origin.seed(origin.manifestKey("big"), encodeManifest(manifest));
  // Requests for the range holding the last chunk never answer.
  origin.hold = (key, range) =>
    key.endsWith("/mem") && range !== undefined && range[1] === mem.length - 1;
  await using node = await memoryNode({ clock, origin, flags: FLAGS });
  const accepted = await node.run(node.agent.pull("big", { wait: false }));
  assertEquals(accepted, { name: "big", digest: manifest.digest, state: "pulling" });
  await clock.advance(0);

  const answer = await node.run(node.agent.peerManifest("big", false));
  assert(answer !== null);
  assertEquals([answer.digest, answer.complete], [manifest.digest, false]);
  const have = decodeBitmap(answer.have.mem!);
  const done = Array.from({ length: chunks }, (_, i) => hasBit(have, i));
  const first = done.indexOf(true);
  assert(first >= 0, "some chunks arrived");
  assert(!done[chunks - 1], "the held range did not");
  assertEquals(node.agent.peerAvailability("big", manifest.digest)?.have, answer.have);

  // A chunk it holds is served; one it lacks is chunk_unavailable (not waited for).
  const range = (i: number) => `bytes=${i * CHUNK}-${(i + 1) * CHUNK - 1}`;
  const request = (i: number) => ({
    digest: manifest.digest,
    file: "mem",
    range: range(i),
    wait: false,
  });
  assertBytes(
    await read(node, "big", request(first)),
    mem.subarray(first * CHUNK, (first + 1) * CHUNK),
  );
  const err = await assertRejects(() => read(node, "big", request(chunks - 1)));
  assert(hasCode(err, "chunk_unavailable"), String(err));
  assertEquals(node.agent.pullStatus().length, 1, "the pull still runs");
});

Deno.test("PeerService.suspect() checks its own copy: a rotted one is quarantined, a good one kept", async (t) => {
  await using node = await memoryNode({ flags: FLAGS });
  const good = await node.publish("good", { mem: chunkedBytes(3, 4) });
  const bad = await node.publish("bad", { mem: chunkedBytes(3, 5) });
  await rot(node, "bad", 1);
  await t.step("a good chunk: the report is ignored", async () => {
    node.agent.peerSuspect("good", { digest: good.manifest.digest, file: "mem", index: 1 });
    await node.clock.advance(0);
    assertEquals((await node.agent.listDetailed()).map((s) => s.name), ["bad", "good"]);
  });
  await t.step("a report for another digest is ignored", async () => {
    node.agent.peerSuspect("bad", { digest: good.manifest.digest, file: "mem", index: 1 });
    await node.clock.advance(0);
    assertEquals((await node.agent.listDetailed()).map((s) => s.name), ["bad", "good"]);
  });
  await t.step(
    "a rotted chunk, trusted since its commit: checked again and quarantined",
    async () => {
      node.agent.peerSuspect("bad", { digest: bad.manifest.digest, file: "mem", index: 1 });
      await node.clock.advance(0);
      assertEquals((await node.agent.listDetailed()).map((s) => s.name), ["good"]);
      const moved = await node.fs.readDir(`${node.dir}/quarantine`);
      assert(moved.length === 1 && moved[0]!.startsWith("bad."), String(moved));
    },
  );
});
