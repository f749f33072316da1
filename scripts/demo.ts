/**
 * `deno task demo`: a three-node snapmesh cluster on loopback, end to end.
 *
 * It starts s3rver (in its own process, behind a small TCP proxy of ours
 * that counts the bytes the origin sends) and three agents `a`, `b`, `c`
 * that know each other through a shared peers file. Then it publishes a
 * synthetic snapshot on `a`, pulls it on `b` and on `c` (from peers), pulls
 * it again on `c` (local), publishes a second snapshot that only the origin
 * keeps, and pulls that on `b` (from the origin). Every pull is checked by
 * hashing the files at the paths the agent answered. Everything it started
 * is stopped and its temp directory removed at the end, on failure and on
 * Ctrl-C (SIGINT) or SIGTERM.
 *
 * Options: --size BYTES (default 64MiB: the "mem" file, 1 MiB chunks, 3 in
 * every 10 all zero).
 *
 * Exit codes: 0 success, 1 failure (message on stderr), 2 bad usage,
 * 130 / 143 interrupted by SIGINT / SIGTERM.
 *
 * @module
 */

import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { createHash, randomFillSync } from "node:crypto";
import { parseArgs } from "node:util";
import { rank } from "../src/cluster/hrw.ts";
import { formatSize, parseSize } from "../src/config/size.ts";
import { type BenchAgent, MiB, ROOT, startAgent, table } from "./bench/_harness.ts";

const TOKEN = "snapmesh-demo";
const BUCKET = "demo";
const NODE_IDS = ["a", "b", "c"] as const;
type NodeId = typeof NODE_IDS[number];
/** The chunk size the agents use (their default), for the synthetic memory file. */
const CHUNK = MiB;
/** s3rver accepts any key pair; the agents read these through the AWS credential chain. */
const CREDENTIALS = {
  AWS_ACCESS_KEY_ID: "S3RVER",
  AWS_SECRET_ACCESS_KEY: "S3RVER",
  AWS_REGION: "us-east-1",
};
/** How long the peers may take to see each other (file reread every 2 s, probes every 1 s). */
const PEERS_TIMEOUT_MS = 15_000;
/** SIGTERM grace before SIGKILL (the agent takes at most 10 s for requests plus 5 s for uploads). */
const STOP_GRACE_MS = 20_000;

/** The demo was stopped by a signal. */
class Interrupted extends Error {
  constructor(readonly signal: Deno.Signal) {
    super(`interrupted by ${signal}`);
  }
}

/** One snapshot as published: its files' bytes and their sha256. */
interface Published {
  name: string;
  files: Map<string, { bytes: Uint8Array<ArrayBuffer>; sha256: string }>;
  /** Bytes in non-zero chunks of all its files: what a pull has to move. */
  dataBytes: number;
}

/** The answer of `POST /v1/snapshots/{name}/pull` (see `PullResult` in src/agent/agent.ts). */
interface PullAnswer {
  name: string;
  digest: string;
  source: "local" | "peer" | "origin";
  bytes: { local: number; peer: number; origin: number };
  ms: number;
  paths: Record<string, string>;
  complete: boolean;
}

/** One row of the result table. */
interface Row {
  step: string;
  node: NodeId;
  seconds: number;
  bytes: PullAnswer["bytes"] | null;
  originSent: number;
  verify: string;
}

/** A TCP proxy in front of the origin that counts the bytes the origin sends back. */
interface CountingProxy {
  url: string;
  /** Bytes from the origin to its clients so far (bodies and HTTP headers). */
  readonly sent: number;
  close(): void;
}

/** A child process the demo started, with how to stop it. */
interface Started {
  label: string;
  pid: number;
  stop(): Promise<void>;
}

/** Everything the demo started, so one `stop()` undoes it whatever happened. */
class Demo {
  readonly work: string;
  readonly signal: AbortSignal;
  readonly #started: Started[] = [];
  #proxy: CountingProxy | null = null;
  #s3: S3Client | null = null;
  #stopping: Promise<void> | null = null;

