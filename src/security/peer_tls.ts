/**
 * The HTTP client a node reaches its peers with over TLS.
 *
 * @module
 */

import type { TlsFiles, TlsMaterial } from "./tls_material.ts";

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
