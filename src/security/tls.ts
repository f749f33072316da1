/**
 * TLS for the listener and for requests to peers, with certificates that
 * rotate without a restart.
 *
 * - {@linkcode TlsMaterial} reads `--tls-cert`, `--tls-key` and `--tls-ca`,
 *   checks that they belong together, and rereads them when they change
 *   (a half-written rotation is ignored until it is whole).
 * - {@linkcode RustlsListener}: `Deno.listenTls` (rustls, in Rust: the cheap
 *   path), used without `--peer-mtls`. Deno cannot hand it a new
 *   certificate, so a rotation swaps the listener: the old one is closed and
 *   a new one bound on the same port at once (connections already accepted
 *   keep their certificate; a connection attempt in the gap, well under a
 *   millisecond, is refused and retried by its client).
 * - {@linkcode MutualTlsListener}: `Deno.listen` plus `node:tls` on each
 *   accepted connection, used with `--peer-mtls` because only node:tls can
 *   ask for and verify client certificates. It asks every client for a
 *   certificate, refuses one that does not chain to the CA, and lets
 *   clients without one in (client routes need none). A rotation only swaps
 *   the secure context new connections get.
 *
 * Both accept in snapmesh's own loop (src/http), which keeps accepting
 * through EMFILE; the handshake happens on the connection's first read,
 * under the connection's idle and header deadlines, never in the accept loop.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { Duplex } from "node:stream";
import tls from "node:tls";
import type { ClientCertificate, HttpConn, HttpListener } from "../http/mod.ts";
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

/** A listener whose certificate can change. */
export interface ReloadableListener extends HttpListener {
  /** New connections get `files` from now on. */
  reload(files: TlsFiles): void;
}

/** Longest a rotation keeps trying to bind the port again. */
const REBIND_FAST_MS = 2000;

/** `Deno.listenTls`, swapped for a new one when the certificate changes. */
export class RustlsListener implements ReloadableListener {
  readonly addr: Deno.NetAddr;
  readonly #hostname: string;
  readonly #log: Logger;
  #inner: Deno.TlsListener | null;
  #files: TlsFiles;
  #closed = false;
  #accepting = false;
  #binding: Promise<void> | null = null;

  constructor(address: { hostname: string; port: number }, files: TlsFiles, log: Logger) {
    this.#hostname = address.hostname;
    this.#log = log;
    this.#files = files;
    this.#inner = Deno.listenTls({
      hostname: address.hostname,
      port: address.port,
      cert: files.cert,
      key: files.key,
      transport: "tcp",
    });
    this.addr = this.#inner.addr as Deno.NetAddr;
  }

  reload(files: TlsFiles): void {
    if (this.#closed) return;
    this.#files = files;
    const old = this.#inner;
    this.#inner = null;
    try {
      old?.close();
    } catch {
      // Closed already.
    }
    // With an accept in flight, the port is free once it has failed; the
    // accept loop binds again then. Without one, now.
    if (!this.#accepting) this.#rebind().catch(() => {});
  }

  async accept(): Promise<HttpConn> {
    this.#accepting = true;
    try {
      while (true) {
        if (this.#closed) throw new Deno.errors.BadResource("The listener is closed");
        if (this.#inner === null) await this.#rebind();
        const inner = this.#inner!;
        try {
          return await inner.accept();
        } catch (err) {
          // Swapped underneath (a rotation): accept on the new one.
          if (!this.#closed && this.#inner !== inner) continue;
          throw err;
        }
      }
    } finally {
      this.#accepting = false;
    }
  }

  close(): void {
    this.#closed = true;
    try {
      this.#inner?.close();
    } catch {
      // Closed already.
    }
  }

  #rebind(): Promise<void> {
    this.#binding ??= this.#bind().finally(() => (this.#binding = null));
    return this.#binding;
  }

  async #bind(): Promise<void> {
    const started = performance.now();
    let delay = 1;
    while (!this.#closed) {
      try {
        this.#inner = Deno.listenTls({
          hostname: this.#hostname,
          port: this.addr.port,
          cert: this.#files.cert,
          key: this.#files.key,
          transport: "tcp",
        });
        this.#log.debug("TLS listener rebound with the new certificate", {
          ms: Math.round((performance.now() - started) * 10) / 10,
        });
        return;
      } catch (err) {
        if (!(err instanceof Deno.errors.AddrInUse)) throw err;
        const waited = performance.now() - started;
        if (waited > REBIND_FAST_MS) {
          this.#log.error("cannot bind the listen port again after a certificate rotation", {
            error: err,
            port: this.addr.port,
          });
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, waited > REBIND_FAST_MS ? 1000 : 50);
      }
    }
    throw new Deno.errors.BadResource("The listener is closed");
  }
}

