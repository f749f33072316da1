/**
 * The TLS files of a node (`--tls-cert`, `--tls-key`, `--tls-ca`): read,
 * checked to belong together, and reread when they change (a half-written
 * rotation is ignored until it is whole).
 *
 * @module
 */

import { createPrivateKey, X509Certificate } from "node:crypto";
import type { Logger } from "../log/mod.ts";

/** Paths of the TLS files. */
export interface TlsPaths {
  cert: string;
  key: string;
  /** The cluster's CA, or null. */
  ca: string | null;
}

/** One consistent set of TLS files, as read. */
export interface TlsFiles {
  cert: string;
  key: string;
  ca: string | null;
  /** The leaf certificate's serial number (hex), for logs. */
  serialNumber: string;
  /** When the leaf certificate expires. */
  validTo: string;
}

/** Options for {@linkcode TlsMaterial}. */
export interface TlsMaterialOptions {
  log: Logger;
  /** How often the files are looked at. @default 2000 */
  intervalMs?: number;
  /** Reads a file (tests replace it). @default Deno.readTextFile */
  readFile?: (path: string) => Promise<string>;
}

/**
 * Reads the files and checks them: PEM certificates, a private key that
 * matches the leaf certificate, a CA that parses.
 *
 * @throws {Error} saying which file is wrong
 */
export async function readTlsFiles(
  paths: TlsPaths,
  readFile: (path: string) => Promise<string> = Deno.readTextFile,
): Promise<TlsFiles> {
  const cert = await readFile(paths.cert);
  const key = await readFile(paths.key);
  const ca = paths.ca === null ? null : await readFile(paths.ca);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new Error(`${paths.cert} is not a PEM certificate (${(err as Error).message})`);
  }
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw new Error(`${paths.key} is not a PEM private key (${(err as Error).message})`);
  }
  if (!matches) throw new Error(`${paths.key} is not the private key of ${paths.cert}`);
  if (ca !== null) {
    try {
      new X509Certificate(ca);
    } catch (err) {
      throw new Error(`${paths.ca} is not a PEM certificate (${(err as Error).message})`);
    }
  }
  return { cert, key, ca, serialNumber: leaf.serialNumber, validTo: leaf.validTo };
}

/** The TLS files of a node, reread when they change. */
export class TlsMaterial {
  readonly paths: TlsPaths;
  #current: TlsFiles;
  readonly #options: TlsMaterialOptions;
  readonly #listeners = new Set<(files: TlsFiles) => void>();
  #timer: ReturnType<typeof setInterval> | null = null;
  #checking = false;
  #lastError: string | null = null;

  private constructor(paths: TlsPaths, files: TlsFiles, options: TlsMaterialOptions) {
    this.paths = paths;
    this.#current = files;
    this.#options = options;
  }

  /** Reads the files once; then {@linkcode TlsMaterial.watch} keeps them current. */
  static async load(paths: TlsPaths, options: TlsMaterialOptions): Promise<TlsMaterial> {
    return new TlsMaterial(paths, await readTlsFiles(paths, options.readFile), options);
  }

  get current(): TlsFiles {
    return this.#current;
  }

  /** Calls `fn` with each new set of files. */
  onChange(fn: (files: TlsFiles) => void): void {
    this.#listeners.add(fn);
  }

  /** Looks at the files every `intervalMs` until {@linkcode TlsMaterial.stop}. */
  watch(): void {
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => this.check(), this.#options.intervalMs ?? 2000);
    Deno.unrefTimer(this.#timer);
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /**
   * Rereads the files; when they changed and are whole, the new set takes
   * effect. Resolves true when it did.
   */
  async check(): Promise<boolean> {
    if (this.#checking) return false;
    this.#checking = true;
    const { log } = this.#options;
    try {
      let files: TlsFiles;
      try {
        files = await readTlsFiles(this.paths, this.#options.readFile);
      } catch (err) {
        const message = (err as Error).message;
        // Often a rotation caught halfway (the certificate written, not yet
        // the key): said once, and the files in use stay in use.
        if (message !== this.#lastError) {
          log.warn("TLS files changed but cannot be used (yet); keeping the current ones", {
            error: message,
          });
        }
        this.#lastError = message;
        return false;
      }
      this.#lastError = null;
      const old = this.#current;
      if (files.cert === old.cert && files.key === old.key && files.ca === old.ca) return false;
      this.#current = files;
      log.info("TLS files reloaded: new connections use them", {
        serialNumber: files.serialNumber,
        validTo: files.validTo,
        previousSerialNumber: old.serialNumber,
        caChanged: files.ca !== old.ca,
      });
      for (const fn of this.#listeners) {
        try {
          fn(files);
        } catch (err) {
          log.error("applying reloaded TLS files failed", { error: err });
        }
      }
      return true;
    } finally {
      this.#checking = false;
    }
  }
}
