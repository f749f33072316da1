/**
 * The write-ahead journal: an append-only file of checksummed records, a
 * checkpoint of the whole state, and compaction.
 *
 * - Appends are group-committed: records queued while a write and fsync are
 *   in flight go out together in the next batch, with one fsync if any of
 *   them asked for durability.
 * - The state machine sees each record, in sequence order, only after it is
 *   written (and, when asked, fsynced). An append resolves after that.
 * - A failed write or fsync breaks the journal: nothing is acknowledged after
 *   it, and every later append fails (after a failed fsync Linux may have
 *   dropped the dirty pages; retrying the same write would lie) until
 *   {@linkcode Journal.heal} succeeds: it writes the state as it stands (only
 *   what was acknowledged) as a fresh checkpoint and starts a new journal
 *   file, so a disk that was full works again once space is freed.
 * - A checkpoint is written to a temp file, fsynced, renamed and its directory
 *   fsynced; then the journal restarts empty after it (compaction).
 *
 * @module
 */

import type { FileHandle, FileSystem } from "../fs/mod.ts";
import type { Logger } from "../log/mod.ts";
import {
  encodeCheckpoint,
  encodeRecord,
  JOURNAL_HEADER_BYTES,
  type JournalRecord,
} from "./record.ts";
import { CHECKPOINT, recoverJournal, type RecoveryReport, WAL, writeFreshWal } from "./recover.ts";
export { JournalCorruptError, type RecoveryReport } from "./recover.ts";

/** What the journal drives: the agent's state, rebuilt by replaying records. */
export interface JournalStateMachine {
  /** Applies one record. Called in sequence order; must not throw. */
  apply(record: JournalRecord): void;
  /** The whole state as checkpoint bytes. */
  snapshot(): Uint8Array;
  /** Replaces the state with a checkpoint's (or the empty state for null). */
  restore(payload: Uint8Array | null): void;
  /** True for record types this state machine understands. */
  isKnownType(type: number): boolean;
}

/** Options for {@linkcode Journal.open}. */
export interface JournalOptions {
  fs: FileSystem;
  /** Directory holding `wal` and `checkpoint`. */
  dir: string;
  log: Logger;
  /** Journal size that triggers a checkpoint and compaction. @default 8 MiB */
  compactAfterBytes?: number;
}

/** Counters for metrics. */
export interface JournalStats {
  records: number;
  bytes: number;
  syncs: number;
  checkpoints: number;
}

/** A write or fsync failed earlier; the journal takes no more writes until reopened. */
export class JournalBrokenError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "JournalBrokenError";
  }
}

interface Pending {
  record: JournalRecord;
  bytes: Uint8Array;
  sync: boolean;
  resolve: (seq: number) => void;
  reject: (err: Error) => void;
}

/** The write-ahead journal. Create with {@linkcode Journal.open}. */
export class Journal {
  readonly #fs: FileSystem;
  readonly #dir: string;
  readonly #log: Logger;
  readonly #sm: JournalStateMachine;
  readonly #compactAfter: number;
  #file: FileHandle;
  #size: number;
  #lastSeq: number;
  #writtenSeq: number;
  #queue: Pending[] = [];
  #flushScheduled = false;
  #chain: Promise<void> = Promise.resolve();
  #broken: Error | null = null;
  #closed = false;
  readonly stats: JournalStats = { records: 0, bytes: 0, syncs: 0, checkpoints: 0 };

  private constructor(
    sm: JournalStateMachine,
    options: JournalOptions,
    file: FileHandle,
    size: number,
    lastSeq: number,
  ) {
    this.#sm = sm;
    this.#fs = options.fs;
    this.#dir = options.dir;
    this.#log = options.log;
    this.#compactAfter = options.compactAfterBytes ?? 8 * 1024 * 1024;
    this.#file = file;
    this.#size = size;
    this.#lastSeq = lastSeq;
    this.#writtenSeq = lastSeq;
  }