/** `Deno.listen` with node:tls on each connection: client certificates are verified. */
export class MutualTlsListener implements ReloadableListener {
  readonly #tcp: Deno.Listener;
  readonly #log: Logger;
  #context: tls.SecureContext;

  constructor(address: { hostname: string; port: number }, files: TlsFiles, log: Logger) {
    if (files.ca === null) throw new TypeError("Mutual TLS needs the cluster's CA");
    this.#log = log;
    this.#context = secureContext(files);
    this.#tcp = Deno.listen({ hostname: address.hostname, port: address.port, transport: "tcp" });
  }

  get addr(): Deno.Addr {
    return this.#tcp.addr;
  }

  reload(files: TlsFiles): void {
    this.#context = secureContext(files);
  }

  async accept(): Promise<HttpConn> {
    const conn = await this.#tcp.accept();
    return new MutualTlsConn(conn, this.#context, this.#log);
  }

  close(): void {
    this.#tcp.close();
  }
}

function secureContext(files: TlsFiles): tls.SecureContext {
  return tls.createSecureContext({
    cert: files.cert,
    key: files.key,
    ...(files.ca === null ? {} : { ca: files.ca }),
  });
}

/** Bytes queued from the TLS socket before it is paused. */
const READ_QUEUE_BYTES = 256 * 1024;

/**
 * One node:tls server connection over a `Deno.Conn`, seen as an
 * {@linkcode HttpConn}. A client certificate that does not verify against
 * the CA ends the connection right after the handshake.
 */
class MutualTlsConn implements HttpConn {
  readonly remoteAddr: Deno.Addr;
  readonly #conn: Deno.Conn;
  readonly #socket: tls.TLSSocket;
  readonly #queue: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  #certificate: ClientCertificate | null = null;
  /** Writes (and an end) waiting for node:tls: failed if the socket closes first. */
  readonly #waiting = new Set<(err: Error | null) => void>();

