/**
 * `snapmesh get NAME FILE [-o OUT]`: downloads one file, verified against
 * its sha256 before it takes its name.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { formatSize } from "../config/mod.ts";
import type { ClientCommand } from "./_command.ts";
import { flagOption, stringOption, UsageError } from "./args.ts";
import { CommandError, segment } from "./client.ts";
import { progressBar, progressEnabled } from "./progress.ts";

/** The `get` command. */
export const get: ClientCommand = {
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
