/**
 * Bounded concurrency for independent asynchronous work.
 *
 * @module
 */

/**
 * Maps `items` through `fn` with at most `limit` calls in flight; the
 * results keep the input order. The first rejection rejects the whole map
 * (calls already started still run to completion).
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  async function worker(): Promise<void> {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  return results;
}
