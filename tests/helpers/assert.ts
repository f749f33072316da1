/**
 * Assertions over `node:assert` (JSR's `@std/assert` is unreachable here),
 * with signatures that narrow types for the checker.
 *
 * @module
 */

import nodeAssert from "node:assert/strict";

/** Asserts that `condition` is truthy. */
export function assert(condition: unknown, message?: string): asserts condition {
  nodeAssert.ok(condition, message);
}

/** Deep strict equality. */
export function assertEquals<T>(
  actual: unknown,
  expected: T,
  message?: string,
): asserts actual is T {
  nodeAssert.deepStrictEqual(actual, expected, message);
}

/** Deep strict inequality. */
export function assertNotEquals(actual: unknown, expected: unknown, message?: string): void {
  nodeAssert.notDeepStrictEqual(actual, expected, message);
}

/** Asserts that `text` matches `pattern`. */
export function assertMatch(text: string, pattern: RegExp, message?: string): void {
  nodeAssert.match(text, pattern, message);
}

/** Asserts that `fn` throws; returns the error. */
export function assertThrows(fn: () => unknown, check?: (err: unknown) => boolean): unknown {
  try {
    fn();
  } catch (err) {
    if (check && !check(err)) throw new Error(`Unexpected error: ${String(err)}`, { cause: err });
    return err;
  }
  throw new Error("Expected the function to throw");
}

/** Asserts that `promise` rejects; returns the error. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  check?: (err: unknown) => boolean,
): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    if (check && !check(err)) throw new Error(`Unexpected error: ${String(err)}`, { cause: err });
    return err;
  }
  throw new Error("Expected the promise to reject");
}

/**
 * Byte-for-byte equality. Unlike `assertEquals`, a failure names the first
 * differing offset instead of diffing every element (which, for a few
 * hundred KiB, takes minutes).
 */
export function assertBytes(
  actual: Uint8Array | null | undefined,
  expected: Uint8Array,
  message?: string,
): void {
  const where = message ? `${message}: ` : "";
  if (!(actual instanceof Uint8Array)) {
    throw new nodeAssert.AssertionError({
      message: `${where}expected ${expected.length} bytes, got ${String(actual)}`,
    });
  }
  if (actual.length !== expected.length) {
    throw new nodeAssert.AssertionError({
      message: `${where}expected ${expected.length} bytes, got ${actual.length}`,
    });
  }
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      throw new nodeAssert.AssertionError({
        message: `${where}bytes differ first at offset ${i} (${actual[i]} != ${expected[i]})`,
      });
    }
  }
}
