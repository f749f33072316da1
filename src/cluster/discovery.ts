/**
 * Where the list of peers comes from: a static list, a file (one URL a
 * line, reread on change), DNS A/AAAA records (`NAME:PORT`) or DNS SRV
 * records (`srv:NAME`, as a Kubernetes headless Service or Consul publish
 * them). Every source answers URLs checked for scheme, host and port, and
 * nothing else: no credentials, path, query or fragment, so a peers file
 * can never point a node's credentials at an arbitrary URL.
 *
 * @module
 */

import type { FileSystem } from "../fs/mod.ts";
import type { Logger } from "../log/mod.ts";

/** A source of peer URLs. */
export interface Discovery {
  /** What the source is, for logs and status ("file /etc/snapmesh/peers"). */
  readonly label: string;
  /** How often to ask again, in ms; 0 when the list never changes. */
  readonly refreshMs: number;
  /** The peer URLs now (normalised; may include this node's own URL). */
  peers(): Promise<string[]>;
}

/** DNS lookups, behind an interface (the real one is `Deno.resolveDns`). */
export interface Resolver {
  resolve(name: string, type: "A" | "AAAA"): Promise<string[]>;
  resolveSrv(name: string): Promise<{ target: string; port: number }[]>;
}

/** The system resolver. */
export const systemResolver: Resolver = {
  resolve: (name, type) => Deno.resolveDns(name, type),
  async resolveSrv(name) {
    const records = await Deno.resolveDns(name, "SRV");
    return records.map((r) => ({ target: r.target.replace(/\.$/, ""), port: r.port }));
  },
};

/**
 * Checks and normalises a peer URL: http or https, a host and an explicit
 * or default port, nothing else.
 *
 * @throws {TypeError} naming what is wrong
 */
export function normalizePeerUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TypeError(`"${text}" is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`"${text}" is not an http(s) URL`);
  }
  if (url.hostname === "") throw new TypeError(`"${text}" has no host`);
  if (url.username !== "" || url.password !== "") {
    throw new TypeError(`"${text}" carries credentials; peers are given by address only`);
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.hash !== "") {
    throw new TypeError(`"${text}" has a path, query or fragment; give scheme://host:port`);
  }
  return url.origin;
}

/**
 * Parses a `--peers-dns` value: `NAME:PORT` (A/AAAA records) or `srv:NAME`
 * (SRV records).
 *
 * @throws {TypeError} naming the accepted forms
 */
export function parseDnsSpec(
  spec: string,
): { kind: "a"; name: string; port: number } | { kind: "srv"; name: string } {
  const srv = /^srv:([A-Za-z0-9_.-]+)$/.exec(spec);
  if (srv) return { kind: "srv", name: srv[1]! };
  const plain = /^([A-Za-z0-9_.-]+):(\d{1,5})$/.exec(spec);
  if (plain && Number(plain[2]) > 0 && Number(plain[2]) < 65536) {
    return { kind: "a", name: plain[1]!, port: Number(plain[2]) };
  }
  throw new TypeError(`"${spec}": use NAME:PORT (A/AAAA records) or srv:NAME (SRV records)`);
}

/**
 * Another source's peers, reached over https on the same host and port
 * (with `--tls-ca`, no request to a peer goes over plain http).
 */
export class HttpsDiscovery implements Discovery {
  readonly #source: Discovery;

  constructor(source: Discovery) {
    this.#source = source;
  }

  get label(): string {
    return this.#source.label;
  }

  get refreshMs(): number {
    return this.#source.refreshMs;
  }

  async peers(): Promise<string[]> {
    return (await this.#source.peers()).map(httpsUrl);
  }
}

/** `http://host:port` → `https://host:port` (the port kept, 80 included). */
export function httpsUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.protocol === "https:") return parsed.origin;
  const port = parsed.port === "" ? "80" : parsed.port;
  return normalizePeerUrl(`https://${parsed.hostname}:${port}`);
}

/** A fixed list (`--peers`). */
export class StaticDiscovery implements Discovery {
  readonly label = "list";
  readonly refreshMs = 0;
  readonly #urls: string[];

  /** @throws {TypeError} when an entry is not a valid peer URL */
  constructor(urls: readonly string[]) {
    this.#urls = urls.map(normalizePeerUrl);
  }

