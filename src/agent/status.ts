/**
 * The figures of `/v1/status`, assembled from the services that own them.
 *
 * @module
 */

import type { PushMode } from "../config/mod.ts";
import type { PushStatus } from "../origin/mod.ts";
import type { AgentRecovery } from "./startup.ts";
import type { Services } from "./wiring.ts";

/** Cache figures: bytes, entries, hits and misses, evictions, the scrub. */
export function cacheStatus(services: Services): Record<string, number> {
  const { catalog, budget, reads, scrubber } = services;
  const entries = catalog.entries();
  return {
    bytes: catalog.index.totalBytes,
    capacityBytes: budget.capacity,
    reservedBytes: budget.reserved,
    entries: entries.length,
    pinned: entries.filter((e) => e.pinned).length,
    hits: reads.counters.hits,
    misses: reads.counters.misses,
    evictions: catalog.counters.evictions,
    trustedChunks: catalog.trust.trustedChunks,
    scrubPasses: scrubber?.stats.passes ?? 0,
    scrubbedBytes: scrubber?.stats.bytes ?? 0,
    scrubCorrupt: scrubber?.stats.corrupt ?? 0,
  };
}

/** Journal figures, with what the start found. */
export function journalStatus(
  services: Services,
  recovery: AgentRecovery,
): Record<string, unknown> {
  const journal = services.catalog.journal;
  return {
    seq: journal.lastSeq,
    bytes: journal.size,
    checkpoints: journal.stats.checkpoints,
    healthy: journal.broken === null,
    error: journal.broken?.message ?? null,
    recoveryMs: recovery.ms,
    /** Records replayed after the last checkpoint at start (0 after a clean shutdown). */
    replayedRecords: recovery.replayed,
    truncatedBytes: recovery.truncatedBytes,
    /** Snapshot directories moved to quarantine/ at start (never deleted). */
    quarantinedDirs: recovery.quarantinedDirs,
    /** Set when the index was rebuilt from a verified scan at start. */
    rebuild: recovery.rebuild,
  };
}

/** Origin health and push queue, or null without an origin. */
export function originStatus(
  services: Services,
  mode: PushMode,
): (Record<string, unknown> & { push: PushStatus & { mode: string } }) | null {
  const { origin, pusher } = services;
  if (!origin || !pusher) return null;
  return { ...origin.health(), push: { mode, ...pusher.status() } };
}
