/**
 * The client routes under `/v1`: snapshots, files, pulls, restores,
 * working sets and the node's status (README "Routes").
 *
 * @module
 */

import type { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { hasCode } from "../errors.ts";
import { bytesResponse } from "../http/mod.ts";
import { fileHeaders } from "./_file_response.ts";
import type { AppDeps, Env } from "./_env.ts";
import { contentLength, jsonBody } from "./request.ts";

/** Registers the client routes on `v1`. */
export function registerClientRoutes(v1: Hono<Env>, deps: AppDeps): void {
  v1.put("/snapshots/:name/files/:file", async (c) => {
    const { name, file } = c.req.param();
    const result = await c.get("agent").stageFile(name, file, c.req.raw.body, {
      contentLength: contentLength(c),
    });
    return c.json(result, 201);
  });

  v1.post("/snapshots/:name/files/:file/import", async (c) => {
    const { name, file } = c.req.param();
    const body = await jsonBody(c);
    const result = await c.get("agent").importFile(name, file, body.path);
    return c.json(result, 201);
  });

  v1.post("/snapshots/:name/commit", async (c) => {
    const body = await jsonBody(c);
    const { manifest, created } = await c.get("agent").commit(c.req.param("name"), {
      labels: body.labels,
      hot: body.hot,
    });
    return c.json(manifest, created ? 201 : 200);
  });

  v1.delete("/snapshots/:name/draft", async (c) => {
    return c.json(await c.get("agent").dropDraft(c.req.param("name")));
  });

  v1.get("/snapshots", async (c) => c.json(await c.get("agent").listDetailed()));

  v1.get(
    "/snapshots/:name",
    async (c) => c.json(await c.get("agent").manifest(c.req.param("name"))),
  );

  v1.on(["GET", "HEAD"], "/snapshots/:name/files/:file", async (c) => {
    const { name, file } = c.req.param();
    const agent = c.get("agent");
    if (c.req.method === "HEAD") {
      // Headers only: no pull is started for a snapshot that is not local.
      const info = await agent.describeFile(name, file);
      const { status, headers } = fileHeaders(c, info);
      return new Response(null, { status, headers });
    }
    // A local copy whose first chunk fails verification is quarantined at
    // once; the request is then served from another source (read-through).
    for (let attempt = 0;; attempt++) {
      const opened = await agent.openFile(name, file);
      try {
        const { status, headers, range } = fileHeaders(c, opened);
        if (status === 304 || range.end < range.start) {
          opened.close();
          return new Response(null, { status, headers });
        }
        // Wait for the first byte, so a pull that fails now gets an error status.
        const body = await opened.body(range.start, range.end);
        return body instanceof Uint8Array
          ? bytesResponse(body, { status, headers })
          : new Response(body, { status, headers });
      } catch (err) {
        opened.close();
        if (attempt === 0 && opened.source === "local" && hasCode(err, "verification_failed")) {
          continue;
        }
        throw err;
      }
    }
  });

  v1.post("/snapshots/:name/pull", async (c) => {
    const wait = c.req.query("wait") !== "false";
    const hot = c.req.query("hot") === "true";
    const result = await c.get("agent").pull(c.req.param("name"), { wait, hot });
    return c.json(result, "state" in result ? 202 : 200);
  });

  v1.post("/snapshots/:name/verify", async (c) => {
    return c.json(await c.get("agent").verify(c.req.param("name")));
  });

  v1.delete("/snapshots/:name", async (c) => {
    const force = c.req.query("force") === "true";
    const origin = c.req.query("origin") === "true";
    const result = await c.get("agent").remove(c.req.param("name"), { force, origin });
    return c.json({ ...result, removed: true });
  });

  v1.put("/snapshots/:name/pin", async (c) => {
    return c.json(await c.get("agent").setPinned(c.req.param("name"), true));
  });

  v1.delete("/snapshots/:name/pin", async (c) => {
    return c.json(await c.get("agent").setPinned(c.req.param("name"), false));
  });

  v1.post("/snapshots/:name/restore", async (c) => {
    const body = await jsonBody(c);
    return c.json(await c.get("agent").restore(c.req.param("name"), body), 201);
  });

  v1.get("/restores", (c) => c.json(c.get("agent").restoreStatus()));

  v1.delete("/restores/:id", async (c) => {
    return c.json(await c.get("agent").endRestore(c.req.param("id")));
  });

  v1.get("/snapshots/:name/workingset", async (c) => {
    return c.json(await c.get("agent").workingSet(c.req.param("name")));
  });

  v1.put("/snapshots/:name/workingset", async (c) => {
    const body = await jsonBody(c);
    return c.json(await c.get("agent").setWorkingSet(c.req.param("name"), body));
  });

  v1.get("/pulls", (c) => c.json(c.get("agent").pullStatus()));

  // Server-sent events: the same list, twice a second, while the client listens.
  v1.get("/pulls/events", (c) => {
    const agent = c.get("agent");
    return streamSSE(c, async (stream) => {
      let id = 0;
      let open = true;
      stream.onAbort(() => {
        open = false;
      });
      while (open && !deps.shutdown?.aborted) {
        await stream.writeSSE({
          event: "pulls",
          id: String(id++),
          data: JSON.stringify(agent.pullStatus()),
        });
        await stream.sleep(500);
      }
    });
  });

  v1.get("/status", (c) => {
    const agent = c.get("agent");
    return c.json({
      nodeId: deps.nodeId,
      version: deps.version,
      uptime: Math.round((Date.now() - agent.startedAt) / 1000),
      ready: deps.isReady(),
      dataDir: agent.config.dataDir,
      // What a client checks before it sends a file (snapmesh put).
      limits: { maxFileSize: agent.config.maxFileSize, chunkSize: agent.config.chunkSize },
      cache: agent.cacheStatus(),
      peers: agent.peerStatus(),
      origin: agent.originStatus(),
      pulls: agent.pullStatus(),
      restores: agent.restoreStatus(),
      journal: agent.journalStatus(),
    });
  });
}
