// The scheduler's view of one source, shared by the scheduler and its searches.

import { bit } from "./_bits.ts";
import type { SourceSpec } from "./_scheduler_types.ts";

/** What the scheduler knows of a source, and how it has done so far. */
export interface SourceState extends Omit<SourceSpec, "strikes"> {
  zone: string | null;
  rack: string | null;
  /** Bad answers tolerated (from the spec). */
  maxStrikes: number | undefined;
  /** Held chunks, or null when it holds everything. */
  have: Uint8Array | null;
  inFlight: number;
  chokedUntil: number;
  /** Chunks it holds that are missing here and not requested: worth asking it. */
  useful: number;
  /** Chunks it declined, and until when it is not asked for them. */
  declined: Map<number, number>;
  /** Measured rate in bytes per ms (exponentially weighted), or null. */
  rate: number | null;
  strikes: number;
}

/** True when `source` holds `chunk`. */
export function holds(source: SourceState, chunk: number): boolean {
  return source.have === null || bit(source.have, chunk);
}

/** True while `source` declined `chunk` (forgotten once the time is past). */
export function declinedNow(source: SourceState, chunk: number, now: number): boolean {
  const until = source.declined.get(chunk);
  if (until === undefined) return false;
  if (until > now) return true;
  source.declined.delete(chunk);
  return false;
}
