/**
 * Secrets kept in files (`--token-file`, `--cluster-key-file`): read once,
 * at start (changing one takes a restart), so they never appear in a
 * process listing. A file that any user can read earns a warning (group
 * read is fine: a root-owned file for the service's group).
 *
 * @module
 */

import { ClusterKeys } from "../security/request_signing.ts";
import { ConfigError, type ServeConfig } from "./config.ts";

/** How secret files are read (the real one is Deno's file system). */
export interface SecretReader {
  readTextFile(path: string): Promise<string>;
  /** The file's permission bits, or null when unknown. */
  mode(path: string): Promise<number | null>;
}

const denoReader: SecretReader = {
  readTextFile: (path) => Deno.readTextFile(path),
  mode: async (path) => (await Deno.stat(path)).mode,
};

/**
 * Fills `token` and `clusterKey` from their files and checks the cluster
 * keys. Returns the config and warnings to log.
 *
 * @throws {ConfigError} when a file cannot be read or holds no usable secret
 */
export async function loadSecretFiles(
  config: ServeConfig,
  reader: SecretReader = denoReader,
): Promise<{ config: ServeConfig; warnings: string[] }> {
  const out = { ...config };
  const warnings: string[] = [];
  const read = async (path: string, what: string): Promise<string> => {
    let text: string;
    try {
      text = await reader.readTextFile(path);
    } catch (err) {
      throw new ConfigError(`Cannot read the ${what} file ${path}: ${(err as Error).message}`);
    }
    const mode = await reader.mode(path).catch(() => null);
    if (mode !== null && (mode & 0o007) !== 0) {
      warnings.push(
        `the ${what} file ${path} can be read by any user (mode ${
          (mode & 0o777).toString(8)
        }); chmod o-rwx it`,
      );
    }
    return text;
  };
  if (config.tokenFile !== null) {
    const token = (await read(config.tokenFile, "token")).trim();
    if (token === "" || /\s/.test(token)) {
      throw new ConfigError(
        `The token file ${config.tokenFile} must hold one token (no spaces or line breaks)`,
      );
    }
    if (token === config.readToken) {
      throw new ConfigError("read-token must differ from the full-access token");
    }
    out.token = token;
  }
  if (config.clusterKeyFile !== null) {
    out.clusterKey = await read(config.clusterKeyFile, "cluster key");
  }
  if (out.clusterKey !== null) {
    try {
      ClusterKeys.parse(out.clusterKey);
    } catch (err) {
      const where = config.clusterKeyFile ?? "SNAPMESH_CLUSTER_KEY";
      throw new ConfigError(`Invalid cluster key in ${where}: ${(err as Error).message}`);
    }
  }
  return { config: out, warnings };
}
