/**
 * The simulation end to end at small sizes: the real swarm code on the
 * simulated network completes, reads the origin about once, spreads the
 * load, survives its faults, and gives the same answer for the same seed.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { type FaultSpec, type FleetResult, makeSnapshot, runFleet } from "../../src/sim/fleet.ts";
import { referenceTopology } from "../../src/sim/scenarios.ts";
import { jsonLine, toRow } from "../../src/sim/report.ts";

const CPU = { receiveMsPerMiB: 2, sendMsPerMiB: 0.5, cores: 2 };
const SNAPSHOT = { bytes: 96 * 1024 * 1024, chunkSize: 1024 * 1024, zeroFraction: 0.3 };

function run(nodes: number, faults: FaultSpec = {}, seed = "fleet-test"): Promise<FleetResult> {
  return runFleet({
    name: "test",
    topology: referenceTopology(nodes, CPU),
    snapshot: SNAPSHOT,
    faults,
    seed,
  });
}

/** The result without what depends on the machine (wall time). */
function virtual(r: FleetResult): Omit<FleetResult, "wallSeconds"> {
  const { wallSeconds: _, ...rest } = r;
  return rest;
}

Deno.test("makeSnapshot: zero chunks come in runs and make up about the share asked for", () => {
  const s = makeSnapshot({ bytes: 2 * 1024 ** 3, chunkSize: 1024 ** 2, zeroFraction: 0.3 }, "x");
  const chunks = s.files[0]!.chunks.map((c) => c ?? "");
  assertEquals(chunks.length, 2048);
  const zero = chunks.filter((c) => !c.startsWith("chunk-")).length / chunks.length;
  assert(zero > 0.15 && zero < 0.45, `zero share ${zero}`);
  let runs = 0;
  for (let i = 1; i < chunks.length; i++) {
    if (chunks[i]!.startsWith("chunk-") !== chunks[i - 1]!.startsWith("chunk-")) runs++;
  }
  assert(runs < chunks.length / 8, `${runs} run changes: zeros are not scattered one by one`);
  assertEquals(s.nonZeroBytes, (chunks.length - zero * chunks.length) * 1024 ** 2);
});

Deno.test("sim: 24 nodes pull at once — all complete, the origin sends the snapshot once, every node uploads, the same seed gives the same run", async () => {
  const alone = await run(1);
  assertEquals(alone.completed, 1);
  assertEquals(alone.uploaders, 0);
  const r = await run(24);
  assertEquals([r.completed, r.failed, r.killed], [24, 0, 0], JSON.stringify(r.failures));
  assert(r.origin <= 1.1, `origin ${r.origin}× the non-zero bytes`);
  assert(r.uploaders >= 20, `${r.uploaders} uploaders`);
  assert(r.hottestShare <= 0.25, `the hottest node sent ${r.hottestShare} of the peer bytes`);
  assertEquals(r.badChunks, 0);
  // The swarm relays in parallel: the last node is done well before 24 serial copies.
  const row = toRow(r, alone.seconds.max);
  assert(row.p99 < 4, `p99 ${row.p99}× one node alone`);
  const line = JSON.parse(jsonLine(row));
  for (
    const key of [
      "scenario",
      "nodes",
      "p50",
      "p99",
      "max",
      "origin",
      "completed",
      "failed",
      "uploaders",
      "hottestShare",
    ]
  ) {
    assert(key in line, `--json line has ${key}`);
  }
  const again = await run(24);
  assertEquals(virtual(again), virtual(r), "same seed, same run");
});

Deno.test("sim: 8 nodes, the owner killed at 30% of a 2 GiB pull — the other 7 complete, the origin sends at most 1.2× the snapshot", async () => {
  const r = await runFleet({
    name: "owner-killed",
    topology: referenceTopology(8, CPU),
    snapshot: { bytes: 2 * 1024 ** 3, chunkSize: 1024 ** 2, zeroFraction: 0.3 },
    faults: { killOwnerAt: 0.3 },
    seed: "fleet-test",
  });
  assertEquals(r.killed, 1, "the owner was found and killed");
  assertEquals([r.completed, r.failed], [7, 0], JSON.stringify(r.failures));
  // What only the owner held when it died is read again; nothing else is.
  assert(r.origin <= 1.2, `origin ${r.origin}× the non-zero bytes`);
  assert(r.origin > 1, "the lost chunks were read again");
});

Deno.test("sim: a node sending corrupt chunks, slow nodes, dying nodes and views that disagree — the rest complete", async () => {
  const corrupt = await run(16, { corruptNodes: 1 });
  assertEquals([corrupt.completed, corrupt.failed], [16, 0], JSON.stringify(corrupt.failures));
  assert(corrupt.badChunks > 0, "the corrupt node's chunks were caught");
  const slow = await run(20, { slowFraction: 0.1, slowFactor: 10 });
  assertEquals([slow.completed, slow.failed], [20, 0], JSON.stringify(slow.failures));
  const dying = await run(20, { dyingFraction: 0.1 });
  assert(dying.killed >= 1, "some node died");
  assertEquals(dying.completed + dying.killed, 20, JSON.stringify(dying.failures));
  // A dying owner loses what only it held.
  assert(dying.origin <= 1.5, `origin ${dying.origin}×`);
  const split = await run(20, { viewMissing: 0.2 }, "split");
  assertEquals([split.completed, split.failed], [20, 0], JSON.stringify(split.failures));
  // A node that does not see the owner may take itself for the owner and
  // read the origin too: at most once more.
  assert(split.origin <= 2, `origin ${split.origin}×`);
});
