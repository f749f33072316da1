import { assert, assertEquals, assertThrows } from "../helpers/assert.ts";
import { SnapmeshError } from "../../src/errors.ts";
import { parseRange } from "../../src/store/mod.ts";

Deno.test("parseRange() serves single byte ranges", async (t) => {
  const cases: [string, number, [number, number]][] = [
    ["bytes=0-0", 100, [0, 0]],
    ["bytes=0-99", 100, [0, 99]],
    ["bytes=10-", 100, [10, 99]],
    ["bytes=-10", 100, [90, 99]],
    ["bytes=-1000", 100, [0, 99]],
    ["bytes=50-1000", 100, [50, 99]],
    ["bytes=99-99", 100, [99, 99]],
    ["bytes=0-99999999999999999999", 100, [0, 99]],
    ["bytes=-99999999999999999999", 100, [0, 99]],
    [" bytes=1-2 ", 100, [1, 2]],
    ["Bytes=1-2", 100, [1, 2]],
  ];
  for (const [header, size, [start, end]] of cases) {
    await t.step(header, () => assertEquals(parseRange(header, size), { start, end }));
  }
  assertEquals(parseRange(null, 10), null);
  assertEquals(parseRange(undefined, 10), null);
});

Deno.test("parseRange() refuses multi-range and malformed headers with invalid_range", async (t) => {
  for (
    const header of [
      "bytes=0-1,3-4",
      "bytes=0-1, 5-",
      "bytes=",
      "bytes=-",
      "bytes=a-b",
      "bytes=5-1",
      "items=0-1",
      "0-1",
      "bytes=1-2-3",
      "bytes=1.5-2",
    ]
  ) {
    await t.step(header, () => {
      const err = assertThrows(() => parseRange(header, 100));
      assert(err instanceof SnapmeshError && err.code === "invalid_range", String(err));
    });
  }
});

Deno.test("parseRange() answers range_not_satisfiable past the end", async (t) => {
  for (
    const [header, size] of [
      ["bytes=100-", 100],
      ["bytes=100-200", 100],
      ["bytes=99999999999999999999-", 100],
      ["bytes=-0", 100],
      [
        "bytes=0-",
        0,
      ],
      ["bytes=-5", 0],
    ] as const
  ) {
    await t.step(`${header} of ${size}`, () => {
      const err = assertThrows(() => parseRange(header, size));
      assert(err instanceof SnapmeshError && err.code === "range_not_satisfiable");
      assertEquals(err.details?.size, size);
    });
  }
});
