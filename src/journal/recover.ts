/**
 * Recovery of the write-ahead journal at open: load the checkpoint, replay
 * the records after it, truncate only a torn tail, and refuse (with a hint
 * that changes nothing on disk) any damage that could lose acknowledged
 * records.
 *
 * @module
 */

import type { FileHandle, FileSystem } from "../fs/mod.ts";
import { decodeCheckpoint, encodeJournalHeader, JOURNAL_HEADER_BYTES } from "./record.ts";
import { scanJournal } from "./reader.ts";
import type { JournalOptions, JournalStateMachine } from "./journal.ts";

/** What recovery found and did. */
export interface RecoveryReport {
  checkpointSeq: number;
  replayed: number;
  lastSeq: number;
  truncatedBytes: number;
  /**
   * True when the journal holds no state at all: no checkpoint and no
   * record (a new data directory, or a journal that was deleted or emptied).
   */
  empty: boolean;
  ms: number;
}

/** The journal cannot be replayed safely; the agent must not start. */
export class JournalCorruptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JournalCorruptError";
  }
}

export const WAL = "wal";
export const CHECKPOINT = "checkpoint";

function repairHint(dir: string): string {
  return `Nothing was changed. To recover, stop here and either restore ${dir} from a backup, ` +
    `or start once with --rebuild-index, which moves the journal aside and rebuilds the index ` +
    `from a verified scan of the snapshot files (no snapshot is deleted; pins and access ` +
    `times are kept where the old journal is still readable, and what is not is reported).`;
}

/**
 * Rebuilds `sm` from the journal in `options.dir` and opens the journal file
 * for appends, positioned after its last valid record.
 *
 * @throws {JournalCorruptError} on damage that is not a torn tail
 */
export async function recoverJournal(
  sm: JournalStateMachine,
  options: Pick<JournalOptions, "fs" | "dir" | "log">,
): Promise<{ file: FileHandle; walSize: number; recovery: RecoveryReport }> {
  const started = performance.now();
  const { fs, dir, log } = options;
  await fs.mkdir(dir);
  for (const name of await fs.readDir(dir)) {
    if (name.endsWith(".tmp")) await fs.remove(`${dir}/${name}`);
  }

  let checkpointSeq = 0;
  const checkpointPath = `${dir}/${CHECKPOINT}`;
  const checkpointStat = await fs.statOrNull(checkpointPath);
  if (checkpointStat !== null) {
    const decoded = decodeCheckpoint(await fs.readFile(checkpointPath));
    if (typeof decoded === "string") {
      throw new JournalCorruptError(
        `Checkpoint ${checkpointPath} is damaged (${decoded}); the journal cannot be replayed ` +
          `without it. ${repairHint(dir)}`,
      );
    }
    try {
      sm.restore(decoded.payload);
    } catch (err) {
      throw new JournalCorruptError(
        `Checkpoint ${checkpointPath} passed its checksum but could not be loaded ` +
          `(${(err as Error).message}). ${repairHint(dir)}`,
      );
    }
    checkpointSeq = decoded.seq;
  } else {
    sm.restore(null);
  }

  const walPath = `${dir}/${WAL}`;
  let lastSeq = checkpointSeq;
  let replayed = 0;
  let truncatedBytes = 0;
  let needsFreshWal = true;
  let walSize = 0;
  if (await fs.statOrNull(walPath) !== null) {
    const bytes = await fs.readFile(walPath);
    const scan = scanJournal(bytes, { isKnownType: (t) => sm.isKnownType(t) });
    if (scan === null) {
      throw new JournalCorruptError(
        `Journal ${walPath} has a damaged header. ${repairHint(dir)}`,
      );
    }
    if (scan.baseSeq > checkpointSeq + 1) {
      throw new JournalCorruptError(
        `Journal ${walPath} starts at record ${scan.baseSeq} but the checkpoint ends at ` +
          `${checkpointSeq}: records in between are missing. ${repairHint(dir)}`,
      );
    }
    if (scan.damage !== null && !scan.damage.tornTail) {
      throw new JournalCorruptError(
        `Journal ${walPath} is damaged in the middle at byte ${scan.damage.offset} ` +
          `(${scan.damage.detail}); dropping it would lose acknowledged records. ` +
          repairHint(dir),
      );
    }
    for (const record of scan.records) {
      if (record.seq <= checkpointSeq) continue;
      sm.apply(record);
      replayed++;
      lastSeq = record.seq;
    }
    const walLast = scan.records.at(-1)?.seq ?? scan.baseSeq - 1;
    if (scan.damage !== null) {
      truncatedBytes = bytes.length - scan.damage.offset;
      const file = await fs.open(walPath, { write: true });
      try {
        await file.truncate(scan.damage.offset);
        await file.sync();
      } finally {
        file.close();
      }
      log.warn("journal: truncated a torn tail", {
        path: walPath,
        offset: scan.damage.offset,
        bytes: truncatedBytes,
        detail: scan.damage.detail,
      });
    }
    // Keep appending to this file only when it continues exactly where the
    // state stands; otherwise (a crash between checkpoint and compaction)
    // start a fresh file after the checkpoint.
    needsFreshWal = walLast !== lastSeq || scan.baseSeq <= checkpointSeq;
    walSize = scan.validEnd;
  }

  let file: FileHandle;
  if (needsFreshWal) {
    await writeFreshWal(fs, dir, lastSeq + 1);
    file = await fs.open(walPath, { write: true });
    walSize = JOURNAL_HEADER_BYTES;
  } else {
    file = await fs.open(walPath, { write: true });
  }
  const recovery: RecoveryReport = {
    checkpointSeq,
    replayed,
    lastSeq,
    truncatedBytes,
    empty: checkpointStat === null && replayed === 0,
    ms: Math.round(performance.now() - started),
  };
  return { file, walSize, recovery };
}

/** Replaces the journal file with an empty one whose first record will be `baseSeq`. */
export async function writeFreshWal(fs: FileSystem, dir: string, baseSeq: number): Promise<void> {
  const tmp = `${dir}/${WAL}.tmp`;
  const file = await fs.open(tmp, { write: true, create: true, truncate: true });
  try {
    await file.writeAt(encodeJournalHeader(baseSeq), 0);
    await file.sync();
  } finally {
    file.close();
  }
  await fs.rename(tmp, `${dir}/${WAL}`);
  await fs.syncDir(dir);
}
