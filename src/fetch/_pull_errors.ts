// The errors a pull fails with.

import { errorMessage, SnapmeshError } from "../errors.ts";
import { isNoSpace } from "../fs/mod.ts";

/**
 * The error a pull fails with: a full disk is `insufficient_storage` (507),
 * anything else not already classified is `upstream_failed` (502).
 */
export function asPullError(name: string, err: unknown): SnapmeshError {
  if (err instanceof SnapmeshError) return err;
  if (isNoSpace(err)) {
    return new SnapmeshError(
      "insufficient_storage",
      `Pull of "${name}" failed: the disk is full (${errorMessage(err)})`,
    );
  }
  return new SnapmeshError("upstream_failed", `Pull of "${name}" failed: ${errorMessage(err)}`);
}

/** Options for {@linkcode cannotFinish}. */
export interface CannotFinishOptions {
  /** Why the pull cannot finish. */
  why: string;
  /** Chunks still missing. */
  remaining: number;
  /** What was tried and failed, oldest first (the last eight are named). */
  tried: readonly string[];
}

/** The `upstream_failed` error of a pull that cannot finish. */
export function cannotFinish(name: string, options: CannotFinishOptions): SnapmeshError {
  const { why, remaining, tried } = options;
  const list = tried.length ? `; tried: ${tried.slice(-8).join("; ")}` : "";
  return new SnapmeshError(
    "upstream_failed",
    `Pull of "${name}" cannot finish: ${why} (${remaining} chunk(s) missing)${list}`,
  );
}
