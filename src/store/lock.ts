/**
 * The data-directory lock: one agent per data directory. The lock is an
 * advisory `flock` on `<data>/LOCK`, released by the kernel when the process
 * dies, so a crashed agent never leaves a stale lock behind.
 *
 * @module
 */

/** A held data-directory lock. */
export interface DataDirLock {
  release(): void;
}

/** Another process holds the lock. */
export class DataDirLockedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DataDirLockedError";
  }
}

/**
 * Takes the lock of `dataDir` without waiting.
 *
 * @throws {DataDirLockedError} when another agent holds it
 */
export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  await Deno.mkdir(dataDir, { recursive: true });
  const path = `${dataDir}/LOCK`;
  const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o644 });
  if (!(await file.tryLock(true))) {
    file.close();
    let holder = "";
    try {
      const pid = (await Deno.readTextFile(path)).trim();
      if (pid) holder = ` (pid ${pid})`;
    } catch {
      // The pid is only a hint.
    }
    throw new DataDirLockedError(
      `Another snapmesh agent${holder} is using the data directory ${dataDir}; ` +
        `stop it or choose another --data-dir`,
    );
  }
  await file.truncate(0);
  await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  return {
    release() {
      try {
        file.unlockSync();
        file.close();
      } catch {
        // Already closed.
      }
    },
  };
}
