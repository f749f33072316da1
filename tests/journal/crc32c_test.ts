import { assertEquals } from "../helpers/assert.ts";
import { Crc32c } from "@aws-crypto/crc32c";
import { crc32cUpdate } from "../../src/journal/crc32c.ts";
import { crc32c } from "../../src/journal/record.ts";
import { randomBytes } from "../helpers/temp.ts";

Deno.test("crc32c() matches the RFC 3720 check value and the reference implementation", () => {
  assertEquals(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  assertEquals(crc32c(new Uint8Array(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  assertEquals(crc32c(new Uint8Array(0)), 0);
  for (const length of [1, 7, 8, 9, 15, 16, 17, 100, 4096 + 3, 100_000]) {
    const bytes = randomBytes(length, length);
    const reference = new Crc32c().update(bytes).digest() >>> 0;
    assertEquals(crc32c(bytes), reference, `${length} bytes`);
    // Split anywhere, chained: the same checksum.
    const cut = Math.floor(length / 3);
    assertEquals(crc32c(bytes.subarray(0, cut), bytes.subarray(cut)), reference);
    assertEquals(
      crc32cUpdate(crc32cUpdate(0, bytes.subarray(0, cut)), bytes.subarray(cut)),
      reference,
    );
  }
});
