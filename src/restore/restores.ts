/**
 * Restore sessions of one agent: `POST /v1/snapshots/{name}/restore` makes
 * every file but the memory file local and verified, links them next to a
 * fresh Unix socket inside `--restore-dir`, and listens; Firecracker (its
 * `Uffd` memory backend) connects and sends the guest memory's userfaultfd
 * and region mappings; a {@linkcode RestoreSession} then serves the faults.
 *
 * Lifecycle of a session: `listening` → `serving` → gone (listed no more).
 * It ends when the VM process exits (seen through a pidfd of the PID that
 * `SO_PEERCRED` gave, not through the socket: current Firecracker keeps it
 * open until it exits, older releases close it at once), on `DELETE` (the
 * VM is stopped), when a fault cannot be served (the VM is stopped), or at
 * shutdown (a VM whose whole memory is local gets every page and runs on
 * alone; any other is stopped, since it would hang at its next fault).
 * Its socket, linked files and descriptors are cleaned whichever way it
 * ends. While a session lives, its snapshot is never evicted.
 *
 * @module
 */

import type { CacheBudget, Catalog } from "../cache/mod.ts";
import { normalizePath } from "../config/mod.ts";
import { errorMessage, SnapmeshError } from "../errors.ts";
import type { Puller, PullReady } from "../fetch/mod.ts";
import type { FileSystem } from "../fs/mod.ts";
import type { Logger } from "../log/mod.ts";
import { assertName, type ManifestWithDigest, ZERO_CHUNK } from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import { CorruptChunkError, readVerifiedChunk } from "../store/mod.ts";
import type { Clock } from "../util/clock.ts";
import { POLLIN } from "./libc.ts";
import { parseMappings } from "./mappings.ts";
import { SnapshotMemory } from "./memory_image.ts";
import { type FaultSource, RestoreSession, type SessionOutcome } from "./session.ts";
import { LinuxUffdSys, type UffdSys } from "./uffd_sys.ts";
import {
  acceptUnix,
  listenUnix,
  MAX_SOCKET_PATH,
  peerCredentials,
  receiveWithFds,
} from "./unix_socket.ts";
import type { WorkingSet, WorkingSets } from "./working_sets.ts";

/** A live session as `GET /v1/restores` lists it. */
export interface RestoreInfo {
  id: string;
  name: string;
  digest: string;
  file: string;
  socket: string;
  state: "listening" | "serving" | "ending";
  faults: Record<FaultSource, number>;
  prefetchedPages: number;
  startedAt: string;
  /** The VM process (from `SO_PEERCRED`), once connected. */
  pid: number | null;
  /** Where the working set prefetched came from: a recorded one, the manifest's hot list, none. */
  workingSet: "recorded" | "hot" | null;
  /** Faults on chunks outside that working set. */
  outsideWorkingSet: number;
  /** Fault service time (reading the fault to the page installed) by source, recent faults. */
  latencyUs: Partial<Record<FaultSource, { p50: number; p99: number; samples: number }>>;
}

/** The answer to a restore request. */
export interface RestoreCreated {
  id: string;
  name: string;
  digest: string;
  file: string;
  socket: string;
  /** The other files, ready for Firecracker (linked next to the socket). */
  paths: Record<string, string>;
}

/** Options for {@linkcode Restores}. */
export interface RestoresOptions {
  /** The resolved `--restore-dir`. */
  restoreDir: string;
  faultTimeoutMs: number;
  /** 0: never record. */
  recordWindowMs: number;
  catalog: Catalog;
  budget: CacheBudget;
  puller: Puller;
  workingSets: WorkingSets;
  /** The manifest of a snapshot (local, a peer's, the origin's). */
  findManifest(name: string): Promise<ManifestWithDigest>;
  /** Takes a damaged local copy out of the cache (and refetches it). */
  quarantine(name: string, digest: string, why: string): Promise<void>;
  fs: FileSystem;
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  /** @default LinuxUffdSys */
  sys?: UffdSys;
  /** A session whose VM does not connect within this long ends. @default 300000 */
  connectTimeoutMs?: number;
}

