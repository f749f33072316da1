/**
 * A node's policy on snapshot signatures, in one object every room asks:
 *
 * - where a manifest enters (a peer's answer, the origin, an adoption), it
 *   is {@linkcode SnapshotTrust.accept}ed: with `--trusted-keys`, only with
 *   a valid signature by a trusted key, else `untrusted_snapshot`; its
 *   signatures are remembered by digest so they travel on with it;
 * - a commit is signed with `--signing-key` ({@linkcode SnapshotTrust.signCommit});
 * - the one publish path asks {@linkcode SnapshotTrust.forPublish} for the
 *   signatures to write beside the manifest, and is refused when a node
 *   that enforces signatures would publish something unsigned (whatever
 *   path led there).
 *
 * Without `--trusted-keys` nothing is refused: signatures are carried along
 * as received, so signed snapshots stay signed through nodes that do not check.
 *
 * @module
 */

import { SnapmeshError } from "../errors.ts";
import type { Logger } from "../log/mod.ts";
import type { Clock } from "../util/clock.ts";
import {
  parseSignatures,
  type SigningKey,
  type SnapshotSignature,
  type TrustedKeys,
  type TrustFailure,
} from "./snapshot_signing.ts";

/** Where a manifest came from. */
export type ManifestSource = "peer" | "origin" | "adopted" | "commit";

/** Options for {@linkcode SnapshotTrust}. */
export interface SnapshotTrustOptions {
  /** Keys whose signatures this node requires; null accepts anything. */
  trusted: TrustedKeys | null;
  /** Signs this node's commits; null signs nothing. */
  signer: SigningKey | null;
  clock: Pick<Clock, "now">;
  log: Logger;
  /** Counts a refused manifest (for metrics). */
  onRefused?: (source: ManifestSource) => void;
}

/** Digests whose signatures are remembered at most. */
const BOOK_ENTRIES = 4096;
/** A refusal explains a later "not found" for this long. */
const REFUSAL_MS = 60_000;
const REFUSALS = 1024;

const WHY: Record<TrustFailure, string> = {
  unsigned: "it carries no signature",
  unknown_key: "no signature is by a key in --trusted-keys",
  bad_signature: "its signature by a trusted key does not verify",
};

/** Signature policy of one node. */
export class SnapshotTrust {
  readonly #o: SnapshotTrustOptions;
  /** Signatures by snapshot digest, least recently used first. */
  readonly #book = new Map<string, SnapshotSignature[]>();
  readonly #refused = new Map<string, { at: number; why: string }>();

  constructor(options: SnapshotTrustOptions) {
    this.#o = options;
  }

  /** A node with neither trusted keys nor a signing key (unsigned clusters, tests). */
  static none(log: Logger, clock: Pick<Clock, "now"> = { now: Date.now }): SnapshotTrust {
    return new SnapshotTrust({ trusted: null, signer: null, clock, log });
  }

  /** True with `--trusted-keys`: unsigned or untrusted manifests are refused. */
  get enforcing(): boolean {
    return this.#o.trusted !== null;
  }

  /** The signing key's id, or null. */
  get signerId(): string | null {
    return this.#o.signer?.keyId ?? null;
  }

