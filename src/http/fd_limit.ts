/**
 * Raising the soft limit on open file descriptors to the hard limit, through
 * libc (`getrlimit`/`setrlimit`) over FFI: distributions start services with
 * a soft limit of 1024 and a hard one far above, and every connection, open
 * file and peer socket takes a descriptor.
 *
 * @module
 */

import { type Logger, silentLogger } from "../log/mod.ts";

/** The descriptor limits of this process. */
export interface FdLimit {
  soft: number;
  hard: number;
}

/** `RLIMIT_NOFILE` on Linux (x86_64 and aarch64 alike). */
const RLIMIT_NOFILE = 7;
/** `RLIM_INFINITY`: all bits set in the 64-bit `rlim_t`. */
const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

/**
 * Raises the soft `RLIMIT_NOFILE` to the hard limit where allowed and
 * returns the limits in force; null when they cannot be read (not Linux,
 * FFI not permitted, no libc). Failures are logged at debug: the agent runs
 * on with the limit it has.
 */
export function raiseFdLimit(log: Logger = silentLogger): FdLimit | null {
  if (
    Deno.build.os !== "linux" || (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64")
  ) {
    return null;
  }
  let libc;
  try {
    libc = Deno.dlopen(
      "libc.so.6",
      {
        getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
        setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
      } as const,
    );
  } catch (err) {
    log.debug("cannot raise the open file limit: no FFI", { error: err });
    return null;
  }
  try {
    // struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; }, two u64.
    const limits = new BigUint64Array(2);
    if (libc.symbols.getrlimit(RLIMIT_NOFILE, limits) !== 0) {
      log.debug("cannot raise the open file limit: getrlimit failed");
      return null;
    }
    const [soft, hard] = limits as unknown as [bigint, bigint];
    if (soft < hard && hard !== RLIM_INFINITY) {
      const wanted = new BigUint64Array([hard, hard]);
      if (libc.symbols.setrlimit(RLIMIT_NOFILE, wanted) === 0) {
        limits[0] = hard;
      } else {
        log.debug("cannot raise the open file limit: setrlimit failed", {
          soft: Number(soft),
          hard: Number(hard),
        });
      }
    }
    return { soft: toNumber(limits[0]!), hard: toNumber(limits[1]!) };
  } finally {
    libc.close();
  }
}

function toNumber(limit: bigint): number {
  return limit === RLIM_INFINITY ? Infinity : Number(limit);
}
