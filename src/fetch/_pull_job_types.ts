// The types of a pull job, re-exported from `pull_job.ts`: its files, its
// requests and their results, its data plane, its options and its progress.

import type { Logger } from "../log/mod.ts";
import type { Clock } from "../util/clock.ts";
import type { Random } from "../util/random.ts";
import type { SourceKind } from "./source.ts";

/** A file as the pull sees it. Chunk digests may be unknown (null) when adopting. */
export interface PullFile {
  name: string;
  size: number;
  /** Expected digest per chunk, `ZERO_CHUNK`, or null when unknown. */
  chunks: (string | null)[];
  hot?: number[];
}

/** A request the job sends: `count` chunks of file `file` from chunk `index` on. */
export interface ChunkFetch {
  source: string;
  file: number;
  index: number;
  count: number;
  /** The source may wait until it holds the chunks (the owner, for an urgent chunk). */
  wait: boolean;
}

/** What a fetch brought. */
export interface FetchResult {
  /** Chunks that verified (and were written), with their digests. */
  good: { index: number; digest: string }[];
  /** Chunks that arrived but failed verification. */
  bad: number[];
  /** Bytes received. */
  bytes: number;
  /** Why the fetch failed, when it did. */
  failure?: "busy" | "declined" | "gone" | "error";
  error?: unknown;
}

/** The data plane of a pull: reads chunks from a source, verifies and stores them. */
export interface ChunkIO {
  fetch(request: ChunkFetch, signal: AbortSignal): Promise<FetchResult>;
  /** Releases what the fetches held (open files). */
  close(): Promise<void>;
}

/** Options for `PullJob`. */
export interface PullJobOptions {
  name: string;
  files: PullFile[];
  chunkSize: number;
  io: ChunkIO;
  log: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** @default systemRandom */
  random?: Random;
  /** This node's zone (holders in it are preferred). @default null */
  zone?: string | null;
  /** This node's rack (holders in it preferred within the zone). @default null */
  rack?: string | null;
  /** Requests in flight at once. @default 16 */
  maxInFlight?: number;
  /** Called for every verified chunk, with its source kind and byte count. */
  onBytes?: (kind: SourceKind, bytes: number) => void;
  /** Called when a chunk fails verification. */
  onVerifyFailure?: (source: string, kind: SourceKind) => void;
  /** The pull fails when no chunk arrives for this long while nothing is in flight. @default 15000 */
  stallMs?: number;
}

/** Live progress of a pull. */
export interface PullProgress {
  name: string;
  bytesTotal: number;
  bytesDone: number;
  chunksTotal: number;
  chunksDone: number;
  bySource: Record<SourceKind, number>;
  /** Bytes of chunks a resumed pull found verified on disk (counted as `local` too). */
  resumedBytes: number;
  startedAt: number;
  state: "running" | "done" | "failed";
}

/** Progress as `/v1/pulls` reports it. */
export interface PullReport extends PullProgress {
  /** Bytes per second, smoothed over about ten seconds. */
  rateBytesPerSecond: number;
  /** Seconds left at that rate, or null. */
  etaSeconds: number | null;
}

/** What a job tells its subscribers: chunks it now holds. */
export type HaveListener = (file: number, index: number) => void;
