import { assert, assertEquals, assertMatch, assertRejects } from "../helpers/assert.ts";
import { type Clock, systemClock, VirtualClock } from "../../src/util/clock.ts";

const START = Date.UTC(2030, 0, 1);

/** Elapsed virtual ms, for short traces. */
function at(clock: Clock): number {
  return clock.now() - START;
}

Deno.test("VirtualClock starts at the given time, and its now() works unbound", () => {
  const clock = new VirtualClock({ start: START });
  const { now, monotonic } = clock;
  assertEquals(now(), START);
  assertEquals(monotonic(), 0);
  assertEquals(new VirtualClock().now(), Date.UTC(2025, 0, 1));
});

Deno.test("VirtualClock.advance() fires timers in due order, FIFO for equal times", async () => {
  const clock = new VirtualClock({ start: START });
  const trace: string[] = [];
  for (const [name, ms] of [["c", 30], ["a1", 10], ["b", 20], ["a2", 10], ["a3", 10]] as const) {
    clock.setTimeout(() => trace.push(`${name}@${at(clock)}`), ms);
  }
  clock.setTimeout(() => trace.push("late"), 101);
  assertEquals(clock.pendingTimers(), 6);
  await clock.advance(100);
  assertEquals(trace, ["a1@10", "a2@10", "a3@10", "b@20", "c@30"]);
  assertEquals(at(clock), 100);
  assertEquals(clock.monotonic(), 100);
  assertEquals(clock.timersFired, 5);
  assertEquals(clock.pendingTimers(), 1);
  await clock.advance(1);
  assertEquals(trace.at(-1), "late");
});

Deno.test("VirtualClock.advance() fires timers scheduled inside the window by callbacks and promise chains", async (t) => {
  await t.step("from callbacks, including zero delays and the window's end", async () => {
    const clock = new VirtualClock({ start: START });
    const trace: string[] = [];
    clock.setTimeout(() => {
      trace.push(`outer@${at(clock)}`);
      clock.setTimeout(() => trace.push(`zero@${at(clock)}`), 0);
      clock.setTimeout(() => trace.push(`end@${at(clock)}`), 40);
      clock.setTimeout(() => trace.push(`after@${at(clock)}`), 41);
    }, 10);
    clock.setTimeout(() => trace.push(`sibling@${at(clock)}`), 10);
    await clock.advance(50);
    assertEquals(trace, ["outer@10", "sibling@10", "zero@10", "end@50"]);
  });

  await t.step("from promise chains started by a callback", async () => {
    const clock = new VirtualClock({ start: START });
    const trace: string[] = [];
    async function chain(): Promise<void> {
      for (let i = 0; i < 1000; i++) await null;
      trace.push(`chain@${at(clock)}`);
      await clock.sleep(2);
      trace.push(`slept@${at(clock)}`);
      await Promise.all([clock.sleep(1), clock.sleep(3)]);
      trace.push(`both@${at(clock)}`);
    }
    clock.setTimeout(() => void chain(), 10);
    clock.setTimeout(() => trace.push(`fixed@${at(clock)}`), 13);
    await clock.advance(15);
    assertEquals(trace, ["chain@10", "slept@12", "fixed@13", "both@15"]);
  });

  await t.step("from work started before advance()", async () => {
    const clock = new VirtualClock({ start: START });
    const trace: number[] = [];
    void (async () => {
      await Promise.resolve();
      await clock.sleep(5);
      trace.push(at(clock));
    })();
    await clock.advance(5);
    assertEquals(trace, [5]);
  });
});

Deno.test("VirtualClock timers can be cancelled before, while and after firing", async () => {
  const clock = new VirtualClock({ start: START });
  const trace: string[] = [];
  const never = clock.setTimeout(() => trace.push("never"), 10);
  // Due at the same time as its victim, and created first: it fires first.
  clock.setTimeout(() => {
    trace.push("killer");
    victim.cancel();
  }, 20);
  const victim = clock.setTimeout(() => trace.push("victim"), 20);
  const once = clock.setTimeout(() => trace.push("once"), 5);
  never.cancel();
  never.cancel();
  assertEquals(clock.pendingTimers(), 3);
  await clock.advance(30);
  once.cancel();
  assertEquals(trace, ["once", "killer"]);
  assertEquals(clock.pendingTimers(), 0);
  assertEquals(clock.timersFired, 2);
});

