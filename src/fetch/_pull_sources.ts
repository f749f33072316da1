// The sources of one pull besides the origin: local copies of its chunks
// (in other snapshots), and its swarm session, through which the owner,
// the neighbors and the origin rights become sources of the pull's I/O.

import type { Membership, PeerTransport } from "../cluster/mod.ts";
import { isConnectionError } from "../cluster/mod.ts";
import type { ServeConfig } from "../config/mod.ts";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log/mod.ts";
import { SwarmSession, type Tracker } from "../swarm/mod.ts";
import type { Catalog } from "../cache/mod.ts";
import type { ManifestWithDigest } from "../manifest/mod.ts";
import type { SnapshotStore } from "../store/mod.ts";
import type { Clock } from "../util/clock.ts";
import { LocalSource } from "./local_source.ts";
import type { OriginSource } from "./origin_source.ts";
import { PeerSource } from "./peer_source.ts";
import type { PullJob } from "./pull_job.ts";
import type { SourcesIO } from "./sources_io.ts";

/** Options for {@linkcode addLocalCopies}. */
export interface LocalCopiesOptions {
  io: SourcesIO;
  manifest: ManifestWithDigest;
  store: SnapshotStore;
  /** Where this node's other snapshots keep each chunk. */
  catalog: Catalog;
}

/** Adds a local source for the chunks this node holds in other snapshots, if any. */
export function addLocalCopies(job: PullJob, options: LocalCopiesOptions): void {
  const { io, manifest, store, catalog } = options;
  const digests = new Map(manifest.files.map((f) => [f.name, f.chunks] as const));
  const local = new LocalSource(store.fs, catalog, digests, job.chunkSize);
  const bits = new Uint8Array(Math.ceil(job.chunkTotal / 8));
  let any = false;
  job.files.forEach((f, fi) => {
    f.chunks.forEach((_, i) => {
      if (!local.holds(f.name, i)) return;
      const c = job.chunkOf(fi, i);
      bits[c >> 3]! |= 1 << (c & 7);
      any = true;
    });
  });
  if (any) {
    io.add(local);
    job.addSource({ id: "local", kind: "local", maxInFlight: 4 }, bits);
  }
}

/** Options for {@linkcode createPullSession}. */
export interface PullSessionOptions {
  name: string;
  digest: string;
  job: PullJob;
  io: SourcesIO;
  /** The origin as a source, or null when this pull may not read it. */
  origin: OriginSource | null;
  config: ServeConfig;
  membership: Membership | null;
  /** This node's tracker (for the snapshots it owns). */
  tracker: Tracker;
  clock: Clock;
  log: Logger;
}

/** The swarm session of a pull: its owner, its neighbors, its origin rights. */
export function createPullSession(options: PullSessionOptions): SwarmSession {
  const { name, digest, job, io, origin, config, membership, tracker, log, clock } = options;
  const transport = membership?.transport ?? noTransport;
  const self = {
    id: config.nodeId,
    url: membership?.advertise ?? "",
    zone: config.zone,
    rack: config.rack,
  };
  return new SwarmSession({
    name,
    digest,
    self,
    job,
    links: {
      transport,
      addPeer: (peer) => {
        io.add(
          new PeerSource({
            transport,
            url: peer.url,
            nodeId: peer.id,
            name,
            digest,
            onFailure: (err) => {
              const known = membership?.peers().find((p) => p.url === peer.url);
              if (known && isConnectionError(err)) membership!.markDown(known, errorMessage(err));
            },
          }),
        );
      },
      removePeer: (id) => io.remove(`peer:${id}`),
      origin: origin ? { add: () => io.add(origin), remove: () => io.remove(origin.id) } : null,
      track: (request) => ({
        peers: tracker.announce({
          digest: request.digest,
          peer: request.peer,
          now: clock.monotonic(),
        }),
      }),
      swarmHeld: () => tracker.held(digest),
    },
    owners: () =>
      (membership?.rank(name) ?? [{ self: true as const, id: config.nodeId }]).map((m) =>
        m.self
          ? { self: true as const, id: m.id }
          : { self: false as const, id: m.id, url: m.peer.url }
      ),
    unreachable: (peer, err) => {
      const known = membership?.peers().find((p) => p.url === peer.url);
      if (known && isConnectionError(err)) membership!.markDown(known, errorMessage(err));
    },
    clock,
    log,
  });
}

/** The transport of a node without peers: never used (it owns everything it pulls). */
const noTransport: PeerTransport = {
  hello: () => Promise.reject(new TypeError("no peers")),
  manifest: () => Promise.resolve(null),
  availability: () => Promise.resolve(null),
  read: () => Promise.reject(new TypeError("no peers")),
  suspect: () => Promise.resolve(),
  probe: () => Promise.resolve(false),
  announce: () => Promise.reject(new TypeError("no peers")),
  workingSet: () => Promise.resolve(null),
  subscribe: (_url, _name, { handler }) => {
    queueMicrotask(() => handler.end(new TypeError("no peers")));
    return { close() {} };
  },
};
