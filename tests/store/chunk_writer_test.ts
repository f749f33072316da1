import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import { createHash } from "node:crypto";
import { SnapmeshError } from "../../src/errors.ts";
import { DenoFileSystem } from "../../src/fs/mod.ts";
import { ZERO_CHUNK } from "../../src/manifest/mod.ts";
import { isAllZero, writeChunked } from "../../src/store/mod.ts";
import { randomBytes, tempDir } from "../helpers/temp.ts";

const CHUNK = 64 * 1024;

async function* pieces(bytes: Uint8Array, size: number): AsyncIterable<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.slice(at, at + size);
}

function hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

Deno.test("isAllZero() checks every byte, aligned or not", () => {
  const zeros = new Uint8Array(1001);
  assert(isAllZero(zeros));
  assert(isAllZero(zeros.subarray(1)));
  for (const i of [0, 3, 500, 1000]) {
    const b = new Uint8Array(1001);
    b[i] = 1;
    assert(!isAllZero(b), `byte ${i}`);
    assert(i === 0 || !isAllZero(b.subarray(1)), `unaligned byte ${i}`);
  }
  assert(isAllZero(new Uint8Array(0)));
});

Deno.test("writeChunked() hashes chunks and file, and leaves zero chunks as holes", async () => {
  await using tmp = await tempDir();
  const data = new Uint8Array(CHUNK * 6 + 123);
  data.set(randomBytes(CHUNK, 7), 0); // chunk 0: data
  data.set(randomBytes(CHUNK, 8), CHUNK * 3); // chunk 3: data; 1, 2, 4, 5 zero
  data[CHUNK * 6 + 5] = 9; // short last chunk, non-zero
  const fs = new DenoFileSystem();
  const path = `${tmp.path}/out`;
  const handle = await fs.open(path, { write: true, create: true });
  const reserved: number[] = [];
  // Pieces that straddle chunk boundaries and pieces larger than a chunk.
  for (const pieceSize of [1000, CHUNK, CHUNK * 3 + 17]) {
    await handle.truncate(0);
    reserved.length = 0;
    const result = await writeChunked(pieces(data, pieceSize), handle, {
      chunkSize: CHUNK,
      maxSize: 1 << 30,
      beforeWrite: (n) => void reserved.push(n),
    });
    assertEquals(result.size, data.length);
    assertEquals(result.sha256, hex(data));
    assertEquals(result.chunks.length, 7);
    assertEquals(result.chunks[0], hex(data.subarray(0, CHUNK)));
    assertEquals(result.chunks[1], ZERO_CHUNK);
    assertEquals(result.chunks[3], hex(data.subarray(3 * CHUNK, 4 * CHUNK)));
    assertEquals(result.chunks[6], hex(data.subarray(6 * CHUNK)));
    assertEquals(result.storedBytes, 2 * CHUNK + 123);
    assertEquals(reserved, [CHUNK, CHUNK, 123]);
  }
  handle.close();
  assertEquals(await Deno.readFile(path), data);
  const stat = await Deno.stat(path);
  assert(stat.blocks! * 512 < data.length / 2, `expected a sparse file, ${stat.blocks} blocks`);
});

Deno.test("writeChunked() handles empty and all-zero files", async () => {
  const empty = await writeChunked(pieces(new Uint8Array(0), 10), null, {
    chunkSize: CHUNK,
    maxSize: 10,
  });
  assertEquals(empty.chunks, []);
  assertEquals(empty.sha256, hex(new Uint8Array(0)));
  const zeros = await writeChunked(pieces(new Uint8Array(CHUNK * 2 + 1), 4096), null, {
    chunkSize: CHUNK,
    maxSize: 1 << 30,
  });
  assertEquals(zeros.chunks, [ZERO_CHUNK, ZERO_CHUNK, ZERO_CHUNK]);
  assertEquals(zeros.storedBytes, 0);
});

Deno.test("writeChunked() stops at the size limit with too_large", async () => {
  const err = await assertRejects(() =>
    writeChunked(pieces(new Uint8Array(1000), 100), null, { chunkSize: CHUNK, maxSize: 999 })
  );
  assert(err instanceof SnapmeshError && err.code === "too_large");
});
