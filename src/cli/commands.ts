/**
 * Client subcommands: put, get, pull, ls, rm, pin, unpin, status, peers, verify, restore.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { formatSize } from "../config/mod.ts";
import { isValidName } from "../manifest/mod.ts";
import {
  flagOption,
  listOption,
  type OptionSpec,
  parseCommandArgs,
  type ParsedArgs,
  stringOption,
  UsageError,
} from "./args.ts";
import { CommandError, NodeClient, RequestError, segment } from "./client.ts";
import { type Progress, progressBar, progressEnabled } from "./progress.ts";
import { restoreCommand } from "./restore_command.ts";

/** Where a command writes. */
export interface CommandIo {
  out(text: string): void;
  err(text: string): void;
  env: Record<string, string | undefined>;
}

/** A client subcommand. */
export interface ClientCommand {
  usage: string;
  summary: string;
  options: Record<string, OptionSpec>;
  run(args: ParsedArgs, client: NodeClient, io: CommandIo): Promise<number>;
}

const COMMON: Record<string, OptionSpec> = {
  node: { type: "string" },
  token: { type: "string" },
  ca: { type: "string" },
  json: { type: "boolean" },
};

const COMMON_HELP = `Common options:
  --node URL     node to talk to (env SNAPMESH_NODE, default http://127.0.0.1:7070)
  --token T      bearer token (env SNAPMESH_TOKEN; a read token reads and pulls only)
  --ca FILE      PEM CA to verify an https node against (env SNAPMESH_CA)
  --json         print machine-readable JSON
  -h, --help     show this help`;

function one(args: ParsedArgs, what: string, usage: string): string {
  if (args.positionals.length !== 1) throw new UsageError(`expected ${what}\nusage: ${usage}`);
  return args.positionals[0]!;
}

function json(io: CommandIo, value: unknown): void {
  io.out(JSON.stringify(value, null, 2));
}

function basename(path: string): string {
  return path.replace(/\/+$/, "").split("/").pop() ?? path;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join(
    "\n",
  );
}

