/**
 * A simulated fleet pulling one snapshot at once, and what it measured.
 * Deterministic: the same scenario and seed give the same events, the same
 * times and the same bytes (one virtual clock, seeded randomness, no real
 * I/O).
 *
 * @module
 */

import { MemoryTransport } from "../cluster/mod.ts";
import { silentLogger } from "../log/mod.ts";
import { ZERO_CHUNK } from "../manifest/mod.ts";
import { VirtualClock } from "../util/clock.ts";
import { seededRandom } from "../util/random.ts";
import { Network, type TopologySpec } from "./network.ts";
import { SimNode, type SimSnapshot, type SimWorld } from "./node.ts";

/** The snapshot, by shape. */
export interface SnapshotSpec {
  bytes: number;
  chunkSize: number;
  /** Share of chunks that are all zero (never fetched). */
  zeroFraction: number;
}

/** Faults injected into a run. */
export interface FaultSpec {
  /** Kill the owner (SIGKILL) once it holds this share of the chunks. */
  killOwnerAt?: number;
  /** Share of nodes whose NIC is `slowFactor` times slower. */
  slowFraction?: number;
  /** @default 10 */
  slowFactor?: number;
  /** Share of nodes that die mid-pull (each at a random point of its own pull). */
  dyingFraction?: number;
  /** Nodes that send corrupted chunks. */
  corruptNodes?: number;
  /** Share of the fleet missing from each node's peer list (views that disagree). */
  viewMissing?: number;
}

/** One run. */
export interface ScenarioSpec {
  name: string;
  topology: TopologySpec;
  snapshot: SnapshotSpec;
  faults?: FaultSpec;
  seed: string;
  /** Nodes start their pulls spread over this window, in ms. @default 100 */
  startSpreadMs?: number;
  /** Give up after this much virtual time, in ms. @default 600000 */
  limitMs?: number;
}

/** What a run measured. Times are seconds of virtual time from each node's start. */
export interface FleetResult {
  scenario: string;
  nodes: number;
  /** Nodes that stayed up and completed, failed, or were killed on purpose. */
  completed: number;
  failed: number;
  killed: number;
  seconds: { p50: number; p99: number; max: number };
  /** Bytes the origin sent / non-zero bytes of the snapshot. */
  origin: number;
  /** Nodes that sent any chunk to a peer. */
  uploaders: number;
  /** The busiest uploader's share of all peer-to-peer bytes. */
  hottestShare: number;
  /** Bytes that crossed zones / non-zero bytes. */
  crossZone: number;
  /** Chunks that failed verification at their receiver. */
  badChunks: number;
  /** Virtual seconds until the last node ended. */
  makespan: number;
  /** Timers the virtual clock fired (the simulation's events). */
  events: number;
  /** Real seconds the run took. */
  wallSeconds: number;
  /** Why nodes failed, by message (at most a few). */
  failures: string[];
}

/**
 * A snapshot of the given shape: chunk digests are names. Zero chunks come
 * in runs, as in guest memory (untouched regions), of 32 chunks on average
 * (geometric lengths), alternating with data runs sized to give the zero
 * share asked for.
 */
export function makeSnapshot(spec: SnapshotSpec, seed: string): SimSnapshot {
  const random = seededRandom(`snapshot ${seed}`);
  const count = Math.ceil(spec.bytes / spec.chunkSize);
  const zeroRun = 32;
  const dataRun = spec.zeroFraction > 0
    ? zeroRun * (1 - spec.zeroFraction) / spec.zeroFraction
    : Infinity;
  const chunks: string[] = [];
  let nonZeroBytes = 0;
  let zero = random.next() < spec.zeroFraction;
  for (let i = 0; i < count; i++) {
    // Leave the current run with probability 1 / its mean length.
    if (random.next() < 1 / (zero ? zeroRun : dataRun)) zero = !zero;
    const size = Math.min(spec.chunkSize, spec.bytes - i * spec.chunkSize);
    if (zero) {
      chunks.push(ZERO_CHUNK);
    } else {
      chunks.push(`chunk-${i}`);
      nonZeroBytes += size;
    }
  }
  return {
    name: "fn-sim",
    digest: "5".repeat(64),
    chunkSize: spec.chunkSize,
    files: [{ name: "mem", size: spec.bytes, chunks }],
    nonZeroBytes,
  };
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const at = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[at]!;
}

