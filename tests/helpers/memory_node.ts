/**
 * One agent (or its wired services) on a {@linkcode MemoryFileSystem}, under a
 * {@linkcode VirtualClock}, with an optional {@linkcode MemoryOrigin}: no real
 * I/O and no real timers, so unit tests run fast and the same way every time.
 *
 * Work that waits on the clock (batched access times, retries, rate limits,
 * the journal's repair) only moves when the test moves time: use `drive`
 * (`./wait.ts`, or `node.run`) to await such a promise while the clock runs,
 * or `clock.advance(ms)`.
 *
 * @module
 */

import type { Agent, CommitRequest, CommitResult } from "../../src/agent/mod.ts";
import { type Services, wire } from "../../src/agent/wiring.ts";
import { type PublishRequest, SnapshotIndex } from "../../src/cache/mod.ts";
import { resolveServeConfig, type ServeConfig } from "../../src/config/mod.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { Journal } from "../../src/journal/mod.ts";
import {
  chunkCount,
  chunkDigest,
  type Manifest,
  MANIFEST_SCHEMA,
  manifestDigest,
  type ManifestWithDigest,
  MIN_CHUNK_SIZE,
  sha256Hex,
  storedBytes,
} from "../../src/manifest/mod.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { Metrics } from "../../src/metrics/mod.ts";
import type { MemoryOrigin } from "../../src/origin/mod.ts";
import { type PreparedPublish, SnapshotStore } from "../../src/store/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";
import { type Random, seededRandom } from "../../src/util/random.ts";
import { bodyOf } from "./in_process_cluster.ts";
import { openTestAgent } from "./in_process.ts";
import { randomBytes } from "./temp.ts";
import { drive } from "./wait.ts";

/** Options shared by {@linkcode memoryNode} and {@linkcode memoryServices}. */
export interface MemoryNodeOptions {
  /** `serve` flags (by flag name). `scrub-rate` defaults to 0 here. */
  flags?: Record<string, unknown>;
  /** @default a new VirtualClock */
  clock?: VirtualClock;
  /** @default a new MemoryFileSystem on the clock */
  fs?: MemoryFileSystem;
  /** The origin, or null for none. @default null */
  origin?: MemoryOrigin | null;
  /** @default seededRandom("memory-node") */
  random?: Random;
  /** The data directory. @default "/data" */
  dir?: string;
  /** Delay before access times are journaled, in virtual ms. @default 100 */
  touchFlushMs?: number;
}

/** An agent on an in-memory file system. */
export interface MemoryNode extends AsyncDisposable {
  agent: Agent;
  clock: VirtualClock;
  fs: MemoryFileSystem;
  origin: MemoryOrigin | null;
  dir: string;
  config: ServeConfig;
  metrics: Metrics;
  /** Awaits `work` while the virtual clock runs (`drive` in `./wait.ts`). */
  run<T>(work: Promise<T>, maxMs?: number): Promise<T>;
  /** Stages `files` and commits them as `name`. */
  publish(
    name: string,
    files: Record<string, Uint8Array>,
    request?: CommitRequest,
  ): Promise<CommitResult>;
  /**
   * Closes the agent (uploads get no grace) and opens it again on the same
   * file system; `options` given here replace the first ones.
   */
  reopen(options?: Pick<MemoryNodeOptions, "flags" | "origin">): Promise<MemoryNode>;
  close(): Promise<void>;
}

function configOf(options: MemoryNodeOptions, dir: string): ServeConfig {
  return resolveServeConfig({
    flags: { "data-dir": dir, "scrub-rate": "0", ...originFlags(options), ...options.flags },
    env: {},
    file: null,
    cwd: "/",
    hostname: "memory-node",
  });
}

/** The in-memory origin needs no endpoint, but `--push` wants one named. */
function originFlags(options: MemoryNodeOptions): Record<string, string> {
  return options.origin
    ? { "origin-endpoint": "http://origin.test:9000", "origin-bucket": "snapshots" }
    : {};
}