  peers(): Promise<string[]> {
    return Promise.resolve([...this.#urls]);
  }
}

/** Options for {@linkcode FileDiscovery}. */
export interface FileDiscoveryOptions {
  fs: FileSystem;
  log: Logger;
  /** @default 2000 */
  refreshMs?: number;
}

/** A file of URLs, one a line (`#` comments); reread on change (`--peers-file`). */
export class FileDiscovery implements Discovery {
  readonly label: string;
  readonly refreshMs: number;
  readonly #path: string;
  readonly #options: FileDiscoveryOptions;
  #text: string | null = null;
  #urls: string[] = [];

  constructor(path: string, options: FileDiscoveryOptions) {
    this.#path = path;
    this.#options = options;
    this.label = `file ${path}`;
    this.refreshMs = options.refreshMs ?? 2000;
  }

  async peers(): Promise<string[]> {
    const { fs, log } = this.#options;
    let text: string;
    try {
      text = new TextDecoder().decode(await fs.readFile(this.#path));
    } catch {
      if (this.#urls.length > 0) {
        log.warn("peers file is gone; keeping no peers from it", { path: this.#path });
      }
      this.#text = null;
      this.#urls = [];
      return [];
    }
    // Compared by content, not mtime: coarse timestamps would hide a quick rewrite.
    if (text === this.#text) return [...this.#urls];
    this.#text = text;
    const urls: string[] = [];
    for (const raw of text.split("\n")) {
      const line = raw.replace(/#.*$/, "").trim();
      if (line === "") continue;
      try {
        urls.push(normalizePeerUrl(line));
      } catch (err) {
        log.warn("peers file: ignoring a line that is not a peer URL", {
          path: this.#path,
          line,
          why: (err as Error).message,
        });
      }
    }
    this.#urls = urls;
    log.info("peers file loaded", { path: this.#path, peers: urls.length });
    return [...urls];
  }
}

/** Options for {@linkcode DnsDiscovery}. */
export interface DnsDiscoveryOptions {
  log: Logger;
  /** @default systemResolver */
  resolver?: Resolver;
  /** Scheme of the peer URLs. @default "http" */
  scheme?: "http" | "https";
  /** @default 15000 */
  refreshMs?: number;
}

/**
 * DNS records (`--peers-dns`): `NAME:PORT` resolves A and AAAA records to
 * `http://ADDRESS:PORT`; `srv:NAME` resolves SRV records to
 * `http://TARGET:PORT`.
 */
export class DnsDiscovery implements Discovery {
  readonly label: string;
  readonly refreshMs: number;
  readonly #spec: { kind: "a"; name: string; port: number } | { kind: "srv"; name: string };
  readonly #options: DnsDiscoveryOptions;

  /** @throws {TypeError} when `spec` is neither `NAME:PORT` nor `srv:NAME` */
  constructor(spec: string, options: DnsDiscoveryOptions) {
    this.#options = options;
    this.refreshMs = options.refreshMs ?? 15_000;
    this.label = `dns ${spec}`;
    this.#spec = parseDnsSpec(spec);
  }

  async peers(): Promise<string[]> {
    const resolver = this.#options.resolver ?? systemResolver;
    const scheme = this.#options.scheme ?? "http";
    const spec = this.#spec;
    const urls: string[] = [];
    if (spec.kind === "a") {
      for (const type of ["A", "AAAA"] as const) {
        try {
          for (const ip of await resolver.resolve(spec.name, type)) {
            urls.push(
              type === "A" ? `${scheme}://${ip}:${spec.port}` : `${scheme}://[${ip}]:${spec.port}`,
            );
          }
        } catch {
          // No records of this type.
        }
      }
    } else {
      try {
        for (const { target, port } of await resolver.resolveSrv(spec.name)) {
          urls.push(`${scheme}://${target}:${port}`);
        }
      } catch {
        // No records.
      }
    }
    const valid: string[] = [];
    for (const url of urls) {
      try {
        valid.push(normalizePeerUrl(url));
      } catch {
        this.#options.log.warn("peers DNS: ignoring a record that is not a peer address", { url });
      }
    }
    if (valid.length === 0) {
      this.#options.log.warn("peers DNS name resolved to nothing", { name: spec.name });
    }
    return valid;
  }
}
