import { assert, assertEquals, assertRejects, assertThrows } from "../helpers/assert.ts";
import {
  decodeSignatureFile,
  encodeSignatureFile,
  generateKeyPair,
  keyIdOf,
  parsePublicKeyLine,
  parseSignatures,
  SigningKey,
  TrustedKeys,
} from "../../src/security/snapshot_signing.ts";

const DIGEST = "ab".repeat(32);
const OTHER_DIGEST = "cd".repeat(32);

Deno.test("generateKeyPair() makes a key that signs what its public line verifies", async () => {
  const pair = await generateKeyPair("ci publisher");
  assert(pair.privatePem.startsWith("-----BEGIN PRIVATE KEY-----\n"));
  assert(pair.publicLine.startsWith("ed25519 "));
  assert(pair.publicLine.endsWith(" ci-publisher"), pair.publicLine);
  const key = await SigningKey.fromPem(pair.privatePem);
  assertEquals(key.keyId, pair.keyId);
  assertEquals(key.publicLine, pair.publicLine.replace(/ ci-publisher$/, ""));
  const trusted = await TrustedKeys.parse(`# publishers\n${pair.publicLine}\n`);
  const signature = await key.sign(DIGEST);
  assertEquals(signature.keyId, pair.keyId);
  assertEquals(await trusted.verify(DIGEST, [signature]), { keyId: pair.keyId });
});

Deno.test("TrustedKeys.verify() refuses other digests, unknown keys, bad and missing signatures", async () => {
  const a = await SigningKey.fromPem((await generateKeyPair()).privatePem);
  const b = await SigningKey.fromPem((await generateKeyPair()).privatePem);
  const trusted = await TrustedKeys.parse(a.publicLine);
  const signed = await a.sign(DIGEST);
  assertEquals(await trusted.verify(OTHER_DIGEST, [signed]), { failure: "bad_signature" });
  assertEquals(await trusted.verify(DIGEST, [await b.sign(DIGEST)]), { failure: "unknown_key" });
  assertEquals(await trusted.verify(DIGEST, []), { failure: "unsigned" });
  // A signature by an untrusted key claiming a trusted key's id.
  const forged = { keyId: a.keyId, signature: (await b.sign(DIGEST)).signature };
  assertEquals(await trusted.verify(DIGEST, [forged]), { failure: "bad_signature" });
  // One good signature among others is enough.
  assertEquals(await trusted.verify(DIGEST, [await b.sign(DIGEST), forged, signed]), {
    keyId: a.keyId,
  });
});

Deno.test("SigningKey.fromPem() reads openssl's Ed25519 keys and refuses others", async () => {
  const out = await new Deno.Command("openssl", {
    args: ["genpkey", "-algorithm", "ed25519"],
    stdout: "piped",
    stderr: "null",
  }).output();
  const pem = new TextDecoder().decode(out.stdout);
  const key = await SigningKey.fromPem(pem);
  assertEquals(key.keyId, keyIdOf(key.publicKey));
  await assertRejects(() => SigningKey.fromPem("not a key"), (e) => e instanceof SyntaxError);
  const ec = await new Deno.Command("openssl", {
    args: ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    stdout: "piped",
    stderr: "null",
  }).output();
  await assertRejects(
    () => SigningKey.fromPem(new TextDecoder().decode(ec.stdout)),
    (e) => e instanceof SyntaxError,
  );
});

Deno.test("parsePublicKeyLine() checks the kind and length", () => {
  assertThrows(() => parsePublicKeyLine("rsa AAAA"), (e) => e instanceof SyntaxError);
  assertThrows(() => parsePublicKeyLine("ed25519 AAAA"), (e) => e instanceof SyntaxError);
  const line = `ed25519 ${btoa(String.fromCharCode(...new Uint8Array(32).fill(7)))} laptop`;
  const parsed = parsePublicKeyLine(line);
  assertEquals(parsed.comment, "laptop");
  assertEquals(parsed.keyId.length, 16);
});

Deno.test("TrustedKeys.parse() names the bad line and needs a key", async () => {
  const err = await assertRejects(() => TrustedKeys.parse("# c\n\nnonsense\n"));
  assert(String(err).includes("line 3"), String(err));
  await assertRejects(() => TrustedKeys.parse("# only comments\n"));
});

Deno.test("parseSignatures() keeps well-formed entries only, at most 8", () => {
  const good = { keyId: "0123456789abcdef", signature: "AAAA" };
  assertEquals(parseSignatures(null), []);
  assertEquals(parseSignatures([good, good, { keyId: "x", signature: "AAAA" }, 7]), [good]);
  const many = Array.from({ length: 20 }, (_, i) => ({
    keyId: i.toString(16).padStart(16, "0"),
    signature: "AAAA",
  }));
  assertEquals(parseSignatures(many).length, 8);
});

Deno.test("signature files are bound to their digest", () => {
  const sigs = [{ keyId: "0123456789abcdef", signature: "AAAA" }];
  const bytes = encodeSignatureFile(DIGEST, sigs);
  assertEquals(decodeSignatureFile(bytes, DIGEST), sigs);
  assertEquals(decodeSignatureFile(bytes, OTHER_DIGEST), []);
  assertEquals(decodeSignatureFile(new TextEncoder().encode("{garbage"), DIGEST), []);
});