  constructor(conn: Deno.Conn, context: tls.SecureContext, log: Logger) {
    this.#conn = conn;
    this.remoteAddr = conn.remoteAddr;
    const socket = new tls.TLSSocket(duplexOf(conn), {
      isServer: true,
      secureContext: context,
      requestCert: true,
      // Checked below: clients without a certificate are let in (client routes).
      rejectUnauthorized: false,
    });
    this.#socket = socket;
    socket.on("secure", () => {
      const peer = socket.getPeerCertificate();
      const presented = peer !== null && typeof peer === "object" && "serialNumber" in peer &&
        typeof peer.serialNumber === "string";
      if (!presented) return;
      const failure = (socket as unknown as { ssl?: { verifyError?(): unknown } }).ssl
        ?.verifyError?.();
      if (failure) {
        log.info("refused a TLS client certificate that does not chain to --tls-ca", {
          remote: addressText(conn.remoteAddr),
          subject: subjectText(peer.subject),
          reason: String((failure as { code?: string }).code ?? failure),
        });
        this.#fail(new Error("client certificate refused"));
        socket.destroy();
        return;
      }
      this.#certificate = {
        subject: subjectText(peer.subject),
        serialNumber: peer.serialNumber,
        fingerprint256: peer.fingerprint256 ?? "",
      };
    });
    socket.on("data", (data: Uint8Array) => {
      this.#queue.push(data);
      this.#queued += data.length;
      if (this.#queued > READ_QUEUE_BYTES) socket.pause();
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (err) => this.#fail(err));
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
      const closed = this.#error ?? new Deno.errors.BadResource("The connection is closed");
      for (const settle of [...this.#waiting]) settle(closed);
    });
  }

  get clientCertificate(): ClientCertificate | null {
    return this.#certificate;
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    while (this.#queue.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    const head = this.#queue[0]!;
    const n = Math.min(head.length, buffer.length);
    buffer.set(head.subarray(0, n));
    if (n === head.length) this.#queue.shift();
    else this.#queue[0] = head.subarray(n);
    this.#queued -= n;
    if (this.#queued <= READ_QUEUE_BYTES / 2 && this.#socket.isPaused()) this.#socket.resume();
    return n;
  }

  write(bytes: Uint8Array): Promise<number> {
    if (this.#error) return Promise.reject(this.#error);
    // The callback runs once the bytes are taken: the caller may reuse them after.
    return this.#settled((done) => this.#socket.write(bytes, (err) => done(err ?? null)))
      .then(() => bytes.length);
  }

  closeWrite(): Promise<void> {
    return this.#settled((done) => this.#socket.end(() => done(null)));
  }

  /** Runs `start`, resolving when it calls back, or failing when the socket closes first. */
  #settled(start: (done: (err: Error | null) => void) => void): Promise<void> {
    if (this.#socket.destroyed) {
      return Promise.reject(this.#error ?? new Deno.errors.BadResource("The connection is closed"));
    }
    return new Promise((resolve, reject) => {
      const settle = (err: Error | null) => {
        if (!this.#waiting.delete(settle)) return;
        if (err) reject(err);
        else resolve();
      };
      this.#waiting.add(settle);
      start(settle);
    });
  }

  close(): void {
    this.#socket.destroy();
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }

  setNoDelay(noDelay = true): void {
    (this.#conn as Deno.TcpConn).setNoDelay?.(noDelay);
  }

  #fail(err: Error): void {
    this.#error ??= err;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

/** Bytes written to the TCP connection per write, at most. */
const WRITE_BATCH_BYTES = 1024 * 1024;

/**
 * A node `Duplex` over a `Deno.Conn`: what node:tls encrypts into and
 * decrypts from. Writes are queued and flushed in batches (node:tls hands
 * over one TLS record at a time).
 */
function duplexOf(conn: Deno.Conn): Duplex {
  let reading = false;
  const pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let flushing = false;
  let failed: Error | null = null;
  let drained: (() => void) | null = null;

  const flush = async () => {
    flushing = true;
    try {
      while (pending.length > 0) {
        const batch = pending.length === 1 ? pending.shift()! : concat(pending.splice(0));
        let at = 0;
        while (at < batch.length) at += await conn.write(batch.subarray(at));
        pendingBytes -= batch.length;
        if (pendingBytes < WRITE_BATCH_BYTES) {
          const wake = drained;
          drained = null;
          wake?.();
        }
      }
    } catch (err) {
      failed = err as Error;
      const wake = drained;
      drained = null;
      wake?.();
    } finally {
      flushing = false;
    }
  };

  const duplex: Duplex = new Duplex({
    read() {
      if (reading) return;
      reading = true;
      (async () => {
        try {
          while (true) {
            const buffer = new Uint8Array(64 * 1024);
            const n = await conn.read(buffer);
            if (n === null) {
              duplex.push(null);
              break;
            }
            if (!duplex.push(Buffer.from(buffer.buffer, 0, n))) break;
          }
        } catch (err) {
          duplex.destroy(err as Error);
        } finally {
          reading = false;
        }
      })();
    },
    write(chunk: Uint8Array, _encoding, callback) {
      if (failed) return callback(failed);
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (!flushing) flush();
      if (pendingBytes < WRITE_BATCH_BYTES) callback();
      else drained = () => callback(failed ?? undefined);
    },
    final(callback) {
      const end = () => {
        if (failed) return callback(failed);
        conn.closeWrite().then(() => callback(), (err) => callback(err));
      };
      if (pendingBytes === 0) end();
      else drained = end;
    },
    destroy(err, callback) {
      try {
        conn.close();
      } catch {
        // Closed already.
      }
      callback(err);
    },
  });
  return duplex;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function subjectText(subject: unknown): string {
  if (typeof subject === "string") return subject;
  if (subject && typeof subject === "object") {
    return Object.entries(subject as Record<string, unknown>).map(([k, v]) => `${k}=${v}`).join(
      ",",
    );
  }
  return "";
}

function addressText(addr: Deno.Addr): string {
  return "hostname" in addr ? `${addr.hostname}:${addr.port}` : addr.transport;
}

/** Options for {@linkcode PeerTls}. */
export interface PeerTlsOptions {
  /** Present this node's certificate to peers (mutual TLS). */
  clientCertificate: boolean;
}

/**
 * The HTTP client for requests to peers: verifies their certificates
 * against the cluster CA and, with mutual TLS, presents this node's. A
 * reload makes a new client; the old one is closed once its requests are
 * surely over.
 */
export class PeerTls {
  readonly #options: PeerTlsOptions;
  #client: Deno.HttpClient;

  constructor(material: TlsMaterial, options: PeerTlsOptions) {
    this.#options = options;
    this.#client = this.#create(material.current);
    material.onChange((files) => {
      const old = this.#client;
      this.#client = this.#create(files);
      const timer = setTimeout(() => old.close(), 5 * 60_000);
      Deno.unrefTimer(timer);
    });
  }

  /** The client to fetch peers with now. */
  get client(): Deno.HttpClient {
    return this.#client;
  }

  #create(files: TlsFiles): Deno.HttpClient {
    if (files.ca === null) throw new TypeError("Peers are verified against --tls-ca");
    return Deno.createHttpClient({
      caCerts: [files.ca],
      ...(this.#options.clientCertificate ? { cert: files.cert, key: files.key } : {}),
    });
  }

  close(): void {
    this.#client.close();
  }
}
