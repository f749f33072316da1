import { assert, assertEquals } from "../helpers/assert.ts";
import { Membership } from "../../src/cluster/membership.ts";
import { StaticDiscovery } from "../../src/cluster/discovery.ts";
import { PeerError, type PeerTransport } from "../../src/cluster/transport.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";
import { seededRandom } from "../../src/util/random.ts";

/**
 * A fleet seen from one node: which peers answer this node, which answer
 * the others (for indirect probes), and who was asked what.
 */
class FakeFleet {
  /** Peers that do not answer this node. */
  readonly unreachableFromHere = new Set<string>();
  /** Peers that answer nobody. */
  readonly dead = new Set<string>();
  /** Peers that refuse this node's credentials. */
  readonly strangers = new Set<string>();
  readonly hellos: string[] = [];
  readonly indirect: { via: string; target: string }[] = [];

  transport(): PeerTransport {
    const transport: Partial<PeerTransport> = {
      hello: (url) => {
        this.hellos.push(url);
        if (this.strangers.has(url)) return Promise.reject(new PeerError(401, "refused"));
        if (this.dead.has(url) || this.unreachableFromHere.has(url)) {
          return Promise.reject(new TypeError(`connection refused: ${url}`));
        }
        return Promise.resolve({ nodeId: `id-${new URL(url).port}`, version: "t", advertise: url });
      },
      probe: (via, target) => {
        this.indirect.push({ via, target });
        if (this.dead.has(via) || this.unreachableFromHere.has(via)) {
          return Promise.reject(new TypeError(`connection refused: ${via}`));
        }
        return Promise.resolve(!this.dead.has(target));
      },
    };
    return transport as PeerTransport;
  }
}

const urls = (n: number) => Array.from({ length: n }, (_, i) => `http://10.0.0.1:${7000 + i}`);

function membershipOf(fleet: FakeFleet, peers: string[], clock: VirtualClock, budget = 4) {
  return new Membership({
    nodeId: "me",
    discovery: [new StaticDiscovery(peers)],
    transport: fleet.transport(),
    clock,
    random: seededRandom("membership"),
    log: silentLogger,
    probeBudget: budget,
  });
}

Deno.test("membership: probes stay within the budget and cover every peer in turn", async () => {
  const fleet = new FakeFleet();
  const clock = new VirtualClock();
  const peers = urls(40);
  const membership = membershipOf(fleet, peers, clock);
  try {
    await membership.start();
    assertEquals(fleet.hellos.length, 4, "the first interval probes four peers, not forty");
    for (let i = 0; i < 9; i++) await clock.advance(1000);
    assertEquals(fleet.hellos.length, 40, "ten intervals at four a time");
    assertEquals(new Set(fleet.hellos).size, 40, "a shuffled round: each peer once");
    assertEquals(membership.healthy().length, 40);
    // The next round comes in another order.
    const first = fleet.hellos.slice(0, 40);
    for (let i = 0; i < 10; i++) await clock.advance(1000);
    assertEquals(new Set(fleet.hellos.slice(40)).size, 40);
    assert(fleet.hellos.slice(40).join() !== first.join(), "rounds are reshuffled");
  } finally {
    membership.stop();
  }
});

Deno.test("membership: a small cluster probes every peer every interval", async () => {
  const fleet = new FakeFleet();
  const clock = new VirtualClock();
  const membership = membershipOf(fleet, urls(3), clock);
  try {
    await membership.start();
    assertEquals(new Set(fleet.hellos).size, 3);
    await clock.advance(1000);
    assertEquals(fleet.hellos.length, 6);
  } finally {
    membership.stop();
  }
});

Deno.test("membership: a peer seen in a transfer is not probed that interval", async () => {
  const fleet = new FakeFleet();
  const clock = new VirtualClock();
  const peers = urls(3);
  const membership = membershipOf(fleet, peers, clock);
  try {
    await membership.start();
    const busy = membership.peers().find((p) => p.url === peers[0])!;
    await clock.advance(500);
    membership.markSeen(busy);
    fleet.hellos.length = 0;
    await clock.advance(500);
    assertEquals(fleet.hellos.sort(), [peers[1], peers[2]].sort());
  } finally {
    membership.stop();
  }
});

Deno.test("membership: a path broken only from here does not make a peer down (indirect probes)", async () => {
  const fleet = new FakeFleet();
  const clock = new VirtualClock();
  const peers = urls(6);
  const membership = membershipOf(fleet, peers, clock, 6);
  const target = peers[2]!;
  try {
    await membership.start();
    assertEquals(membership.healthy().length, 6);
    fleet.unreachableFromHere.add(target);
    for (let i = 0; i < 5; i++) await clock.advance(1000);
    const state = membership.peers().find((p) => p.url === target)!;
    assert(state.healthy, "others reach it, so it stays up");
    assert(membership.rank("fn").some((m) => !m.self && m.peer.url === target), "and keeps owning");
    assert(fleet.indirect.length >= 2 && fleet.indirect.every((p) => p.target === target));
    assert(fleet.indirect.every((p) => p.via !== target), "never asks the peer about itself");
    assertEquals(new Set(fleet.indirect.map((p) => p.via)).size > 1, true, "asks several peers");

    // Gone for everyone: down after two failed rounds, and out of the ranking.
    fleet.dead.add(target);
    await clock.advance(1000);
    assert(membership.peers().find((p) => p.url === target)!.healthy, "one failure is not down");
    await clock.advance(1000);
    assert(!membership.peers().find((p) => p.url === target)!.healthy);
    assert(!membership.rank("fn").some((m) => !m.self && m.peer.url === target));

    // Back: the next probe brings it back.
    fleet.dead.delete(target);
    fleet.unreachableFromHere.delete(target);
    await clock.advance(1000);
    assert(membership.peers().find((p) => p.url === target)!.healthy);
  } finally {
    membership.stop();
  }
});

Deno.test("membership: a peer refusing our credentials is down at once, without indirect probes", async () => {
  const fleet = new FakeFleet();
  const clock = new VirtualClock();
  const peers = urls(4);
  fleet.strangers.add(peers[1]!);
  const membership = membershipOf(fleet, peers, clock);
  try {
    await membership.start();
    const stranger = membership.status().find((p) => p.url === peers[1])!;
    assertEquals(stranger.healthy, false);
    assert(/401/.test(stranger.lastError ?? ""));
    assert(!membership.rank("fn").some((m) => !m.self && m.peer.url === peers[1]));
    assertEquals(fleet.indirect.length, 0);
  } finally {
    membership.stop();
  }
});

Deno.test("membership: probeFor probes only configured peers", async () => {
  const fleet = new FakeFleet();
  const clock = new VirtualClock();
  const peers = urls(2);
  const membership = membershipOf(fleet, peers, clock);
  try {
    await membership.start();
    fleet.hellos.length = 0;
    assertEquals(await membership.probeFor(peers[0]!), true);
    fleet.dead.add(peers[1]!);
    assertEquals(await membership.probeFor(peers[1]!), false);
    assertEquals(await membership.probeFor("http://169.254.169.254:80"), false);
    assertEquals(fleet.hellos, [peers[0], peers[1]], "the stranger URL was never contacted");
  } finally {
    membership.stop();
  }
});
