import { assert, assertEquals, assertThrows } from "../helpers/assert.ts";
import { RateMeter } from "../../src/util/rate_meter.ts";

const MiB = 1024 * 1024;

/** A clock the test moves by hand. */
function manualClock(): { now: () => number; set(ms: number): void } {
  let t = 1_000_000;
  const start = t;
  return {
    now: () => t,
    set(ms) {
      t = start + ms;
    },
  };
}

function within(actual: number, expected: number, tolerance: number, what: string): void {
  assert(
    Math.abs(actual - expected) <= expected * tolerance,
    `${what}: ${actual.toFixed(0)} is not within ${tolerance * 100}% of ${expected.toFixed(0)}`,
  );
}

Deno.test("RateMeter reads a steady rate as itself, from the first second on", () => {
  const clock = manualClock();
  const meter = new RateMeter({ now: clock.now });
  assertEquals(meter.rate(), 0);
  assertEquals(meter.eta(10 * MiB), null);
  // 1 MiB every 100 ms: 10 MiB/s.
  for (let ms = 100; ms <= 30_000; ms += 100) {
    clock.set(ms);
    meter.add(MiB);
    if (ms % 1000 === 0) within(meter.rate(), 10 * MiB, 0.06, `at ${ms} ms`);
  }
  within(meter.eta(50 * MiB)!, 5, 0.06, "eta");
  assertEquals(meter.eta(0), 0);
});

Deno.test("RateMeter never reads 0 while a slow pull delivers a request every 4 s", () => {
  // The case from the issue: 4 MiB ranged GETs at 1 MiB/s land as one burst
  // every four seconds; a 3 s window read 0 most of the time and, right
  // after a burst, an ETA far too short. 45 MiB take 45 s.
  const clock = manualClock();
  const meter = new RateMeter({ now: clock.now });
  const total = 45 * MiB;
  let done = 0;
  for (let ms = 0; ms <= 45_000; ms += 250) {
    clock.set(ms);
    if (ms > 0 && ms % 4000 === 0 && done < total) {
      // Four 1 MiB chunks within a few milliseconds.
      for (let i = 0; i < 4; i++) {
        clock.set(ms + i);
        meter.add(MiB);
        done += MiB;
      }
    }
    if (ms < 4000) continue;
    clock.set(ms + 3);
    const rate = meter.rate();
    assert(rate > 0, `rate 0 at ${ms} ms with ${done} bytes done`);
    if (ms >= 8000) {
      within(rate, MiB, 0.4, `rate at ${ms} ms`);
      const left = (total - done) / MiB; // seconds left at the true 1 MiB/s
      if (left >= 8) within(meter.eta(total - done)!, left, 0.6, `eta at ${ms} ms`);
    }
  }
});

Deno.test("RateMeter lets a stalled transfer's rate fall and its ETA grow, never freeze", () => {
  const clock = manualClock();
  const meter = new RateMeter({ now: clock.now, timeConstantMs: 10_000 });
  for (let ms = 100; ms <= 20_000; ms += 100) {
    clock.set(ms);
    meter.add(MiB / 10);
  }
  const before = meter.rate();
  within(before, MiB, 0.05, "steady");
  clock.set(20_000 + 6_931); // τ·ln 2 later: the bytes weigh half as much
  // (a little less than half the rate: the history it is averaged over grew too)
  within(meter.rate(), before / 2, 0.1, "after a stall of τ·ln 2");
  clock.set(60_000);
  const late = meter.rate();
  assert(late > 0 && late < before / 50, `decayed to ${late}`);
  assert(meter.eta(10 * MiB)! > 100, "the ETA grows while nothing arrives");
});

Deno.test("RateMeter rejects a time constant that is not positive", () => {
  assertThrows(() => new RateMeter({ timeConstantMs: 0 }), (err) => err instanceof RangeError);
});
