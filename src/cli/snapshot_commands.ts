/**
 * Commands on one node's snapshots: `ls`, `rm`, `pin`, `unpin`, `verify`.
 *
 * @module
 */

import { formatSize } from "../config/mod.ts";
import { type ClientCommand, json, none, one, table } from "./_command.ts";
import { flagOption } from "./args.ts";
import { CommandError, RequestError, segment } from "./client.ts";
import type { Status } from "./node_commands.ts";

interface Summary {
  name: string;
  digest: string;
  size: number;
  storedBytes: number;
  pinned: boolean;
  lastAccess: string;
}

/** The `ls` command. */
export const ls: ClientCommand = {
  usage: "snapmesh ls",
  summary: "list the snapshots cached on the node",
  options: {},
  async run(args, client, io) {
    none(args, this.usage);
    const list = await client.json<Summary[]>("GET", "/v1/snapshots");
    if (flagOption(args, "json")) {
      json(io, list);
      return 0;
    }
    const rows = [["NAME", "DIGEST", "SIZE", "ON DISK", "PINNED", "LAST ACCESS"]];
    for (const s of list) {
      rows.push([
        s.name,
        s.digest.slice(0, 12),
        formatSize(s.size),
        formatSize(s.storedBytes),
        s.pinned ? "yes" : "",
        s.lastAccess,
      ]);
    }
    io.out(table(rows));
    return 0;
  },
};

/** The `rm` command. */
export const rm: ClientCommand = {
  usage: "snapmesh rm NAME [--origin] [--force]",
  summary:
    "evict a snapshot from the node (--origin: from the origin too; --force: even if pinned)",
  options: { origin: { type: "boolean" }, force: { type: "boolean" } },
  async run(args, client, io) {
    const name = one(args, "NAME", this.usage);
    const query = new URLSearchParams();
    if (flagOption(args, "origin")) query.set("origin", "true");
    if (flagOption(args, "force")) query.set("force", "true");
    const qs = query.size > 0 ? `?${query}` : "";
    let result;
    try {
      result = await client.json("DELETE", `/v1/snapshots/${segment(name)}${qs}`);
    } catch (err) {
      // The node's message names its query parameter (?force=true); say the flag.
      if (err instanceof RequestError && err.code === "snapshot_pinned") {
        throw new RequestError(
          err.status,
          err.code,
          `Snapshot "${name}" is pinned: unpin it first (snapmesh unpin ${name}), ` +
            `or remove it anyway with: snapmesh rm ${name} --force`,
          err.body,
        );
      }
      throw err;
    }
    if (flagOption(args, "json")) json(io, result);
    else io.out(`removed ${name}`);
    return 0;
  },
};

/** The `pin` (`pinned`) or `unpin` command. */
export function pinCommand(pinned: boolean): ClientCommand {
  return {
    usage: `snapmesh ${pinned ? "pin" : "unpin"} NAME`,
    summary: pinned ? "protect a snapshot from eviction" : "let a snapshot be evicted again",
    options: {},
    async run(args, client, io) {
      const name = one(args, "NAME", this.usage);
      const result = await client.json(
        pinned ? "PUT" : "DELETE",
        `/v1/snapshots/${segment(name)}/pin`,
      );
      if (flagOption(args, "json")) json(io, result);
      else io.out(`${pinned ? "pinned" : "unpinned"} ${name}`);
      return 0;
    },
  };
}

interface Verification {
  ok: boolean;
  digest: string;
  files: { file: string; ok: boolean; badChunks: number[]; problem?: string }[];
}

/** The `verify` command. */
export const verify: ClientCommand = {
  usage: "snapmesh verify NAME",
  summary: "rehash the node's local files of a snapshot against its manifest; " +
    "a snapshot that fails is quarantined (taken out of the cache)",
  options: {},
  async run(args, client, io) {
    const name = one(args, "NAME", this.usage);
    const result = await client.json<Verification>("POST", `/v1/snapshots/${segment(name)}/verify`);
    if (result.ok) {
      if (flagOption(args, "json")) json(io, result);
      else {
        for (const f of result.files) io.out(`ok  ${f.file}`);
        io.out(`${name} verifies (${result.digest})`);
      }
      return 0;
    }
    // The node takes a snapshot that fails out of its cache (quarantine):
    // check that it did, and say where a good copy comes from next.
    const [list, status] = await Promise.all([
      client.json<Summary[]>("GET", "/v1/snapshots"),
      client.json<Status>("GET", "/v1/status"),
    ]);
    const quarantined = !list.some((s) => s.name === name && s.digest === result.digest);
    const sources = refetchSources(status);
    const bad = result.files.filter((f) => !f.ok).map((f) => f.file);
    let message = `${name} does NOT verify (${bad.join(", ")} differ from the manifest)`;
    const notes: string[] = [];
    if (quarantined) {
      message += `: the node quarantined it (out of the cache, kept for inspection under ` +
        `${status.dataDir ?? "its data directory"}/quarantine/) and never serves those bytes`;
      notes.push(
        sources.length > 0
          ? `the next read or pull of ${name} fetches a good copy from ${sources.join(", else ")}`
          : `this node has no peer and no origin: no good copy of ${name} is left here; ` +
            `put it again`,
      );
    }
    if (flagOption(args, "json")) {
      json(io, { ...result, quarantined, refetchFrom: quarantined ? sources : [] });
    } else {
      for (const f of result.files) {
        io.out(`${f.ok ? "ok " : "BAD"} ${f.file}${f.problem ? `: ${f.problem}` : ""}`);
      }
    }
    const failure = new CommandError("verification_failed", message);
    failure.notes.push(...notes);
    failure.extra.quarantined = quarantined;
    throw failure;
  },
};

/** Where a node reads a snapshot it does not hold: its peers, then its origin. */
function refetchSources(status: Status): string[] {
  const sources: string[] = [];
  const up = status.peers.filter((p) => p.healthy).length;
  if (status.peers.length > 0) {
    sources.push(`a peer that holds it (${up} of ${status.peers.length} peers up)`);
  }
  if (status.origin) {
    sources.push(
      `the origin (${status.origin.endpoint}, bucket ${status.origin.bucket}` +
        `${status.origin.healthy ? "" : ", now UNHEALTHY"})`,
    );
  }
  return sources;
}
