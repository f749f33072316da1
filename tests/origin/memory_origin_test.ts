/**
 * The in-memory origin's fault switches, which other tests rely on to mean
 * what they say: down, failing requests, corrupted reads, hanging requests
 * and latency under a virtual clock.
 */

import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import { MemoryOrigin, MemoryOriginError } from "../../src/origin/mod.ts";
import { isRetryable, statusOf } from "../../src/origin/retry.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

function origin(): { clock: VirtualClock; origin: MemoryOrigin } {
  const clock = new VirtualClock();
  const origin = new MemoryOrigin({ clock, prefix: "p" });
  origin.seed("p/a/files/mem", bytes("0123456789"));
  return { clock, origin };
}

Deno.test("MemoryOrigin down: every request fails as a refused connection (a TypeError)", async () => {
  const { origin: o } = origin();
  o.faults.down = true;
  for (
    const request of [
      () => o.getObject("p/a/files/mem"),
      () => o.list("p/"),
      () => o.putBytes("p/x", bytes("x")),
      () => o.deleteObject("p/a/files/mem"),
    ]
  ) {
    const err = await assertRejects(request);
    assert(err instanceof TypeError && /connection refused/.test(err.message), String(err));
  }
  assertEquals(await o.probe(), false);
  assertEquals(o.health().healthy, false);
  assertEquals(o.stats.errors, 5);
  o.faults.down = false;
  assertEquals(await o.probe(), true);
  assertEquals(o.keys(), ["p/a/files/mem"], "nothing changed while down");
});

Deno.test("MemoryOrigin failNext: the next N requests answer 503 SlowDown, which the retry rules retry", async () => {
  const { origin: o } = origin();
  o.faults.failNext = 2;
  for (let i = 0; i < 2; i++) {
    const err = await assertRejects(() => o.getObject("p/a/files/mem"));
    assert(err instanceof MemoryOriginError, String(err));
    assertEquals([err.name, statusOf(err), isRetryable(err)], ["SlowDown", 503, true]);
  }
  assertEquals(await o.getObject("p/a/files/mem"), bytes("0123456789"));
  assertEquals(o.faults.failNext, 0);
  assertEquals([o.stats.requests, o.stats.errors], [3, 2]);
});

Deno.test("MemoryOrigin corrupt: reads have one byte flipped; what is stored stays intact", async () => {
  const { origin: o } = origin();
  o.faults.corrupt = true;
  const whole = (await o.getObject("p/a/files/mem"))!;
  assertEquals(whole.length, 10);
  assertEquals(whole.filter((b, i) => b !== bytes("0123456789")[i]).length, 1);
  const range = (await o.getObject("p/a/files/mem", { range: [2, 5] }))!;
  assertEquals(range.filter((b, i) => b !== bytes("2345")[i]).length, 1);
  o.faults.corrupt = false;
  assertEquals(await o.getObject("p/a/files/mem"), bytes("0123456789"));
});

Deno.test("MemoryOrigin hang: a request never answers until its signal aborts", async () => {
  const { clock, origin: o } = origin();
  o.faults.hang = true;
  const controller = new AbortController();
  const seen: { outcome: unknown } = { outcome: "pending" };
  o.getObject("p/a/files/mem", { signal: controller.signal }).then(
    (v) => (seen.outcome = v),
    (e) => (seen.outcome = e),
  );
  await clock.advance(3_600_000);
  assertEquals(seen.outcome, "pending");
  controller.abort(new Error("given up"));
  await clock.settle();
  const outcome = seen.outcome as unknown; // narrowed to "pending" above
  assert(outcome instanceof Error && outcome.message === "given up", String(outcome));
});

Deno.test("MemoryOrigin delayMs: an answer arrives after that much virtual time, not before", async () => {
  const { clock, origin: o } = origin();
  o.faults.delayMs = 250;
  let got: Uint8Array | null = null;
  o.getObject("p/a/files/mem", { range: [0, 3] }).then((v) => (got = v));
  await clock.advance(249);
  assertEquals(got, null);
  await clock.advance(1);
  assertEquals(got, bytes("0123"));
  // A signal that aborts during the delay ends the request at once.
  const controller = new AbortController();
  const aborted = o.getObject("p/a/files/mem", { signal: controller.signal });
  aborted.catch(() => {});
  await clock.advance(100);
  controller.abort(new Error("stop"));
  await assertRejects(() => aborted);
  assertEquals(clock.monotonic(), 350);
});

Deno.test("MemoryOrigin counts reads by key and bytes both ways; seed() bypasses faults", async () => {
  const { origin: o } = origin();
  o.faults.down = true;
  o.seed("p/b/manifest.json", bytes("{}"));
  o.faults.down = false;
  await o.getObject("p/a/files/mem", { range: [0, 4] });
  await o.getObject("p/a/files/mem");
  await o.getObject("p/missing");
  await o.putBytes("p/c/manifest.json", bytes("abc"));
  assertEquals(o.reads.get("p/a/files/mem"), 2);
  assertEquals(o.reads.get("p/missing"), 1);
  assertEquals([o.stats.bytesRead, o.stats.bytesWritten], [15, 3]);
  assertEquals(o.keys(), ["p/a/files/mem", "p/b/manifest.json", "p/c/manifest.json"]);
});

Deno.test("MemoryOrigin.uploadFile() refuses a body that is not exactly its size", async (t) => {
  const { origin: o } = origin();
  const stream = (...pieces: string[]) => () =>
    new ReadableStream<Uint8Array>({
      start(c) {
        for (const p of pieces) c.enqueue(bytes(p));
        c.close();
      },
    });
  await t.step("longer", async () => {
    await assertRejects(() => o.uploadFile("p/x", { open: stream("abc", "def"), size: 4 }));
  });
  await t.step("shorter", async () => {
    await assertRejects(() => o.uploadFile("p/x", { open: stream("ab"), size: 4 }));
  });
  assertEquals(await o.getObject("p/x"), null, "nothing stored");
  await t.step("exact, with progress", async () => {
    const progress: number[] = [];
    await o.uploadFile("p/x", {
      open: stream("ab", "cd"),
      size: 4,
      onProgress: (n) => progress.push(n),
    });
    assertEquals(progress, [2, 4]);
    assertEquals(await o.getObject("p/x"), bytes("abcd"));
  });
});