  constructor(work: string, signal: AbortSignal) {
    this.work = work;
    this.signal = signal;
  }

  track(started: Started): void {
    this.#started.push(started);
  }

  set proxy(proxy: CountingProxy) {
    this.#proxy = proxy;
  }

  set s3(client: S3Client) {
    this.#s3 = client;
  }

  /** Stops the agents first (they may still talk to the origin), then s3rver; removes the temp dir. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const agents = this.#started.filter((s) => s.label !== "s3rver");
      const s3rver = this.#started.filter((s) => s.label === "s3rver");
      await Promise.all(agents.map((s) => s.stop()));
      this.#proxy?.close();
      this.#s3?.destroy();
      await Promise.all(s3rver.map((s) => s.stop()));
      await Deno.remove(this.work, { recursive: true }).catch(() => {});
      if (this.#started.length > 0) {
        const what = [...agents, ...s3rver].map((s) => `${s.label} (pid ${s.pid})`).join(", ");
        console.log(`stopped ${what}; removed ${this.work}`);
      }
    })();
    return this.#stopping;
  }
}

export async function main(args: string[]): Promise<number> {
  let size: number;
  try {
    const { values } = parseArgs({
      args,
      options: { size: { type: "string", default: "64MiB" } },
    });
    size = parseSize(values.size!);
    if (size < CHUNK) throw new RangeError(`--size must be at least ${formatSize(CHUNK)}`);
  } catch (err) {
    console.error(`demo: ${(err as Error).message}\nusage: deno task demo [--size 64MiB]`);
    return 2;
  }

  const controller = new AbortController();
  const onSignal = (signal: Deno.Signal) => () => {
    if (controller.signal.aborted) return;
    console.error(`demo: ${signal}, stopping everything…`);
    controller.abort(new Interrupted(signal));
  };
  const listeners = (["SIGINT", "SIGTERM"] as const).map((s) => [s, onSignal(s)] as const);
  for (const [s, listener] of listeners) Deno.addSignalListener(s, listener);

  const demo = new Demo(await Deno.makeTempDir({ prefix: "snapmesh-demo-" }), controller.signal);
  try {
    await run(demo, size);
    return 0;
  } catch (err) {
    const reason = controller.signal.aborted ? controller.signal.reason : err;
    if (reason instanceof Interrupted) {
      console.error(`demo: ${reason.message}`);
      return reason.signal === "SIGINT" ? 130 : 143;
    }
    console.error(`demo failed: ${(reason as Error)?.message ?? reason}`);
    return 1;
  } finally {
    await demo.stop();
    for (const [s, listener] of listeners) Deno.removeSignalListener(s, listener);
  }
}

async function run(demo: Demo, size: number): Promise<void> {
  const { work, signal } = demo;
  const started = performance.now();
  console.log(`snapmesh demo: work dir ${work}`);
  // The agents take the origin credentials from the environment (as in production), and
  // nothing else from it: a SNAPMESH_* variable of the caller's shell (a config file, a peer
  // list, a cache size) would change what this demo shows.
  for (const key of Object.keys(Deno.env.toObject())) {
    if (key.startsWith("SNAPMESH_")) Deno.env.delete(key);
  }
  for (const [key, value] of Object.entries(CREDENTIALS)) Deno.env.set(key, value);

  // The origin: s3rver in its own process, the agents reaching it through the counting proxy.
  await Deno.mkdir(`${work}/s3`);
  const s3rver = await startS3rver(`${work}/s3`);
  demo.track(s3rver);
  console.log(`s3rver: pid ${s3rver.pid} ${s3rver.url}`);
  const proxy = countingProxy(new URL(s3rver.url));
  demo.proxy = proxy;
  const s3 = new S3Client({
    endpoint: s3rver.url,
    region: CREDENTIALS.AWS_REGION,
    forcePathStyle: true,
    credentials: {
      accessKeyId: CREDENTIALS.AWS_ACCESS_KEY_ID,
      secretAccessKey: CREDENTIALS.AWS_SECRET_ACCESS_KEY,
    },
  });
  demo.s3 = s3;
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }), { abortSignal: signal });
  throwIfAborted(signal);

  // Three agents. Their ports are known only once they listen, so they share a peers file
  // written afterwards; each agent rereads it when it changes and ignores its own line.
  const peersFile = `${work}/peers`;
  const common = [
    "--token",
    TOKEN,
    "--peers-file",
    peersFile,
    "--origin-endpoint",
    proxy.url,
    "--origin-bucket",
    BUCKET,
    "--cache-size",
    "2GiB",
  ];
  // Node a pushes synchronously: a commit then answers only once the origin holds the
  // snapshot, so the demo needs no polling of the push queue, and deleting the origin-only
  // snapshot locally right after its commit cannot race an upload still queued.
  const extra: Record<NodeId, string[]> = { a: ["--push", "sync"], b: [], c: [] };
  const results = await Promise.allSettled(
    NODE_IDS.map((id) =>
      startAgent(["--data-dir", `${work}/${id}`, "--node-id", id, ...extra[id], ...common])
    ),
  );
  const nodes = new Map<NodeId, BenchAgent>();
  results.forEach((result, i) => {
    if (result.status !== "fulfilled") return;
    const id = NODE_IDS[i]!;
    nodes.set(id, result.value);
    demo.track({
      label: `agent ${id}`,
      pid: result.value.pid,
      stop: () => stopAgent(result.value),
    });
  });
  const failed = results.find((r) => r.status === "rejected");
  if (failed) {
    throw new Error(`an agent did not start: ${(failed.reason as Error).message}`);
  }
  const node = (id: NodeId) => nodes.get(id)!;
  for (const id of NODE_IDS) console.log(`agent ${id}: pid ${node(id).pid} ${node(id).url}`);
  await writeAtomically(peersFile, NODE_IDS.map((id) => node(id).url).join("\n") + "\n");
  await waitForPeers([...nodes.values()], signal);
  console.log(`cluster up after ${((performance.now() - started) / 1000).toFixed(1)} s`);

  // Owners are picked by rendezvous hashing over the nodes' URLs. The names are chosen so that
  // each pull shows one path: the first snapshot ranks a (which has it) first, so b and c
  // are sent to it and to each other; the origin-only one ranks b first, so b asks nobody to
  // fetch it for it (an owner ranked above b would pull it from the origin and relay it, and
  // b's bytes would then be peer bytes).
  const urlOf = (id: NodeId) => new URL(node(id).url).origin;
  const peerName = nameRankedAs("demo-peers", ["a", "b", "c"], urlOf);
  const originName = nameRankedAs("demo-origin", ["b"], urlOf);

  const rows: Row[] = [];
  const step = async (
    label: string,
    id: NodeId,
    action: () => Promise<Pick<Row, "seconds" | "bytes" | "verify">>,
  ) => {
    throwIfAborted(signal);
    const sentBefore = proxy.sent;
    const { seconds, bytes, verify } = await action();
    rows.push({
      step: label,
      node: id,
      seconds,
      bytes,
      originSent: proxy.sent - sentBefore,
      verify,
    });
  };

  const snapshot = synthesize(peerName, size);
  await step(`publish ${peerName}`, "a", async () => {
    const t0 = performance.now();
    const verified = await publish(node("a"), snapshot, signal);
    return { seconds: secondsSince(t0), bytes: null, verify: verified };
  });
  for (const id of ["b", "c", "c"] as const) {
    const again = rows.some((r) => r.node === id && r.step.startsWith("pull"));
    await step(`pull ${peerName}${again ? " (again)" : ""}`, id, async () => {
      const t0 = performance.now();
      const answer = await pull(node(id), peerName, signal);
      const seconds = secondsSince(t0);
      return { seconds, bytes: answer.bytes, verify: await verify(answer, snapshot) };
    });
  }

  const originOnly = synthesize(originName, size);
  await step(`publish ${originName}, delete on a`, "a", async () => {
    const t0 = performance.now();
    const verified = await publish(node("a"), originOnly, signal);
    await call(node("a"), "DELETE", `/v1/snapshots/${originName}`, { signal });
    return { seconds: secondsSince(t0), bytes: null, verify: verified };
  });
  await step(`pull ${originName}`, "b", async () => {
    const t0 = performance.now();
    const answer = await pull(node("b"), originName, signal);
    const seconds = secondsSince(t0);
    return { seconds, bytes: answer.bytes, verify: await verify(answer, originOnly) };
  });

  console.log();
  console.log(table([
    ["step", "node", "time (s)", "local", "peer", "origin", "origin sent", "verify"],
    ...rows.map((r) => [
      r.step,
      r.node,
      r.seconds.toFixed(2),
      r.bytes ? formatSize(r.bytes.local) : "-",
      r.bytes ? formatSize(r.bytes.peer) : "-",
      r.bytes ? formatSize(r.bytes.origin) : "-",
      formatSize(r.originSent),
      r.verify,
    ]),
  ]));
  console.log();
  console.log(
    `each snapshot: mem ${formatSize(size)}, vmstate and info.json; ` +
      `${formatSize(snapshot.dataBytes)} in non-zero chunks (zero chunks are never sent)\n` +
      `origin sent ${formatSize(proxy.sent)} in total (bodies and HTTP headers)`,
  );
  console.log(`total ${((performance.now() - started) / 1000).toFixed(1)} s`);

  const problems = expectations(rows, peerName, originName);
  if (problems.length > 0) throw new Error(problems.join("; "));
}

/** What the table has to show; an empty list when it does. */
function expectations(rows: Row[], peerName: string, originName: string): string[] {
  const problems: string[] = [];
  for (const row of rows) {
    if (!row.verify.startsWith("ok")) problems.push(`${row.step} on ${row.node}: ${row.verify}`);
  }
  const pulls = rows.filter((r) => r.step === `pull ${peerName}`);
  for (const row of pulls) {
    if (!row.bytes || row.bytes.peer === 0 || row.bytes.origin !== 0) {
      problems.push(`pull ${peerName} on ${row.node} should come from peers only`);
    }
  }
  const again = rows.find((r) => r.step === `pull ${peerName} (again)`);
  if (!again?.bytes || again.bytes.peer + again.bytes.origin !== 0) {
    problems.push(`the second pull of ${peerName} on c should be local`);
  }
  const fromOrigin = rows.find((r) => r.step === `pull ${originName}`);
  if (!fromOrigin?.bytes || fromOrigin.bytes.origin === 0) {
    problems.push(`pull ${originName} on b should come from the origin`);
  }
  return problems;
}

/** The first `PREFIX-N` whose rendezvous ranking over the node ids starts with `order`. */
function nameRankedAs(prefix: string, order: NodeId[], urlOf: (id: NodeId) => string): string {
  for (let i = 1; i < 1000; i++) {
    const name = `${prefix}-${i}`;
    const ranked = rank(NODE_IDS, name, urlOf);
    if (order.every((id, k) => ranked[k] === id)) return name;
  }
  throw new Error(`No name ${prefix}-N ranks ${order.join(", ")} first`);
}

/**
 * A snapshot like a Firecracker one: a memory file of `size` bytes with 3 of every 10 chunks
 * all zero and the rest random, a small VM state file and an info file.
 */
function synthesize(name: string, size: number): Published {
  const mem = new Uint8Array(size);
  let dataBytes = 0;
  for (let at = 0, i = 0; at < size; at += CHUNK, i++) {
    if (i % 10 < 3) continue;
    const length = Math.min(CHUNK, size - at);
    randomFillSync(mem, at, length);
    dataBytes += length;
  }
  const vmstate = randomFillSync(new Uint8Array(48 * 1024));
  const info = new TextEncoder().encode(
    JSON.stringify({ name, memSize: size, vcpus: 2, createdBy: "snapmesh demo" }) + "\n",
  );
  const files: Published["files"] = new Map();
  for (const [file, bytes] of [["mem", mem], ["vmstate", vmstate], ["info.json", info]] as const) {
    files.set(file, { bytes, sha256: createHash("sha256").update(bytes).digest("hex") });
  }
  return { name, files, dataBytes: dataBytes + vmstate.length + info.length };
}

/** Stages every file on `agent` and commits them; answers the verify cell. */
async function publish(agent: BenchAgent, snapshot: Published, signal: AbortSignal) {
  const mismatched: string[] = [];
  for (const [file, { bytes, sha256 }] of snapshot.files) {
    const staged = await call(agent, "PUT", `/v1/snapshots/${snapshot.name}/files/${file}`, {
      body: bytes,
      expect: 201,
      signal,
    }) as { sha256: string };
    if (staged.sha256 !== sha256) mismatched.push(file);
  }
  const manifest = await call(agent, "POST", `/v1/snapshots/${snapshot.name}/commit`, {
    body: JSON.stringify({ labels: { demo: "true" } }),
    expect: 201,
    signal,
  }) as { files: { name: string; sha256: string }[] };
  for (const f of manifest.files) {
    if (snapshot.files.get(f.name)?.sha256 !== f.sha256) mismatched.push(`${f.name} (manifest)`);
  }
  return mismatched.length === 0
    ? `ok: agent's sha256 of ${snapshot.files.size} files`
    : `MISMATCH: ${mismatched.join(", ")}`;
}

async function pull(agent: BenchAgent, name: string, signal: AbortSignal): Promise<PullAnswer> {
  const answer = await call(agent, "POST", `/v1/snapshots/${name}/pull`, { expect: 200, signal });
  return answer as PullAnswer;
}

/** Hashes the files at the paths a pull answered and compares them with what was published. */
async function verify(answer: PullAnswer, snapshot: Published): Promise<string> {
  const bad: string[] = [];
  for (const [file, { sha256 }] of snapshot.files) {
    const path = answer.paths[file];
    if (!path) {
      bad.push(`${file} (no path)`);
      continue;
    }
    if (await sha256Of(path) !== sha256) bad.push(file);
  }
  if (!answer.complete) bad.push("(complete: false)");
  return bad.length === 0
    ? `ok: sha256 of ${snapshot.files.size} files at paths`
    : `MISMATCH: ${bad.join(", ")}`;
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  for await (const piece of file.readable) hash.update(piece);
  return hash.digest("hex");
}

/** Options of {@linkcode call}. */
interface CallOptions {
  body?: BodyInit;
  /** The status that counts as success. @default 200 */
  expect?: number;
  signal: AbortSignal;
}

/** One `/v1` request with the token; answers the JSON body, throws on another status. */
async function call(
  agent: BenchAgent,
  method: string,
  path: string,
  options: CallOptions,
): Promise<unknown> {
  const response = await fetch(`${agent.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}` },
    body: options.body ?? null,
    signal: options.signal,
  });
  const text = await response.text();
  if (response.status !== (options.expect ?? 200)) {
    throw new Error(`${method} ${agent.url}${path} answered ${response.status}: ${text}`);
  }
  return JSON.parse(text);
}

