/**
 * The simulated network: FIFO resources, and what a transfer costs on
 * each path (rack, zone, across zones, from the origin).
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { Network, Resource, type TopologySpec } from "../../src/sim/network.ts";

const MIB = 1024 * 1024;

/** 4 nodes: 2 zones × 2 racks, 8 Mbit/s NICs (1 byte per ms), a cheap CPU. */
function tiny(overrides: Partial<TopologySpec> = {}): TopologySpec {
  return {
    nodes: 4,
    zones: 2,
    racksPerZone: 1,
    hostsPerRack: 2,
    nicBitsPerSecond: 8000,
    rackOversubscription: 1,
    crossZoneBitsPerSecond: 8000,
    latencyMs: { rack: 1, zone: 2, crossZone: 10 },
    origin: {
      firstByteMs: 30,
      connectionBytesPerSecond: 1000,
      requestsPerSecond: 1000,
      aggregateBytesPerSecond: 1e9,
    },
    cpu: { receiveMsPerMiB: 0, sendMsPerMiB: 0, cores: 1 },
    ...overrides,
  };
}

Deno.test("Resource: work queues behind work, one after the other, at the resource's rate", () => {
  const r = new Resource("link", 2); // 2 bytes per ms
  const a = r.reserve(0, 100);
  const b = r.reserve(10, 100);
  assertEquals([a.start, a.end], [0, 50]);
  assertEquals([b.start, b.end], [50, 100], "b waits for a");
  assertEquals(r.backlog(60), 40);
  const c = r.reserve(200, 20);
  assertEquals([c.start, c.end], [200, 210], "an idle resource starts at once");
  assertEquals(r.served, 220);
});

Deno.test("Resource: a cancelled reservation gives its unused time back only when nothing queued after it", () => {
  const r = new Resource("link", 1);
  const a = r.reserve(0, 100);
  r.cancel(a, 40);
  assertEquals(r.backlog(40), 0, "the rest of a is free again");
  assertEquals(r.served, 40);
  const b = r.reserve(40, 100);
  const c = r.reserve(40, 100);
  r.cancel(b, 50); // c is queued behind b: b's time stays spent
  assertEquals(r.backlog(50), 190);
  assertEquals(c.end, 240);
});

Deno.test("Resource: a rate that is not positive is refused", () => {
  let threw = false;
  try {
    new Resource("bad", 0);
  } catch (err) {
    threw = err instanceof RangeError;
  }
  assert(threw);
});

Deno.test("Network: nodes are spread over racks in turn, racks alternate zones", () => {
  const net = new Network(tiny());
  assertEquals(net.places.map((p) => [p.rack, p.zone]), [[0, 0], [1, 1], [0, 0], [1, 1]]);
  assertEquals(net.latency(net.places[0]!, net.places[2]!), 1, "same rack");
  assertEquals(net.latency(net.places[0]!, net.places[1]!), 10, "across zones");
});

Deno.test("Network: a peer transfer takes the slowest link of its path plus the latency; a node's uplink is shared", () => {
  const net = new Network(tiny());
  const [a, b, c] = net.places;
  // Same rack: NIC-bound, 1 byte/ms, + 1 ms.
  const first = net.peerTransfer(a!, c!, 1000, 0);
  assertEquals(first.end, 1001);
  // a's uplink is busy until 1000: a second transfer from a queues behind.
  const second = net.peerTransfer(a!, b!, 1000, 0);
  assertEquals(second.end, 2010);
  assertEquals(net.uploaded(a!), 2000);
  assertEquals(net.crossZoneBytes, 1000, "only a → b crossed zones");
});

Deno.test("Network: a slowed node's NIC is that many times slower", () => {
  const net = new Network(tiny());
  const [a, , c] = net.places;
  net.slow(c!, 10);
  assertEquals(net.peerTransfer(a!, c!, 100, 0).end, 1001);
});

Deno.test("Network: an origin GET waits for its request slot and first byte, then one connection's rate", () => {
  const net = new Network(tiny({ nicBitsPerSecond: 8e9 }));
  const [a] = net.places;
  const t = net.originTransfer(a!, 1000, 0);
  // 1 ms for the request slot (1,000/s), 30 ms to the first byte, 1,000 ms of bytes.
  assertEquals(t.end, 1031);
  assertEquals(net.originRequests, 1);
  // Two connections run in parallel: the origin is not one FIFO.
  const u = net.originTransfer(a!, 1000, 0);
  assert(u.end < 1100, `a second connection ended at ${u.end}`);
});

Deno.test("Network: the CPU cost per MiB is charged to sender and receiver", () => {
  const net = new Network(tiny({
    nicBitsPerSecond: 8e12,
    crossZoneBitsPerSecond: 8e12,
    cpu: { receiveMsPerMiB: 4, sendMsPerMiB: 1, cores: 2 },
  }));
  const [a, , c] = net.places;
  const t = net.peerTransfer(a!, c!, MIB, 0);
  // Receive: 4 ms of CPU over 2 cores = 2 ms, the slowest part; + 1 ms latency.
  assert(Math.abs(t.end - 3) < 0.01, `ended at ${t.end}`);
});

Deno.test("Network: with a shared processor, every node's work queues on the same cores", () => {
  const cpu = { receiveMsPerMiB: 4, sendMsPerMiB: 0, cores: 2 };
  const own = new Network(tiny({ nicBitsPerSecond: 8e12, crossZoneBitsPerSecond: 8e12, cpu }));
  const shared = new Network(
    tiny({ nicBitsPerSecond: 8e12, crossZoneBitsPerSecond: 8e12, cpu: { ...cpu, shared: true } }),
  );
  for (const net of [own, shared]) {
    // Two transfers inside two racks (nodes 0 and 2 share a rack, 1 and 3 the other).
    const [a, b, c, d] = net.places;
    net.peerTransfer(a!, c!, MIB, 0);
    const second = net.peerTransfer(b!, d!, MIB, 0);
    // Own processors: both receive at once (2 ms + 1 ms latency); shared: the second waits.
    const expected = net === own ? 3 : 5;
    assert(Math.abs(second.end - expected) < 0.01, `ended at ${second.end}, expected ${expected}`);
  }
});