const put: ClientCommand = {
  usage: "snapmesh put NAME FILE... [--as FILE_NAME=PATH]... [--label KEY=VALUE]... " +
    "[--hot FILE_NAME=I,J,...]... [--import]",
  summary: "stage files under their base names and commit them as snapshot NAME",
  options: {
    as: { type: "string", multiple: true },
    label: { type: "string", multiple: true },
    hot: { type: "string", multiple: true },
    import: { type: "boolean" },
  },
  async run(args, client, io) {
    const [name, ...paths] = args.positionals;
    if (name === undefined) throw new UsageError(`expected NAME\nusage: ${this.usage}`);
    if (!isValidName(name)) throw new UsageError(`invalid snapshot name ${JSON.stringify(name)}`);
    const files = new Map<string, string>();
    for (const path of paths) files.set(basename(path), path);
    for (const spec of listOption(args, "as")) {
      const eq = spec.indexOf("=");
      if (eq <= 0) throw new UsageError(`--as expects FILE_NAME=PATH, got ${JSON.stringify(spec)}`);
      files.set(spec.slice(0, eq), spec.slice(eq + 1));
    }
    if (files.size === 0) throw new UsageError(`expected at least one FILE\nusage: ${this.usage}`);
    for (const file of files.keys()) {
      if (!isValidName(file)) {
        throw new UsageError(`invalid file name ${JSON.stringify(file)}; rename it with --as`);
      }
    }
    const labels: Record<string, string> = {};
    for (const spec of listOption(args, "label")) {
      const eq = spec.indexOf("=");
      if (eq <= 0) throw new UsageError(`--label expects KEY=VALUE, got ${JSON.stringify(spec)}`);
      labels[spec.slice(0, eq)] = spec.slice(eq + 1);
    }
    const hot: Record<string, number[]> = {};
    for (const spec of listOption(args, "hot")) {
      const match = /^([^=]+)=(\d+(?:,\d+)*)$/.exec(spec);
      if (!match) {
        throw new UsageError(`--hot expects FILE_NAME=I,J,..., got ${JSON.stringify(spec)}`);
      }
      hot[match[1]!] = match[2]!.split(",").map(Number);
    }
    const asJson = flagOption(args, "json");
    const importing = flagOption(args, "import");
    const showProgress = progressEnabled(asJson);
    // Local checks first: nothing is sent when a file cannot be read.
    const sizes = new Map<string, number>();
    if (!importing) {
      for (const [file, path] of files) sizes.set(file, await localFileSize(path));
    }
    // The node's limits, before a byte is sent (a refused upload would
    // still have made the node evict to make room for it).
    const limits = await nodeLimits(client);
    for (const [file, size] of sizes) {
      if (limits?.maxFileSize !== undefined && size > limits.maxFileSize) {
        throw new CommandError(
          "too_large",
          `${files.get(file)} is ${formatSize(size)} (${size} bytes), larger than the node's ` +
            `--max-file-size of ${formatSize(limits.maxFileSize)}: nothing was sent`,
        );
      }
    }
    const draftBefore = await draftExists(client, name);
    const staged: { file: string; size: number; sha256: string }[] = [];
    let manifest: { digest: string; name: string; files?: { name: string }[] };
    try {
      for (const [file, path] of files) {
        const base = `/v1/snapshots/${segment(name)}/files/${segment(file)}`;
        if (importing) {
          const absolute = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
          staged.push(await client.json("POST", `${base}/import`, { path: absolute }));
          continue;
        }
        staged.push(await uploadFile(client, base, file, path, sizes.get(file)!, showProgress));
      }
      const body: Record<string, unknown> = {};
      if (Object.keys(labels).length > 0) body.labels = labels;
      if (Object.keys(hot).length > 0) body.hot = hot;
      const bar = progressBar(`commit ${name}`, null, showProgress);
      bar.phase("waiting for the node");
      try {
        manifest = await client.json("POST", `/v1/snapshots/${segment(name)}/commit`, body);
        bar.finish(true);
      } catch (err) {
        bar.finish(false);
        throw err;
      }
    } catch (err) {
      throw await cleanUpAfterFailure(client, name, staged.map((s) => s.file), draftBefore, err);
    }
    // A draft that existed before this put may have held other files: they
    // are in the snapshot now, and the user should know.
    const others = (manifest.files ?? []).map((f) => f.name).filter((f) => !files.has(f));
    if (others.length > 0) {
      io.err(
        `note: ${name} also holds ${others.join(", ")}, staged into its draft before this put`,
      );
    }
    if (asJson) json(io, { staged, manifest });
    else io.out(`committed ${manifest.name} ${manifest.digest}`);
    return 0;
  },
};

/** The size of a regular file the user named, or a clear error. */
async function localFileSize(path: string): Promise<number> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch (err) {
    throw new CommandError("file_unreadable", `Cannot read ${path}: ${(err as Error).message}`);
  }
  if (!stat.isFile) {
    throw new CommandError("not_a_file", `Cannot upload ${path}: not a regular file`);
  }
  return stat.size;
}

/** The node's limits from `/v1/status` (null from a node too old to say). */
async function nodeLimits(
  client: NodeClient,
): Promise<{ maxFileSize?: number; chunkSize?: number } | null> {
  const status = await client.json<{ limits?: { maxFileSize?: number; chunkSize?: number } }>(
    "GET",
    "/v1/status",
  );
  return status.limits ?? null;
}

/**
 * Whether `name` has a draft on the node: true, false, or null when the
 * node does not say. No route reads a draft, so this asks for a commit
 * that cannot succeed (its labels and hot list are invalid): the node looks
 * for the draft first and answers 404 `draft_not_found` when there is none,
 * 400 `invalid_body` when there is one; it commits nothing either way.
 */
async function draftExists(client: NodeClient, name: string): Promise<boolean | null> {
  try {
    await client.json("POST", `/v1/snapshots/${segment(name)}/commit`, {
      labels: "draft check by snapmesh put",
      hot: { "": [-1] },
    });
  } catch (err) {
    if (err instanceof RequestError && err.code === "draft_not_found") return false;
    if (err instanceof RequestError && err.code === "invalid_body") return true;
  }
  return null;
}

/**
 * After a failed put: drops the draft when this put created it (no draft
 * before it started), never one that existed before. Returns `err` with a
 * note on what became of the draft.
 */
