/**
 * `snapmesh put NAME FILE...`: stages files into a draft and commits them,
 * checking the node's limits first and dropping a draft it created when
 * something fails.
 *
 * @module
 */

import { formatSize } from "../config/mod.ts";
import { isValidName } from "../manifest/mod.ts";
import { type ClientCommand, json } from "./_command.ts";
import { flagOption, listOption, UsageError } from "./args.ts";
import { CommandError, type NodeClient, RequestError, segment } from "./client.ts";
import { progressBar, progressEnabled } from "./progress.ts";

function basename(path: string): string {
  return path.replace(/\/+$/, "").split("/").pop() ?? path;
}

/** The `put` command. */
export const put: ClientCommand = {
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
        staged.push(
          await uploadFile(client, {
            path: base,
            file,
            local: path,
            size: sizes.get(file)!,
            showProgress,
          }),
        );
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
      throw await cleanUpAfterFailure(client, err, {
        name,
        staged: staged.map((s) => s.file),
        draftBefore,
      });
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

/** What a failed put leaves behind. */
interface DraftCleanUp {
  /** The snapshot whose draft the put staged into. */
  name: string;
  /** The files this put staged before it failed. */
  staged: string[];
  /** Whether the draft existed before this put (null: the node did not say). */
  draftBefore: boolean | null;
}

/**
 * After a failed put: drops the draft when this put created it (no draft
 * before it started), never one that existed before. Returns `err` with a
 * note on what became of the draft.
 */
async function cleanUpAfterFailure(
  client: NodeClient,
  err: unknown,
  { name, staged, draftBefore }: DraftCleanUp,
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

/** One file to upload. */
interface FileUpload {
  /** The route to PUT to. */
  path: string;
  /** The file's name in the snapshot. */
  file: string;
  /** Its path on this machine. */
  local: string;
  /** Its size, checked before the upload. */
  size: number;
  /** Whether to draw a progress bar. */
  showProgress: boolean;
}

/** PUTs one file as a sized body, with a progress bar on a terminal. */
async function uploadFile(
  client: NodeClient,
  { path, file, local, size, showProgress }: FileUpload,
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