/** Runs one scenario to the end and measures it. */
export async function runFleet(spec: ScenarioSpec): Promise<FleetResult> {
  const wallStart = performance.now();
  const clock = new VirtualClock();
  const random = seededRandom(spec.seed);
  const network = new Network(spec.topology);
  const snapshot = makeSnapshot(spec.snapshot, spec.seed);
  const world: SimWorld = {
    clock,
    network,
    transport: new MemoryTransport({ clock, latencyMs: spec.topology.latencyMs.zone * 2 }),
    log: silentLogger,
    snapshot,
    nodes: new Map(),
    counters: { originBytes: 0, peerBytes: 0, badChunks: 0 },
  };
  const faults = spec.faults ?? {};
  const n = spec.topology.nodes;
  const ids = Array.from({ length: n }, (_, i) => `node-${i}`);
  const urls = ids.map((id) => `http://${id}.sim:7070`);
  const pick = (share: number | undefined, label: string) =>
    new Set(random.fork(label).sample(ids, Math.round((share ?? 0) * n)));
  const slow = pick(faults.slowFraction, "slow");
  const dying = pick(faults.dyingFraction, "dying");
  const corrupt = new Set(random.fork("corrupt").sample(ids, faults.corruptNodes ?? 0));
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    const place = network.places[i]!;
    if (slow.has(id)) network.slow(place, faults.slowFactor ?? 10);
    let view = urls.filter((_, j) => j !== i);
    if (faults.viewMissing) {
      const missing = new Set(
        random.fork(`view ${id}`).sample(view, Math.round(faults.viewMissing * n)),
      );
      view = view.filter((u) => !missing.has(u));
    }
    world.nodes.set(
      id,
      new SimNode({
        id,
        url: urls[i]!,
        place,
        world,
        view,
        random: random.fork(id),
        corrupt: corrupt.has(id),
      }),
    );
  }
  const nodes = [...world.nodes.values()];

  // Up for a while before the pull: a probe round or two.
  const joined = Promise.all(nodes.map((node) => node.join()));
  await clock.advance(2000);
  await joined;

  const killed = new Set<SimNode>();
  const kill = (node: SimNode) => {
    killed.add(node);
    node.kill();
  };
  // The owner as a node with the full view sees it.
  const owner = faults.killOwnerAt === undefined ? null : ownerOf(nodes);
  const dieAt = new Map<SimNode, number>();
  const dyingRandom = random.fork("die at");
  for (const node of nodes) if (dying.has(node.id)) dieAt.set(node, 0.1 + 0.8 * dyingRandom.next());

  const spread = spec.startSpreadMs ?? 100;
  const startRandom = random.fork("start");
  let ended = 0;
  const t0 = clock.monotonic();
  for (const node of nodes) {
    const delay = spread * startRandom.next();
    clock.setTimeout(() => {
      if (!node.alive) {
        ended++;
        return;
      }
      node.pull().finally(() => ended++);
      const job = node.job!;
      const threshold = node === owner ? faults.killOwnerAt! : dieAt.get(node);
      if (threshold !== undefined) {
        const stop = job.onHave(() => {
          if (job.progress.chunksDone >= threshold * job.progress.chunksTotal) {
            stop();
            queueMicrotask(() => kill(node));
          }
        });
      }
    }, delay);
  }
  await clock.runUntil(() => ended === n, { maxMs: spec.limitMs ?? 600_000 });
  for (const node of nodes) node.membership.stop();

  const times: number[] = [];
  const failures = new Map<string, number>();
  let failed = 0;
  for (const node of nodes) {
    if (killed.has(node)) continue;
    if (node.failure !== null || node.job?.progress.state !== "done") {
      failed++;
      const why = node.failure ?? "did not finish";
      failures.set(why, (failures.get(why) ?? 0) + 1);
      continue;
    }
    times.push((node.endedAt! - node.startedAt!) / 1000);
  }
  times.sort((a, b) => a - b);
  const uploads = nodes.map((node) => node.uploaded);
  const totalUploaded = uploads.reduce((a, b) => a + b, 0);
  return {
    scenario: spec.name,
    nodes: n,
    completed: times.length,
    failed,
    killed: killed.size,
    seconds: { p50: quantile(times, 0.5), p99: quantile(times, 0.99), max: times.at(-1) ?? NaN },
    origin: world.counters.originBytes / snapshot.nonZeroBytes,
    uploaders: uploads.filter((b) => b > 0).length,
    hottestShare: totalUploaded > 0 ? Math.max(...uploads) / totalUploaded : 0,
    crossZone: network.crossZoneBytes / snapshot.nonZeroBytes,
    badChunks: world.counters.badChunks,
    makespan: (clock.monotonic() - t0) / 1000,
    events: clock.timersFired,
    wallSeconds: (performance.now() - wallStart) / 1000,
    failures: [...failures].slice(0, 4).map(([why, count]) => `${count}× ${why}`),
  };
}

/**
 * The owner of the snapshot as a node with the full view ranks it (by URL:
 * a peer's id is its URL until it says its own).
 */
function ownerOf(nodes: SimNode[]): SimNode {
  const best = nodes[0]!.owners()[0]!;
  return best.self ? nodes[0]! : nodes.find((node) => node.url === best.url)!;
}