async function cleanUpAfterFailure(
  client: NodeClient,
  name: string,
  staged: string[],
  draftBefore: boolean | null,
  err: unknown,
): Promise<unknown> {
  const failure = err instanceof CommandError
    ? err
    : new CommandError("failed", (err as Error).message ?? String(err));
  const drop = `curl -X DELETE ${client.node}/v1/snapshots/${segment(name)}/draft`;
  if (draftBefore === true) {
    failure.notes.push(
      `the draft of ${name} existed before this put, so it was left as it is` +
        (staged.length > 0 ? ` (this put staged ${staged.join(", ")} into it)` : "") +
        `; drop it with: ${drop}`,
    );
    failure.extra.draft = "kept: it existed before this put";
    return failure;
  }
  if (staged.length === 0) return failure;
  if (draftBefore === null) {
    failure.notes.push(
      `the node did not say whether ${name} had a draft before this put, so the draft ` +
        `(with ${staged.join(", ")} from this put) was left; drop it with: ${drop}`,
    );
    failure.extra.draft = "kept: the node did not say whether it existed before";
    return failure;
  }
  try {
    await client.json("DELETE", `/v1/snapshots/${segment(name)}/draft`);
    failure.notes.push(`dropped the draft of ${name} (${staged.join(", ")}, staged by this put)`);
    failure.extra.draft = "dropped";
  } catch (dropErr) {
    if (dropErr instanceof RequestError && dropErr.code === "draft_not_found") return failure;
    failure.notes.push(
      `could not drop the draft of ${name} (${(dropErr as Error).message}); drop it with: ${drop}`,
    );
    failure.extra.draft = "kept: dropping it failed";
  }
  return failure;
}

/** PUTs one file as a sized body, with a progress bar on a terminal. */
async function uploadFile(
  client: NodeClient,
  path: string,
  file: string,
  local: string,
  size: number,
  showProgress: boolean,
): Promise<{ file: string; size: number; sha256: string }> {
  let source: Deno.FsFile;
  try {
    source = await Deno.open(local);
  } catch (err) {
    throw new CommandError("file_unreadable", `Cannot read ${local}: ${(err as Error).message}`);
  }
  const bar = progressBar(`put ${file}`, size, showProgress);
  let ok = false;
  try {
    const result = await client.upload<{ file: string; size: number; sha256: string }>(path, {
      file: source,
      size,
      onSent: (n) => bar.update(n),
      // The last byte left; the node still writes and syncs the last chunks.
      onAllSent: () => bar.phase("committing on the node"),
    });
    ok = true;
    return result;
  } catch (err) {
    if (err instanceof CommandError) throw err;
    throw new CommandError("file_unreadable", `Cannot read ${local}: ${(err as Error).message}`);
  } finally {
    bar.finish(ok);
    source.close();
  }
}

const get: ClientCommand = {
  usage: "snapmesh get NAME FILE [-o OUT]",
  summary: "download one file of a snapshot (verified against its sha256); -o - writes stdout",
  options: { output: { type: "string", short: "o" } },
  async run(args, client, io) {
    if (args.positionals.length !== 2) {
      throw new UsageError(`expected NAME FILE\nusage: ${this.usage}`);
    }
    const [name, file] = args.positionals as [string, string];
    const out = stringOption(args, "output") ?? file;
    const response = await client.request(
      "GET",
      `/v1/snapshots/${segment(name)}/files/${segment(file)}`,
    );
    const expected = (response.headers.get("etag") ?? "").replaceAll('"', "");
    const size = Number(response.headers.get("content-length") ?? NaN);
    const hash = createHash("sha256");
    const toStdout = out === "-";
    const bar = progressBar(
      `get ${file}`,
      Number.isFinite(size) ? size : null,
      !toStdout && progressEnabled(flagOption(args, "json")),
    );
    const temp = toStdout ? null : `${out}.snapmesh-partial`;
    const sink = toStdout
      ? Deno.stdout
      : await Deno.open(temp!, { write: true, create: true, truncate: true });
    let total = 0;
    try {
      for await (const chunk of response.body!) {
        hash.update(chunk);
        let at = 0;
        while (at < chunk.length) at += await sink.write(chunk.subarray(at));
        total += chunk.length;
        bar.update(total);
      }
    } catch (err) {
      if (temp) await Deno.remove(temp).catch(() => {});
      throw err;
    } finally {
      bar.finish();
      if (!toStdout) sink.close();
    }
    const actual = hash.digest("hex");
    if (expected && actual !== expected) {
      if (temp) await Deno.remove(temp).catch(() => {});
      throw new CommandError(
        "verification_failed",
        `Downloaded bytes of ${name}/${file} hash to ${actual}, not ${expected}`,
      );
    }
    if (temp) await Deno.rename(temp, out);
    const source = response.headers.get("x-snapmesh-source");
    const report = { name, file, path: out, size: total, sha256: actual, source };
    // With -o - the file bytes own stdout: the report goes to stderr.
    if (flagOption(args, "json")) (toStdout ? io.err : io.out)(JSON.stringify(report, null, 2));
    else if (!toStdout) io.err(`wrote ${out} (${formatSize(total)}, from ${source ?? "node"})`);
    return 0;
  },
};

