import { assert, assertEquals, assertRejects, assertThrows } from "../helpers/assert.ts";
import { hasCode } from "../../src/errors.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { generateKeyPair, SigningKey, TrustedKeys } from "../../src/security/snapshot_signing.ts";
import { type ManifestSource, SnapshotTrust } from "../../src/security/snapshot_trust.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const DIGEST = "ab".repeat(32);

async function keys() {
  const publisher = await SigningKey.fromPem((await generateKeyPair()).privatePem);
  const rogue = await SigningKey.fromPem((await generateKeyPair()).privatePem);
  return { publisher, rogue, trusted: await TrustedKeys.parse(publisher.publicLine) };
}

Deno.test("SnapshotTrust without trusted keys carries signatures along and refuses nothing", async () => {
  const { rogue } = await keys();
  const trust = SnapshotTrust.none(silentLogger);
  assert(!trust.enforcing);
  const sig = await rogue.sign(DIGEST);
  assertEquals(
    await trust.accept({ name: "a", digest: DIGEST }, [sig, { junk: 1 }], {
      source: "peer",
      who: "peer b",
    }),
    [sig],
  );
  assertEquals(trust.signaturesOf(DIGEST), [sig]);
  assertEquals(await trust.forPublish("a", DIGEST, "peer"), [sig]);
  trust.assertAdoptable("a");
  assertEquals(await trust.signCommit("b", "cd".repeat(32)), []);
});

Deno.test("SnapshotTrust with trusted keys refuses untrusted manifests, counts and remembers why", async () => {
  const { publisher, rogue, trusted } = await keys();
  const refused: ManifestSource[] = [];
  const clock = new VirtualClock();
  const trust = new SnapshotTrust({
    trusted,
    signer: null,
    clock,
    log: silentLogger,
    onRefused: (source) => refused.push(source),
  });
  const forged = { name: "forged", digest: DIGEST };
  const err = await assertRejects(
    async () =>
      trust.accept(forged, [await rogue.sign(DIGEST)], { source: "peer", who: "peer rogue" }),
  );
  assert(hasCode(err, "untrusted_snapshot"), String(err));
  await assertRejects(() => trust.accept(forged, [], { source: "origin", who: "the origin" }));
  assertEquals(refused, ["peer", "origin"]);
  assertEquals(trust.signaturesOf(DIGEST), []);
  // A later "not found" says why.
  assertThrows(() => trust.assertNotRefused("forged"), (e) => hasCode(e, "untrusted_snapshot"));
  trust.assertNotRefused("other");
  await clock.advance(61_000);
  trust.assertNotRefused("forged");
  // Adoption has no publisher signature.
  assertThrows(() => trust.assertAdoptable("vhive-1"), (e) => hasCode(e, "untrusted_snapshot"));
  // The publish gate refuses what was never accepted.
  await assertRejects(
    () => trust.forPublish("forged", DIGEST, "peer"),
    (e) => hasCode(e, "untrusted_snapshot"),
  );
  // A trusted signature is accepted and published with the manifest.
  const good = await publisher.sign(DIGEST);
  assertEquals(
    await trust.accept({ name: "fn", digest: DIGEST }, [good], { source: "peer", who: "peer a" }),
    [good],
  );
  assertEquals(await trust.forPublish("fn", DIGEST, "peer"), [good]);
});

Deno.test("SnapshotTrust.signCommit() signs with the node's key, or refuses when it enforces and cannot", async () => {
  const { publisher, trusted } = await keys();
  const signing = new SnapshotTrust({
    trusted,
    signer: publisher,
    clock: new VirtualClock(),
    log: silentLogger,
  });
  const sigs = await signing.signCommit("fn", DIGEST);
  assertEquals(sigs.map((s) => s.keyId), [publisher.keyId]);
  assertEquals(await signing.forPublish("fn", DIGEST, "local"), sigs);

  const checking = new SnapshotTrust({
    trusted,
    signer: null,
    clock: new VirtualClock(),
    log: silentLogger,
  });
  await assertRejects(() => checking.signCommit("fn", DIGEST), (e) => hasCode(e, "forbidden"));
  // The same content as a trusted manifest (from the origin) can be committed.
  await checking.accept({ name: "fn", digest: DIGEST }, sigs, { source: "origin", who: "o" });
  assertEquals(await checking.signCommit("fn", DIGEST), sigs);
});
