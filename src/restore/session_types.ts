/**
 * What a restore session reads (the memory file as a {@linkcode MemoryImage}),
 * how it ends, and what it counts.
 *
 * @module
 */

/** Where a faulting page came from. */
export type FaultSource = "local" | "peer" | "origin" | "zero";

/** What a chunk of the memory file is, right now. */
export type ChunkState = "zero" | "ready" | "missing";

/** The memory file as a session reads it. */
export interface MemoryImage {
  readonly size: number;
  readonly chunkSize: number;
  /** Chunks in the file. */
  readonly chunks: number;
  /**
   * `zero` (a hole), `ready` (local and verified: {@linkcode MemoryImage.read}
   * may read it), or `missing`. May verify a local chunk first.
   */
  state(index: number): ChunkState;
  /** Makes chunk `index` ready (fetching it at top priority); resolves with where it came from. */
  fetch(index: number): Promise<FaultSource>;
  /** Fills `buffer` from `offset`; every chunk it covers is ready or zero. Past the end: zeros. */
  read(buffer: Uint8Array, offset: number): void;
  close(): void;
}

/** How a session ended. */
export type SessionOutcome =
  /** The VM process exited. */
  | "vm_exited"
  /** Ended on request (`DELETE /v1/restores/{id}`); the VM is killed unless detached. */
  | "ended"
  /** A fault could not be served: the VM was killed. */
  | "failed"
  /** The agent shut down and the VM could not go on without it: killed. */
  | "shutdown"
  /** Every page was installed: the VM runs on without the agent. */
  | "detached";

/** Counters of one session. */
export interface SessionStats {
  faults: Record<FaultSource, number>;
  /** Fault messages read (duplicates of a page already on its way included). */
  faultEvents: number;
  /** Faults on chunks outside the working set (when there is one). */
  outsideWorkingSet: number;
  prefetchedPages: number;
  removedPages: number;
}

/** Hooks for metrics. */
export interface SessionObserver {
  fault?(source: FaultSource, seconds: number, outsideWorkingSet: boolean): void;
  prefetched?(pages: number): void;
}