interface PullAnswer {
  digest?: string | null;
  source?: string;
  ms?: number;
  paths?: Record<string, string>;
  bytes?: Record<string, number>;
  /** False when `?hot=true` answered before the whole snapshot was local. */
  complete?: boolean;
  /** "pulling" when `?wait=false` answered at once. */
  state?: string;
}

const pull: ClientCommand = {
  usage: "snapmesh pull NAME [--hot] [--no-wait]",
  summary: "make a snapshot local on the node and print its file paths " +
    "(--hot: answer once the hot chunks are local; the files are incomplete until the pull ends)",
  options: { hot: { type: "boolean" }, "no-wait": { type: "boolean" } },
  async run(args, client, io) {
    const name = one(args, "NAME", this.usage);
    const query = new URLSearchParams();
    if (flagOption(args, "hot")) query.set("hot", "true");
    if (flagOption(args, "no-wait")) query.set("wait", "false");
    const qs = query.size > 0 ? `?${query}` : "";
    const request = client.json<PullAnswer>("POST", `/v1/snapshots/${segment(name)}/pull${qs}`);
    // On a terminal, draw the pull's progress from the node's event stream
    // while the request runs.
    let watch: Promise<void> | null = null;
    const stop = new AbortController();
    const ending = { complete: false };
    if (progressEnabled(flagOption(args, "json")) && !flagOption(args, "no-wait")) {
      watch = watchPull(client, name, stop.signal, ending).catch(() => {});
    }
    let result: PullAnswer;
    try {
      result = await request;
      ending.complete = result.complete !== false;
    } finally {
      stop.abort();
      await watch;
    }
    if (flagOption(args, "json")) {
      json(io, result);
      return 0;
    }
    if (result.state === "pulling") {
      io.err(`pull of ${name} started on the node; follow it with: snapmesh status`);
      return 0;
    }
    for (const [file, path] of Object.entries(result.paths ?? {})) io.out(`${file}\t${path}`);
    const b = result.bytes ?? {};
    const bytes = `local ${formatSize(b.local ?? 0)}, peer ${formatSize(b.peer ?? 0)}, ` +
      `origin ${formatSize(b.origin ?? 0)}`;
    if (result.complete === false) {
      io.err(
        `hot set of ${name} ready after ${result.ms} ms (${bytes} so far, from ${result.source}); ` +
          `the rest is still being pulled, so these files are INCOMPLETE: do not load them ` +
          `with Firecracker's File memory backend until 'snapmesh pull ${name}' ` +
          `(without --hot) returns`,
      );
    } else if (result.source === "local") {
      io.err(`${name} is already local`);
    } else {
      io.err(`pulled ${name} from ${result.source} in ${result.ms} ms (${bytes})`);
    }
    return 0;
  },
};

/**
 * Draws a progress bar for the pull of `name` from `/v1/pulls/events`
 * until aborted, with the node's own rate and ETA.
 */
async function watchPull(
  client: NodeClient,
  name: string,
  signal: AbortSignal,
  ending: { complete: boolean },
): Promise<void> {
  const response = await client.request("GET", "/v1/pulls/events", { signal });
  let bar: Progress | null = null;
  try {
    for await (const data of sseData(response.body!)) {
      const pulls = JSON.parse(data) as {
        name: string;
        bytesDone: number;
        bytesTotal: number;
        rateBytesPerSecond?: number;
        etaSeconds?: number | null;
      }[];
      const mine = pulls.find((p) => p.name === name);
      if (!mine) continue;
      bar ??= progressBar(`pull ${name}`, mine.bytesTotal, true);
      const figures = mine.rateBytesPerSecond === undefined
        ? {}
        : { rate: mine.rateBytesPerSecond, etaSeconds: mine.etaSeconds ?? null };
      bar.update(mine.bytesDone, figures);
    }
  } finally {
    // A hot answer leaves the pull running: the bar stops where it was.
    bar?.finish(ending.complete);
  }
}

