/**
 * The agent's HTTP server under abuse, as a separate process: descriptor
 * exhaustion, idle and slow clients, hung and cut-short uploads, deep JSON,
 * and the framing of large uploads.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { type AgentProcess, snapmeshCommand, startAgent } from "../helpers/agent_process.ts";
import { RawClient } from "../helpers/raw_http.ts";
import { randomBytes, sha256, tempDir } from "../helpers/temp.ts";

const MiB = 1024 * 1024;

/** Open descriptors of a process. */
function fdCount(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  logs?: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(
        `Timed out waiting for ${what}${logs ? `\n--- agent log ---\n${logs()}` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Log lines of the agent, parsed. */
function logLines(agent: AgentProcess): Record<string, unknown>[] {
  return agent.logs().trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

async function healthz(url: string): Promise<{ status: number; code?: string }> {
  const response = await fetch(`${url}/healthz`);
  const body = await response.json();
  return { status: response.status, code: body.error?.code };
}

Deno.test("under ulimit -n 512, 600 idle connections neither kill the agent nor lock out /healthz", async () => {
  await using tmp = await tempDir();
  const [exe, lead] = snapmeshCommand();
  await using agent = await startAgent({
    dataDir: tmp.path,
    command: ["sh", ["-c", 'ulimit -n 512 && exec "$@"', "snapmesh", exe, ...lead]],
  });
  const lowered = logLines(agent).find((l) =>
    l.msg === "max-connections lowered to fit the open file limit"
  );
  assertEquals(lowered?.maxConnections, 307, agent.logs());
  const flood: Deno.TcpConn[] = [];
  const { hostname, port } = new URL(agent.url);
  try {
    for (let i = 0; i < 600; i++) {
      flood.push(await Deno.connect({ hostname, port: Number(port) }));
    }
    // During the flood: answered, by 503 overloaded (the cap is full) or 200.
    const during = await healthz(agent.url);
    assert(
      during.status === 200 || (during.status === 503 && during.code === "overloaded"),
      JSON.stringify(during),
    );
    assert(alive(agent.pid), "the agent is alive during the flood");
    const metrics = await (await fetch(`${agent.url}/metrics`)).text().catch(() => "");
    if (metrics !== "") {
      assertMatch(metrics, /snapmesh_http_rejected_total\{reason="max_connections"\}/);
    }
  } finally {
    for (const conn of flood) conn.close();
  }
  await waitFor(
    "GET /healthz to answer 200 after the flood",
    async () => {
      return (await healthz(agent.url).catch(() => ({ status: 0 }))).status === 200;
    },
    10_000,
    agent.logs,
  );
  assert(alive(agent.pid), "the agent is alive after the flood");
  assert(!/Too many open files/.test(agent.logs()), agent.logs().slice(-3000));
});

Deno.test("idle, slow-header and keep-alive connections are closed after their timeouts", async (t) => {
  await using tmp = await tempDir();
  await using agent = await startAgent({
    dataDir: tmp.path,
    args: ["--idle-timeout", "500ms", "--header-timeout", "300ms", "--body-timeout", "500ms"],
  });
  const closedWithin = async (client: RawClient, min: number, max: number) => {
    const started = Date.now();
    assert(await client.waitClosed(max + 2000), "closed");
    const took = Date.now() - started;
    assert(took >= min - 50 && took <= max + 1500, `closed after ${took} ms`);
  };
  await t.step("a connection that sends nothing: the idle timeout", async () => {
    using client = await RawClient.connect(agent.url);
    await closedWithin(client, 500, 500);
  });
  await t.step("a partial head: the header timeout", async () => {
    using client = await RawClient.connect(agent.url);
    await client.send("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    await closedWithin(client, 300, 300);
  });
  await t.step("a keep-alive connection after its request: the idle timeout", async () => {
    using client = await RawClient.connect(agent.url);
    await client.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assertEquals((await client.readResponse()).status, 200);
    await closedWithin(client, 500, 500);
  });
  const metrics = await (await fetch(`${agent.url}/metrics`)).text();
  assertMatch(metrics, /snapmesh_http_timeouts_total\{kind="idle"\} [2-9]/);
  assertMatch(metrics, /snapmesh_http_timeouts_total\{kind="header"\} 1/);
});

Deno.test("hung uploads are closed after --body-timeout and their descriptors freed; one more than --max-uploads gets 503", async () => {
  await using tmp = await tempDir();
  await using agent = await startAgent({
    dataDir: tmp.path,
    args: ["--body-timeout", "500ms", "--max-uploads", "50"],
  });
  const baseline = fdCount(agent.pid);
  const hung: RawClient[] = [];
  try {
    for (let i = 0; i < 50; i++) {
      const client = await RawClient.connect(agent.url);
      hung.push(client);
      await client.send(
        `PUT /v1/snapshots/hung-${i}/files/mem HTTP/1.1\r\nHost: x\r\n` +
          `Content-Length: ${10 * MiB}\r\n\r\n`,
      );
      await client.send(new Uint8Array(64 * 1024).fill(i + 1));
    }
    // One more while the 50 hold every upload slot (they do for 500 ms at least).
    using extra = await RawClient.connect(agent.url);
    await extra.send(
      "PUT /v1/snapshots/extra/files/mem HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    const refused = await extra.readResponse();
    assertEquals(refused.status, 503, refused.text);
    assertEquals(JSON.parse(refused.text).error.code, "overloaded");
    assertEquals(refused.headers["retry-after"], "1");

    for (const client of hung) assert(await client.waitClosed(5000), "a hung upload was closed");
    await waitFor(
      `descriptors back near the baseline of ${baseline}`,
      () => fdCount(agent.pid) <= baseline + 5,
      5000,
      agent.logs,
    );
  } finally {
    for (const client of hung) client.close();
  }
  // Each is answered 400 invalid_body (the client is gone by then), logged at warn.
  const warnings = () => logLines(agent).filter((l) => l.msg === "request body ended early");
  await waitFor("50 warnings", () => warnings().length >= 50, 5000, agent.logs);
  const lines = logLines(agent);
  const warned = warnings();
  assertEquals(warned.length, 50, agent.logs().slice(-3000));
  assert(warned.every((l) => l.level === "warn" && l.code === "invalid_body"));
  assert(!lines.some((l) => l.level === "error"), agent.logs().slice(-3000));
  assertEquals([...Deno.readDirSync(`${tmp.path}/drafts`)], [], "no drafts left");
  const metrics = await (await fetch(`${agent.url}/metrics`)).text();
  assertMatch(metrics, /snapmesh_http_timeouts_total\{kind="body"\} 50/);
  assertMatch(metrics, /snapmesh_http_rejected_total\{reason="max_uploads"\} 1/);
});

Deno.test("over real HTTP: deep JSON is 400 at once, a cut upload is 400 at warn leaving nothing, 405 with Allow", async () => {
  await using tmp = await tempDir();
  await using agent = await startAgent({ dataDir: tmp.path });

  const small = await fetch(`${agent.url}/v1/snapshots/fn/files/mem`, { method: "PUT", body: "x" });
  assertEquals(small.status, 201, await small.text());
  const deep = '{"labels":' + '{"a":'.repeat(170_000) + '"x"' + "}".repeat(170_001);
  const started = Date.now();
  const refused = await fetch(`${agent.url}/v1/snapshots/fn/commit`, {
    method: "POST",
    body: deep,
  });
  const refusal = await refused.json();
  assertEquals([refused.status, refusal.error.code], [400, "invalid_body"]);
  assertMatch(refusal.error.message, /nests deeper than 64/);
  assert(Date.now() - started < 2000, `took ${Date.now() - started} ms`);

  // An upload whose client hangs up mid-body.
  const client = await RawClient.connect(agent.url);
  await client.send(
    `PUT /v1/snapshots/cut/files/mem HTTP/1.1\r\nHost: x\r\nContent-Length: ${8 * MiB}\r\n\r\n`,
  );
  await client.send(randomBytes(3 * MiB, 5));
  client.close();
  await waitFor(
    "the cut upload to be logged",
    () =>
      logLines(agent).some((l) =>
        l.msg === "http" && l.path === "/v1/snapshots/cut/files/mem" && l.status === 400
      ),
    10_000,
    agent.logs,
  );
  const lines = logLines(agent);
  const cut = lines.find((l) => l.msg === "request body ended early");
  assertEquals([cut?.level, cut?.code], ["warn", "invalid_body"], agent.logs());
  assert(!lines.some((l) => l.level === "error"), agent.logs());
  assertEquals(
    [...Deno.readDirSync(`${tmp.path}/drafts`)].map((e) => e.name),
    ["fn"],
    "nothing of the cut upload is left",
  );

  for (const method of ["POST", "DELETE"]) {
    const response = await fetch(`${agent.url}/v1/snapshots`, { method });
    const body = await response.json();
    assertEquals([response.status, body.error.code], [405, "method_not_allowed"]);
    assertEquals(response.headers.get("allow"), "GET");
  }
  const unknown = await fetch(`${agent.url}/v1/nowhere`);
  assertEquals([unknown.status, (await unknown.json()).error.code], [404, "not_found"]);
});

Deno.test("a chunked PUT of 64 MiB is stored like a sized one", async () => {
  await using tmp = await tempDir();
  await using agent = await startAgent({ dataDir: tmp.path });
  const bytes = randomBytes(64 * MiB, 11);
  let started = Date.now();
  const sized = await fetch(`${agent.url}/v1/snapshots/sized/files/mem`, {
    method: "PUT",
    body: bytes,
  });
  const sizedResult = await sized.json();
  assertEquals(sized.status, 201, JSON.stringify(sizedResult));
  const sizedMs = Date.now() - started;
  // A stream body goes out with Transfer-Encoding: chunked, in uneven pieces.
  let at = 0;
  const pieces = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      const n = Math.min(bytes.length - at, 100_000 + (at % 7_919));
      controller.enqueue(bytes.slice(at, at + n));
      at += n;
    },
  });
  started = Date.now();
  const chunked = await fetch(`${agent.url}/v1/snapshots/chunked/files/mem`, {
    method: "PUT",
    body: pieces,
  });
  const chunkedResult = await chunked.json();
  assertEquals(chunked.status, 201, JSON.stringify(chunkedResult));
  const chunkedMs = Date.now() - started;
  // Chunked framing costs no more than a little: it was 10-20x slower under Deno.serve.
  assert(chunkedMs <= 4 * sizedMs + 2000, `chunked ${chunkedMs} ms, sized ${sizedMs} ms`);
  const expected = await sha256(bytes);
  assertEquals([sizedResult.sha256, chunkedResult.sha256], [expected, expected]);
  assertEquals(chunkedResult.size, 64 * MiB);
  assert(logLines(agent).some((l) => l.msg === "http" && l.method === "PUT" && l.status === 201));
});
