/**
 * A progress bar for long transfers, drawn on stderr only when it is a TTY.
 *
 * @module
 */

import { formatSize } from "../config/mod.ts";

/** Reports transfer progress. */
export interface Progress {
  update(done: number): void;
  finish(): void;
}

const encoder = new TextEncoder();

/** A progress reporter that draws nothing. */
export const noProgress: Progress = { update() {}, finish() {} };

/**
 * A progress bar for `label` of `total` bytes (null when unknown), or a
 * no-op when `enabled` is false.
 */
export function progressBar(label: string, total: number | null, enabled: boolean): Progress {
  if (!enabled) return noProgress;
  const started = performance.now();
  let last = 0;
  let done = 0;
  const draw = (final: boolean) => {
    const now = performance.now();
    if (!final && now - last < 100) return;
    last = now;
    const seconds = Math.max((now - started) / 1000, 0.001);
    const rate = `${formatSize(done / seconds)}/s`;
    let line: string;
    if (total !== null && total > 0) {
      const ratio = Math.min(done / total, 1);
      const width = 30;
      const full = Math.round(ratio * width);
      line = `${label} [${"#".repeat(full)}${".".repeat(width - full)}] ` +
        `${(ratio * 100).toFixed(0).padStart(3)}% ${formatSize(done)}/${formatSize(total)} ${rate}`;
    } else {
      line = `${label} ${formatSize(done)} ${rate}`;
    }
    Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${line}${final ? "\n" : ""}`));
  };
  return {
    update(value) {
      done = value;
      draw(false);
    },
    finish() {
      draw(true);
    },
  };
}

/** True when progress bars should be drawn (stderr is a terminal). */
export function progressEnabled(json: boolean): boolean {
  return !json && Deno.stderr.isTerminal();
}

/** Wraps a byte stream so each chunk reports the running total. */
export function countingStream(
  source: ReadableStream<Uint8Array>,
  onBytes: (total: number) => void,
): ReadableStream<Uint8Array> {
  let total = 0;
  return source.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        total += chunk.length;
        onBytes(total);
        controller.enqueue(chunk);
      },
    }),
  );
}