  /**
   * Checks a manifest that arrived from `source` (`who` names the peer or
   * the origin in messages) and remembers its signatures. Returns them.
   *
   * @throws {SnapmeshError} `untrusted_snapshot` when this node enforces
   *   signatures and none by a trusted key verifies
   */
  async accept(
    manifest: { name: string; digest: string },
    signatures: unknown,
    from: { source: ManifestSource; who: string },
  ): Promise<SnapshotSignature[]> {
    const parsed = parseSignatures(signatures);
    const trusted = this.#o.trusted;
    if (trusted !== null) {
      const result = await trusted.verify(manifest.digest, parsed);
      if ("failure" in result) {
        throw this.#refuse(from, {
          name: manifest.name,
          digest: manifest.digest,
          reason: WHY[result.failure],
          signatures: parsed,
        });
      }
    }
    this.remember(manifest.digest, parsed);
    return parsed;
  }

  /** Notes signatures known for a digest (merged with those known already). */
  remember(digest: string, signatures: readonly SnapshotSignature[]): void {
    const known = this.#book.get(digest) ?? [];
    const merged = parseSignatures([...known, ...signatures]);
    this.#book.delete(digest);
    if (merged.length === 0) return;
    this.#book.set(digest, merged);
    while (this.#book.size > BOOK_ENTRIES) this.#book.delete(this.#book.keys().next().value!);
  }

  /** Signatures remembered for a digest (empty when none). */
  signaturesOf(digest: string): SnapshotSignature[] {
    return this.#book.get(digest) ?? [];
  }

  /**
   * The signatures a commit of `digest` publishes: those already known (the
   * origin's, when the commit takes the origin's manifest) and this node's.
   *
   * @throws {SnapmeshError} `forbidden` when this node enforces signatures
   *   and can sign nothing a trusted key would vouch for
   */
  async signCommit(name: string, digest: string): Promise<SnapshotSignature[]> {
    const signer = this.#o.signer;
    if (signer) this.remember(digest, [await signer.sign(digest)]);
    const signatures = this.signaturesOf(digest);
    const trusted = this.#o.trusted;
    if (trusted !== null && "failure" in await trusted.verify(digest, signatures)) {
      this.#o.onRefused?.("commit");
      throw new SnapmeshError(
        "forbidden",
        `Cannot commit "${name}": this node accepts only snapshots signed by a key in ` +
          "--trusted-keys, and it has no --signing-key whose public key is listed there; " +
          "commit on a publishing node",
      );
    }
    return signatures;
  }

  /**
   * The signatures to publish with `digest`, checked again when this node
   * enforces signatures: the last gate before anything is cached.
   *
   * @throws {SnapmeshError} `untrusted_snapshot` when they do not verify
   */
  async forPublish(name: string, digest: string, source: string): Promise<SnapshotSignature[]> {
    const signatures = this.signaturesOf(digest);
    const trusted = this.#o.trusted;
    if (trusted !== null) {
      const result = await trusted.verify(digest, signatures);
      if ("failure" in result) {
        const from = source === "local" ? "commit" : source === "origin" ? "origin" : "peer";
        throw this.#refuse({ source: from, who: source }, {
          name,
          digest,
          reason: WHY[result.failure],
          signatures: [],
        });
      }
    }
    return signatures;
  }

  /**
   * After no source offered a trusted manifest of `name`: says so when one
   * was refused lately, instead of "not found".
   *
   * @throws {SnapmeshError} `untrusted_snapshot`
   */
  assertNotRefused(name: string): void {
    const refusal = this.#refused.get(name);
    if (refusal && this.#o.clock.now() - refusal.at < REFUSAL_MS) {
      throw new SnapmeshError(
        "untrusted_snapshot",
        `No trusted copy of snapshot "${name}": ${refusal.why}`,
      );
    }
  }

  /**
   * Before adopting files from the origin that have no manifest (so no
   * publisher signature).
   *
   * @throws {SnapmeshError} `untrusted_snapshot` when this node enforces signatures
   */
  assertAdoptable(name: string): void {
    if (this.#o.trusted === null) return;
    throw this.#refuse({ source: "adopted", who: "the origin" }, {
      name,
      digest: null,
      reason: "the origin holds its files without a manifest, so there is no publisher " +
        "signature (adoption is off under --trusted-keys; publish it with snapmesh put on a " +
        "signing node)",
      signatures: [],
    });
  }

  /** Remembers and logs a refused manifest; the error to throw. */
  #refuse(
    from: { source: ManifestSource; who: string },
    { name, digest, reason, signatures }: {
      name: string;
      digest: string | null;
      reason: string;
      signatures: readonly SnapshotSignature[];
    },
  ): SnapmeshError {
    const why = `the manifest from ${from.who} was refused: ${reason}`;
    this.#o.onRefused?.(from.source);
    this.#o.log.warn("refused an untrusted snapshot", {
      name,
      digest,
      source: from.source,
      from: from.who,
      reason,
      keyIds: signatures.map((s) => s.keyId),
    });
    this.#refused.delete(name);
    this.#refused.set(name, { at: this.#o.clock.now(), why });
    while (this.#refused.size > REFUSALS) {
      this.#refused.delete(this.#refused.keys().next().value!);
    }
    return new SnapmeshError(
      "untrusted_snapshot",
      `Snapshot "${name}" is not signed by a trusted key: ${why}`,
      digest === null ? undefined : { digest },
    );
  }
}
