// Where a pull finds its manifest among peers: the owners ranked above this
// node (asked to fetch it), then a few other healthy peers (asked what they
// hold). Every answer is decoded and checked here; a peer's word on the
// digest is never taken.

import type { Membership, Peer, PeerManifest } from "../cluster/mod.ts";
import { isConnectionError } from "../cluster/mod.ts";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log/mod.ts";
import { decodeManifest, type ManifestWithDigest } from "../manifest/mod.ts";
import type { SnapshotTrust } from "../security/mod.ts";
import type { PullMode } from "./_pull_types.ts";

/** What a lookup among peers works with. */
export interface PeerLookupOptions {
  membership: Membership | null;
  log: Logger;
  /** Checks manifests from peers against the trusted keys. @default none */
  trust?: SnapshotTrust;
}

/** The manifest found among peers, and who answered with it. */
export interface PeerFound {
  manifest: ManifestWithDigest;
  /** The owner that answered (asked to fetch), or null when other peers did. */
  primary: Peer | null;
  /** The peers that answered with this manifest, and their answers. */
  seen: Map<Peer, PeerManifest>;
}

/**
 * Finds the manifest among peers: owners ranked above this node (asked to
 * fetch, in client mode), then up to four other healthy peers (asked what
 * they hold). Null when no peer has it.
 */
export async function findOnPeers(
  name: string,
  mode: PullMode,
  options: PeerLookupOptions,
): Promise<PeerFound | null> {
  const { membership } = options;
  if (!membership || !membership.configured) return null;
  const ranking = membership.rank(name);
  const asked = new Set<string>();
  const seen = new Map<Peer, PeerManifest>();
  if (mode === "client") {
    for (const member of ranking.slice(0, 2)) {
      if (member.self) break; // this node is an owner: nobody above it to ask
      asked.add(member.id);
      const answer = await askPeer(member.peer, name, {
        ...options,
        fetch: true,
        timeoutMs: 30_000,
      });
      if (answer) {
        seen.set(member.peer, answer.raw);
        return { manifest: answer.manifest, primary: member.peer, seen };
      }
    }
  }
  const others = ranking.filter((m) => !m.self && !asked.has(m.id)).slice(0, 4);
  const answers = await Promise.all(
    others.map(async (m) =>
      m.self ? null : {
        peer: m.peer,
        answer: await askPeer(m.peer, name, { ...options, fetch: false, timeoutMs: 2_000 }),
      }
    ),
  );
  let manifest: ManifestWithDigest | null = null;
  for (const a of answers) {
    if (!a?.answer) continue;
    manifest ??= a.answer.manifest;
    if (a.answer.manifest.digest === manifest.digest) seen.set(a.peer, a.answer.raw);
  }
  return manifest ? { manifest, primary: null, seen } : null;
}

/**
 * The manifest of `name` from a peer that holds it (or is pulling it),
 * without asking anyone to fetch it: the owners and a few other healthy
 * peers are asked at once. Null when none has it.
 */
export async function peekOnPeers(
  name: string,
  options: PeerLookupOptions,
): Promise<ManifestWithDigest | null> {
  const { membership } = options;
  if (!membership || !membership.configured) return null;
  const asked = membership.rank(name).filter((m) => !m.self).slice(0, 6);
  const answers = await Promise.all(
    asked.map((m) =>
      m.self ? null : askPeer(m.peer, name, { ...options, fetch: false, timeoutMs: 2_000 })
    ),
  );
  return answers.find((a) => a !== null)?.manifest ?? null;
}

/** Options for {@linkcode askPeer}. */
interface AskOptions extends PeerLookupOptions {
  /** Ask the peer to fetch the snapshot (an owner), not only what it holds. */
  fetch: boolean;
  timeoutMs: number;
}

async function askPeer(
  peer: Peer,
  name: string,
  options: AskOptions,
): Promise<{ manifest: ManifestWithDigest; raw: PeerManifest } | null> {
  const { fetch, timeoutMs } = options;
  let answer: PeerManifest | null;
  try {
    answer = await options.membership!.transport.manifest(peer.url, name, {
      fetch,
      timeoutMs,
    });
  } catch (err) {
    // Only a peer that cannot be reached is down; a slow or odd answer
    // (an owner still fetching, a 5xx) says nothing about its health.
    if (isConnectionError(err)) options.membership?.markDown(peer, errorMessage(err));
    options.log.debug("pull: peer could not answer", { name, peer: peer.id, error: err });
    return null;
  }
  if (answer === null) return null;
  options.membership?.markSeen(peer);
  try {
    // Never trust what a peer says the digest is: it is the hash of these bytes.
    const manifest = decodeManifest(new TextEncoder().encode(answer.manifest));
    if (manifest.name !== name) throw new Error(`it describes "${manifest.name}"`);
    await options.trust?.accept(manifest, answer.signatures, {
      source: "peer",
      who: `peer ${peer.id}`,
    });
    // Availability is keyed by the digest computed here, not the one it reported.
    return { manifest, raw: { ...answer, digest: manifest.digest } };
  } catch (err) {
    options.log.warn("pull: a peer sent an invalid manifest; ignoring it", {
      name,
      peer: peer.id,
      error: err,
    });
    return null;
  }
}
