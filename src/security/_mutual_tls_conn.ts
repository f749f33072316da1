/**
 * One node:tls server connection over a `Deno.Conn`, for the mutual TLS
 * listener. Private to `src/security/`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import tls from "node:tls";
import type { ClientCertificate, HttpConn } from "../http/mod.ts";
import type { Logger } from "../log/mod.ts";
import { concatBytes } from "../util/bytes.ts";

/** Bytes queued from the TLS socket before it is paused. */
const READ_QUEUE_BYTES = 256 * 1024;

/**
 * One node:tls server connection over a `Deno.Conn`, seen as an
 * {@linkcode HttpConn}. A client certificate that does not verify against
 * the CA ends the connection right after the handshake.
 */
export class MutualTlsConn implements HttpConn {
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
        const batch = pending.length === 1 ? pending.shift()! : concatBytes(pending.splice(0));
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
