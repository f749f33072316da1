/**
 * The Origin conformance suite: the same cases against the in-memory origin
 * and against the S3 origin (the real AWS SDK, path-style, built by
 * `openOrigin` as an agent builds it) on s3rver, so the fake the unit tests
 * use behaves like the real thing where the agent relies on it.
 */

import { assert, assertBytes, assertEquals } from "../helpers/assert.ts";
import { startS3 } from "../helpers/s3.ts";
import { randomBytes } from "../helpers/temp.ts";
import { resolveServeConfig } from "../../src/config/mod.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { Metrics } from "../../src/metrics/mod.ts";
import { MemoryOrigin, openOrigin, type Origin } from "../../src/origin/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const encoder = new TextEncoder();

/** Pieces of `bytes` as a stream, the way an upload reads a file. */
function streamOf(bytes: Uint8Array, piece = 64 * 1024): () => ReadableStream<Uint8Array> {
  return () => {
    let at = 0;
    return new ReadableStream({
      pull(controller) {
        if (at >= bytes.length) return controller.close();
        controller.enqueue(bytes.slice(at, at + piece));
        at += piece;
      },
    });
  };
}

interface Case {
  name: string;
  run(origin: Origin, base: string): Promise<void>;
}

const CASES: Case[] = [
  {
    name: "putBytes() then getObject() answers the same bytes",
    async run(origin, base) {
      const bytes = encoder.encode('{"schema":"snapmesh.manifest/v1"}');
      await origin.putBytes(`${base}manifest.json`, bytes);
      assertBytes(await origin.getObject(`${base}manifest.json`), bytes);
      // Overwriting replaces.
      await origin.putBytes(`${base}manifest.json`, encoder.encode("{}"));
      assertEquals(await origin.getObject(`${base}manifest.json`), encoder.encode("{}"));
    },
  },
  {
    name: "getObject() of a missing key answers null",
    async run(origin, base) {
      assertEquals(await origin.getObject(`${base}missing`), null);
      assertEquals(await origin.getObject(`${base}missing`, { range: [0, 9] }), null);
    },
  },
  {
    name: "getObject() with a range answers bytes start..end, inclusive",
    async run(origin, base) {
      const bytes = randomBytes(300_000, 1);
      await origin.putBytes(`${base}files/mem`, bytes, { contentType: "application/octet-stream" });
      // (Not bytes=0-0: s3rver answers it with the whole object, where S3 sends one byte.)
      for (const [start, end] of [[0, 1], [2, 5], [65_536, 131_071], [299_990, 299_999]]) {
        assertBytes(
          await origin.getObject(`${base}files/mem`, { range: [start!, end!] }),
          bytes.subarray(start, end! + 1),
          `bytes ${start}-${end}`,
        );
      }
    },
  },
  {
    name: "list() answers every object under a prefix, recursively, and nothing else",
    async run(origin, base) {
      const keys = [`${base}a/manifest.json`, `${base}a/files/mem`, `${base}a/files/x/y`];
      for (const [i, key] of keys.entries()) await origin.putBytes(key, randomBytes(10 + i, i));
      await origin.putBytes(`${base}ab/manifest.json`, encoder.encode("{}"));
      const listed = await origin.list(`${base}a/`);
      assertEquals(
        listed.map((o) => [o.key, o.size]).sort(),
        [[keys[1], 11], [keys[2], 12], [keys[0], 10]].sort(),
      );
      assert(listed.every((o) => o.lastModified > 0));
      assertEquals(await origin.list(`${base}nothing/`), []);
    },
  },
  {
    name: "deleteObject() removes one object; a missing one is no error",
    async run(origin, base) {
      await origin.putBytes(`${base}gone`, encoder.encode("x"));
      await origin.putBytes(`${base}kept`, encoder.encode("y"));
      await origin.deleteObject(`${base}gone`);
      await origin.deleteObject(`${base}never-was`);
      assertEquals(await origin.getObject(`${base}gone`), null);
      assertEquals(await origin.getObject(`${base}kept`), encoder.encode("y"));
    },
  },
  {
    name: "deleteObjects() removes many at once",
    async run(origin, base) {
      const keys = Array.from({ length: 5 }, (_, i) => `${base}many/${i}`);
      for (const key of keys) await origin.putBytes(key, encoder.encode(key));
      await origin.deleteObjects([...keys.slice(0, 4), `${base}many/missing`]);
      assertEquals((await origin.list(`${base}many/`)).map((o) => o.key), [keys[4]]);
    },
  },
  {
    name: "uploadFile() stores a streamed file, reporting progress up to its size",
    async run(origin, base) {
      const bytes = randomBytes(1_000_003, 2);
      const progress: number[] = [];
      await origin.uploadFile(`${base}files/mem`, {
        open: streamOf(bytes),
        size: bytes.length,
        onProgress: (n) => progress.push(n),
      });
      assertBytes(await origin.getObject(`${base}files/mem`), bytes);
      assertEquals(Math.max(...progress), bytes.length);
    },
  },
  {
    name: "uploadFile() of a file above the 8 MiB multipart threshold",
    async run(origin, base) {
      const bytes = randomBytes(9 * 1024 * 1024 + 17, 3);
      await origin.uploadFile(`${base}files/big`, {
        open: streamOf(bytes, 1024 * 1024),
        size: bytes.length,
      });
      const back = await origin.getObject(`${base}files/big`);
      assertBytes(back, bytes);
    },
  },
  {
    name: "keys follow <prefix>/<name>/manifest.json and <prefix>/<name>/files/<file>",
    async run(origin) {
      const p = origin.prefix ? `${origin.prefix}/` : "";
      assertEquals(origin.snapshotPrefix("fn-a"), `${p}fn-a/`);
      assertEquals(origin.manifestKey("fn-a"), `${p}fn-a/manifest.json`);
      assertEquals(origin.fileKey("fn-a", "mem"), `${p}fn-a/files/mem`);
      assertEquals(await origin.probe(), true);
      assertEquals(origin.health().healthy, true);
    },
  },
];

interface Subject {
  name: string;
  open(): Promise<{ origin: Origin } & AsyncDisposable>;
}

const SUBJECTS: Subject[] = [
  {
    name: "MemoryOrigin",
    open() {
      const origin = new MemoryOrigin({ clock: new VirtualClock(), prefix: "conformance" });
      return Promise.resolve({ origin, async [Symbol.asyncDispose]() {} });
    },
  },
  {
    name: "S3Origin on s3rver",
    async open() {
      const s3 = await startS3();
      // The SDK reads credentials from the environment, as the agent does.
      for (const [key, value] of Object.entries(s3.env)) Deno.env.set(key, value);
      const config = resolveServeConfig({
        flags: {
          "data-dir": "/unused",
          "origin-endpoint": s3.endpoint,
          "origin-bucket": s3.bucket,
          "origin-prefix": s3.prefix,
          "origin-stall-timeout": "10s",
        },
        env: {},
        file: null,
        cwd: "/",
        hostname: "conformance",
      });
      const origin = await openOrigin(config, { log: silentLogger, metrics: new Metrics() });
      assert(origin !== null);
      return { origin, [Symbol.asyncDispose]: () => s3[Symbol.asyncDispose]() };
    },
  },
];

for (const subject of SUBJECTS) {
  Deno.test(`Origin conformance: ${subject.name}`, async (t) => {
    await using opened = await subject.open();
    const { origin } = opened;
    for (const [i, c] of CASES.entries()) {
      // Each case under a key prefix of its own.
      await t.step(c.name, () => c.run(origin, origin.snapshotPrefix(`case-${i}`)));
    }
  });
}
