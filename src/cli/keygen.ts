/**
 * `snapmesh keygen`: a new Ed25519 key pair for signing snapshots. The
 * private key (PKCS#8 PEM, mode 0600) is what `--signing-key` names on a
 * publishing node; the public key line goes into every other node's
 * `--trusted-keys` file.
 *
 * @module
 */

import { generateKeyPair } from "../security/mod.ts";
import { flagOption, parseCommandArgs, stringOption, UsageError } from "./args.ts";
import { CommandError } from "./client.ts";
import type { CommandIo } from "./_command.ts";

/** Usage of `snapmesh keygen`. */
export const KEYGEN_USAGE = `snapmesh keygen [--out DIR] [--name NAME] [--comment TEXT] [--json]

Creates an Ed25519 key pair for signed snapshots: DIR/NAME.key (private, mode
0600: give it to a publishing node with --signing-key) and DIR/NAME.pub (one
line: add it to the --trusted-keys file of every node). Prints the public key
line. Existing files are never overwritten.

Options:
  --out DIR       where to write the files (default: the current directory)
  --name NAME     base name of the files (default: snapmesh-signing)
  --comment TEXT  a label after the public key (default: NAME)
  --json          print {keyId, publicKey, privateKeyFile, publicKeyFile}
  -h, --help      show this help`;

/** Runs `snapmesh keygen`. */
export async function keygenCommand(argv: string[], io: CommandIo): Promise<number> {
  const args = parseCommandArgs(argv, {
    out: { type: "string" },
    name: { type: "string" },
    comment: { type: "string" },
    json: { type: "boolean" },
  });
  if (flagOption(args, "help")) {
    io.out(KEYGEN_USAGE);
    return 0;
  }
  if (args.positionals.length > 0) {
    throw new UsageError(`unexpected argument ${JSON.stringify(args.positionals[0])}`);
  }
  const dir = (stringOption(args, "out") ?? ".").replace(/\/+$/, "") || "/";
  const name = stringOption(args, "name") ?? "snapmesh-signing";
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) {
    throw new UsageError(`--name expects a file name, got ${JSON.stringify(name)}`);
  }
  const pair = await generateKeyPair(stringOption(args, "comment") ?? name);
  const privateFile = `${dir}/${name}.key`;
  const publicFile = `${dir}/${name}.pub`;
  for (const path of [privateFile, publicFile]) {
    if (await Deno.lstat(path).then(() => true, () => false)) {
      throw new CommandError("exists", `${path} exists already; nothing was written`);
    }
  }
  try {
    // createNew with the mode: the private key is never readable by others,
    // not even for a moment.
    await Deno.writeTextFile(privateFile, pair.privatePem, { createNew: true, mode: 0o600 });
    await Deno.chmod(privateFile, 0o600); // whatever the umask
    await Deno.writeTextFile(publicFile, pair.publicLine + "\n", { createNew: true, mode: 0o644 });
  } catch (err) {
    await Deno.remove(privateFile).catch(() => {});
    throw new CommandError("failed", `Cannot write the key files: ${(err as Error).message}`);
  }
  if (flagOption(args, "json")) {
    io.out(JSON.stringify(
      {
        keyId: pair.keyId,
        publicKey: pair.publicLine,
        privateKeyFile: privateFile,
        publicKeyFile: publicFile,
      },
      null,
      2,
    ));
  } else {
    io.out(pair.publicLine);
    io.err(
      `snapmesh: wrote ${privateFile} (private: --signing-key) and ${publicFile} ` +
        `(key id ${pair.keyId}: add its line to --trusted-keys on every node)`,
    );
  }
  return 0;
}