/** The `data` of each "pulls" (or unnamed) server-sent event of a stream. */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncIterable<string> {
  let rest = "";
  const take = function* (text: string, final: boolean): Generator<string> {
    // Lines may end with CRLF, LF or CR; a CR at the end may be half of a CRLF.
    const raw = rest + text;
    const held = !final && raw.endsWith("\r") ? "\r" : "";
    let buffer = raw.slice(0, raw.length - held.length).replace(/\r\n?/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const field = (line: string, name: string) =>
        line.startsWith(`${name}:`) ? line.slice(name.length + 1).replace(/^ /, "") : null;
      const type = lines.map((l) => field(l, "event")).findLast((v) => v !== null) ?? "pulls";
      const data = lines.map((l) => field(l, "data")).filter((v) => v !== null);
      if (type === "pulls" && data.length > 0) yield data.join("\n");
    }
    rest = buffer + held;
  };
  for await (const text of body.pipeThrough(new TextDecoderStream())) yield* take(text, false);
  yield* take("", true);
}

interface Summary {
  name: string;
  digest: string;
  size: number;
  storedBytes: number;
  pinned: boolean;
  lastAccess: string;
}

const ls: ClientCommand = {
  usage: "snapmesh ls",
  summary: "list the snapshots cached on the node",
  options: {},
  async run(args, client, io) {
    if (args.positionals.length > 0) {
      throw new UsageError(`unexpected arguments\nusage: ${this.usage}`);
    }
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

const rm: ClientCommand = {
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

function pinCommand(pinned: boolean): ClientCommand {
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

interface Status {
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

const status: ClientCommand = {
  usage: "snapmesh status",
  summary: "show the node's identity, cache, peers, origin, active pulls and live restores",
  options: {},
  async run(args, client, io) {
    if (args.positionals.length > 0) {
      throw new UsageError(`unexpected arguments\nusage: ${this.usage}`);
    }
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

const peers: ClientCommand = {
  usage: "snapmesh peers",
  summary: "list the node's peers with their health and last contact",
  options: {},
  async run(args, client, io) {
    if (args.positionals.length > 0) {
      throw new UsageError(`unexpected arguments\nusage: ${this.usage}`);
    }
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

interface Verification {
  ok: boolean;
  digest: string;
  files: { file: string; ok: boolean; badChunks: number[]; problem?: string }[];
}

const verify: ClientCommand = {
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

/** The client commands, by name. */
export const CLIENT_COMMANDS: Record<string, ClientCommand> = {
  put,
  get,
  pull,
  ls,
  rm,
  pin: pinCommand(true),
  unpin: pinCommand(false),
  status,
  peers,
  verify,
  restore: restoreCommand,
};

/** Runs a client command; throws {@linkcode UsageError} on bad usage. */
export async function runClientCommand(
  name: string,
  argv: string[],
  io: CommandIo,
): Promise<number> {
  const command = CLIENT_COMMANDS[name]!;
  const args = parseCommandArgs(argv, { ...COMMON, ...command.options });
  if (flagOption(args, "help")) {
    io.out(`${command.usage}\n\n${command.summary}\n\n${COMMON_HELP}`);
    return 0;
  }
  const node = stringOption(args, "node") ?? io.env.SNAPMESH_NODE ?? "http://127.0.0.1:7070";
  try {
    new URL(node);
  } catch {
    throw new UsageError(`--node expects a URL, got ${JSON.stringify(node)}`);
  }
  const token = stringOption(args, "token") ?? io.env.SNAPMESH_TOKEN;
  const caFile = stringOption(args, "ca") ?? io.env.SNAPMESH_CA;
  let ca: string | undefined;
  if (caFile !== undefined && caFile !== "") {
    try {
      ca = await Deno.readTextFile(caFile);
    } catch (err) {
      throw new CommandError(
        "bad_ca",
        `Cannot read the CA file ${caFile}: ${(err as Error).message}`,
      );
    }
  }
  const client = new NodeClient({
    node,
    ...(token === undefined ? {} : { token }),
    ...(ca === undefined ? {} : { ca }),
  });
  return await command.run(args, client, io);
}
