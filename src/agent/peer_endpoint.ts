/**
 * What this node answers peers, as a {@linkcode PeerEndpoint} an in-memory
 * transport can call (the HTTP routes call the same services).
 *
 * @module
 */

import type { PeerEndpoint } from "../cluster/mod.ts";
import type { Services } from "./wiring.ts";

/** The peer-facing services of one agent as one endpoint. */
export function peerEndpointOf(services: Services): PeerEndpoint {
  const { peers, workingSets, membership } = services;
  return {
    hello: () => peers.hello(),
    probe: async (target) => await membership?.probeFor(target) ?? false,
    manifest: (name, fetch) => peers.manifest(name, fetch),
    availability: (name, digest) => peers.availability(name, digest),
    read: (name, request) => peers.read(name, request),
    suspect: (name, report) => peers.suspect(name, report),
    announce: (name, request) => peers.announce(name, request),
    subscribe: (name, digest, handler) => peers.subscribe(name, digest, handler),
    workingSet: (_name, digest) => workingSets.local(digest),
  };
}
