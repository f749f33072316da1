/**
 * The chunk scheduler's decisions, with no I/O: local copies first,
 * rarest first, declined chunks asked elsewhere, and an endgame that
 * duplicates only chunks still in flight.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { ChunkScheduler, type SourceSpec } from "../../src/swarm/scheduler.ts";
import { seededRandom } from "../../src/util/random.ts";

const CHUNK = 1024;

function scheduler(chunks: number, options: { maxInFlight?: number; endgameChunks?: number } = {}) {
  return new ChunkScheduler({
    counts: [chunks],
    chunkBytes: () => CHUNK,
    random: seededRandom("scheduler-test"),
    crossZoneWaitMs: 0,
    ...options,
  });
}

function peer(id: string, maxInFlight = 4): SourceSpec {
  return { id, kind: "peer", zone: null, maxInFlight };
}

function bits(total: number, held: number[]): Uint8Array {
  const out = new Uint8Array(Math.ceil(total / 8));
  for (const c of held) out[c >> 3]! |= 1 << (c & 7);
  return out;
}

Deno.test("scheduler: chunks with a local copy go to the local source, whatever the peers hold", () => {
  const s = scheduler(10);
  s.addSource(peer("peer:a"), "all");
  s.addSource({ id: "local", kind: "local", zone: null, maxInFlight: 2 }, bits(10, [2, 3, 4, 5]));
  const local: number[] = [];
  const fromPeer: number[] = [];
  for (let a = s.next(0); a !== null; a = s.next(0)) {
    (a.source === "local" ? local : fromPeer).push(a.chunk);
    s.finished(a.id, 1, { good: [a.chunk], bytes: CHUNK });
  }
  assertEquals(local.sort((x, y) => x - y), [2, 3, 4, 5]);
  assertEquals(fromPeer.sort((x, y) => x - y), [0, 1, 6, 7, 8, 9]);
  assertEquals(s.remaining, 0);
});

Deno.test("scheduler: rarest first — a chunk one holder has goes before chunks everyone has", () => {
  const s = scheduler(8);
  s.addSource(peer("peer:a"), bits(8, [0, 1, 2, 3, 4, 5, 6]));
  s.addSource(peer("peer:b"), bits(8, [0, 1, 2, 3, 4, 5, 6]));
  s.addSource(peer("peer:c"), bits(8, [0, 1, 2, 3, 4, 5, 6, 7]));
  const first = s.next(0)!;
  assertEquals([first.source, first.chunk], ["peer:c", 7]);
});

Deno.test("scheduler: a holder that declined a chunk is not asked for it again for a while, also in the endgame", () => {
  const s = scheduler(2, { endgameChunks: 2 });
  s.addSource(peer("peer:a", 1), "all");
  s.addSource(peer("peer:b", 1), "all");
  const x = s.next(0)!;
  const y = s.next(0)!;
  assert(x.source !== y.source);
  // Both decline: neither is asked for the same chunk again within the second.
  s.finished(x.id, 1, { good: [], bytes: 0, failure: "declined" });
  s.finished(y.id, 1, { good: [], bytes: 0, failure: "declined" });
  for (let a = s.next(2); a !== null; a = s.next(2)) {
    assert(
      !(a.source === x.source && a.chunk === x.chunk) &&
        !(a.source === y.source && a.chunk === y.chunk),
      `asked ${a.source} again for ${a.chunk}`,
    );
    s.finished(a.id, 3, { good: [], bytes: 0, failure: "declined" });
  }
  // After the decline window, they are asked again.
  assert(s.next(2000) !== null);
});

Deno.test("scheduler: the endgame duplicates chunks in flight, never a chunk already delivered", () => {
  const s = scheduler(2, { endgameChunks: 2 });
  s.addSource(peer("peer:a", 2), "all");
  s.addSource(peer("peer:b", 2), "all");
  const first = s.next(0)!;
  const second = s.next(0)!;
  const dup = s.next(0)!;
  assert(dup.duplicate, "in the endgame a chunk in flight is asked of a second holder");
  assertEquals(dup.chunk, first.chunk);
  assert(dup.source !== first.source);
  // The duplicate wins: the original is the loser to cancel.
  assertEquals(s.finished(dup.id, 1, { good: [dup.chunk], bytes: CHUNK }), [first.id]);
  // While the loser is being cancelled, its chunk is not duplicated again.
  const next = s.next(1);
  assert(next === null || next.chunk !== first.chunk, "no new request for a delivered chunk");
  if (next) s.finished(next.id, 2, { good: [next.chunk], bytes: CHUNK });
  s.finished(first.id, 2, { good: [], bytes: 0, failure: "cancelled" });
  s.finished(second.id, 2, { good: [second.chunk], bytes: CHUNK });
  assertEquals(s.remaining, 0);
});

Deno.test("scheduler: a small pull is not in the endgame from its start", () => {
  // 20 chunks, 4 of them held: with the endgame at "twice the requests in
  // flight" (32), the 4 in flight would be duplicated at once.
  const s = scheduler(20);
  s.addSource(peer("peer:a"), bits(20, [0, 1, 2, 3]));
  s.addSource(peer("peer:b"), bits(20, [0, 1, 2, 3]));
  for (let i = 0; i < 4; i++) assert(!s.next(0)!.duplicate);
  assertEquals(s.next(0), null, "nothing to duplicate yet");
});

Deno.test("scheduler: an endgame duplicate does not go to a holder that declined the chunk", () => {
  const s = scheduler(2, { endgameChunks: 2 });
  s.addSource(peer("peer:a", 1), "all");
  s.addSource(peer("peer:c", 1), bits(2, [0]));
  const onA = s.next(0)!;
  assertEquals([onA.source, onA.chunk], ["peer:a", 1], "the rarer chunk first");
  const onC = s.next(0)!;
  assertEquals([onC.source, onC.chunk], ["peer:c", 0]);
  s.finished(onC.id, 1, { good: [], bytes: 0, failure: "declined" });
  s.addSource(peer("peer:b", 1), "all");
  const onB = s.next(1)!;
  assertEquals([onB.source, onB.chunk], ["peer:b", 0]);
  // Chunk 0 in flight at b: c holds it and is free, but declined it.
  assertEquals(s.next(2), null);
});

Deno.test("scheduler: a chunk only the owner holds waits its turn (random per chunk), one another neighbor holds does not", () => {
  const s = new ChunkScheduler({
    counts: [2],
    chunkBytes: () => CHUNK,
    random: seededRandom("owner-turn"),
    crossZoneWaitMs: 0,
    ownerWaitMs: 1000,
    endgameChunks: 0,
  });
  s.addSource({ ...peer("peer:owner"), waits: true }, "all");
  s.addSource(peer("peer:x"), bits(2, [1]));
  // Chunk 1 is held by x too: asked at once (of x or the owner). Chunk 0 only the owner holds.
  const first = s.next(0)!;
  assertEquals(first.chunk, 1);
  assertEquals(s.next(0), null, "chunk 0 waits for its turn at the owner");
  const later = s.next(1000)!;
  assertEquals([later.source, later.chunk], ["peer:owner", 0]);
});

Deno.test("scheduler: a holder in this node's rack is preferred over an equally fast one elsewhere in the zone", () => {
  const s = new ChunkScheduler({
    counts: [40],
    chunkBytes: () => CHUNK,
    random: seededRandom("scheduler-rack"),
    zone: "z1",
    rack: "r1",
  });
  s.addSource({ id: "peer:far", kind: "peer", zone: "z1", rack: "r2", maxInFlight: 1 }, "all");
  s.addSource({ id: "peer:mate", kind: "peer", zone: "z1", rack: "r1", maxInFlight: 1 }, "all");
  // One request each (one in flight per source), both measured at the same rate.
  const first = [s.next(0)!, s.next(0)!];
  assertEquals(first.map((a) => a.source).sort(), ["peer:far", "peer:mate"]);
  for (const a of first) s.finished(a.id, 10, { good: [a.chunk], bytes: CHUNK * 10 });
  const counts = new Map<string, number>();
  for (let t = 20; t < 60; t++) {
    const a = s.next(t);
    if (!a) break;
    counts.set(a.source, (counts.get(a.source) ?? 0) + 1);
    s.finished(a.id, t + 1, { good: [a.chunk], bytes: CHUNK * 10 });
  }
  assert(
    (counts.get("peer:mate") ?? 0) > (counts.get("peer:far") ?? 0),
    JSON.stringify([...counts]),
  );
  assertEquals(counts.get("peer:far") ?? 0, 0, "the rack mate takes every request it can");
});

Deno.test("scheduler: a chunk other participants hold waits before the origin reads it; one nobody holds does not", () => {
  const s = scheduler(4);
  s.addSource({ id: "origin", kind: "origin", zone: null, maxInFlight: 4 }, "all");
  const held = bits(4, [0, 1]);
  s.setHeldElsewhere(() => held);
  const early: number[] = [];
  for (let a = s.next(0); a !== null; a = s.next(0)) {
    for (let c = a.chunk; c < a.chunk + a.count; c++) early.push(c);
  }
  assertEquals(early.sort(), [2, 3], "only what nobody else holds, at once");
  assertEquals(s.next(2999), null, "the others wait");
  const late = s.next(3000)!;
  assertEquals([late.source, late.chunk], ["origin", 0], "then the origin reads them after all");
});

Deno.test("scheduler: when the bucket scan spends its budget on chunks nobody free may serve, the bitmap pass still finds work", () => {
  const s = new ChunkScheduler({
    counts: [600],
    chunkBytes: () => CHUNK,
    random: seededRandom("scheduler-scan"),
    zone: "z1",
    crossZoneWaitMs: 60_000, // chunks only the other zone holds wait long
  });
  const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
  // 300 rare chunks only another zone holds (more than one scan's budget)...
  s.addSource(
    { id: "peer:far", kind: "peer", zone: "z2", maxInFlight: 4 },
    bits(600, range(0, 300)),
  );
  // ...and 300 others that two holders of this zone can serve now.
  s.addSource(
    { id: "peer:a", kind: "peer", zone: "z1", maxInFlight: 4 },
    bits(600, range(300, 600)),
  );
  s.addSource(
    { id: "peer:b", kind: "peer", zone: "z1", maxInFlight: 4 },
    bits(600, range(300, 600)),
  );
  const a = s.next(0);
  assert(a !== null, "a free holder of this zone gets a request");
  assert(a.chunk >= 300 && a.source !== "peer:far", JSON.stringify(a));
});
