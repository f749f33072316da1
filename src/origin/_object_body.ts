/**
 * Reading an origin object's body whole, under an idle watchdog: the SDK
 * alone can wait forever on a dead connection. Private to `src/origin/`.
 *
 * @module
 */

import { concatBytes } from "../util/bytes.ts";
import { noteTransientBytes } from "../util/gc.ts";
import { idleWatchdog } from "../util/idle_watchdog.ts";
import { ShortBodyError, StallError } from "./retry.ts";

/** What {@linkcode readObjectBody} reads, and how it gives up. */
export interface ObjectBodyOptions {
  /** The Content-Length the origin announced, or null. */
  expected: number | null;
  /** The object's key, for messages. */
  key: string;
  /** Aborts the read (the caller's signal, or the attempt's). */
  signal: AbortSignal;
  /** A body idle this long fails with a {@linkcode StallError}. */
  stallMs: number;
  /** Told the bytes read once the body ended (short or not). */
  countRead(bytes: number): void;
}

/**
 * Reads a whole response body, aborting when it idles for `stallMs`. A body
 * that breaks, runs past or stops short of `expected` fails with a
 * {@linkcode ShortBodyError} (worth a retry).
 */
export async function readObjectBody(
  body: { transformToWebStream(): ReadableStream<Uint8Array> } | undefined,
  { expected, key, signal, stallMs, countRead }: ObjectBodyOptions,
): Promise<Uint8Array> {
  if (!body) return new Uint8Array(0);
  const reader = body.transformToWebStream().getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  const out = expected !== null ? new Uint8Array(expected) : null;
  let stalled: StallError | null = null;
  const idle = idleWatchdog(stallMs, () => {
    stalled = new StallError(`Origin body of ${key} idle for ${stallMs} ms`);
    reader.cancel(stalled).catch(() => {});
  });
  try {
    while (true) {
      let next: ReadableStreamReadResult<Uint8Array>;
      try {
        next = await reader.read();
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        // A body that breaks mid-way (reset, closed connection) is worth a retry.
        throw new ShortBodyError(
          `Origin body of ${key} broke after ${total} bytes: ${(err as Error).message}`,
        );
      }
      if (stalled) throw stalled;
      if (signal.aborted) throw signal.reason;
      idle.touch();
      if (next.done) break;
      const chunk = next.value;
      if (out) {
        if (total + chunk.length > out.length) {
          throw new ShortBodyError(`Origin body of ${key} is longer than ${expected} bytes`);
        }
        out.set(chunk, total);
      } else {
        parts.push(chunk);
      }
      total += chunk.length;
      noteTransientBytes(chunk.length);
    }
  } catch (err) {
    reader.cancel(err).catch(() => {});
    throw stalled ?? err;
  } finally {
    idle.stop();
  }
  countRead(total);
  if (out) {
    if (total !== out.length) {
      throw new ShortBodyError(`Origin body of ${key} ended after ${total} of ${expected} bytes`);
    }
    return out;
  }
  return concatBytes(parts);
}
