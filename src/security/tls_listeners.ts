/**
 * The two TLS listeners (see `tls.ts` for why there are two): Deno's own
 * (rustls), rebound on a rotation, and `Deno.listen` with node:tls on each
 * connection, for client certificates.
 *
 * @module
 */

import tls from "node:tls";
import type { HttpConn, HttpListener } from "../http/mod.ts";
import type { Logger } from "../log/mod.ts";
import { MutualTlsConn } from "./_mutual_tls_conn.ts";
import type { TlsFiles } from "./tls_material.ts";

/** What a TLS listener starts with. */
export interface TlsListenerOptions {
  /** The certificate (and CA) new connections get until a reload. */
  files: TlsFiles;
  log: Logger;
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

  constructor(address: { hostname: string; port: number }, { files, log }: TlsListenerOptions) {
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

  constructor(address: { hostname: string; port: number }, { files, log }: TlsListenerOptions) {
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
