// Resuming a pull cut short (a failure, a restart): its partial on disk
// keeps the chunks already written, and those that still verify count.

import type { Logger } from "../log/mod.ts";
import { chunkLength, verifyChunk, ZERO_CHUNK } from "../manifest/mod.ts";
import type { SnapshotStore } from "../store/mod.ts";
import type { PullJob } from "./pull_job.ts";

/** Options for {@linkcode resumeVerified}. */
export interface ResumeOptions {
  /** The partial's key. */
  key: string;
  store: SnapshotStore;
  log: Logger;
}

/** Marks the chunks a cut-short pull already verified. */
export async function resumeVerified(job: PullJob, options: ResumeOptions): Promise<void> {
  const { key, store, log } = options;
  let reused = 0;
  for (let fi = 0; fi < job.files.length; fi++) {
    const file = job.files[fi]!;
    const handle = await store.openPartialFile(key, file.name);
    try {
      const buffer = new Uint8Array(job.chunkSize);
      for (let i = 0; i < file.chunks.length; i++) {
        const expected = file.chunks[i];
        if (expected === ZERO_CHUNK || expected === null || expected === undefined) continue;
        const length = chunkLength(file.size, job.chunkSize, i);
        const view = buffer.subarray(0, length);
        const n = await handle.readAt(view, i * job.chunkSize);
        if (n === length && verifyChunk(view, expected) !== null) {
          job.markPresent(fi, i, length, expected);
          reused += length;
        }
      }
    } finally {
      handle.close();
    }
  }
  log.info("pull: resuming from verified chunks", { name: job.name, key, reusedBytes: reused });
}