/** Opens an agent on an in-memory data directory (the facade, wired as in production). */
export async function memoryNode(options: MemoryNodeOptions = {}): Promise<MemoryNode> {
  const clock = options.clock ?? new VirtualClock();
  const fs = options.fs ?? new MemoryFileSystem({ now: clock.now });
  const dir = options.dir ?? "/data";
  const origin = options.origin ?? null;
  const random = options.random ?? seededRandom("memory-node");
  const { agent, config, metrics } = await drive(
    clock,
    openTestAgent(
      { "scrub-rate": "0", ...originFlags(options), ...options.flags },
      {
        dir,
        fs,
        origin,
        clock,
        random,
        touchFlushMs: options.touchFlushMs ?? 100,
      },
    ),
  );
  let closed = false;
  const node: MemoryNode = {
    agent,
    clock,
    fs,
    origin,
    dir,
    config,
    metrics,
    run: (work, maxMs) => drive(clock, work, maxMs),
    async publish(name, files, request = {}) {
      for (const [file, bytes] of Object.entries(files)) {
        await drive(
          clock,
          agent.stageFile(name, file, bodyOf(bytes), { contentLength: bytes.length }),
        );
      }
      return await drive(clock, agent.commit(name, request));
    },
    async reopen(more = {}) {
      await node.close();
      return await memoryNode({ ...options, ...more, clock, fs, dir, random });
    },
    async close() {
      if (closed) return;
      closed = true;
      await drive(clock, agent.close({ pushGraceMs: 0 }));
    },
    async [Symbol.asyncDispose]() {
      await node.close();
    },
  };
  return node;
}

/** The services of one data directory, wired, without the facade. */
export interface MemoryServices extends Services, AsyncDisposable {
  clock: VirtualClock;
  fs: MemoryFileSystem;
  dir: string;
  config: ServeConfig;
  metrics: Metrics;
  index: SnapshotIndex;
  journal: Journal;
  /** Awaits `work` while the virtual clock runs (`drive` in `./wait.ts`). */
  run<T>(work: Promise<T>, maxMs?: number): Promise<T>;
  /** Closes the catalog (access times flushed, journal checkpointed and closed). */
  close(): Promise<void>;
}

/**
 * Wires the services of an in-memory data directory over its journal, as
 * `Agent.open` does, without recovery and without starting anything in the
 * background (the pusher, the scrub and membership stay stopped): for tests
 * of one service where the facade's wiring does not matter.
 */
export async function memoryServices(options: MemoryNodeOptions = {}): Promise<MemoryServices> {
  const clock = options.clock ?? new VirtualClock();
  const fs = options.fs ?? new MemoryFileSystem({ now: clock.now });
  const dir = options.dir ?? "/data";
  const config = configOf(options, dir);
  const store = new SnapshotStore(fs, dir);
  await store.init();
  const index = new SnapshotIndex(silentLogger);
  const { journal } = await Journal.open(index, { fs, dir: store.journalDir, log: silentLogger });
  const metrics = new Metrics();
  const services = wire({
    config,
    fs,
    log: silentLogger,
    metrics,
    version: "test",
    origin: options.origin ?? null,
    store,
    index,
    journal,
    clock,
    random: options.random ?? seededRandom("memory-services"),
    touchFlushMs: options.touchFlushMs ?? 100,
    discovery: [],
  });
  index.goLive();
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await drive(
      clock,
      (async () => {
        await services.scrubber?.stop();
        await services.pusher?.stop(0);
        await services.catalog.close();
      })(),
    );
  };
  return {
    ...services,
    clock,
    fs,
    dir,
    config,
    metrics,
    index,
    journal,
    run: (work, maxMs) => drive(clock, work, maxMs),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Options for {@linkcode buildManifest}. */
export interface BuildManifestOptions {
  /** @default 65536 (the smallest chunk size) */
  chunkSize?: number;
  /** @default "2025-01-01T00:00:00.000Z" */
  createdAt?: string;
  labels?: Record<string, string>;
}

/** The manifest of `files` (by name) as a commit would build it. */
export function buildManifest(
  name: string,
  files: Record<string, Uint8Array>,
  options: BuildManifestOptions = {},
): ManifestWithDigest {
  const chunkSize = options.chunkSize ?? MIN_CHUNK_SIZE;
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA,
    name,
    createdAt: options.createdAt ?? "2025-01-01T00:00:00.000Z",
    chunkSize,
    labels: options.labels ?? {},
    files: Object.entries(files).sort(([a], [b]) => (a < b ? -1 : 1)).map(([file, bytes]) => ({
      name: file,
      size: bytes.length,
      sha256: sha256Hex(bytes),
      chunks: Array.from(
        { length: chunkCount(bytes.length, chunkSize) },
        (_, i) => chunkDigest(bytes.subarray(i * chunkSize, (i + 1) * chunkSize)),
      ),
    })),
  };
  return { ...manifest, digest: manifestDigest(manifest) };
}

