/**
 * The serving side of a have stream: what a node holds of a snapshot it is
 * pulling, sent to one follower as a bitmap, then as the chunks it
 * verifies (one message per turn of the event loop, however many chunks
 * verified in it), then the end of the pull. The agent serves it over HTTP
 * (NDJSON) and in memory; the simulation serves it between simulated
 * nodes, so both run this code.
 *
 * @module
 */

import type { HaveHandler, Subscription } from "../cluster/mod.ts";

/** What a have stream follows: a pull in progress (a `PullJob`). */
export interface HaveSource {
  /** The chunks held now, one bit each (global numbering). */
  bitmap(): Uint8Array;
  /** The global number of chunk `index` of file `file`. */
  chunkOf(file: number, index: number): number;
  /** Calls `listener` for each chunk verified from now on; returns the unsubscribe. */
  onHave(listener: (file: number, index: number) => void): () => void;
  /** Calls `listener` once when the pull ends. */
  onEnd(listener: (state: "done" | "failed") => void): void;
}

/** Streams what `source` holds, and each chunk it verifies, to `handler`. */
export function serveHaves(source: HaveSource, handler: HaveHandler): Subscription {
  let closed = false;
  let pending: number[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (closed || pending.length === 0) return;
    const chunks = pending;
    pending = [];
    handler.have(chunks);
  };
  const stop = source.onHave((file, index) => {
    pending.push(source.chunkOf(file, index));
    if (!scheduled) {
      scheduled = true;
      queueMicrotask(flush);
    }
  });
  queueMicrotask(() => {
    if (!closed) handler.bitmap(source.bitmap());
  });
  source.onEnd((state) => {
    flush();
    if (closed) return;
    closed = true;
    stop();
    handler.end(state === "done" ? "complete" : "closed");
  });
  return {
    close() {
      closed = true;
      stop();
    },
  };
}

/** The have stream of a node holding the whole snapshot: everything, then the end. */
export function serveComplete(handler: HaveHandler): Subscription {
  let closed = false;
  queueMicrotask(() => {
    if (closed) return;
    handler.bitmap("all");
    handler.end("complete");
  });
  return {
    close() {
      closed = true;
    },
  };
}
