/**
 * The CPU a chunk costs a node, measured on this machine with the agent's
 * own functions: a receiver verifies each chunk (`verifyChunk`, sha256)
 * and writes it at its offset (`FileHandle.writeAt`); a sender reads it
 * (`FileHandle.readAt`; a chunk verified once is trusted, not re-hashed).
 * The HTTP stack's own cost is not in these figures (`deno task bench
 * fleet` includes it; the calibration reports how far apart they are).
 *
 * @module
 */

import { DenoFileSystem } from "../fs/mod.ts";
import { chunkDigest, verifyChunk } from "../manifest/mod.ts";
import type { CpuSpec } from "./network.ts";

const MIB = 1024 * 1024;

/** Median of `runs` timings of `fn`, in ms. */
async function median(runs: number, fn: () => Promise<void> | void): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await fn();
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** Measures the receive and send costs of one MiB on this machine (about a second). */
export async function measureCpu(options: { cores?: number } = {}): Promise<CpuSpec> {
  const chunk = new Uint8Array(MIB);
  // getRandomValues fills at most 64 KiB per call.
  for (let at = 0; at < MIB; at += 65536) crypto.getRandomValues(chunk.subarray(at, at + 65536));
  // Distinct bytes per run would not change sha256's cost: one buffer will do.
  const digest = chunkDigest(chunk);
  const dir = await Deno.makeTempDir({ prefix: "snapmesh-sim-cpu-" });
  const fs = new DenoFileSystem();
  try {
    const handle = await fs.open(`${dir}/chunks`, { write: true, create: true });
    try {
      const slots = 16;
      let at = 0;
      const verify = await median(32, () => {
        if (verifyChunk(chunk, digest) === null) throw new Error("sha256 disagrees with itself");
      });
      const write = await median(32, async () => {
        await handle.writeAt(chunk, (at++ % slots) * MIB);
      });
      const buffer = new Uint8Array(MIB);
      const read = await median(32, async () => {
        await handle.readAt(buffer, (at++ % slots) * MIB);
      });
      return {
        receiveMsPerMiB: verify + write,
        sendMsPerMiB: read,
        cores: options.cores ?? navigator.hardwareConcurrency,
      };
    } finally {
      handle.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
