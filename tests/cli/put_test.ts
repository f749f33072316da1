/**
 * `snapmesh put`, run as a real process: sized bodies, the committing phase
 * on a terminal, the node's --max-file-size checked before sending, and the
 * draft a failed put leaves (dropped when it was the put's own, never when
 * it existed before).
 *
 * Where the test needs the node to behave in a way a real agent cannot be
 * made to on cue (hold its answer until the test saw the CLI's phase), a
 * scripted node in the test process answers; everything else runs against
 * a real agent.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  type AgentProcess,
  runSnapmesh,
  snapmeshCommand,
  startAgent,
} from "../helpers/agent_process.ts";
import { randomBytes, sha256, tempDir } from "../helpers/temp.ts";

const MiB = 1024 * 1024;

interface SeenUpload {
  path: string;
  contentLength: string | null;
  transferEncoding: string | null;
  bytes: number;
  sha256: string;
}

/** A scripted node: answers what `put` asks, records each upload's headers and bytes. */
function scriptedNode(options: { holdUploads?: Promise<void> } = {}) {
  const uploads: SeenUpload[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (req.method === "GET" && url.pathname === "/v1/status") {
      return Response.json({ limits: { maxFileSize: 64 * MiB, chunkSize: MiB }, peers: [] });
    }
    const commit = /^\/v1\/snapshots\/([^/]+)\/commit$/.exec(url.pathname);
    if (req.method === "POST" && commit) {
      const body = await req.json().catch(() => ({}));
      if (typeof body.labels === "string") {
        return Response.json({ error: { code: "draft_not_found", message: "no draft" } }, {
          status: 404,
        });
      }
      return Response.json({
        name: commit[1],
        digest: "d".repeat(64),
        files: uploads.map((u) => ({ name: u.path.split("/").pop() })),
      }, { status: 201 });
    }
    if (req.method === "PUT" && url.pathname.includes("/files/")) {
      const seen: SeenUpload = {
        path: url.pathname,
        contentLength: req.headers.get("content-length"),
        transferEncoding: req.headers.get("transfer-encoding"),
        bytes: 0,
        sha256: "",
      };
      const all = new Uint8Array(Number(seen.contentLength ?? 0) || 16 * MiB);
      for await (const part of req.body!) {
        all.set(part, seen.bytes);
        seen.bytes += part.length;
      }
      seen.sha256 = await sha256(all.subarray(0, seen.bytes));
      uploads.push(seen);
      await options.holdUploads;
      return Response.json({ file: url.pathname.split("/").pop(), size: seen.bytes }, {
        status: 201,
      });
    }
    return Response.json({ error: { code: "not_found", message: "no" } }, { status: 404 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    uploads,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

Deno.test("put sends each file as one sized body (Content-Length, never chunked), byte for byte", async () => {
  await using tmp = await tempDir();
  await using node = scriptedNode();
  const mem = randomBytes(3 * MiB + 12_345, 7);
  await Deno.writeFile(`${tmp.path}/mem`, mem);
  await Deno.writeTextFile(`${tmp.path}/info.json`, '{"fn":"x"}');
  const result = await runSnapmesh(["put", "fn-sized", "mem", "info.json"], {
    env: { SNAPMESH_NODE: node.url },
    cwd: tmp.path,
  });
  assertEquals(result.code, 0, result.stderr);
  assertEquals(
    node.uploads.map((u) => [u.path, u.contentLength, u.transferEncoding, u.bytes]),
    [
      ["/v1/snapshots/fn-sized/files/mem", String(mem.length), null, mem.length],
      ["/v1/snapshots/fn-sized/files/info.json", "10", null, 10],
    ],
  );
  assertEquals(node.uploads[0]!.sha256, await sha256(mem));
});

Deno.test("on a terminal, put shows the node still committing after the last byte left", async () => {
  await using tmp = await tempDir();
  let release!: () => void;
  await using node = scriptedNode({ holdUploads: new Promise((r) => (release = r)) });
  await Deno.writeFile(`${tmp.path}/mem`, randomBytes(4 * MiB, 3));
  const [exe, lead] = snapmeshCommand();
  const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const command = [exe, ...lead, "put", "fn-tty", `${tmp.path}/mem`].map(quote).join(" ");
  // script(1) gives the CLI a pseudo-terminal, so it draws its progress.
  const child = new Deno.Command("script", {
    args: ["-qec", command, "/dev/null"],
    env: { SNAPMESH_NODE: node.url },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    // The node has every byte but has not answered: the CLI must say so
    // (within a deadline: a CLI that draws nothing while it waits never
    // ends a read).
    const deadline = Date.now() + 30_000;
    let pending: Promise<ReadableStreamReadResult<string>> | null = null;
    while (!/sent 4\.00 MiB · committing on the node/.test(text)) {
      assert(Date.now() < deadline, `no committing phase on the terminal:\n${text}`);
      pending ??= reader.read();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const next = await Promise.race([
        pending,
        new Promise<null>((r) => (timer = setTimeout(() => r(null), 500))),
      ]);
      clearTimeout(timer);
      if (next === null) continue;
      pending = null;
      if (next.done) break;
      text += next.value;
    }
    assert(!/100%/.test(text), `100% before the node answered:\n${text}`);
    release();
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
  } finally {
    release();
    await reader.cancel().catch(() => {});
    const status = await child.status;
    await child.stderr.cancel().catch(() => {});
    assertEquals(status.code, 0, text);
  }
  assertMatch(text, /put mem \[#+\.*\]\s+\d+% [\d.]+ [KM]iB\/4\.00 MiB .*\/s/);
  assertMatch(text, /put mem \[#+\] 100% 4\.00 MiB\/4\.00 MiB in \d+ s/);
  assertMatch(text, /committed fn-tty d{64}/);
});

async function agentWith(dir: string, ...args: string[]): Promise<AgentProcess> {
  return await startAgent({ dataDir: `${dir}/data`, args: ["--chunk-size", "1MiB", ...args] });
}

async function stageDirectly(agent: AgentProcess, name: string, file: string, bytes: Uint8Array) {
  const r = await fetch(`${agent.url}/v1/snapshots/${name}/files/${file}`, {
    method: "PUT",
    body: bytes as Uint8Array<ArrayBuffer>,
  });
  assertEquals(r.status, 201, await r.text());
}

/** The draft's files, learned by committing it (404 draft_not_found: no draft). */
async function commitDraft(agent: AgentProcess, name: string): Promise<string[] | null> {
  const r = await fetch(`${agent.url}/v1/snapshots/${name}/commit`, { method: "POST" });
  const body = await r.json();
  if (r.status === 404) {
    assertEquals(body.error.code, "draft_not_found");
    return null;
  }
  assertEquals(r.status, 201, JSON.stringify(body));
  return body.files.map((f: { name: string }) => f.name);
}

Deno.test("put checks the node's --max-file-size first: exit 1, not a byte sent, nothing evicted", async () => {
  await using tmp = await tempDir();
  // A 5 MiB cache holding a 4 MiB snapshot: an upload that streamed before
  // being refused would evict it to make room.
  await using agent = await agentWith(tmp.path, "--max-file-size", "2MiB", "--cache-size", "5MiB");
  await stageDirectly(agent, "kept", "mem", randomBytes(2 * MiB, 1));
  await stageDirectly(agent, "kept", "vmstate", randomBytes(2 * MiB, 11));
  assertEquals(await commitDraft(agent, "kept"), ["mem", "vmstate"]);
  await Deno.writeFile(`${tmp.path}/big`, randomBytes(3 * MiB, 2));
  const env = { SNAPMESH_NODE: agent.url };
  const text = await runSnapmesh(["put", "fn-big", `${tmp.path}/big`], { env });
  assertEquals(text.code, 1, text.stderr);
  assertMatch(
    text.stderr,
    /big is 3\.00 MiB .*larger than the node's --max-file-size of 2\.00 MiB: nothing was sent/,
  );
  const asJson = await runSnapmesh(["put", "fn-big", `${tmp.path}/big`, "--json"], { env });
  assertEquals(asJson.code, 1);
  assertEquals(asJson.stdout, "");
  assertEquals(JSON.parse(asJson.stderr).error.code, "too_large");

  // The agent logs every request: not one PUT of fn-big reached it.
  const puts = agent.logs().split("\n").filter((l) => l.includes('"path":"/v1/snapshots/fn-big/'));
  assertEquals(puts.filter((l) => l.includes('"method":"PUT"')), []);
  const status = await (await fetch(`${agent.url}/v1/status`)).json();
  assertEquals(status.cache.evictions, 0);
  const list = await (await fetch(`${agent.url}/v1/snapshots`)).json();
  assertEquals(list.map((s: { name: string }) => s.name), ["kept"]);
  assertEquals(await commitDraft(agent, "fn-big"), null);
});

Deno.test("a failed put drops the draft it created, and never one that existed before", async (t) => {
  await using tmp = await tempDir();
  await using agent = await agentWith(tmp.path, "--cache-size", "3MiB");
  const env = { SNAPMESH_NODE: agent.url };
  await Deno.writeFile(`${tmp.path}/mem`, randomBytes(MiB, 4));
  await Deno.writeFile(`${tmp.path}/disk`, randomBytes(4 * MiB, 5));

  await t.step("the commit fails after every file was staged: the draft goes", async () => {
    const r = await runSnapmesh(["put", "fn-a", `${tmp.path}/mem`, "--hot", "mem=99"], { env });
    assertEquals(r.code, 1, r.stderr);
    assertMatch(r.stderr, /chunk indexes are 0\.\.0/);
    assertMatch(r.stderr, /dropped the draft of fn-a \(mem, staged by this put\)/);
    assertEquals(await commitDraft(agent, "fn-a"), null);
  });

  await t.step("the second file is refused (507): the first one's draft goes too", async () => {
    const r = await runSnapmesh(["put", "fn-b", `${tmp.path}/mem`, `${tmp.path}/disk`, "--json"], {
      env,
    });
    assertEquals(r.code, 1, r.stderr);
    const error = JSON.parse(r.stderr).error;
    assertEquals([error.code, error.draft], ["insufficient_storage", "dropped"]);
    assertEquals(await commitDraft(agent, "fn-b"), null);
  });

  await t.step("a draft that existed before the put is left as it was found", async () => {
    await stageDirectly(agent, "fn-c", "extra", randomBytes(1000, 6));
    const r = await runSnapmesh(["put", "fn-c", `${tmp.path}/mem`, "--hot", "mem=99"], { env });
    assertEquals(r.code, 1, r.stderr);
    assertMatch(r.stderr, /the draft of fn-c existed before this put, so it was left as it is/);
    assertEquals(await commitDraft(agent, "fn-c"), ["extra", "mem"]);
  });
});
