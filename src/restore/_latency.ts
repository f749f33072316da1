/**
 * Fault service times of one restore session, kept per source in rings of
 * the last {@linkcode LATENCY_SAMPLES} faults, for percentiles. Private to
 * `src/restore/`.
 *
 * @module
 */

import type { FaultSource } from "./session_types.ts";

/** Fault service times kept per source, for percentiles. */
export const LATENCY_SAMPLES = 8192;

/** p50 and p99 of one source's fault service times, in µs. */
export interface LatencyPercentiles {
  p50: number;
  p99: number;
  samples: number;
}

/** The last fault service times by source. */
export class FaultLatency {
  readonly #rings: Record<FaultSource, { samples: Float64Array; next: number }> = {
    local: { samples: new Float64Array(LATENCY_SAMPLES), next: 0 },
    peer: { samples: new Float64Array(LATENCY_SAMPLES), next: 0 },
    origin: { samples: new Float64Array(LATENCY_SAMPLES), next: 0 },
    zero: { samples: new Float64Array(LATENCY_SAMPLES), next: 0 },
  };

  /** Counts one fault served from `source` in `seconds`. */
  record(source: FaultSource, seconds: number): void {
    const ring = this.#rings[source];
    ring.samples[ring.next++ % ring.samples.length] = seconds;
  }

  /** p50 and p99 by source, in µs; sources without faults are left out. */
  percentilesUs(): Partial<Record<FaultSource, LatencyPercentiles>> {
    const out: Partial<Record<FaultSource, LatencyPercentiles>> = {};
    for (const [source, ring] of Object.entries(this.#rings)) {
      const n = Math.min(ring.next, ring.samples.length);
      if (n === 0) continue;
      const sorted = ring.samples.slice(0, n).sort();
      const at = (p: number) => Math.round(sorted[Math.min(n - 1, Math.floor(p * n))]! * 1e7) / 10;
      out[source as FaultSource] = { p50: at(0.5), p99: at(0.99), samples: n };
    }
    return out;
  }
}
