/**
 * `snapmesh restore NAME [--file mem] [--socket PATH]`: asks the node for a
 * restore session and prints what Firecracker's `PUT /snapshot/load` needs.
 *
 * @module
 */

import { isValidName } from "../manifest/mod.ts";
import { flagOption, stringOption, UsageError } from "./args.ts";
import { segment } from "./client.ts";
import type { ClientCommand } from "./_command.ts";

interface Created {
  id: string;
  name: string;
  digest: string;
  file: string;
  socket: string;
  paths: Record<string, string>;
}

/** The `restore` command. */
export const restoreCommand: ClientCommand = {
  usage: "snapmesh restore NAME [--file mem] [--socket PATH]",
  summary: "open a lazy-restore socket for Firecracker's Uffd memory backend " +
    "(the memory file is served page by page; the other files are made local)",
  options: { file: { type: "string" }, socket: { type: "string" } },
  async run(args, client, io) {
    if (args.positionals.length !== 1) {
      throw new UsageError(`expected NAME\nusage: ${this.usage}`);
    }
    const name = args.positionals[0]!;
    if (!isValidName(name)) throw new UsageError(`invalid snapshot name ${JSON.stringify(name)}`);
    const body: Record<string, string> = { file: stringOption(args, "file") ?? "mem" };
    const socket = stringOption(args, "socket");
    if (socket !== undefined) {
      body.socket = socket.startsWith("/") ? socket : `${Deno.cwd()}/${socket}`;
    }
    const result = await client.json<Created>(
      "POST",
      `/v1/snapshots/${segment(name)}/restore`,
      body,
    );
    if (flagOption(args, "json")) {
      io.out(JSON.stringify(result, null, 2));
      return 0;
    }
    io.out(`socket\t${result.socket}`);
    for (const [file, path] of Object.entries(result.paths)) io.out(`${file}\t${path}`);
    const vmstate = Object.entries(result.paths).find(([f]) => f !== result.file)?.[1] ??
      "<vmstate path>";
    io.err(
      `restore ${result.id} of ${name} (${result.file} served lazily) is listening; load it with ` +
        `Firecracker's PUT /snapshot/load: {"snapshot_path": "${vmstate}", "mem_backend": ` +
        `{"backend_type": "Uffd", "backend_path": "${result.socket}"}, "resume_vm": true}`,
    );
    return 0;
  },
};
