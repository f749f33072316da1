/**
 * What an operator watches: /v1/pulls and its event stream, the CLI's pull
 * progress on a terminal, request ids, metrics.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { snapmeshCommand } from "../helpers/agent_process.ts";
import { startCluster } from "../helpers/cluster.ts";
import { randomBytes, tempDir } from "../helpers/temp.ts";
import { waitFor } from "../helpers/wait.ts";

const auth = { Authorization: "Bearer cluster-token" };

Deno.test("/v1/pulls and /v1/pulls/events follow a pull; the CLI draws it on a terminal", async () => {
  await using tmp = await tempDir();
  // a serves slowly (2 MB/s), so the pulls below take a few seconds.
  await using c = await startCluster({
    ids: ["a", "b", "c"],
    dir: tmp.path,
    args: (id) => (id === "a" ? ["--max-egress", "2MB"] : []),
  });
  const a = c.get("a");
  const mem = randomBytes(6 * 1024 * 1024, 1);
  await (await fetch(`${a.url}/v1/snapshots/obs/files/mem`, {
    method: "PUT",
    body: mem,
    headers: auth,
  })).body?.cancel();
  await (await fetch(`${a.url}/v1/snapshots/obs/commit`, { method: "POST", headers: auth })).body
    ?.cancel();

  const b = c.get("b");
  const accepted = await fetch(`${b.url}/v1/snapshots/obs/pull?wait=false`, {
    method: "POST",
    headers: auth,
  });
  assertEquals(accepted.status, 202);
  await accepted.body?.cancel();

  const list = await (await fetch(`${b.url}/v1/pulls`, { headers: auth })).json();
  assertEquals(list.length, 1);
  assertEquals(list[0].name, "obs");
  assertEquals(list[0].bytesTotal, mem.length);
  assertEquals(list[0].state, "running");
  assert("rateBytesPerSecond" in list[0] && "etaSeconds" in list[0] && "bySource" in list[0]);

  // The event stream carries the same list, repeatedly.
  const events = await fetch(`${b.url}/v1/pulls/events`, { headers: auth });
  assertEquals(events.headers.get("content-type"), "text/event-stream");
  const reader = events.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const seen: { bytesDone: number; rateBytesPerSecond: number }[] = [];
  // Until bytes flow and a rate shows (the first events may come before
  // the first chunk), or the pull ends.
  const flowing = () => seen.some((p) => p.bytesDone > 0 && p.rateBytesPerSecond > 0);
  while (seen.length < 4 || (!flowing() && seen.length < 200)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
    for (const match of text.matchAll(/event: pulls\ndata: (.*)\nid: \d+\n\n/g)) {
      const pulls = JSON.parse(match[1]!);
      if (pulls[0]?.name === "obs") seen.push(pulls[0]);
    }
    text = text.slice(text.lastIndexOf("\n\n") + 2);
  }
  await reader.cancel();
  assert(seen.length >= 2, "several events");
  assert(seen.at(-1)!.bytesDone >= seen[0]!.bytesDone);
  assert(seen.some((p) => p.rateBytesPerSecond > 0), "a rate once bytes flow");

  // The CLI on a pseudo-terminal draws the pull from the same stream.
  const [exe, lead] = snapmeshCommand();
  const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const cli = [exe, ...lead, "pull", "obs"].map(quote).join(" ");
  const tty = await new Deno.Command("script", {
    args: ["-qec", cli, "/dev/null"],
    env: { SNAPMESH_NODE: c.get("c").url, SNAPMESH_TOKEN: "cluster-token" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const output = new TextDecoder().decode(tty.stdout);
  assertEquals(tty.code, 0, output);
  assertMatch(output, /pull obs \[#*\.*\]\s+\d+%/);
  assertMatch(output, /mem\t\S+\/snapshots\/obs\/files\/mem/);

  // Every response carries a request id, and the log lines repeat it.
  const response = await fetch(`${b.url}/v1/status`, {
    headers: { ...auth, "X-Request-Id": "trace-42" },
  });
  assertEquals(response.headers.get("x-request-id"), "trace-42");
  await response.body?.cancel();
  const generated = await fetch(`${b.url}/v1/snapshots`, { headers: auth });
  assertMatch(generated.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
  await generated.body?.cancel();
  // The access log line is written after the response; wait for it to reach the pipe.
  await waitFor("b to log the request id", () => /"requestId":"trace-42"/.test(b.logs()), {
    timeoutMs: 10_000,
  });

  // Metrics after the pulls.
  await waitFor(
    "b's pulls to end",
    async () => (await (await fetch(`${b.url}/v1/pulls`, { headers: auth })).json()).length === 0,
    { timeoutMs: 10_000 },
  );
  const metrics = await (await fetch(`${b.url}/metrics`)).text();
  for (
    const line of [
      /snapmesh_pulls_total\{result="done"\} 1/,
      /snapmesh_pull_duration_seconds_count\{result="done"\} 1/,
      /snapmesh_ingested_bytes_total\{source="peer"\} 6291456/,
      /snapmesh_peers_up 2/,
      /snapmesh_peers_known 2/,
      /snapmesh_pulls_active 0/,
      /snapmesh_ready 1/,
      /process_resident_memory_bytes \d+/,
      /process_cpu_seconds_total [\d.]+/,
      /process_open_fds \d+/,
      /snapmesh_http_request_duration_seconds_bucket\{le="0.005",method="GET",route="\/v1\/status"\}/,
    ]
  ) {
    assertMatch(metrics, line);
  }
});
