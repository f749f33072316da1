/**
 * The node-to-node routes under `/v1/peer` (peers only; see auth.ts).
 * Documented in the README.
 *
 * @module
 */

import type { Hono } from "hono";
import { encodeBytes } from "../cluster/mod.ts";
import { SnapmeshError } from "../errors.ts";
import type { AppDeps, Env } from "./_env.ts";
import { digestParam, jsonBody } from "./request.ts";

/** Registers the peer routes on `v1`. */
export function registerPeerRoutes(v1: Hono<Env>, deps: AppDeps): void {
  v1.get("/peer/hello", (c) => c.json(c.get("agent").peerHello()));

  v1.get("/peer/probe", async (c) => {
    const target = c.req.query("target");
    if (!target || target.length > 2048) {
      throw new SnapmeshError("invalid_body", "target must be a peer URL");
    }
    return c.json({ reached: await c.get("agent").peerProbe(target) });
  });

  v1.get("/peer/snapshots/:name/manifest", async (c) => {
    const answer = await c.get("agent").peerManifest(
      c.req.param("name"),
      c.req.query("fetch") === "1",
    );
    if (answer === null) throw new SnapmeshError("snapshot_not_found", "Not here");
    return c.json(answer);
  });

  v1.get("/peer/snapshots/:name/have", (c) => {
    const answer = c.get("agent").peerAvailability(c.req.param("name"), digestParam(c));
    if (answer === null) throw new SnapmeshError("snapshot_not_found", "Not here");
    return c.json(answer);
  });

  v1.post("/peer/snapshots/:name/suspect", (c) => {
    const index = Number(c.req.query("chunk"));
    const file = c.req.query("file") ?? "";
    if (!Number.isSafeInteger(index) || index < 0) {
      throw new SnapmeshError("invalid_body", "Query parameter chunk must be a chunk index");
    }
    c.get("agent").peerSuspect(c.req.param("name"), { digest: digestParam(c), file, index });
    return c.json({ accepted: true }, 202);
  });

  v1.post("/peer/snapshots/:name/announce", async (c) => {
    const body = await jsonBody(c);
    const answer = c.get("agent").peerAnnounce(c.req.param("name"), {
      digest: digestParam(c),
      peer: body as never,
    });
    return c.json(answer);
  });

  // A have stream: newline-delimited JSON, a line at least every 5 s.
  v1.get("/peer/snapshots/:name/events", (c) => {
    const agent = c.get("agent");
    const name = c.req.param("name");
    const digest = digestParam(c);
    const encoder = new TextEncoder();
    let subscription: { close(): void } | null = null;
    let heartbeat: ReturnType<typeof setInterval> | undefined;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        const send = (event: unknown) => {
          try {
            controller.enqueue(encoder.encode(JSON.stringify(event) + "\n"));
          } catch {
            // The stream is closed.
          }
        };
        const stop = () => {
          clearInterval(heartbeat);
          try {
            controller.close();
          } catch {
            // Already closed.
          }
        };
        subscription = agent.peerSubscribe(name, digest, {
          bitmap: (bits) => send(bits === "all" ? { all: true } : { bitmap: encodeBytes(bits) }),
          have: (chunks) => send({ have: chunks }),
          end: (reason) => {
            if (reason === "complete") send({ complete: true });
            stop();
          },
        });
        if (subscription === null) throw new SnapmeshError("snapshot_not_found", "Not here");
        heartbeat = setInterval(() => send({ ping: 1 }), 5000);
        deps.shutdown?.addEventListener("abort", () => {
          subscription?.close();
          stop();
        }, { once: true });
      },
      cancel() {
        clearInterval(heartbeat);
        subscription?.close();
      },
    });
    return new Response(stream, { headers: { "Content-Type": "application/x-ndjson" } });
  });

  v1.get("/peer/snapshots/:name/workingset", async (c) => {
    const answer = await c.get("agent").peerWorkingSet(c.req.param("name"), digestParam(c));
    if (answer === null) throw new SnapmeshError("not_found", "No working set here");
    return c.json(answer);
  });

  v1.get("/peer/snapshots/:name/files/:file", async (c) => {
    const { name, file } = c.req.param();
    const read = await c.get("agent").peerRead(name, {
      digest: digestParam(c),
      file,
      range: c.req.header("range"),
      wait: c.req.query("wait") === "1",
      from: c.req.header("x-snapmesh-node") ?? null,
    });
    return new Response(read.stream, {
      status: 206,
      headers: {
        "Content-Type": "application/octet-stream",
        "Content-Length": String(read.end - read.start + 1),
        "Content-Range": `bytes ${read.start}-${read.end}/${read.size}`,
      },
    });
  });
}
