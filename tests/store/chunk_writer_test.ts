import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import { createHash } from "node:crypto";
import { SnapmeshError } from "../../src/errors.ts";
import { DenoFileSystem } from "../../src/fs/mod.ts";
import { ZERO_CHUNK } from "../../src/manifest/mod.ts";
import { isAllZero } from "../../src/manifest/mod.ts";
import { streamSource, writeChunked } from "../../src/store/mod.ts";
import { randomBytes, tempDir } from "../helpers/temp.ts";

const CHUNK = 64 * 1024;

/** A plain (not byte) stream of pieces, exercising the copying path. */
function pieces(bytes: Uint8Array, size: number) {
  const parts: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += size) parts.push(bytes.slice(at, at + size));
  return streamSource(ReadableStream.from(parts));
}

/** A byte stream, exercising the BYOB path. */
function byteStream(bytes: Uint8Array, size: number) {
  let at = 0;
  return streamSource(
    new ReadableStream({
      type: "bytes",
      pull(controller) {
        if (at >= bytes.length) {
          controller.close();
          controller.byobRequest?.respond(0);
          return;
        }
        const request = controller.byobRequest!;
        const view = request.view as Uint8Array;
        const take = Math.min(size, view.byteLength, bytes.length - at);
        view.set(bytes.subarray(at, at + take));
        at += take;
        request.respond(take);
      },
    }),
  );
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
  const sources = [
    () => pieces(data, 1000),
    () => pieces(data, CHUNK),
    () => pieces(data, CHUNK * 3 + 17),
    () => byteStream(data, 5000),
    () => byteStream(data, CHUNK * 2),
  ];
  for (const source of sources) {
    await handle.truncate(0);
    reserved.length = 0;
    const result = await writeChunked(source(), handle, {
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
  assertEquals(hex(await Deno.readFile(path)), hex(data));
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

Deno.test("writeChunked() never refills a buffer whose write is still running", async () => {
  // Data, then zero chunks (which write nothing), then data again: with a
  // slow sink the first write is still running when its buffer comes round.
  const pattern = [1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 1];
  const data = new Uint8Array(CHUNK * pattern.length);
  pattern.forEach((p, i) => p && data.set(randomBytes(CHUNK, i + 1), i * CHUNK));
  const written = new Uint8Array(data.length);
  const slowSink = {
    async writeAt(bytes: Uint8Array, offset: number) {
      await new Promise((r) => setTimeout(r, 15));
      written.set(bytes, offset); // copies what the buffer holds when the write "lands"
    },
    truncate: () => Promise.resolve(),
  };
  for (const source of [() => pieces(data, 7000), () => byteStream(data, 9000)]) {
    written.fill(0);
    const result = await writeChunked(source(), slowSink, { chunkSize: CHUNK, maxSize: 1 << 30 });
    assertEquals(result.sha256, hex(data));
    assert(hex(written) === hex(data), "bytes written must be the bytes read");
  }
});
