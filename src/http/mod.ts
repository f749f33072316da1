/**
 * snapmesh's HTTP/1.1 server over plain byte streams (`Deno.Conn` today, TLS
 * streams later), carrying any `Request → Response` handler (the Hono app).
 *
 * Why not `Deno.serve`: it loses its accept loop on EMFILE, has no idle,
 * header or body timeouts, and cannot take a connection accepted elsewhere.
 * This one keeps accepting through descriptor exhaustion, bounds every
 * phase of a request in time and size, caps connections and uploads, and
 * hands request bodies to the handler as byte streams read straight into
 * the handler's buffers.
 *
 * ```ts
 * import { serveHttp } from "./mod.ts";
 * const server = serveHttp(Deno.listen({ port: 0 }), () => new Response("hi"));
 * await server.shutdown(1000);
 * ```
 *
 * @module
 */

export {
  fitConnectionLimit,
  type HttpListener,
  HttpServer,
  type HttpServerOptions,
  type RejectReason,
  serveHttp,
} from "./server.ts";
export type {
  ClientCertificate,
  FastHandler,
  FastRequest,
  HttpConn,
  HttpHandler,
  HttpRequestInfo,
  RawResponse,
  TimeoutKind,
} from "./_conn_types.ts";
export { BodyAbortedError } from "./body.ts";
export { bytesResponse } from "./_response.ts";
export { type FdLimit, raiseFdLimit } from "./fd_limit.ts";
