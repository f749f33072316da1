/**
 * `snapmesh pull NAME`: makes a snapshot local on the node, drawing the
 * pull's progress from its event stream on a terminal.
 *
 * @module
 */

import { formatSize } from "../config/mod.ts";
import { type ClientCommand, json, one } from "./_command.ts";
import { flagOption } from "./args.ts";
import { type NodeClient, segment } from "./client.ts";
import { type Progress, progressBar, progressEnabled } from "./progress.ts";
import { sseData } from "./sse.ts";

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

/** The `pull` command. */
export const pull: ClientCommand = {
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
      watch = watchPull(client, { name, signal: stop.signal, ending }).catch(() => {});
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
  { name, signal, ending }: {
    name: string;
    signal: AbortSignal;
    /** Set once the pull answered: whether the bar ends complete. */
    ending: { complete: boolean };
  },
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
