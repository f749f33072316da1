/**
 * Reading a whole body that must stay small (a JSON request or answer):
 * one reader for every place that caps what it buffers.
 *
 * @module
 */

import { concatBytes } from "./bytes.ts";

/** Options for {@linkcode readBounded}. */
export interface ReadBoundedOptions {
  /** Most bytes the body may have; one more fails the read. */
  maxBytes: number;
  /** The error a body larger than `maxBytes` fails with (the body is cancelled with it). */
  tooLarge(): Error;
}

/**
 * Reads `body` into one array, failing as soon as it passes
 * `options.maxBytes`: a chunked body announces no length, and a declared
 * one may lie. Errors of the stream itself propagate unchanged.
 */
export async function readBounded(
  body: ReadableStream<Uint8Array>,
  options: ReadBoundedOptions,
): Promise<Uint8Array<ArrayBuffer>> {
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > options.maxBytes) {
      const err = options.tooLarge();
      await reader.cancel(err).catch(() => {});
      throw err;
    }
    parts.push(value);
  }
  return concatBytes(parts);
}
