/**
 * Several agents that know each other, for peer-to-peer tests. They start
 * with an empty peers file; once every listen port is known the file is
 * written (each agent rereads it and ignores its own entry).
 *
 * @module
 */

import { type AgentProcess, startAgent } from "./agent_process.ts";

/** Options for {@linkcode startCluster}. */
export interface ClusterOptions {
  /** Node ids, one per agent. */
  ids: string[];
  /** Base directory; each agent gets `<dir>/<id>`. */
  dir: string;
  /** Extra serve flags for every agent, or per agent id. */
  args?: string[] | ((id: string) => string[]);
  env?: Record<string, string>;
  /** Token per agent (default: one shared token). */
  token?: (id: string) => string;
  /** Wait until every agent sees all the others healthy. @default true */
  waitHealthy?: boolean;
  /**
   * The agents each one has in its peers file (default: all). With this,
   * every agent gets a peers file of its own.
   */
  sees?: (id: string) => string[];
  /** HTTP client for https agents (the cluster CA). */
  client?: Deno.HttpClient;
}

/** A running cluster. */
export interface Cluster extends AsyncDisposable {
  agents: Map<string, AgentProcess>;
  peersFile: string;
  get(id: string): AgentProcess;
  /** Restarts a killed agent on its data directory. */
  restart(id: string): Promise<AgentProcess>;
  /** Waits until agent `id` sees `healthy` healthy peers. */
  waitForPeers(id: string, healthy: number, timeoutMs?: number): Promise<void>;
}

/** Starts the agents and waits until each sees all the others healthy. */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const shared = `${options.dir}/peers.txt`;
  const fileOf = (id: string) => options.sees ? `${options.dir}/peers-${id}.txt` : shared;
  for (const id of options.ids) await Deno.writeTextFile(fileOf(id), "");
  const sees = (id: string) => (options.sees?.(id) ?? options.ids).filter((x) => x !== id);
  const token = options.token ?? (() => "cluster-token");
  const argsFor = (id: string) =>
    typeof options.args === "function" ? options.args(id) : options.args ?? [];
  const start = (id: string) =>
    startAgent({
      dataDir: `${options.dir}/${id}`,
      args: ["--node-id", id, "--peers-file", fileOf(id), "--token", token(id), ...argsFor(id)],
      env: options.env ?? {},
      ...(options.client ? { client: options.client } : {}),
    });
  const agents = new Map<string, AgentProcess>();
  try {
    for (const id of options.ids) agents.set(id, await start(id));
  } catch (err) {
    for (const agent of agents.values()) await agent.kill();
    throw err;
  }
  const writePeers = async () => {
    const written = new Set<string>();
    for (const id of options.ids) {
      const file = fileOf(id);
      if (written.has(file)) continue;
      written.add(file);
      const ids = options.sees ? sees(id) : options.ids;
      const urls = ids.flatMap((x) => agents.has(x) ? [agents.get(x)!.url] : []);
      await Deno.writeTextFile(file, urls.join("\n") + "\n");
    }
  };
  await writePeers();
  const cluster: Cluster = {
    agents,
    peersFile: shared,
    get(id) {
      const agent = agents.get(id);
      if (!agent) throw new Error(`no agent ${id}`);
      return agent;
    },
    async restart(id) {
      const agent = await start(id);
      agents.set(id, agent);
      await writePeers(); // the new port goes into the peers files
      return agent;
    },
    async waitForPeers(id, healthy, timeoutMs = 15_000) {
      const agent = cluster.get(id);
      const deadline = Date.now() + timeoutMs;
      let last = "";
      while (Date.now() < deadline) {
        const response = await fetch(`${agent.url}/v1/status`, {
          headers: { Authorization: `Bearer ${token(id)}` },
          ...(options.client ? { client: options.client } : {}),
        }).catch(() => null);
        if (response?.ok) {
          const status = await response.json();
          const count = status.peers.filter((p: { healthy: boolean }) => p.healthy).length;
          last = JSON.stringify(status.peers);
          if (count === healthy) return;
        } else {
          await response?.body?.cancel();
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`${id} did not see ${healthy} healthy peers: ${last}`);
    },
    async [Symbol.asyncDispose]() {
      for (const agent of agents.values()) await agent.kill();
    },
  };
  if (options.waitHealthy ?? true) {
    try {
      for (const id of options.ids) await cluster.waitForPeers(id, sees(id).length);
    } catch (err) {
      await cluster[Symbol.asyncDispose]();
      throw err;
    }
  }
  return cluster;
}