  /**
   * Opens the journal in `options.dir`, replays it into `sm` and returns it
   * ready for appends.
   *
   * @throws {JournalCorruptError} on damage that is not a torn tail
   */
  static async open(
    sm: JournalStateMachine,
    options: JournalOptions,
  ): Promise<{ journal: Journal; recovery: RecoveryReport }> {
    const { file, walSize, recovery } = await recoverJournal(sm, options);
    const journal = new Journal(sm, options, file, walSize, recovery.lastSeq);
    return { journal, recovery };
  }

  /** Sequence number of the last record handed to {@linkcode Journal.append}. */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** The error that broke the journal, or null while it is healthy. */
  get broken(): Error | null {
    return this.#broken;
  }

  /** Bytes in the current journal file. */
  get size(): number {
    return this.#size;
  }

  /**
   * Appends one record. Resolves with its sequence number once it is written
   * and applied to the state machine (and fsynced when `sync` is true).
   */
  append(type: number, payload: Uint8Array, options: { sync: boolean }): Promise<number> {
    if (this.#broken) {
      return Promise.reject(
        new JournalBrokenError(
          `The journal refuses writes after an earlier failure (${this.#broken.message}); ` +
            `it retries on its own`,
          { cause: this.#broken },
        ),
      );
    }
    if (this.#closed) return Promise.reject(new JournalBrokenError("The journal is closed"));
    // Encode before taking the number: a record that cannot be encoded must
    // not leave a gap in the sequence.
    let bytes: Uint8Array;
    try {
      bytes = encodeRecord(this.#lastSeq + 1, type, payload, options.sync);
    } catch (err) {
      return Promise.reject(err);
    }
    const seq = ++this.#lastSeq;
    const record: JournalRecord = { seq, type, payload, durable: options.sync };
    const done = new Promise<number>((resolve, reject) => {
      this.#queue.push({ record, bytes, sync: options.sync, resolve, reject });
    });
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      this.#serial(() => this.#flush());
    }
    return done;
  }

  /**
   * Repairs a broken journal: writes the state as it stands (every
   * acknowledged record, none of a failed batch) as a new checkpoint, starts
   * a fresh journal file after it and takes writes again. Resolves true when
   * the journal is healthy (at once when it was), false when the repair
   * failed too (the disk is still full, say); it can be retried.
   */
  heal(): Promise<boolean> {
    let healed = false;
    return this.#serial(async () => {
      if (this.#closed) return;
      if (this.#broken === null) {
        healed = true;
        return;
      }
      const cause = this.#broken;
      try {
        await this.#writeCheckpoint(this.#writtenSeq);
        await this.#startFreshWal(this.#writtenSeq);
      } catch (err) {
        this.#log.debug("journal: repair failed; still refusing writes", { error: err });
        return;
      }
      this.#broken = null;
      // Appends are refused while broken, so none is queued: numbering
      // continues right after the last applied record.
      this.#lastSeq = this.#writtenSeq;
      healed = true;
      this.stats.checkpoints++;
      this.#log.warn("journal: repaired after a failed write; taking writes again", {
        seq: this.#writtenSeq,
        after: cause.message,
      });
    }).then(() => healed);
  }

  /** Writes a checkpoint now and compacts the journal. */
  checkpoint(): Promise<void> {
    return this.#serial(async () => {
      if (this.#broken) throw this.#broken;
      await this.#checkpointNow();
    });
  }

  /** Flushes queued records, optionally checkpoints, and closes the file. */
  async close(options: { checkpoint?: boolean } = {}): Promise<void> {
    if (this.#closed) return;
    await this.#serial(async () => {
      if (options.checkpoint && !this.#broken && this.#writtenSeq > 0) {
        await this.#checkpointNow().catch((err) => {
          this.#log.error("journal: checkpoint on close failed", { error: err });
        });
      }
      this.#closed = true;
      this.#file.close();
    });
  }

  #serial(task: () => Promise<void>): Promise<void> {
    const run = this.#chain.then(task);
    this.#chain = run.catch(() => {});
    return run;
  }

  async #flush(): Promise<void> {
    this.#flushScheduled = false;
    const batch = this.#queue.splice(0);
    if (batch.length === 0) return;
    if (this.#broken || this.#closed) {
      const err = new JournalBrokenError("The journal refuses writes after an earlier failure");
      for (const item of batch) item.reject(err);
      if (this.#queue.length === 0) this.#lastSeq = this.#writtenSeq;
      return;
    }
    const total = batch.reduce((n, item) => n + item.bytes.length, 0);
    const buffer = new Uint8Array(total);
    let at = 0;
    for (const item of batch) {
      buffer.set(item.bytes, at);
      at += item.bytes.length;
    }
    try {
      await this.#file.writeAt(buffer, this.#size);
      this.#size += total;
      if (batch.some((item) => item.sync)) {
        await this.#file.sync();
        this.stats.syncs++;
      }
    } catch (err) {
      this.#breakWith(err as Error, "append");
      const failure = new JournalBrokenError(
        `Journal write failed: ${(err as Error).message}`,
        { cause: err },
      );
      for (const item of batch) item.reject(failure);
      for (const item of this.#queue.splice(0)) item.reject(failure);
      // None of them was applied: their sequence numbers are free again.
      this.#lastSeq = this.#writtenSeq;
      return;
    }
    for (const item of batch) {
      try {
        this.#sm.apply(item.record);
      } catch (err) {
        this.#log.error("journal: state machine rejected a record", {
          seq: item.record.seq,
          type: item.record.type,
          error: err,
        });
      }
      this.#writtenSeq = item.record.seq;
      this.stats.records++;
      this.stats.bytes += item.bytes.length;
      item.resolve(item.record.seq);
    }
    if (this.#size >= this.#compactAfter) {
      await this.#checkpointNow().catch(() => {});
    }
  }

  async #checkpointNow(): Promise<void> {
    const seq = this.#writtenSeq;
    try {
      await this.#writeCheckpoint(seq);
    } catch (err) {
      // The old checkpoint and the whole journal are still intact.
      this.#log.error("journal: checkpoint failed; journal kept as is", { error: err });
      throw err;
    }
    try {
      await this.#startFreshWal(seq);
    } catch (err) {
      // Halfway: the checkpoint is new, the journal may be old or new. Both
      // replay correctly, but this process no longer knows which file its
      // handle points at, so it stops writing until heal() starts afresh.
      this.#breakWith(err as Error, "compaction");
      throw err;
    }
    this.stats.checkpoints++;
    this.#log.info("journal: checkpoint written", { seq });
  }

  /** Writes the state machine's state as the checkpoint at `seq`, durably. */
  async #writeCheckpoint(seq: number): Promise<void> {
    const fs = this.#fs;
    const dir = this.#dir;
    const payload = this.#sm.snapshot();
    const tmp = `${dir}/${CHECKPOINT}.tmp`;
    const file = await fs.open(tmp, { write: true, create: true, truncate: true });
    try {
      await file.writeAt(encodeCheckpoint(seq, payload), 0);
      await file.sync();
    } finally {
      file.close();
    }
    await fs.rename(tmp, `${dir}/${CHECKPOINT}`);
    await fs.syncDir(dir);
  }

  /** Replaces the journal file with an empty one that continues after `seq`. */
  async #startFreshWal(seq: number): Promise<void> {
    await writeFreshWal(this.#fs, this.#dir, seq + 1);
    const next = await this.#fs.open(`${this.#dir}/${WAL}`, { write: true });
    try {
      this.#file.close();
    } catch {
      // Already closed.
    }
    this.#file = next;
    this.#size = JOURNAL_HEADER_BYTES;
  }

  #breakWith(err: Error, during: string): void {
    if (this.#broken) return;
    this.#broken = err;
    this.#log.error(`journal: ${during} failed; refusing writes until it is repaired`, {
      error: err,
    });
  }
}
