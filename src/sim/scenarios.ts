/**
 * The fleets and faults `deno task sim` runs: the reference fleet
 * (2 zones of 25 racks, 10 Gbit/s NICs, S3 behind it, a 2 GiB snapshot
 * with 30% zero chunks) and the faults to survive in it.
 *
 * @module
 */

import type { FaultSpec, ScenarioSpec, SnapshotSpec } from "./fleet.ts";
import type { CpuSpec, TopologySpec } from "./network.ts";

/**
 * The reference fleet for `nodes` nodes, with the CPU costs given; its
 * nodes are told their rack (`--rack`) unless `rackLabels` is false.
 */
export function referenceTopology(nodes: number, cpu: CpuSpec, rackLabels = true): TopologySpec {
  return {
    nodes,
    zones: 2,
    racksPerZone: 25,
    hostsPerRack: 20,
    rackLabels,
    nicBitsPerSecond: 10e9,
    rackOversubscription: 4,
    crossZoneBitsPerSecond: 200e9,
    latencyMs: { rack: 0.05, zone: 0.15, crossZone: 0.6 },
    origin: {
      firstByteMs: 30,
      connectionBytesPerSecond: 90e6,
      requestsPerSecond: 5500,
      aggregateBytesPerSecond: 12.5e9,
    },
    cpu,
  };
}

/**
 * The fleet `deno task bench fleet` builds on this machine, for calibration:
 * one bridge (no racks, no zones), 200 Mbit/s links each way, s3rver behind
 * a link of its own, and every agent sharing the machine's two cores. The
 * CPU per MiB is what the agents spend there in all (HTTP, hashing, writes,
 * have streams), measured from that bench's CPU accounting, not the bare
 * hashing and writing the reference fleet charges.
 */
export function benchFleetTopology(nodes: number): TopologySpec {
  const link = 200e6;
  return {
    nodes,
    zones: 1,
    racksPerZone: 1,
    hostsPerRack: Math.max(1, nodes),
    rackLabels: false,
    nicBitsPerSecond: link,
    rackOversubscription: 1e-6, // a software bridge: never the bottleneck
    crossZoneBitsPerSecond: link,
    latencyMs: { rack: 0.05, zone: 0.05, crossZone: 0.05 },
    origin: {
      firstByteMs: 3,
      connectionBytesPerSecond: link / 8,
      requestsPerSecond: 500,
      aggregateBytesPerSecond: link / 8,
    },
    cpu: { receiveMsPerMiB: 10, sendMsPerMiB: 4, cores: 2, shared: true },
  };
}

/** The snapshot of `bench fleet`: 256 MiB, 1 MiB chunks, 30% zero. */
export const BENCH_FLEET_SNAPSHOT: SnapshotSpec = {
  bytes: 256 * 1024 ** 2,
  chunkSize: 1024 ** 2,
  zeroFraction: 0.3,
};

/** The reference snapshot: 2 GiB, 1 MiB chunks (the agent's default), 30% zero. */
export const REFERENCE_SNAPSHOT: SnapshotSpec = {
  bytes: 2 * 1024 ** 3,
  chunkSize: 1024 ** 2,
  zeroFraction: 0.3,
};

/** The scenarios by name: their faults. */
export const SCENARIOS: Record<string, { faults: FaultSpec; about: string }> = {
  baseline: { faults: {}, about: "every node pulls at once, no fault" },
  "owner-killed": {
    faults: { killOwnerAt: 0.3 },
    about: "the owner is SIGKILLed once it holds 30% of the chunks",
  },
  "slow-5pct": {
    faults: { slowFraction: 0.05, slowFactor: 10 },
    about: "5% of the nodes have 10x less bandwidth",
  },
  "dying-1pct": {
    faults: { dyingFraction: 0.01 },
    about: "1% of the nodes die mid-pull (each at a random point of its own pull)",
  },
  "split-views": {
    faults: { viewMissing: 0.1 },
    about: "membership views disagree: each node's peer list misses a random 10% of the fleet",
  },
};

/** A scenario of the reference fleet. */
export function scenario(
  name: string,
  options: {
    nodes: number;
    cpu: CpuSpec;
    seed: string;
    snapshot?: SnapshotSpec;
    /** The nodes are told their rack. @default true */
    rackLabels?: boolean;
    /** `reference` (the fleet) or `bench-fleet` (this machine's shaped fleet). */
    topology?: "reference" | "bench-fleet";
  },
): ScenarioSpec {
  const known = SCENARIOS[name];
  if (!known) {
    throw new RangeError(
      `Unknown scenario "${name}"; known: ${Object.keys(SCENARIOS).join(", ")}`,
    );
  }
  return {
    name,
    topology: options.topology === "bench-fleet"
      ? benchFleetTopology(options.nodes)
      : referenceTopology(options.nodes, options.cpu, options.rackLabels ?? true),
    snapshot: options.snapshot ?? REFERENCE_SNAPSHOT,
    faults: known.faults,
    seed: options.seed,
  };
}