/** Waits until every agent's `/v1/status` shows all the others healthy. */
async function waitForPeers(agents: BenchAgent[], signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + PEERS_TIMEOUT_MS;
  let last = "";
  while (true) {
    const views = await Promise.all(agents.map(async (agent) => {
      const status = await call(agent, "GET", "/v1/status", { signal }) as {
        nodeId: string;
        peers: { id: string; healthy: boolean; lastError: string | null }[];
      };
      return status;
    }));
    const up = views.every((v) => v.peers.filter((p) => p.healthy).length === agents.length - 1);
    if (up) return;
    last = views.map((v) =>
      `${v.nodeId} sees ${
        v.peers.map((p) => `${p.id} ${p.healthy ? "up" : `down (${p.lastError})`}`).join(", ") ||
        "no peers"
      }`
    ).join("; ");
    if (Date.now() > deadline) {
      throw new Error(`the peers did not see each other within ${PEERS_TIMEOUT_MS} ms: ${last}`);
    }
    await pause(200, signal);
  }
}

/** Writes a file with one rename, so an agent rereading it never sees half of it. */
async function writeAtomically(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

/** Starts scripts/bench/_s3rver.ts and reads its listen line. */
async function startS3rver(directory: string): Promise<Started & { url: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/scripts/bench/_s3rver.ts`, directory],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stop = () => stopChild(child, 5000);
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening on (http:\/\/\S+)/.test(text)) {
    const { done, value } = await reader.read();
    if (done) {
      await stop();
      throw new Error(`s3rver exited before listening: ${text}${await stderr}`);
    }
    text += value;
  }
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
  return {
    label: "s3rver",
    pid: child.pid,
    url: /listening on (http:\/\/\S+)/.exec(text)![1]!,
    stop,
  };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
async function stopChild(child: Deno.ChildProcess, graceMs: number): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* already gone */ }
  if (await settlesWithin(child.status, graceMs)) return;
  try {
    child.kill("SIGKILL");
  } catch { /* gone meanwhile */ }
  await child.status;
}

/** The harness's dispose (SIGTERM, wait), with a SIGKILL if the agent takes too long. */
async function stopAgent(agent: BenchAgent): Promise<void> {
  const stopped = Promise.resolve(agent[Symbol.asyncDispose]());
  if (await settlesWithin(stopped, STOP_GRACE_MS)) return;
  console.error(`demo: agent pid ${agent.pid} ignored SIGTERM for ${STOP_GRACE_MS} ms: SIGKILL`);
  try {
    Deno.kill(agent.pid, "SIGKILL");
  } catch { /* gone meanwhile */ }
  await stopped;
}

/** True when `promise` settles within `ms`. */
async function settlesWithin(promise: PromiseLike<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const settled = Promise.resolve(promise).then(() => true, () => true);
  try {
    return await Promise.race([settled, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Listens on a free loopback port and relays every connection to `target`, counting. */
function countingProxy(target: URL): CountingProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  let sent = 0;
  const relay = async (from: Deno.Conn, to: Deno.Conn, count: boolean) => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buffer);
        if (n === null) return;
        if (count) sent += n;
        for (let at = 0; at < n;) at += await to.write(buffer.subarray(at, n));
      }
    } catch {
      // The other direction closed both connections, or one side reset.
    }
  };
  const serve = async (client: Deno.Conn) => {
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ hostname: target.hostname, port: Number(target.port) });
    } catch {
      client.close();
      return;
    }
    open.add(client).add(upstream);
    // HTTP clients do not half-close: when either side ends, the exchange is over.
    await Promise.race([relay(client, upstream, false), relay(upstream, client, true)]);
    for (const conn of [client, upstream]) {
      open.delete(conn);
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  };
  (async () => {
    for await (const client of listener) serve(client);
  })().catch(() => {/* closed */});
  const { port } = listener.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${port}`,
    get sent() {
      return sent;
    },
    close() {
      try {
        listener.close();
      } catch { /* closed */ }
      for (const conn of open) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
      open.clear();
    },
  };
}

function secondsSince(t0: number): number {
  return (performance.now() - t0) / 1000;
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason;
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