/** Writes `bytes` to `path` as the agent stores files: zero chunks are holes. */
export async function writeSparse(
  fs: MemoryFileSystem,
  path: string,
  bytes: Uint8Array,
  chunkSize = MIN_CHUNK_SIZE,
): Promise<void> {
  await fs.mkdir(path.slice(0, path.lastIndexOf("/")));
  const handle = await fs.open(path, { write: true, create: true, truncate: true });
  try {
    for (let at = 0; at < bytes.length; at += chunkSize) {
      const chunk = bytes.subarray(at, at + chunkSize);
      if (chunk.some((b) => b !== 0)) await handle.writeAt(chunk, at);
    }
    await handle.truncate(bytes.length);
  } finally {
    handle.close();
  }
}

let prepared = 0;

/**
 * A snapshot directory prepared in `tmp/` from `files`, and the request that
 * publishes it ({@linkcode Catalog.publish}), as a commit builds them.
 */
export async function preparedSnapshot(
  services: Pick<MemoryServices, "fs" | "store">,
  name: string,
  files: Record<string, Uint8Array>,
  options: BuildManifestOptions & { push?: boolean } = {},
): Promise<PublishRequest & { manifest: ManifestWithDigest; prepared: PreparedPublish }> {
  const manifest = buildManifest(name, files, options);
  const sources = new Map<string, string>();
  const dir = `/staged/${++prepared}`;
  for (const [file, bytes] of Object.entries(files)) {
    await writeSparse(services.fs, `${dir}/${file}`, bytes, manifest.chunkSize);
    sources.set(file, `${dir}/${file}`);
  }
  const { digest: _, ...plain } = manifest;
  const ready = await services.store.preparePublish(plain, sources);
  for (const path of sources.values()) await services.fs.remove(path);
  return {
    name,
    manifest,
    digest: manifest.digest,
    bytes: manifest.files.reduce((n, f) => n + storedBytes(f, manifest.chunkSize), 0) +
      ready.manifestBytes.length,
    source: "local",
    push: options.push ?? false,
    from: { kind: "prepared", prepared: ready },
    prepared: ready,
  };
}

/** Bytes of `chunks` chunks of `chunkSize`, distinct per seed; `zero` lists the all-zero chunks. */
export function chunkedBytes(
  chunks: number,
  seed: number,
  options: { chunkSize?: number; zero?: number[]; tail?: number } = {},
): Uint8Array<ArrayBuffer> {
  const chunkSize = options.chunkSize ?? MIN_CHUNK_SIZE;
  const size = chunks * chunkSize - (options.tail ?? 0);
  const out = new Uint8Array(size);
  for (let i = 0; i < chunks; i++) {
    if (options.zero?.includes(i)) continue;
    const piece = randomBytes(chunkSize, seed * 1000 + i + 1);
    out.set(piece.subarray(0, Math.min(chunkSize, size - i * chunkSize)), i * chunkSize);
  }
  return out;
}
