/**
 * Randomness behind an interface: {@linkcode systemRandom} for the agent, and
 * {@linkcode seededRandom} for tests and simulations, where the same seed
 * always gives the same sequence.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** A source of random numbers and the choices built on them. */
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
  /** An independent, deterministic stream derived from this one and `label` (per node, per pull). */
  fork(label: string): Random;
}

const TWO_32 = 2 ** 32;
const TWO_53 = 2 ** 53;

/** Everything but the 32-bit source, shared by both implementations. */
abstract class WordRandom implements Random {
  /** A uniform 32-bit unsigned integer. */
  protected abstract word(): number;

  abstract fork(label: string): Random;

  next(): number {
    // 53 random bits: every double in [0, 1) a multiple of 2^-53 is equally likely.
    const high = this.word() >>> 5;
    const low = this.word() >>> 6;
    return (high * 2 ** 26 + low) / TWO_53;
  }

  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_53) {
      throw new RangeError(`Cannot draw an integer below ${n}: n must be an integer in [1, 2^53]`);
    }
    // Rejection sampling: drop the top partial range so every result is equally likely.
    if (n <= TWO_32) {
      const limit = TWO_32 - (TWO_32 % n);
      let x = this.word();
      while (x >= limit) x = this.word();
      return x % n;
    }
    const limit = TWO_53 - (TWO_53 % n);
    let x: number;
    do x = (this.word() >>> 11) * TWO_32 + this.word(); while (x >= limit);
    return x % n;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("Cannot pick an item from an empty list");
    return items[this.int(items.length)]!;
  }

  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const item = items[i]!;
      items[i] = items[j]!;
      items[j] = item;
    }
    return items;
  }

  sample<T>(items: readonly T[], k: number): T[] {
    if (!Number.isInteger(k) || k < 0) {
      throw new RangeError(`Cannot sample ${k} items: k must be an integer >= 0`);
    }
    // A partial Fisher–Yates shuffle of a copy: the first `count` places.
    const copy = items.slice();
    const count = Math.min(k, copy.length);
    for (let i = 0; i < count; i++) {
      const j = i + this.int(copy.length - i);
      const item = copy[i]!;
      copy[i] = copy[j]!;
      copy[j] = item;
    }
    copy.length = count;
    return copy;
  }
}

/** Words drawn from `crypto.getRandomValues`, 256 at a time. */
class SystemRandom extends WordRandom {
  #words = new Uint32Array(256);
  #next = this.#words.length;

  protected word(): number {
    if (this.#next === this.#words.length) {
      crypto.getRandomValues(this.#words);
      this.#next = 0;
    }
    return this.#words[this.#next++]!;
  }

  fork(_label: string): Random {
    return new SystemRandom();
  }
}

/** Cryptographically strong randomness (`crypto.getRandomValues`); `fork` gives another. */
export const systemRandom: Random = new SystemRandom();

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * One step of xoshiro128** 1.1 (Blackman and Vigna, https://prng.di.unimi.it/):
 * returns the next word and advances `s` in place.
 */
function xoshiro128ss(s: Uint32Array): number {
  const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
  const t = s[1]! << 9;
  s[2]! ^= s[0]!;
  s[3]! ^= s[1]!;
  s[1]! ^= s[2]!;
  s[0]! ^= s[3]!;
  s[2]! ^= t;
  s[3] = rotl(s[3]!, 11);
  return result;
}

const encoder = new TextEncoder();

/** 128 bits of SHA-256 over the parts, as a xoshiro state (never all zero). */
function hashState(...parts: Uint8Array[]): Uint32Array {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  const digest = hash.digest();
  const view = new DataView(digest.buffer, digest.byteOffset, 16);
  const state = new Uint32Array(4);
  for (let i = 0; i < 4; i++) state[i] = view.getUint32(i * 4, true);
  // All zero is xoshiro's one fixed point; SHA-256 gives it with probability 2^-128.
  if (state.every((word) => word === 0)) state[0] = 1;
  return state;
}

function seedBytes(seed: number | string): Uint8Array {
  if (typeof seed === "string") return encoder.encode(`string:${seed}`);
  if (!Number.isFinite(seed)) {
    throw new RangeError(`Cannot seed a random generator with ${seed}: not a finite number`);
  }
  const bytes = new Uint8Array(15);
  bytes.set(encoder.encode("number:"));
  new DataView(bytes.buffer).setFloat64(7, seed, true);
  return bytes;
}

class SeededRandom extends WordRandom {
  readonly #state: Uint32Array;

  constructor(state: Uint32Array) {
    super();
    this.#state = state;
  }

  protected word(): number {
    return xoshiro128ss(this.#state);
  }

  fork(label: string): Random {
    const state = new Uint8Array(16);
    const view = new DataView(state.buffer);
    for (let i = 0; i < 4; i++) view.setUint32(i * 4, this.#state[i]!, true);
    return new SeededRandom(hashState(encoder.encode("fork:"), state, encoder.encode(label)));
  }
}

/**
 * A deterministic generator: xoshiro128** 1.1, its 128-bit state derived by
 * SHA-256 from `seed`. The same seed gives the same sequence, on every
 * platform and run (numbers and strings are different seeds: `1` is not
 * `"1"`). Not for secrets.
 *
 * `fork(label)` derives a new generator from the current state and `label`
 * without drawing from this one, so adding a fork never changes this
 * stream. A fork is a pure function of (state, label): two forks with the
 * same label and no draw in between are the same stream, so give each its
 * own label (`node-3`, `pull-17`).
 */
export function seededRandom(seed: number | string): Random {
  return new SeededRandom(hashState(seedBytes(seed)));
}
