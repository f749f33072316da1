/**
 * A whole cluster in one process: N agents over an in-memory file system,
 * an in-memory peer transport and an in-memory origin, under one virtual
 * clock. Nothing does real I/O, so a run is deterministic: the same seed
 * gives the same schedule, the same bytes by source, the same virtual time.
 *
 * @module
 */

import { Agent } from "../../src/agent/mod.ts";
import { MemoryTransport, StaticDiscovery } from "../../src/cluster/mod.ts";
import { resolveServeConfig } from "../../src/config/mod.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { Metrics } from "../../src/metrics/mod.ts";
import { MemoryOrigin } from "../../src/origin/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";
import { seededRandom } from "../../src/util/random.ts";
import { drive } from "./wait.ts";

/** Options for {@linkcode startInProcessCluster}. */
export interface InProcessClusterOptions {
  nodes: number;
  seed: number | string;
  /** `serve` flags for every node (by flag name). */
  flags?: Record<string, unknown>;
  /** Latency of every peer request, in virtual ms. @default 1 */
  latencyMs?: number;
  /** Bytes per virtual second each node sends chunks at. @default unlimited */
  uplinkBytesPerSecond?: number;
}

/** A node of the cluster. */
export interface ClusterNode {
  id: string;
  url: string;
  agent: Agent;
}

/** A running in-process cluster. */
export interface InProcessCluster extends AsyncDisposable {
  clock: VirtualClock;
  fs: MemoryFileSystem;
  transport: MemoryTransport;
  origin: MemoryOrigin;
  nodes: ClusterNode[];
  /** Stops a node at once (its peers see refused connections). */
  kill(node: ClusterNode): Promise<void>;
}

/** Starts `nodes` agents that know each other, with one origin. */
export async function startInProcessCluster(
  options: InProcessClusterOptions,
): Promise<InProcessCluster> {
  const clock = new VirtualClock();
  const random = seededRandom(options.seed);
  const fs = new MemoryFileSystem({ now: clock.now });
  const transport = new MemoryTransport({
    clock,
    latencyMs: options.latencyMs ?? 1,
    ...(options.uplinkBytesPerSecond ? { uplinkBytesPerSecond: options.uplinkBytesPerSecond } : {}),
  });
  const origin = new MemoryOrigin({ clock });
  const urls = Array.from({ length: options.nodes }, (_, i) => `http://node-${i}.sim:7070`);
  const nodes: ClusterNode[] = [];
  const opening = urls.map(async (url, i) => {
    const id = `node-${i}`;
    const config = resolveServeConfig({
      flags: {
        "data-dir": `/sim/${id}`,
        "node-id": id,
        "scrub-rate": "0",
        // The origin itself is the in-memory one below; these only name it.
        "origin-endpoint": "http://origin.sim:9000",
        "origin-bucket": "snapshots",
        ...options.flags,
      },
      env: {},
      file: null,
      cwd: "/",
      hostname: id,
    });
    const agent = await Agent.open({
      config,
      fs,
      log: silentLogger,
      metrics: new Metrics(),
      version: "sim",
      origin,
      clock,
      random: random.fork(id),
      discovery: [new StaticDiscovery(urls)],
      transport: transport.as(id),
      touchFlushMs: 100,
    });
    agent.setAdvertise(url);
    transport.attach(url, agent.peerEndpoint);
    nodes[i] = { id, url, agent };
  });
  // Opening probes peers, whose answers need the clock to move.
  await drive(clock, Promise.all(opening), 60_000);
  // The first probes ran while later nodes were still opening: let a probe
  // round go by, as in a fleet whose nodes have been up for a while.
  await clock.advance(2000);
  const killed = new Set<ClusterNode>();
  return {
    clock,
    fs,
    transport,
    origin,
    nodes,
    async kill(node) {
      transport.detach(node.url);
      killed.add(node);
      await drive(clock, node.agent.close({ pushGraceMs: 0 }), 60_000);
    },
    async [Symbol.asyncDispose]() {
      await drive(
        clock,
        Promise.all(
          nodes.filter((n) => !killed.has(n)).map((n) => n.agent.close({ pushGraceMs: 0 })),
        ),
        60_000,
      );
    },
  };
}

/** A request body from bytes, as the HTTP layer hands uploads to the agent. */
export function bodyOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    type: "bytes",
    start(controller) {
      controller.enqueue(bytes.slice());
      controller.close();
    },
  });
}
