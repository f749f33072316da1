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
import { errorMessage, SnapmeshError } from "../errors.ts";
import type { Puller, PullReady } from "../fetch/mod.ts";
import type { FileSystem } from "../fs/mod.ts";
import type { Logger } from "../log/mod.ts";
import { assertName, type ManifestWithDigest } from "../manifest/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { Clock } from "../util/clock.ts";
import { RestoreFiles } from "./_restore_files.ts";
import { awaitVm } from "./_vm_handshake.ts";
import { SnapshotMemory } from "./memory_image.ts";
import { type FaultSource, RestoreSession, type SessionOutcome } from "./session.ts";
import { LinuxUffdSys, type UffdSys } from "./uffd_sys.ts";
import { listenUnix } from "./unix_socket.ts";
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
  readonly #files: RestoreFiles;
  readonly #entries = new Map<string, Entry>();
  #closed = false;

  constructor(options: RestoresOptions) {
    this.#o = options;
    this.#sys = options.sys ?? new LinuxUffdSys();
    this.#files = new RestoreFiles(options);
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
    const socket = this.#files.socketPath(body.socket, id);

    await this.#o.fs.mkdir(this.#o.restoreDir);
    const { manifest, pull } = await this.#resolve(name);
    if (!manifest.files.some((f) => f.name === file)) {
      throw new SnapmeshError("file_not_found", `Snapshot "${name}" has no file "${file}"`);
    }
    const release = this.#o.budget.use(name);
    const cleanup: (() => Promise<void> | void)[] = [release];
    try {
      const target = { name, manifest, memoryFile: file, pull };
      await this.#files.otherFilesReady(target);
      const dir = socket.slice(0, socket.lastIndexOf("/"));
      const ownDir = await this.#files.prepareDir(dir, id);
      if (ownDir) cleanup.push(() => this.#o.fs.remove(ownDir).catch(() => {}));
      const links: string[] = [];
      cleanup.push(() => this.#files.removeAll(links));
      const paths = await this.#files.link(target, { dir, links });
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
    const vm = await awaitVm(entry, {
      sys,
      clock,
      timeoutMs: this.#o.connectTimeoutMs ?? 300_000,
    });
    if (vm === null) return;
    const { uffd, pidfd, regions } = vm;
    // The working set first: a recorded one (looked up while the VM
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
      pid: vm.pid,
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
    await this.#files.removeAll(entry.links);
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