Deno.test("VirtualClock.setInterval() re-arms from its scheduled time until cancelled", async () => {
  const clock = new VirtualClock({ start: START });
  const ticks: number[] = [];
  const interval = clock.setInterval(() => {
    ticks.push(at(clock));
    if (ticks.length === 5) interval.cancel();
  }, 10);
  for (let i = 0; i < 10; i++) await clock.advance(7);
  assertEquals(ticks, [10, 20, 30, 40, 50]);
  assertEquals(clock.pendingTimers(), 0);

  const zero: number[] = [];
  const fast = clock.setInterval(() => zero.push(at(clock)), 0);
  await clock.advance(3);
  fast.cancel();
  assertEquals(zero, [71, 72, 73]);
});

Deno.test("VirtualClock.sleep() resolves at its time, or at once when aborted", async (t) => {
  await t.step("not aborted", async () => {
    const clock = new VirtualClock({ start: START });
    let woke = -1;
    const sleeping = clock.sleep(100, { signal: new AbortController().signal }).then(() => {
      woke = at(clock);
    });
    await clock.advance(99);
    assertEquals(woke, -1);
    await clock.advance(1);
    await sleeping;
    assertEquals(woke, 100);
  });

  await t.step("already aborted", async () => {
    const clock = new VirtualClock({ start: START });
    await clock.sleep(1000, { signal: AbortSignal.abort() });
    assertEquals(clock.pendingTimers(), 0);
    assertEquals(at(clock), 0);
  });

  await t.step("aborted later, with a reason", async () => {
    const clock = new VirtualClock({ start: START });
    const controller = new AbortController();
    let woke = -1;
    const sleeping = clock.sleep(1000, { signal: controller.signal }).then(() => {
      woke = at(clock);
    });
    await clock.advance(100);
    controller.abort(new Error("stop"));
    await sleeping;
    assertEquals(woke, 100);
    assertEquals(clock.pendingTimers(), 0);
  });
});

Deno.test("VirtualClock.runUntil() jumps from timer to timer until the predicate holds", async () => {
  const clock = new VirtualClock({ start: START });
  let done = false;
  void (async () => {
    await clock.sleep(1000);
    await clock.sleep(60_000);
    done = true;
  })();
  const heartbeat = clock.setInterval(() => {}, 5000);
  await clock.runUntil(() => done);
  assertEquals(at(clock), 61_000);
  assertEquals(clock.timersFired, 2 + 12);
  heartbeat.cancel();

  await clock.runUntil(() => true);
  assertEquals(at(clock), 61_000);
});

Deno.test("VirtualClock.runUntil() reports a deadlock and exceeded limits", async (t) => {
  await t.step("deadlock", async () => {
    const clock = new VirtualClock({ start: START });
    void clock.sleep(250).then(() => new Promise(() => {}));
    const err = await assertRejects(() => clock.runUntil(() => false));
    assert(err instanceof Error);
    assertMatch(err.message, /deadlocked.*no timer is pending/);
    assertMatch(err.message, /2030-01-01T00:00:00\.250Z \(\+250 ms\)/);
    assertMatch(err.message, /1 timer\(s\) fired in this run/);
  });

  await t.step("maxTimers", async () => {
    const clock = new VirtualClock({ start: START });
    const interval = clock.setInterval(() => {}, 10);
    const err = await assertRejects(() => clock.runUntil(() => false, { maxTimers: 5 }));
    assertMatch((err as Error).message, /gave up.*5 timers fired \(maxTimers\)/);
    assertEquals(at(clock), 50);
    interval.cancel();
  });

  await t.step("maxMs", async () => {
    const clock = new VirtualClock({ start: START });
    await clock.advance(5);
    const interval = clock.setInterval(() => {}, 10);
    const err = await assertRejects(() => clock.runUntil(() => false, { maxMs: 100 }));
    assertMatch((err as Error).message, /gave up.*due 110 ms after the start \(maxMs 100\)/);
    assertEquals(at(clock), 105);
    interval.cancel();
  });
});

