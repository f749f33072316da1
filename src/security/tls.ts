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

export * from "./peer_tls.ts";
export * from "./tls_listeners.ts";
export * from "./tls_material.ts";
