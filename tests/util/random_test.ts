import { assert, assertEquals, assertNotEquals, assertThrows } from "../helpers/assert.ts";
import { type Random, seededRandom, systemRandom } from "../../src/util/random.ts";

function draws(random: Random, count: number): number[] {
  return Array.from({ length: count }, () => random.int(2 ** 32));
}

/** Chi-square statistic of `count` draws of `random.int(buckets)`. */
function chiSquare(random: Random, buckets: number, count: number): number {
  const seen = new Array<number>(buckets).fill(0);
  for (let i = 0; i < count; i++) seen[random.int(buckets)]!++;
  const expected = count / buckets;
  return seen.reduce((sum, n) => sum + (n - expected) ** 2 / expected, 0);
}

Deno.test("seededRandom() gives the same sequence for the same seed, on every run", () => {
  assertEquals(draws(seededRandom(42), 100), draws(seededRandom(42), 100));
  assertEquals(draws(seededRandom("node-7"), 100), draws(seededRandom("node-7"), 100));
  assertNotEquals(draws(seededRandom(42), 10), draws(seededRandom(43), 10));
  assertNotEquals(draws(seededRandom(1), 10), draws(seededRandom("1"), 10));
  // Pinned: a change here changes every recorded simulation.
  assertEquals(draws(seededRandom(42), 4), [1101687765, 133697846, 2452654950, 927733772]);
  assertEquals(seededRandom("snapmesh").next(), 0.8361025186715421);
});

Deno.test("seededRandom().fork() is stable and independent, and leaves the parent's stream alone", () => {
  const plain = seededRandom(7);
  const forked = seededRandom(7);
  plain.int(10);
  forked.int(10);
  const a = forked.fork("node-a");
  const b = forked.fork("node-b");
  // Forking drew nothing from the parent.
  assertEquals(draws(forked, 50), draws(plain, 50));
  // The same (state, label) gives the same stream; another label or state another.
  const again = seededRandom(7);
  again.int(10);
  assertEquals(draws(again.fork("node-a"), 50), draws(a, 50));
  assertNotEquals(draws(again.fork("node-a"), 5), draws(seededRandom(7).fork("node-a"), 5));
  const fromA = draws(a, 1000);
  const fromB = draws(b, 1000);
  assertNotEquals(fromA, fromB);
  // Independent: the streams agree on the top bit about half the time.
  const same = fromA.filter((x, i) => (x >>> 31) === (fromB[i]! >>> 31)).length;
  assert(same > 420 && same < 580, `top bits agree ${same} times in 1000`);
  // Forks of forks are deterministic too.
  assertEquals(
    draws(seededRandom(1).fork("x").fork("y"), 10),
    draws(seededRandom(1).fork("x").fork("y"), 10),
  );
});

Deno.test("Random.int() stays in bounds and is roughly uniform", async (t) => {
  for (const [name, random] of [["seeded", seededRandom(3)], ["system", systemRandom]] as const) {
    await t.step(name, () => {
      // 9 degrees of freedom: P(chi2 > 40) < 1e-5.
      const statistic = chiSquare(random, 10, 100_000);
      assert(statistic < 40, `chi-square ${statistic} over 10 buckets`);
      // A range that does not divide 2^32 (where a plain modulo would be biased).
      assert(chiSquare(random, 3, 30_000) < 25);
      for (const n of [1, 2, 7, 2 ** 32, 2 ** 32 + 1, 2 ** 53]) {
        for (let i = 0; i < 200; i++) {
          const x = random.int(n);
          assert(Number.isInteger(x) && x >= 0 && x < n, `int(${n}) gave ${x}`);
        }
      }
      assertEquals(random.int(1), 0);
      let high = 0;
      for (let i = 0; i < 1000; i++) if (random.int(2 ** 53) >= 2 ** 52) high++;
      assert(high > 400 && high < 600, `int(2^53) in the upper half ${high} times in 1000`);
      let sum = 0;
      for (let i = 0; i < 10_000; i++) {
        const x = random.next();
        assert(x >= 0 && x < 1);
        sum += x;
      }
      assert(Math.abs(sum / 10_000 - 0.5) < 0.02, `mean of next() ${sum / 10_000}`);
    });
  }
});

Deno.test("Random.pick(), shuffle() and sample() choose from the items given", () => {
  const random = seededRandom("choices");
  const items = Array.from({ length: 20 }, (_, i) => i);
  const counts = new Array<number>(3).fill(0);
  for (let i = 0; i < 3000; i++) counts[random.pick([0, 1, 2])]!++;
  assert(counts.every((n) => n > 850 && n < 1150), `pick counts ${counts}`);

  const shuffled = items.slice();
  assertEquals(random.shuffle(shuffled) === shuffled, true);
  assertNotEquals(shuffled, items);
  assertEquals(shuffled.slice().sort((a, b) => a - b), items);
  assertEquals(random.shuffle([]), []);

  for (const k of [0, 1, 5, 19, 20, 25]) {
    const chosen = random.sample(items, k);
    assertEquals(chosen.length, Math.min(k, items.length));
    assertEquals(new Set(chosen).size, chosen.length);
    assert(chosen.every((x) => items.includes(x)));
  }
  assertEquals(items, Array.from({ length: 20 }, (_, i) => i), "sample() left its input alone");
  assertEquals(random.sample(items, 20).sort((a, b) => a - b), items);
  // Every item is as likely to be chosen.
  const chosenCounts = new Array<number>(5).fill(0);
  for (let i = 0; i < 5000; i++) {
    for (const x of random.sample([0, 1, 2, 3, 4], 2)) chosenCounts[x]!++;
  }
  assert(chosenCounts.every((n) => n > 1800 && n < 2200), `sample counts ${chosenCounts}`);
});

Deno.test("Random methods reject bad arguments with RangeError", () => {
  for (const random of [seededRandom(1), systemRandom]) {
    const isRange = (err: unknown) => err instanceof RangeError;
    assertThrows(() => random.pick([]), isRange);
    for (const n of [0, -1, 1.5, NaN, Infinity, 2 ** 53 + 2]) {
      assertThrows(() => random.int(n), isRange);
    }
    for (const k of [-1, 0.5, NaN]) assertThrows(() => random.sample([1, 2], k), isRange);
  }
  assertThrows(() => seededRandom(NaN), (err) => err instanceof RangeError);
  assertThrows(() => seededRandom(Infinity), (err) => err instanceof RangeError);
});

Deno.test("systemRandom forks into other system generators", () => {
  const fork = systemRandom.fork("x");
  assertNotEquals(draws(fork, 8), draws(systemRandom.fork("x"), 8));
});
