import { assertEquals } from "../helpers/assert.ts";
import { assertJsonDepth } from "../../src/api/request.ts";

Deno.test("assertJsonDepth() counts only structure outside strings", async (t) => {
  const cases: [string, boolean][] = [
    ["[".repeat(64) + "]".repeat(64), true],
    ["[".repeat(65) + "]".repeat(65), false],
    ['{"a":' + '{"b":'.repeat(63) + "1" + "}".repeat(64), true],
    ['{"a":' + '{"b":'.repeat(64) + "1" + "}".repeat(65), false],
    [JSON.stringify(["[[[[".repeat(50)]), true],
    [JSON.stringify({ x: '\\"[[[[' }) + "[".repeat(65), false],
    [JSON.stringify({ x: '\\"[[[[' }), true],
  ];
  for (const [text, accepted] of cases) {
    await t.step(`${text.slice(0, 30)}… (${text.length})`, () => {
      let ok = true;
      try {
        assertJsonDepth(new TextEncoder().encode(text), 64);
      } catch {
        ok = false;
      }
      assertEquals(ok, accepted);
    });
  }
});
