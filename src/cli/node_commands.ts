/**
 * `snapmesh status` and `snapmesh peers`: the node's own view of itself and
 * its cluster, from `/v1/status`.
 *
 * @module
 */

import { formatSize } from "../config/mod.ts";
import { type ClientCommand, json, none, table } from "./_command.ts";
import { flagOption } from "./args.ts";

/** The fields of `/v1/status` the client commands read. */
export interface Status {
  nodeId: string;
  version: string;
  uptime: number;
  cache: Record<string, number>;
  dataDir?: string;
  peers: {
    id: string;
    url: string;
    healthy: boolean;
    lastSeenMs: number | null;
    lastError?: string | null;
  }[];
  origin: {
    endpoint: string;
    bucket: string;
    healthy: boolean;
    lastError?: string | null;
    push: { mode: string; queued: number; failing: unknown[] };
  } | null;
  pulls: { name: string; bytesDone: number; bytesTotal: number }[];
  restores?: {
    id: string;
    name: string;
    state: string;
    pid: number | null;
    faults: Record<string, number>;
    prefetchedPages: number;
  }[];
}

function originLine(origin: Status["origin"]): string {
  if (!origin) return "none";
  const push = origin.push;
  const health = origin.healthy ? "healthy" : `UNHEALTHY: ${origin.lastError ?? "no answer"}`;
  return `${origin.endpoint} bucket ${origin.bucket} (${health}); ` +
    `push ${push.mode}: ${push.queued} queued, ${push.failing.length} failing`;
}

/** The `status` command. */
export const status: ClientCommand = {
  usage: "snapmesh status",
  summary: "show the node's identity, cache, peers, origin, active pulls and live restores",
  options: {},
  async run(args, client, io) {
    none(args, this.usage);
    const s = await client.json<Status>("GET", "/v1/status");
    if (flagOption(args, "json")) {
      json(io, s);
      return 0;
    }
    const c = s.cache;
    const healthy = s.peers.filter((p) => p.healthy).length;
    io.out(
      [
        `node     ${s.nodeId} (snapmesh ${s.version}, up ${s.uptime}s)`,
        `cache    ${formatSize(c.bytes ?? 0)} of ${formatSize(c.capacityBytes ?? 0)} in ` +
        `${c.entries} snapshots (${c.pinned ?? 0} pinned); ` +
        `hits ${c.hits} misses ${c.misses} evictions ${c.evictions}`,
        `peers    ${healthy}/${s.peers.length} healthy`,
        `origin   ${originLine(s.origin)}`,
        `pulls    ${s.pulls.length} active` +
        s.pulls.map((p) => `; ${p.name} ${formatSize(p.bytesDone)}/${formatSize(p.bytesTotal)}`)
          .join(""),
        `restores ${(s.restores ?? []).length} live` +
        (s.restores ?? []).map((r) => {
          const f = r.faults;
          return `; ${r.id} ${r.name} ${r.state}${r.pid === null ? "" : ` pid ${r.pid}`} ` +
            `faults local ${f.local ?? 0} peer ${f.peer ?? 0} origin ${f.origin ?? 0} ` +
            `zero ${f.zero ?? 0}, prefetched ${r.prefetchedPages} pages`;
        }).join(""),
      ].join("\n"),
    );
    return 0;
  },
};

/** The `peers` command. */
export const peers: ClientCommand = {
  usage: "snapmesh peers",
  summary: "list the node's peers with their health and last contact",
  options: {},
  async run(args, client, io) {
    none(args, this.usage);
    const s = await client.json<Status>("GET", "/v1/status");
    if (flagOption(args, "json")) {
      json(io, s.peers);
      return 0;
    }
    if (s.peers.length === 0) {
      io.out("no peers configured");
      return 0;
    }
    const rows = [["ID", "URL", "STATE", "LAST SEEN", "LAST ERROR"]];
    for (const p of s.peers) {
      rows.push([
        p.id,
        p.url,
        p.healthy ? "up" : "down",
        p.lastSeenMs === null ? "never" : `${Math.round(p.lastSeenMs / 1000)}s ago`,
        // Why a peer is down; an old error of a peer that is up again says nothing.
        p.healthy ? "" : p.lastError ?? "",
      ]);
    }
    io.out(table(rows));
    return 0;
  },
};
