/**
 * The in-memory peer transport: it must fail the way the HTTP transport
 * does (refused connections are TypeErrors, answers become PeerErrors with
 * the status the HTTP layer would send, "not found" is null), its faults
 * must do what they say, and it counts what each node served.
 */

import { assert, assertBytes, assertEquals, assertRejects } from "../helpers/assert.ts";
import { chunkedBytes, memoryNode } from "../helpers/memory_node.ts";
import {
  isConnectionError,
  MemoryTransport,
  type PeerEndpoint,
  PeerError,
  type SuspectReport,
} from "../../src/cluster/mod.ts";
import { SnapmeshError } from "../../src/errors.ts";
import { serveComplete } from "../../src/swarm/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const URL_A = "http://a.test:7070";
const DIGEST = "d".repeat(64);
const FILE = chunkedBytes(4, 1);

/** An endpoint holding "fn" (one file, `FILE`), failing other names as a node would. */
function endpoint(reports: SuspectReport[] = []): PeerEndpoint {
  const fail = (name: string) => {
    if (name === "fn") return;
    if (name === "boom") throw new Error("disk on fire");
    throw new SnapmeshError(
      name as "snapshot_not_found",
      `${name} (from the endpoint)`,
    );
  };
  return {
    hello: () => ({ nodeId: "a", version: "test", advertise: URL_A }),
    // The swarm side is not what this file tests: a holder of everything.
    announce: () => ({ peers: [] }),
    probe: () => Promise.resolve(false),
    subscribe: (_name, _digest, handler) => serveComplete(handler),
    workingSet: () => Promise.resolve(null),
    manifest(name) {
      fail(name);
      return Promise.resolve({ manifest: "{}", digest: DIGEST, complete: true, have: {} });
    },
    availability(name) {
      fail(name);
      return { digest: DIGEST, complete: true, have: {} };
    },
    read(name, request) {
      fail(name);
      const [start, end] = request.range!.slice(6).split("-").map(Number) as [number, number];
      const bytes = FILE.slice(start, end + 1);
      return Promise.resolve({
        size: FILE.length,
        start,
        end,
        stream: new ReadableStream({
          start(c) {
            // In two pieces, as a stream of chunks would arrive.
            c.enqueue(bytes.subarray(0, bytes.length >> 1));
            c.enqueue(bytes.subarray(bytes.length >> 1));
            c.close();
          },
        }),
      });
    },
    suspect(name, report) {
      reports.push({ ...report });
      void name;
    },
  };
}

function transport(latencyMs = 0): { clock: VirtualClock; t: MemoryTransport } {
  const clock = new VirtualClock();
  const t = new MemoryTransport({ clock, latencyMs });
  t.attach(URL_A, endpoint());
  return { clock, t };
}

const read = (t: MemoryTransport, name: string, start: number, end: number, signal?: AbortSignal) =>
  t.read(URL_A, name, {
    digest: DIGEST,
    file: "mem",
    start,
    end,
    wait: false,
    signal: signal ?? new AbortController().signal,
  });

Deno.test("MemoryTransport: a node that is down, detached or unknown is a refused connection (TypeError)", async (t) => {
  const { t: transport_ } = transport();
  const refused = async (work: () => Promise<unknown>) => {
    const err = await assertRejects(work);
    assert(err instanceof TypeError, String(err));
    assert(isConnectionError(err));
  };
  await t.step("down", async () => {
    transport_.setFaults(URL_A, { down: true });
    await refused(() => transport_.hello(URL_A));
    await refused(() => transport_.manifest(URL_A, "fn", { fetch: false }));
    await refused(() => read(transport_, "fn", 0, 9));
    transport_.setFaults(URL_A, {});
    assertEquals((await transport_.hello(URL_A)).nodeId, "a");
  });
  await t.step("unknown", () => refused(() => transport_.hello("http://nobody.test:1")));
  await t.step("detached", async () => {
    transport_.detach(URL_A);
    await refused(() => transport_.availability(URL_A, "fn", { digest: DIGEST }));
  });
});

