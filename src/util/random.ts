/**
 * Randomness behind an interface (temporary stand-in; replaced by the seams branch).
 *
 * @module
 */

/** A source of random numbers. */
export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** Integer in [0, n). */
  int(n: number): number;
  /** One of `items` (throws RangeError when empty). */
  pick<T>(items: readonly T[]): T;
  /** Shuffles `items` in place (Fisher–Yates) and returns it. */
  shuffle<T>(items: T[]): T[];
  /** `k` distinct items chosen uniformly (all when k ≥ length), order random. */
  sample<T>(items: readonly T[], k: number): T[];
  /** An independent, deterministic stream derived from this one and `label`. */
  fork(label: string): Random;
}

function fromNext(next: () => number, fork: (label: string) => Random): Random {
  const random: Random = {
    next,
    int: (n) => Math.floor(next() * n),
    pick(items) {
      if (items.length === 0) throw new RangeError("Cannot pick from an empty list");
      return items[Math.floor(next() * items.length)]!;
    },
    shuffle(items) {
      for (let i = items.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [items[i], items[j]] = [items[j]!, items[i]!];
      }
      return items;
    },
    sample(items, k) {
      return random.shuffle([...items]).slice(0, Math.max(0, k));
    },
    fork,
  };
  return random;
}

/** The real source. */
export const systemRandom: Random = fromNext(Math.random, () => systemRandom);
