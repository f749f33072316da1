import { assert, assertEquals, assertThrows } from "../helpers/assert.ts";
import { SnapmeshError } from "../../src/errors.ts";
import {
  assertName,
  decodeManifest,
  encodeManifest,
  isValidName,
  type Manifest,
  manifestDigest,
  parseManifest,
  sha256Hex,
  storedBytes,
  validateHot,
  validateLabels,
  ZERO_CHUNK,
} from "../../src/manifest/mod.ts";

const HASH = "a".repeat(64);

function sample(): Manifest {
  return {
    schema: "snapmesh.manifest/v1",
    name: "fn-a",
    createdAt: "2026-11-21T10:00:00.000Z",
    chunkSize: 1048576,
    labels: { function: "hello", runtime: "python" },
    files: [
      { name: "info.json", size: 10, sha256: HASH, chunks: [HASH] },
      { name: "mem", size: 2_500_000, sha256: HASH, chunks: [HASH, ZERO_CHUNK, HASH], hot: [2, 0] },
    ],
  };
}

Deno.test("isValidName() follows the §2 pattern", async (t) => {
  const cases: [string, boolean][] = [
    ["fn-a", true],
    ["mem", true],
    ["info.json", true],
    ["A_1.b-c", true],
    ["a".repeat(128), true],
    ["a".repeat(129), false],
    ["a".repeat(300), false],
    ["", false],
    [".", false],
    ["..", false],
    [".hidden", false],
    ["-dash", false],
    ["_under", false],
    ["a/b", false],
    ["a\\b", false],
    ["a\0b", false],
    ["a b", false],
    ["é", false],
    ["a%2Fb", false],
  ];
  for (const [name, valid] of cases) {
    await t.step(
      JSON.stringify(name.length > 20 ? `${name.slice(0, 10)}…(${name.length})` : name),
      () => {
        assertEquals(isValidName(name), valid);
      },
    );
  }
  const err = assertThrows(() => assertName("snapshot", ".."));
  assert(err instanceof SnapmeshError && err.code === "invalid_name");
});

Deno.test("encodeManifest() is canonical: key order and whitespace do not matter", () => {
  const a = sample();
  const shuffled = JSON.parse(JSON.stringify({
    files: a.files,
    labels: { runtime: "python", function: "hello" },
    chunkSize: a.chunkSize,
    createdAt: a.createdAt,
    name: a.name,
    schema: a.schema,
  }));
  assertEquals(encodeManifest(parseManifest(shuffled)), encodeManifest(a));
  assertEquals(manifestDigest(parseManifest(shuffled)), manifestDigest(a));
  const text = new TextDecoder().decode(encodeManifest(a));
  assert(!text.includes(" "), "no insignificant whitespace");
  assert(text.startsWith('{"chunkSize":1048576,"createdAt"'), text.slice(0, 40));
});

Deno.test("manifestDigest() changes with any field", () => {
  const base = manifestDigest(sample());
  const changes: ((m: Manifest) => void)[] = [
    (m) => (m.name = "fn-b"),
    (m) => (m.createdAt = "2026-11-21T10:00:00.001Z"),
    (m) => (m.labels.runtime = "node"),
    (m) => (m.files[0]!.sha256 = "b".repeat(64)),
    (m) => (m.files[1]!.chunks[1] = HASH),
    (m) => (m.files[1]!.hot = [0, 2]),
  ];
  for (const change of changes) {
    const m = sample();
    change(m);
    assert(manifestDigest(m) !== base, change.toString());
  }
});

Deno.test("decodeManifest() checks the digest and the canonical form", () => {
  const bytes = encodeManifest(sample());
  const digest = sha256Hex(bytes);
  assertEquals(decodeManifest(bytes, digest).digest, digest);
  const err = assertThrows(() => decodeManifest(bytes, "0".repeat(64)));
  assert(err instanceof SnapmeshError && err.code === "verification_failed");
  const pretty = new TextEncoder().encode(JSON.stringify(sample(), null, 2));
  assertThrows(() => decodeManifest(pretty));
});

Deno.test("parseManifest() rejects malformed manifests", async (t) => {
  const cases: [string, (m: Record<string, unknown>) => void][] = [
    ["wrong schema", (m) => (m.schema = "v0")],
    ["bad name", (m) => (m.name = "../x")],
    ["bad date", (m) => (m.createdAt = "yesterday")],
    ["tiny chunk size", (m) => (m.chunkSize = 1024)],
    ["labels not strings", (m) => (m.labels = { a: 1 })],
    ["labels over 4 KiB", (m) => (m.labels = { a: "x".repeat(4100) })],
    ["no files", (m) => (m.files = [])],
    ["unsorted files", (m) => (m.files = [...(m.files as unknown[])].reverse())],
    ["duplicate files", (m) => (m.files = [(m.files as unknown[])[0], (m.files as unknown[])[0]])],
    ["wrong chunk count", (m) => ((m.files as { chunks: string[] }[])[1]!.chunks.pop())],
    ["bad chunk digest", (m) => ((m.files as { chunks: string[] }[])[1]!.chunks[0] = "xyz")],
    ["negative size", (m) => ((m.files as { size: number }[])[0]!.size = -1)],
    ["hot out of range", (m) => ((m.files as { hot: number[] }[])[1]!.hot = [3])],
    ["hot repeated", (m) => ((m.files as { hot: number[] }[])[1]!.hot = [1, 1])],
    ["file name with slash", (m) => ((m.files as { name: string }[])[0]!.name = "a/b")],
  ];
  for (const [label, damage] of cases) {
    await t.step(label, () => {
      const m = JSON.parse(JSON.stringify(sample()));
      damage(m);
      const err = assertThrows(() => parseManifest(m));
      assert(err instanceof SnapmeshError && err.code === "invalid_body", String(err));
    });
  }
});

Deno.test("storedBytes() counts non-zero chunks only", () => {
  const m = sample();
  assertEquals(storedBytes(m.files[1]!, m.chunkSize), 1048576 + (2_500_000 - 2 * 1048576));
  assertEquals(storedBytes(m.files[0]!, m.chunkSize), 10);
});

Deno.test("validateLabels() and validateHot() explain what is wrong", () => {
  assertEquals(validateLabels({ a: "b" }), { a: "b" });
  const err = assertThrows(() => validateLabels(["x"]));
  assert(err instanceof SnapmeshError && err.message.includes("labels"));
  assertEquals(validateHot("mem", [2, 0, 1], 3), [2, 0, 1]);
  const hot = assertThrows(() => validateHot("mem", [0, 5], 3));
  assert(hot instanceof SnapmeshError && hot.message.includes("0..2"), String(hot));
});
