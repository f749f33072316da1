import { assertEquals, assertRejects } from "../helpers/assert.ts";
import { readBounded } from "../../src/util/bounded_body.ts";

function streamOf(...pieces: Uint8Array[]): ReadableStream<Uint8Array> & { cancelled: unknown } {
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const next = pieces.shift();
      if (next) controller.enqueue(next);
      else controller.close();
    },
    cancel(reason) {
      stream.cancelled = reason;
    },
  }) as ReadableStream<Uint8Array> & { cancelled: unknown };
  stream.cancelled = null;
  return stream;
}

const tooLarge = () => new RangeError("too large");

Deno.test("readBounded() joins the pieces of a body up to the cap", async (t) => {
  await t.step("exactly at the cap", async () => {
    const body = streamOf(new Uint8Array([1, 2]), new Uint8Array([3]));
    assertEquals(await readBounded(body, { maxBytes: 3, tooLarge }), new Uint8Array([1, 2, 3]));
  });
  await t.step("an empty body", async () => {
    assertEquals(await readBounded(streamOf(), { maxBytes: 0, tooLarge }), new Uint8Array(0));
  });
});

Deno.test("readBounded() fails one byte past the cap and cancels the body with its error", async () => {
  const body = streamOf(new Uint8Array(2), new Uint8Array(2), new Uint8Array(2));
  const err = await assertRejects(
    () => readBounded(body, { maxBytes: 3, tooLarge }),
    (e) => e instanceof RangeError,
  );
  assertEquals(body.cancelled, err);
});

Deno.test("readBounded() passes on the body's own error", async () => {
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.error(new TypeError("reset"));
    },
  });
  await assertRejects(
    () => readBounded(body, { maxBytes: 10, tooLarge }),
    (e) => e instanceof TypeError && e.message === "reset",
  );
});