interface Entry {
  id: string;
  name: string;
  manifest: ManifestWithDigest;
  file: string;
  socket: string;
  /** The directory made for this session (removed at the end), or null. */
  ownDir: string | null;
  links: string[];
  startedAt: number;
  state: RestoreInfo["state"];
  release: () => void;
  memory: SnapshotMemory;
  wakeFd: number;
  listenFd: number;
  connFd: number | null;
  pid: number | null;
  session: RestoreSession | null;
  workingSet: RestoreInfo["workingSet"];
  /** Resolves once the connection phase is over (the session, if any, runs on). */
  serving: Promise<void>;
  /** Resolves once the session is gone and cleaned. */
  done: Promise<SessionOutcome>;
  finish(outcome: SessionOutcome, reason: string): void;
}

const SESSION_ID = /^r-[0-9a-f]{12}$/;

/** The restore sessions of an agent. */
export class Restores {
  readonly #o: RestoresOptions;
  readonly #sys: UffdSys;
  readonly #entries = new Map<string, Entry>();
  #closed = false;

  constructor(options: RestoresOptions) {
    this.#o = options;
    this.#sys = options.sys ?? new LinuxUffdSys();
    options.metrics.bindRestores(() => this.#entries.size);
  }

  /** Removes session directories an earlier run left (the directory itself is made on first use). */
  async init(): Promise<void> {
    const { fs, restoreDir, log } = this.#o;
    let names: string[];
    try {
      names = await fs.readDir(restoreDir);
    } catch {
      return; // not made yet
    }
    for (const name of names) {
      if (!SESSION_ID.test(name)) continue;
      await fs.remove(`${restoreDir}/${name}`).catch(() => {});
      log.info("restore: removed the directory of a session from an earlier run", { id: name });
    }
  }

  /** Live sessions. */
  list(): RestoreInfo[] {
    return [...this.#entries.values()].map((e) => this.#info(e));
  }

  /** Starts a session: see the module documentation. */
  async open(name: string, body: { file?: unknown; socket?: unknown }): Promise<RestoreCreated> {
    if (this.#closed) throw new SnapmeshError("shutting_down", "The agent is shutting down");
    const file = body.file ?? "mem";
    if (typeof file !== "string") {
      throw new SnapmeshError("invalid_body", "file must be the name of the memory file");
    }
    assertName("file", file);
    const id = `r-${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
    const socket = this.#socketPath(body.socket, id);

    await this.#o.fs.mkdir(this.#o.restoreDir);
    const { manifest, pull } = await this.#resolve(name);
    if (!manifest.files.some((f) => f.name === file)) {
      throw new SnapmeshError("file_not_found", `Snapshot "${name}" has no file "${file}"`);
    }
    const release = this.#o.budget.use(name);
    const cleanup: (() => Promise<void> | void)[] = [release];
    try {
      await this.#otherFilesReady(name, manifest, file, pull);
      const dir = socket.slice(0, socket.lastIndexOf("/"));
      const ownDir = await this.#prepareDir(dir, id);
      if (ownDir) cleanup.push(() => this.#o.fs.remove(ownDir).catch(() => {}));
      const links: string[] = [];
      cleanup.push(() => this.#removeAll(links));
      const paths = await this.#link(name, manifest, file, pull, dir, links);
      if (await this.#o.fs.statOrNull(socket)) {
        throw new SnapmeshError("invalid_body", `Socket path ${socket} exists already`);
      }
      const memory = SnapshotMemory.open({
        name,
        manifest,
        file,
        catalog: this.#o.catalog,
        puller: this.#o.puller,
        log: this.#o.log,
        pull,
        quarantine: (why) => this.#o.quarantine(name, manifest.digest, why),
      });
      cleanup.push(() => memory.close());
      const listenFd = listenUnix(socket);
      cleanup.push(() => this.#sys.close(listenFd));
      cleanup.push(() => this.#o.fs.remove(socket).catch(() => {}));
      const wakeFd = this.#sys.eventFd();
      const entry = this.#entry({
        id,
        name,
        manifest,
        file,
        socket,
        ownDir,
        links,
        memory,
        listenFd,
        wakeFd,
        release,
      });
      this.#entries.set(id, entry);
      this.#o.log.info("restore: listening for the VM", { id, name, file, socket });
      this.#serve(entry).catch((err) => {
        this.#o.log.error("restore: session failed", { id, error: err });
        entry.finish("failed", errorMessage(err));
      });
      return { id, name, digest: manifest.digest, file, socket, paths };
    } catch (err) {
      for (const undo of cleanup.reverse()) await undo();
      throw err;
    }
  }

  /** Ends session `id` (its VM is stopped). */
  async end(id: string): Promise<{ id: string; ended: true; outcome: SessionOutcome }> {
    const entry = this.#entries.get(id);
    if (!entry) throw new SnapmeshError("not_found", `No restore session "${id}"`);
    entry.finish("ended", "ended on request");
    return { id, ended: true, outcome: await entry.done };
  }

  /** The working set of a snapshot, or 404. */
  async workingSet(name: string): Promise<WorkingSet> {
    const manifest = await this.#o.findManifest(name);
    const set = await this.#o.workingSets.find(name, manifest);
    if (!set) {
      throw new SnapmeshError("not_found", `Snapshot "${name}" has no recorded working set`);
    }
    return set;
  }

  /** Sets the working set of a snapshot. */
  async setWorkingSet(name: string, body: Record<string, unknown>): Promise<WorkingSet> {
    const manifest = await this.#o.findManifest(name);
    return await this.#o.workingSets.put(name, manifest, body, "put");
  }

  /**
   * At shutdown: a session whose whole memory file is local installs every
   * page and detaches (the VM runs on); any other ends and its VM is
   * stopped (it would hang at its next fault with nobody to serve it).
   */
  async shutdown(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#entries.values()].map(async (entry) => {
      const session = entry.session;
      if (session && entry.state === "serving") {
        entry.state = "ending";
        const whole = await session.installAll().catch(() => false);
        if (whole) {
          entry.finish("detached", "the agent shut down; every page was installed");
          return await entry.done;
        }
      }
      entry.finish("shutdown", "the agent shut down before the VM's memory was local");
      await entry.done;
    }));
  }

  // --- internals ------------------------------------------------------------------

  #socketPath(given: unknown, id: string): string {
    const root = this.#o.restoreDir;
    if (given === undefined || given === null) return `${root}/${id}/uffd.sock`;
    if (typeof given !== "string" || !given.startsWith("/")) {
      throw new SnapmeshError("invalid_body", "socket must be an absolute path");
    }
    const normal = normalizePath(given);
    if (normal !== given || !normal.startsWith(`${root}/`)) {
      throw new SnapmeshError(
        "path_not_allowed",
        `Socket path ${given} is not inside the restore directory ${root} (--restore-dir)`,
      );
    }
    if (new TextEncoder().encode(normal).length > MAX_SOCKET_PATH) {
      throw new SnapmeshError(
        "invalid_body",
        `Socket path ${given} is longer than ${MAX_SOCKET_PATH} bytes (a Unix socket limit)`,
      );
    }
    return normal;
  }

  /** The manifest, and the pull in progress when the snapshot is not local. */
  async #resolve(name: string): Promise<{ manifest: ManifestWithDigest; pull: PullReady | null }> {
    const { catalog, puller } = this.#o;
    const entry = catalog.get(name);
    if (entry) {
      catalog.touch(name);
      return { manifest: await catalog.manifestOf(entry), pull: null };
    }
    const pull = puller.start(name);
    const ready = await pull.ready;
    if (!ready.manifest) {
      // Adopting: the manifest exists once every file was hashed.
      const done = await pull.done;
      return { manifest: done.manifest, pull: null };
    }
    return { manifest: ready.manifest, pull: ready };
  }

  /** Every file but the memory file: local and verified (fetched first when pulling). */
  async #otherFilesReady(
    name: string,
    manifest: ManifestWithDigest,
    memoryFile: string,
    pull: PullReady | null,
  ): Promise<void> {
    const { catalog } = this.#o;
    for (const info of manifest.files) {
      if (info.name === memoryFile) continue;
      if (pull) {
        const fi = pull.job.fileIndex(info.name);
        await Promise.all(info.chunks.map((_, i) => pull.job.waitChunk(fi, i)));
        continue;
      }
      const trust = catalog.trust.file(manifest.digest, info.name, info.chunks.length);
      const handle = await catalog.store.openFile(name, info.name);
      try {
        for (let i = 0; i < info.chunks.length; i++) {
          if (info.chunks[i] === ZERO_CHUNK || trust.has(i)) continue;
          await readVerifiedChunk(handle, info, manifest.chunkSize, i, trust);
        }
      } catch (err) {
        if (!(err instanceof CorruptChunkError)) throw err;
        await this.#o.quarantine(name, manifest.digest, `restore: ${err.message}`);
        throw new SnapmeshError(
          "verification_failed",
          `Snapshot "${name}" is damaged on this node (${err.message}); it was quarantined, ` +
            `and a restore again fetches a good copy`,
        );
      } finally {
        handle.close();
      }
    }
  }

  /** Creates the socket's directory when missing; refuses one that leads outside. */
  async #prepareDir(dir: string, id: string): Promise<string | null> {
    const { fs, restoreDir } = this.#o;
    let created: string | null = null;
    if (!(await fs.statOrNull(dir))) {
      await fs.mkdir(dir);
      created = dir === `${restoreDir}/${id}` ? dir : null;
    }
    // A symbolic link inside the restore directory must not lead out of it.
    const [real, root] = await Promise.all([fs.realPath(dir), fs.realPath(restoreDir)]);
    if (real !== root && !real.startsWith(`${root}/`)) {
      if (created) await fs.remove(created).catch(() => {});
      throw new SnapmeshError(
        "path_not_allowed",
        `Socket directory ${dir} leads to ${real}, outside the restore directory ${root}`,
      );
    }
    return created;
  }

  /**
   * Links the other files into `dir` (a copy across file systems), named
   * as in the snapshot. Returns their paths.
   */
  async #link(
    name: string,
    manifest: ManifestWithDigest,
    memoryFile: string,
    pull: PullReady | null,
    dir: string,
    links: string[],
  ): Promise<Record<string, string>> {
    const { fs, catalog } = this.#o;
    const paths: Record<string, string> = {};
    for (const info of manifest.files) {
      if (info.name === memoryFile) continue;
      const target = `${dir}/${info.name}`;
      if (await fs.statOrNull(target)) {
        throw new SnapmeshError(
          "invalid_body",
          `${target} exists already: give each restore its own socket directory`,
        );
      }
      let source = pull
        ? catalog.store.partialFilePath(pull.key, info.name)
        : catalog.store.filePath(name, info.name);
      if (pull && !(await fs.statOrNull(source))) source = catalog.store.filePath(name, info.name);
      try {
        await fs.link(source, target);
      } catch (err) {
        if (!/EXDEV|cross-device|os error 18/i.test(errorMessage(err))) throw err;
        await copyFile(fs, source, target);
      }
      links.push(target);
      paths[info.name] = target;
    }
    return paths;
  }

  async #removeAll(paths: string[]): Promise<void> {
    for (const path of paths) await this.#o.fs.remove(path).catch(() => {});
  }

  #entry(
    init: Pick<
      Entry,
      | "id"
      | "name"
      | "manifest"
      | "file"
      | "socket"
      | "ownDir"
      | "links"
      | "memory"
      | "listenFd"
      | "wakeFd"
      | "release"
    >,
  ): Entry {
    let resolveDone!: (outcome: SessionOutcome) => void;
    const done = new Promise<SessionOutcome>((resolve) => (resolveDone = resolve));
    let finishing = false;
    const entry: Entry = {
      ...init,
      startedAt: this.#o.clock.now(),
      state: "listening",
      connFd: null,
      pid: null,
      session: null,
      workingSet: null,
      serving: Promise.resolve(),
      done,
      finish: (outcome, reason) => {
        if (finishing) return;
        finishing = true;
        entry.state = "ending";
        (async () => {
          if (entry.session) await entry.session.end(outcome, reason);
          else this.#sys.notify(entry.wakeFd); // stops the accept loop
          await entry.serving;
          const final = entry.session?.outcome ?? outcome;
          await this.#cleanup(entry);
          this.#o.metrics.restoreSessions.inc({ outcome: final });
          const level = final === "failed" ? "error" : "info";
          this.#o.log[level]("restore: session ended", {
            id: entry.id,
            name: entry.name,
            outcome: final,
            reason: entry.session?.reason || reason,
            faults: entry.session?.stats.faults,
            prefetchedPages: entry.session?.stats.prefetchedPages,
          });
          resolveDone(final);
        })().catch((err) => {
          this.#o.log.error("restore: cleaning a session failed", { id: entry.id, error: err });
          resolveDone(outcome);
        });
      },
    };
    return entry;
  }

  /** Waits for the VM's connection, then serves it until the session ends. */
  async #serve(entry: Entry): Promise<void> {
    let resolveServing!: () => void;
    entry.serving = new Promise((resolve) => (resolveServing = resolve));
    try {
      await this.#connect(entry);
    } finally {
      resolveServing();
    }
  }

  async #connect(entry: Entry): Promise<void> {
    const sys = this.#sys;
    const { log, clock } = this.#o;
    const deadline = clock.monotonic() + (this.#o.connectTimeoutMs ?? 300_000);
    // 1. The VM connects.
    let conn: number | null = null;
    while (conn === null) {
      const left = Math.max(0, Math.round(deadline - clock.monotonic()));
      const [ready, woken] = await sys.poll([entry.listenFd, entry.wakeFd], left);
      if (entry.state === "ending" || woken) return;
      if (ready! & POLLIN) conn = acceptUnix(entry.listenFd);
      else if (clock.monotonic() >= deadline) {
        entry.finish("ended", "the VM did not connect in time");
        return;
      }
    }
    entry.connFd = conn;
    sys.close(entry.listenFd);
    entry.listenFd = -1;
    // 2. Its one message: the mappings, with the userfaultfd.
    let message = null;
    while (message === null) {
      const left = Math.max(0, Math.round(deadline - clock.monotonic()));
      const [ready, woken] = await sys.poll([conn, entry.wakeFd], Math.min(left, 60_000));
      if (entry.state === "ending" || woken) return;
      if (ready === 0 && clock.monotonic() >= deadline) {
        entry.finish("ended", "the VM connected but sent nothing");
        return;
      }
      const got = receiveWithFds(conn);
      if (got === "closed") {
        entry.finish("ended", "the VM closed the socket without sending its memory");
        return;
      }
      message = got;
    }
    const credentials = peerCredentials(conn);
    entry.pid = credentials.pid;
    const pidfd = sys.pidfdOpen(credentials.pid);
    const [uffd, ...extra] = message.fds;
    for (const fd of extra) sys.close(fd);
    if (uffd === undefined) {
      if (pidfd !== null) sys.close(pidfd);
      throw new Error("the VM sent its mappings without a userfaultfd");
    }
    let regions;
    try {
      regions = parseMappings(message.data, entry.memory.size);
    } catch (err) {
      // The VM cannot run without its memory: stop it, explicitly.
      if (pidfd !== null) sys.kill(pidfd);
      sys.close(uffd);
      if (pidfd !== null) sys.close(pidfd);
      throw new Error(`the VM sent unusable mappings: ${errorMessage(err)}`);
    }
    // 3. The working set first: a recorded one (looked up while the VM
    // already runs), else the manifest's hot list.
    const info = entry.manifest.files.find((f) => f.name === entry.file)!;
    const hot = info.hot && info.hot.length > 0 ? info.hot : null;
    entry.workingSet = hot ? "hot" : null;
    const metrics = this.#o.metrics;
    const session = new RestoreSession({
      id: entry.id,
      sys,
      uffd,
      pidfd,
      regions,
      memory: entry.memory,
      workingSet: null,
      clock,
      log,
      faultTimeoutMs: this.#o.faultTimeoutMs,
      recordWindowMs: this.#o.recordWindowMs <= 0 ? null : this.#o.recordWindowMs,
      onRecorded: (chunks) => {
        this.#o.workingSets.put(
          entry.name,
          entry.manifest,
          { file: entry.file, chunks },
          "recorded",
        )
          .catch((err) => log.warn("restore: could not store the working set", { error: err }));
      },
      observer: {
        fault(source, seconds, outside) {
          metrics.restoreFaults.inc({ source });
          metrics.restoreFaultSeconds.observe({ source }, seconds);
          if (outside) metrics.restoreFaultsOutsideWorkingSet.inc();
        },
        prefetched(pages) {
          metrics.restorePrefetchedPages.inc(pages);
        },
      },
    });
    entry.session = session;
    if (entry.state === "ending") {
      await session.end("ended", "ended while connecting");
      return;
    }
    entry.state = "serving";
    log.info("restore: serving the VM's memory", {
      id: entry.id,
      name: entry.name,
      pid: credentials.pid,
      regions: regions.length,
      pageSize: session.pageSize,
    });
    session.start();
    this.#o.workingSets.find(entry.name, entry.manifest).catch(() => null).then((recorded) => {
      if (recorded && recorded.file === entry.file) {
        entry.workingSet = "recorded";
        session.useWorkingSet(recorded.chunks, { recorded: true });
      } else if (hot) {
        session.useWorkingSet(hot, { recorded: false });
      }
      log.info("restore: working set", {
        id: entry.id,
        from: entry.workingSet,
        chunks: recorded?.chunks.length ?? hot?.length ?? 0,
      });
    });
    session.ended.then(() => entry.finish(session.outcome ?? "ended", session.reason));
  }

  async #cleanup(entry: Entry): Promise<void> {
    const sys = this.#sys;
    if (entry.listenFd >= 0) sys.close(entry.listenFd);
    if (entry.connFd !== null) sys.close(entry.connFd);
    sys.close(entry.wakeFd);
    if (!entry.session) entry.memory.close();
    const { fs } = this.#o;
    await fs.remove(entry.socket).catch(() => {});
    await this.#removeAll(entry.links);
    if (entry.ownDir) await fs.remove(entry.ownDir).catch(() => {});
    entry.release();
    this.#entries.delete(entry.id);
  }

  #info(entry: Entry): RestoreInfo {
    const stats = entry.session?.stats;
    return {
      id: entry.id,
      name: entry.name,
      digest: entry.manifest.digest,
      file: entry.file,
      socket: entry.socket,
      state: entry.state,
      faults: stats ? { ...stats.faults } : { local: 0, peer: 0, origin: 0, zero: 0 },
      prefetchedPages: stats?.prefetchedPages ?? 0,
      startedAt: new Date(entry.startedAt).toISOString(),
      pid: entry.pid,
      workingSet: entry.workingSet,
      outsideWorkingSet: stats?.outsideWorkingSet ?? 0,
      latencyUs: entry.session?.latencyUs() ?? {},
    };
  }
}

async function copyFile(fs: FileSystem, from: string, to: string): Promise<void> {
  const source = await fs.open(from);
  try {
    const target = await fs.open(to, { write: true, createNew: true, mode: 0o444 });
    try {
      const buffer = new Uint8Array(1024 * 1024);
      for (let at = 0;;) {
        const n = await source.readAt(buffer, at);
        if (n <= 0) break;
        await target.writeAt(buffer.subarray(0, n), at);
        at += n;
      }
      await target.sync();
    } finally {
      target.close();
    }
  } finally {
    source.close();
  }
}
