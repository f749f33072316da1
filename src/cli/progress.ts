/**
 * A progress bar for long transfers, drawn on stderr only when it is a TTY.
 *
 * The rate is smoothed over about ten seconds ({@linkcode RateMeter}) and
 * the ETA comes from it, unless the caller has better figures (a pull
 * reports the node's own). Once every byte has left, a transfer that still
 * waits for the node (which writes, hashes and syncs the last chunks) shows
 * that phase and its duration instead of sitting at 100%.
 *
 * @module
 */

import { formatSize } from "../config/mod.ts";
import { RateMeter } from "../util/rate_meter.ts";

/** Figures a caller may give instead of the bar's own. */
export interface ProgressFigures {
  /** Bytes per second. */
  rate?: number;
  /** Seconds left, or null when unknown. */
  etaSeconds?: number | null;
}

/** Reports transfer progress. */
export interface Progress {
  /** `done` bytes so far. */
  update(done: number, figures?: ProgressFigures): void;
  /** Shows a phase (like "committing") after the bytes, with its running time; null ends it. */
  phase(text: string | null): void;
  /** Draws the last line: complete when `ok`, else as far as it got. */
  finish(ok?: boolean): void;
}

const encoder = new TextEncoder();

/** A progress reporter that draws nothing. */
export const noProgress: Progress = { update() {}, phase() {}, finish() {} };

/** `3 s`, `2 min 5 s`, `1 h 4 min`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/**
 * A progress bar for `label` of `total` bytes (null when unknown), or a
 * no-op when `enabled` is false.
 */
export function progressBar(label: string, total: number | null, enabled: boolean): Progress {
  if (!enabled) return noProgress;
  const started = performance.now();
  const meter = new RateMeter({ now: () => performance.now() });
  let last = 0;
  let done = 0;
  let given: ProgressFigures = {};
  let phase: { text: string; since: number } | null = null;
  let ticker: ReturnType<typeof setInterval> | undefined;
  let finished = false;

  const bar = (ratio: number) => {
    const width = 30;
    const full = Math.round(Math.min(Math.max(ratio, 0), 1) * width);
    return `[${"#".repeat(full)}${".".repeat(width - full)}]`;
  };
  const draw = (final: "ok" | "failed" | null) => {
    const now = performance.now();
    if (final === null && now - last < 100) return;
    last = now;
    const sized = total !== null && total > 0;
    let line: string;
    const bytes = sized || done > 0;
    if (final === "ok") {
      const seconds = (now - started) / 1000;
      const average = seconds > 0 && done > 0 ? ` (${formatSize(done / seconds)}/s)` : "";
      line = sized
        ? `${label} ${bar(1)} 100% ${formatSize(done)}/${formatSize(total)}`
        : `${label} ${bytes ? formatSize(done) : "done"}`;
      line += ` in ${formatDuration(seconds)}${average}`;
    } else if (phase) {
      const waited = formatDuration((now - phase.since) / 1000);
      line = `${label} ${sized ? `${bar(done / total)} ` : ""}` +
        `${bytes ? `sent ${formatSize(done)} · ` : ""}${phase.text} ${waited}`;
    } else {
      const rate = given.rate ?? meter.rate();
      const eta = given.etaSeconds !== undefined
        ? given.etaSeconds
        : sized
        ? meter.eta(total - done)
        : null;
      const figures = `${formatSize(rate)}/s` + (eta === null ? "" : ` ETA ${formatDuration(eta)}`);
      line = sized
        ? `${label} ${bar(done / total)} ${
          (Math.min(done / total, 1) * 100).toFixed(0).padStart(3)
        }% ` +
          `${formatSize(done)}/${formatSize(total)} ${figures}`
        : `${label} ${formatSize(done)} ${figures}`;
    }
    Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${line}${final ? "\n" : ""}`));
  };
  return {
    update(value, figures = {}) {
      if (finished) return;
      if (value > done) meter.add(value - done);
      done = value;
      given = figures;
      draw(null);
    },
    phase(text) {
      // The answer may come before the client learns that its last byte left.
      if (finished) return;
      clearInterval(ticker);
      ticker = undefined;
      phase = text === null ? null : { text, since: performance.now() };
      if (phase) {
        // Redraw once a second, so the waiting time shows.
        ticker = setInterval(() => draw(null), 1000);
        last = 0;
        draw(null);
      }
    },
    finish(ok = true) {
      if (finished) return;
      finished = true;
      clearInterval(ticker);
      ticker = undefined;
      draw(ok ? "ok" : "failed");
    },
  };
}

/** True when progress bars should be drawn (stderr is a terminal). */
export function progressEnabled(json: boolean): boolean {
  return !json && Deno.stderr.isTerminal();
}