Deno.test("VirtualClock rejects bad input, overlapping runs and reports callback errors", async () => {
  const clock = new VirtualClock({ start: START });
  await assertRejects(() => clock.advance(-1), (err) => err instanceof RangeError);
  await assertRejects(() => clock.advance(NaN), (err) => err instanceof RangeError);
  await assertRejects(
    () => Promise.resolve().then(() => clock.setTimeout(() => {}, NaN)),
    (err) => err instanceof RangeError,
  );
  await assertRejects(
    () => Promise.resolve().then(() => clock.setTimeout(() => {}, 2 ** 31)),
    (err) => err instanceof RangeError,
  );
  await assertRejects(
    () => Promise.resolve().then(() => clock.setInterval(() => {}, -Infinity)),
    (err) => err instanceof RangeError,
  );

  clock.setTimeout(() => {
    throw new Error("boom");
  }, 10);
  const after = clock.setTimeout(() => {}, 20);
  const running = clock.advance(100);
  await assertRejects(
    () => clock.advance(1),
    (err) => /while advance\(\) is running/.test(String(err)),
  );
  await assertRejects(() => running, (err) => (err as Error).message === "boom");
  assertEquals(at(clock), 10);
  assertEquals(clock.pendingTimers(), 1);
  after.cancel();
  // Negative delays mean 0, as with setTimeout.
  let fired = false;
  clock.setTimeout(() => fired = true, -5);
  await clock.advance(0);
  assertEquals(fired, true);
});

Deno.test("VirtualClock.settle() runs promise chains to quiescence without moving time", async () => {
  const clock = new VirtualClock({ start: START });
  let scheduled = 0;
  void (async () => {
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 10_000; i++) await null;
      clock.setTimeout(() => {}, 1);
      scheduled++;
    }
  })();
  await clock.settle();
  assertEquals(scheduled, 3);
  assertEquals(clock.pendingTimers(), 3);
  assertEquals(at(clock), 0);
});

/** A small simulation: nodes that gossip at pseudo-random times. */
async function simulate(): Promise<string[]> {
  const clock = new VirtualClock({ start: START });
  const trace: string[] = [];
  let state = 42;
  function nextInt(n: number): number {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  }
  let running = 0;
  for (let node = 0; node < 5; node++) {
    running++;
    void (async () => {
      for (let round = 0; round < 20; round++) {
        await clock.sleep(nextInt(50));
        trace.push(`n${node} r${round} @${at(clock)}`);
        if (nextInt(3) === 0) {
          clock.setTimeout(() => trace.push(`n${node} timeout @${at(clock)}`), nextInt(30));
        }
        await Promise.resolve();
      }
      running--;
    })();
  }
  const ticker = clock.setInterval(() => trace.push(`tick @${at(clock)}`), 100);
  await clock.runUntil(() => running === 0);
  ticker.cancel();
  await clock.advance(100);
  trace.push(`end @${at(clock)} fired ${clock.timersFired}`);
  return trace;
}

Deno.test("VirtualClock runs the same program the same way twice", async () => {
  const first = await simulate();
  const second = await simulate();
  assert(first.length > 100);
  assertEquals(second, first);
});

Deno.test("systemClock keeps time, runs timers, and ref: false timers do not hold the process", async () => {
  assert(Math.abs(systemClock.now() - Date.now()) < 1000);
  const before = systemClock.monotonic();
  assert(systemClock.monotonic() >= before);
  // Aborting a real sleep leaves no timer behind (the test's op sanitizer checks).
  const controller = new AbortController();
  const sleeping = systemClock.sleep(60_000, { signal: controller.signal });
  controller.abort();
  await sleeping;

  const clockUrl = new URL("../../src/util/clock.ts", import.meta.url).href;
  const code = `
    import { systemClock } from ${JSON.stringify(clockUrl)};
    systemClock.setTimeout(() => console.log("unref timeout fired"), 30_000, { ref: false });
    systemClock.setInterval(() => console.log("unref interval fired"), 30_000, { ref: false });
    void systemClock.sleep(30_000, { ref: false }).then(() => console.log("unref sleep ended"));
    let ticks = 0;
    const interval = systemClock.setInterval(() => {
      if (++ticks === 3) {
        interval.cancel();
        console.log("interval");
      }
    }, 1);
    systemClock.setTimeout(() => console.log("timeout"), 1);
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  assertEquals(output.code, 0, decoder.decode(output.stderr));
  assertEquals(decoder.decode(output.stdout).trim().split("\n").sort(), ["interval", "timeout"]);
});