Deno.test("MemoryTransport maps answers as the HTTP transport would: not found is null, other errors PeerError with the status", async (t) => {
  const { t: transport_ } = transport();
  await t.step("snapshot_not_found", async () => {
    assertEquals(await transport_.manifest(URL_A, "snapshot_not_found", { fetch: true }), null);
    assertEquals(
      await transport_.availability(URL_A, "snapshot_not_found", { digest: DIGEST }),
      null,
    );
    const err = await assertRejects(() => read(transport_, "snapshot_not_found", 0, 9));
    assert(err instanceof PeerError && err.status === 404, String(err));
  });
  const cases: [string, number][] = [
    ["file_not_found", 404],
    ["invalid_range", 400],
    ["chunk_unavailable", 409],
    ["shutting_down", 503],
    ["upstream_failed", 502],
    ["insufficient_storage", 507],
    ["boom", 500],
  ];
  for (const [name, status] of cases) {
    await t.step(`${name} → ${status}`, async () => {
      for (
        const work of [
          () => transport_.manifest(URL_A, name, { fetch: false }),
          () => read(transport_, name, 0, 9),
        ]
      ) {
        const err = await assertRejects(work);
        assert(err instanceof PeerError, String(err));
        assertEquals(err.status, status);
        assert(!isConnectionError(err), "an answer, not a refused connection");
        assert(err.message.includes(URL_A), err.message);
      }
    });
  }
});

Deno.test("MemoryTransport reads ranges whole, flips one byte when corrupt, and counts bytes per node", async () => {
  const { t: transport_ } = transport();
  const clean = await read(transport_, "fn", 65_536, 131_071);
  assertBytes(clean, FILE.subarray(65_536, 131_072));
  transport_.setFaults(URL_A, { corrupt: true });
  const bad = await read(transport_, "fn", 0, 65_535);
  assertEquals(bad.length, 65_536);
  assertEquals(bad.filter((b, i) => b !== FILE[i]).length, 1, "exactly one byte flipped");
  // Only chunk bytes are damaged: the manifest answer is not.
  assertEquals((await transport_.manifest(URL_A, "fn", { fetch: false }))?.digest, DIGEST);
  assertEquals(transport_.servedBytes.get(URL_A), 2 * 65_536);
  assertEquals(transport_.requests.get(URL_A), 3);
});

Deno.test("MemoryTransport waits its latency and a node's delay in virtual time; an abort ends a read", async () => {
  const { clock, t: transport_ } = transport(5);
  transport_.setFaults(URL_A, { delayMs: 20 });
  let hello: string | null = null;
  transport_.hello(URL_A).then((h) => (hello = h.nodeId));
  await clock.advance(24);
  assertEquals(hello, null);
  await clock.advance(1);
  assertEquals(hello, "a");
  const controller = new AbortController();
  const reading = read(transport_, "fn", 0, 9, controller.signal);
  reading.catch(() => {});
  await clock.advance(10);
  controller.abort(new Error("no longer needed"));
  await clock.advance(15);
  const err = await assertRejects(() => reading);
  assertEquals((err as Error).message, "no longer needed");
  assertEquals(transport_.servedBytes.get(URL_A), undefined, "nothing counted for an aborted read");
});

Deno.test("MemoryTransport passes suspect reports to the node", async () => {
  const clock = new VirtualClock();
  const t = new MemoryTransport({ clock });
  const reports: SuspectReport[] = [];
  t.attach(URL_A, endpoint(reports));
  await t.suspect(URL_A, "fn", { digest: DIGEST, file: "mem", index: 3 });
  assertEquals(reports, [{ digest: DIGEST, file: "mem", index: 3 }]);
});

Deno.test("MemoryTransport between agents: a read of an agent's snapshot is its verified bytes", async () => {
  await using node = await memoryNode({ flags: { "chunk-size": "64KiB" } });
  const mem = chunkedBytes(3, 2);
  const { manifest } = await node.publish("fn", { mem });
  const t = new MemoryTransport({ clock: node.clock });
  t.attach(URL_A, node.agent.peerEndpoint);
  const bytes = await node.run(
    t.read(URL_A, "fn", {
      digest: manifest.digest,
      file: "mem",
      start: 65_536,
      end: 3 * 65_536 - 1,
      wait: false,
      signal: new AbortController().signal,
    }),
  );
  assertBytes(bytes, mem.subarray(65_536));
  const misaligned = await assertRejects(() =>
    node.run(
      t.read(URL_A, "fn", {
        digest: manifest.digest,
        file: "mem",
        start: 1,
        end: 65_535,
        wait: false,
        signal: new AbortController().signal,
      }),
    )
  );
  assert(misaligned instanceof PeerError && misaligned.status === 400, String(misaligned));
  assertEquals(await node.run(t.manifest(URL_A, "other", { fetch: false })), null);
});
