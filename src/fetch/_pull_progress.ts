// A pull's chunks and progress: global chunk numbers over its files, the
// totals (zero chunks are never fetched, so they do not count), and the
// report `/v1/pulls` shows.

import { chunkCount, chunkLength, ZERO_CHUNK } from "../manifest/mod.ts";
import type { RateMeter } from "../util/rate_meter.ts";
import type { PullFile, PullProgress, PullReport } from "./_pull_job_types.ts";

/** The files of a pull as global chunk numbers: chunk `i` of file `f` is `base[f] + i`. */
export interface ChunkLayout {
  /** Chunks per file. */
  counts: number[];
  /** First global chunk of each file. */
  base: number[];
  /** The hot chunks, in fetch order. */
  hot: number[];
  /** The zero chunks, in order. */
  zero: number[];
  /** Bytes of the chunks to fetch. */
  bytesTotal: number;
  /** Chunks to fetch (all but the zero chunks). */
  chunksTotal: number;
}

/** The chunk layout of `files`. */
export function layoutOf(files: readonly PullFile[], chunkSize: number): ChunkLayout {
  const counts = files.map((f) => chunkCount(f.size, chunkSize));
  const base: number[] = [];
  let at = 0;
  for (const n of counts) {
    base.push(at);
    at += n;
  }
  const hot: number[] = [];
  files.forEach((f, fi) => {
    for (const i of f.hot ?? []) hot.push(base[fi]! + i);
  });
  const zero: number[] = [];
  let bytesTotal = 0;
  let chunksTotal = 0;
  files.forEach((f, fi) => {
    f.chunks.forEach((digest, i) => {
      if (digest === ZERO_CHUNK) {
        zero.push(base[fi]! + i);
        return;
      }
      chunksTotal++;
      bytesTotal += chunkLength(f.size, chunkSize, i);
    });
  });
  return { counts, base, hot, zero, bytesTotal, chunksTotal };
}

/** Options for {@linkcode startProgress}. */
export interface StartProgressOptions {
  bytesTotal: number;
  chunksTotal: number;
  /** Wall-clock time the pull started, in ms. */
  startedAt: number;
}

/** The progress of a pull that has not received anything yet. */
export function startProgress(name: string, options: StartProgressOptions): PullProgress {
  return {
    name,
    bytesTotal: options.bytesTotal,
    bytesDone: 0,
    chunksTotal: options.chunksTotal,
    chunksDone: 0,
    bySource: { local: 0, peer: 0, origin: 0 },
    resumedBytes: 0,
    startedAt: options.startedAt,
    state: "running",
  };
}

/** Options for {@linkcode reportOf}. */
export interface ReportOptions {
  /** The pull's received bytes over time. */
  meter: RateMeter;
  /** Monotonic time, in ms. */
  now: number;
}

/** Progress with the current rate (smoothed over about ten seconds, see RateMeter). */
export function reportOf(progress: PullProgress, options: ReportOptions): PullReport {
  const { meter, now } = options;
  const left = progress.bytesTotal - progress.bytesDone;
  const eta = meter.eta(left, now);
  return {
    ...progress,
    bySource: { ...progress.bySource },
    rateBytesPerSecond: Math.round(meter.rate(now)),
    etaSeconds: eta === null ? null : Math.round(eta),
  };
}
