/**
 * The commented config file `snapmesh serve --config-template` prints and
 * `scripts/install.sh` installs: every setting explained, with its default
 * and environment variable, and an example value to uncomment. Settings
 * given on the command line are written out as real keys.
 *
 * @module
 */

import { envName, type RawSettings, SETTINGS } from "./config.ts";

/** An example value per setting, shown commented out. */
const EXAMPLES: Record<string, unknown> = {
  listen: "0.0.0.0:7070",
  "data-dir": "/var/lib/snapmesh",
  "cache-size": "200GiB",
  "node-id": "node-17",
  advertise: "http://10.0.0.17:7070",
  peers: ["http://10.0.0.18:7070", "http://10.0.0.19:7070"],
  "peers-file": "/etc/snapmesh/peers",
  "peers-dns": "snapmesh.fleet.internal:7070",
  "origin-endpoint": "http://minio.internal:9000",
  "origin-bucket": "snapshots",
  "origin-prefix": "vhive",
  "origin-region": "us-east-1",
  "origin-create-bucket": true,
  push: "async",
  "origin-stall-timeout": "30s",
  "chunk-size": "1MiB",
  "draft-ttl": "24h",
  "import-root": "/var/lib/firecracker/snapshots",
  "max-file-size": "64GiB",
  "restore-dir": "/srv/jailer/firecracker",
  "restore-fault-timeout": "30s",
  "restore-record-window": "10s",
  "max-egress": "100MB",
  "max-origin-rate": "0",
  "scrub-rate": "16MiB",
  zone: "eu-west-1a",
  rack: "r17",
  "idle-timeout": "60s",
  "header-timeout": "10s",
  "body-timeout": "30s",
  "max-connections": 1024,
  "max-uploads": 64,
  "token-file": "/etc/snapmesh/token",
  "cluster-key-file": "/etc/snapmesh/cluster.key",
  "tls-cert": "/etc/snapmesh/tls/node.pem",
  "tls-key": "/etc/snapmesh/tls/node.key",
  "tls-ca": "/etc/snapmesh/tls/ca.pem",
  "peer-mtls": true,
  "signing-key": "/etc/snapmesh/signing.key",
  "trusted-keys": "/etc/snapmesh/trusted-keys",
  "log-level": "info",
  "rebuild-index": false,
};

const TOKEN_NOTE = [
  "  // token: never kept in this file. Put SNAPMESH_TOKEN=... in the environment",
  "  // file (/etc/snapmesh/env when installed by scripts/install.sh, mode 0600),",
  "  // or the token alone in a file named by token-file. Full client access.",
];

const READ_TOKEN_NOTE = [
  "  // read-token: never kept in this file either. SNAPMESH_READ_TOKEN=... in the",
  "  // environment file gives clients reads and pulls only.",
];

/** Secrets: explained, never written as keys. */
const SECRET_NOTES: Record<string, string[]> = { token: TOKEN_NOTE, "read-token": READ_TOKEN_NOTE };

/**
 * The template text. `given` holds settings to write as real keys (flag
 * name → value as given on the command line); tokens are never written.
 */
export function configTemplate(given: RawSettings = {}): string {
  const lines = [
    "// snapmesh agent configuration (JSON; comments and trailing commas allowed).",
    "//",
    "// Keys are the flag names of `snapmesh serve`. Precedence: flags, then",
    "// SNAPMESH_* environment variables, then this file, then the defaults.",
    "// Check the result with: snapmesh serve --config THIS_FILE --print-config",
    "// Sizes take 1048576, 500MB or 10GiB; durations take 30000 (ms), 30s, 15m or 24h.",
    "{",
  ];
  for (const s of SETTINGS) {
    const note = SECRET_NOTES[s.flag];
    if (note) {
      lines.push(...note, "");
      continue;
    }
    lines.push(
      `  // ${s.flag}: ${s.help}.`,
      `  // Default: ${s.defaultText}. Env: ${envName(s.flag)}.`,
    );
    const value = given[s.flag];
    if (value !== undefined) {
      lines.push(`  ${JSON.stringify(s.flag)}: ${JSON.stringify(asJson(s.kind, value))},`);
    } else {
      const example = EXAMPLES[s.flag] ?? "";
      lines.push(`  // ${JSON.stringify(s.flag)}: ${JSON.stringify(example)},`);
    }
    lines.push("");
  }
  if (lines.at(-1) === "") lines.pop();
  lines.push("}");
  return lines.join("\n") + "\n";
}

/** A flag's text as the JSON value the file would hold. */
function asJson(kind: string, value: unknown): unknown {
  if (typeof value !== "string") return value;
  if (kind === "list") return value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (kind === "count" && /^\d+$/.test(value.trim())) return Number(value);
  return value;
}
