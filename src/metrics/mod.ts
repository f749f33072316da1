/**
 * Prometheus metrics, through `prom-client` with a registry per agent (no
 * global state, so several agents can live in one test process).
 *
 * @module
 */

import client from "prom-client";

/** Gauges read from live agent state at scrape time. */
export interface GaugeSource {
  cacheBytes(): number;
  cacheCapacityBytes(): number;
  cacheEntries(): number;
  cacheReservedBytes(): number;
  pinnedEntries(): number;
  draftBytes(): number;
  journalBytes(): number;
  ready(): boolean;
  pushQueued(): number;
  pullsActive(): number;
  peersUp(): number;
  peersKnown(): number;
}

/** HTTP server state read at scrape time. */
export interface HttpGaugeSource {
  connections(): number;
  uploads(): number;
}

/** Every metric the agent exports. */
export class Metrics {
  readonly registry: client.Registry = new client.Registry();
  readonly cacheHits: client.Counter;
  readonly cacheMisses: client.Counter;
  readonly evictions: client.Counter<"reason">;
  readonly ingestedBytes: client.Counter<"source">;
  readonly servedBytes: client.Counter;
  readonly commits: client.Counter<"result">;
  readonly verifyFailures: client.Counter<"source">;
  readonly journalRecords: client.Counter;
  readonly journalCheckpoints: client.Counter;
  readonly recoverySeconds: client.Gauge;
  readonly pushes: client.Counter;
  readonly pushedBytes: client.Counter;
  readonly pushFailures: client.Counter<"reason">;
  readonly pulls: client.Counter<"result">;
  readonly pullDuration: client.Histogram<"result">;
  readonly originRequests: client.Counter;
  readonly originRetries: client.Counter;
  readonly originErrors: client.Counter;
  readonly httpRequests: client.Counter<"method" | "route" | "status">;
  readonly httpDuration: client.Histogram<"method" | "route">;
  readonly httpRejected: client.Counter<"reason">;
  readonly httpTimeouts: client.Counter<"kind">;
  readonly restoreFaults: client.Counter<"source">;
  readonly restoreFaultSeconds: client.Histogram<"source">;
  readonly restorePrefetchedPages: client.Counter;
  readonly restoreFaultsOutsideWorkingSet: client.Counter;
  readonly restoreSessions: client.Counter<"outcome">;
  readonly peerAuthFailures: client.Counter<"reason">;
  readonly untrustedSnapshots: client.Counter<"source">;
  readonly tlsReloads: client.Counter;

  /** Live restore sessions, read at scrape time. */
  #restores: () => number = () => 0;
  /** What `snapmesh_ready` reads; false until the agent binds its gauges. */
  #ready: () => boolean = () => false;
  /** What the HTTP server gauges read; zero until the server binds them. */
  #http: HttpGaugeSource = { connections: () => 0, uploads: () => 0 };

  constructor() {
    const registers = [this.registry];
    // prom-client's process metrics (CPU seconds, resident memory, open file
    // descriptors, start time); its nodejs_* ones mean little under Deno.
    client.collectDefaultMetrics({ register: this.registry });
    for (const metric of this.registry.getMetricsAsArray()) {
      if (!metric.name.startsWith("process_")) this.registry.removeSingleMetric(metric.name);
    }
    const ready = () => this.#ready();
    new client.Gauge({
      name: "snapmesh_ready",
      help: "1 once recovery finished",
      registers,
      collect() {
        this.set(ready() ? 1 : 0);
      },
    });
    this.cacheHits = new client.Counter({
      name: "snapmesh_cache_hits_total",
      help: "Reads (manifest, file, range, pull) answered from the local cache",
      registers,
    });
    this.cacheMisses = new client.Counter({
      name: "snapmesh_cache_misses_total",
      help: "Reads of snapshots that were not local",
      registers,
    });
    this.evictions = new client.Counter({
      name: "snapmesh_cache_evictions_total",
      help: "Snapshots removed from the cache, by reason (lru, delete)",
      labelNames: ["reason"],
      registers,
    });
    this.ingestedBytes = new client.Counter({
      name: "snapmesh_ingested_bytes_total",
      help: "Bytes that became local, by source (local upload, peer, origin)",
      labelNames: ["source"],
      registers,
    });
    this.servedBytes = new client.Counter({
      name: "snapmesh_served_bytes_total",
      help: "File bytes sent to clients",
      registers,
    });
    this.commits = new client.Counter({
      name: "snapmesh_commits_total",
      help: "Commits, by result (created, unchanged, failed)",
      labelNames: ["result"],
      registers,
    });
    this.verifyFailures = new client.Counter({
      name: "snapmesh_verification_failures_total",
      help: "Chunks or files that failed sha256 verification, by source",
      labelNames: ["source"],
      registers,
    });
    this.journalRecords = new client.Counter({
      name: "snapmesh_journal_records_total",
      help: "Records appended to the journal",
      registers,
    });
    this.journalCheckpoints = new client.Counter({
      name: "snapmesh_journal_checkpoints_total",
      help: "Journal checkpoints written",
      registers,
    });
    this.recoverySeconds = new client.Gauge({
      name: "snapmesh_journal_recovery_seconds",
      help: "Time the last start spent replaying the journal and checking the store",
      registers,
    });
    this.pushes = new client.Counter({
      name: "snapmesh_pushes_total",
      help: "Snapshots uploaded to the origin",
      registers,
    });
    this.pushedBytes = new client.Counter({
      name: "snapmesh_pushed_bytes_total",
      help: "File bytes uploaded to the origin",
      registers,
    });
    this.pushFailures = new client.Counter({
      name: "snapmesh_push_failures_total",
      help: "Failed upload attempts, by reason (error: retried, conflict: given up)",
      labelNames: ["reason"],
      registers,
    });
    this.pullDuration = new client.Histogram({
      name: "snapmesh_pull_duration_seconds",
      help: "Time from the start of a pull to its end, by result (done, failed)",
      labelNames: ["result"],
      buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900],
      registers,
    });
    this.pulls = new client.Counter({
      name: "snapmesh_pulls_total",
      help: "Pulls of snapshots that were not local, by result (done, failed)",
      labelNames: ["result"],
      registers,
    });
    this.originRequests = new client.Counter({
      name: "snapmesh_origin_requests_total",
      help: "Requests sent to the origin, retries included",
      registers,
    });
    this.originRetries = new client.Counter({
      name: "snapmesh_origin_retries_total",
      help: "Origin requests retried after a transient failure",
      registers,
    });
    this.originErrors = new client.Counter({
      name: "snapmesh_origin_errors_total",
      help: "Origin requests that failed after their retries",
      registers,
    });
    this.httpRequests = new client.Counter({
      name: "snapmesh_http_requests_total",
      help: "HTTP requests, by method, route and status",
      labelNames: ["method", "route", "status"],
      registers,
    });
    const http = () => this.#http;
    new client.Gauge({
      name: "snapmesh_http_connections",
      help: "Open HTTP connections",
      registers,
      collect() {
        this.set(http().connections());
      },
    });
    new client.Gauge({
      name: "snapmesh_http_uploads",
      help: "Requests with a large or chunked upload body in progress",
      registers,
      collect() {
        this.set(http().uploads());
      },
    });
    this.httpRejected = new client.Counter({
      name: "snapmesh_http_rejected_total",
      help: "Connections and requests turned away, by reason " +
        "(max_connections, max_uploads: answered 503; bad_request: malformed)",
      labelNames: ["reason"],
      registers,
    });
    this.httpTimeouts = new client.Counter({
      name: "snapmesh_http_timeouts_total",
      help: "Connections closed by a timeout, by kind (idle, header, body, send)",
      labelNames: ["kind"],
      registers,
    });
    this.restoreFaults = new client.Counter({
      name: "snapmesh_restore_faults_total",
      help: "Guest page faults served by restore sessions, by source (local, peer, origin, zero)",
      labelNames: ["source"],
      registers,
    });
    this.restoreFaultSeconds = new client.Histogram({
      name: "snapmesh_restore_fault_seconds",
      help: "Time from reading a page fault to the page installed, by source",
      labelNames: ["source"],
      buckets: [0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10],
      registers,
    });
    this.restorePrefetchedPages = new client.Counter({
      name: "snapmesh_restore_prefetched_pages_total",
      help: "Pages of a working set installed before the guest asked for them",
      registers,
    });
    this.restoreFaultsOutsideWorkingSet = new client.Counter({
      name: "snapmesh_restore_faults_outside_working_set_total",
      help: "Page faults on chunks outside the working set a session prefetched",
      registers,
    });
    this.restoreSessions = new client.Counter({
      name: "snapmesh_restore_sessions_total",
      help: "Restore sessions ended, by outcome " +
        "(vm_exited, ended, failed, shutdown, detached, not_connected)",
      labelNames: ["outcome"],
      registers,
    });
    const restores = () => this.#restores();
    new client.Gauge({
      name: "snapmesh_restore_sessions_active",
      help: "Live restore sessions (listening or serving)",
      registers,
      collect() {
        this.set(restores());
      },
    });
    this.peerAuthFailures = new client.Counter({
      name: "snapmesh_peer_auth_failures_total",
      help: "Requests to /v1/peer/* refused, by reason (missing, bad_signature, expired, " +
        "replayed, body_mismatch, client_token, ...)",
      labelNames: ["reason"],
      registers,
    });
    this.untrustedSnapshots = new client.Counter({
      name: "snapmesh_untrusted_snapshots_total",
      help: "Manifests refused for want of a signature by a trusted key, by source " +
        "(peer, origin, adopted, commit)",
      labelNames: ["source"],
      registers,
    });
    this.tlsReloads = new client.Counter({
      name: "snapmesh_tls_reloads_total",
      help: "Times the TLS certificate, key or CA files were reloaded after a change",
      registers,
    });
    this.httpDuration = new client.Histogram({
      name: "snapmesh_http_request_duration_seconds",
      help: "Time to the response head, by method and route",
      labelNames: ["method", "route"],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers,
    });
  }

  /** Points the live restore sessions gauge at the agent's sessions. */
  bindRestores(active: () => number): void {
    this.#restores = active;
  }

  /** Points the HTTP server gauges at the running server. */
  bindHttp(source: HttpGaugeSource): void {
    this.#http = source;
  }

  /** Registers gauges that read live state at scrape time. */
  bindGauges(source: GaugeSource): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, read: () => number) =>
      new client.Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    gauge("snapmesh_cache_bytes", "Bytes on disk of cached snapshots", () => source.cacheBytes());
    gauge(
      "snapmesh_cache_capacity_bytes",
      "Disk budget of the cache (--cache-size)",
      () => source.cacheCapacityBytes(),
    );
    gauge("snapmesh_cache_entries", "Cached snapshots", () => source.cacheEntries());
    gauge(
      "snapmesh_cache_reserved_bytes",
      "Bytes held by drafts and transfers in progress",
      () => source.cacheReservedBytes(),
    );
    gauge("snapmesh_cache_pinned_entries", "Pinned snapshots", () => source.pinnedEntries());
    gauge("snapmesh_draft_bytes", "Bytes of staged, uncommitted files", () => source.draftBytes());
    gauge("snapmesh_journal_bytes", "Size of the journal file", () => source.journalBytes());
    this.#ready = () => source.ready();

    gauge(
      "snapmesh_push_queued",
      "Snapshots waiting for upload to the origin",
      () => source.pushQueued(),
    );
    gauge("snapmesh_pulls_active", "Pulls in progress", () => source.pullsActive());
    gauge("snapmesh_peers_up", "Peers answering their probes", () => source.peersUp());
    gauge(
      "snapmesh_peers_known",
      "Peers in the list (file, DNS, flags)",
      () => source.peersKnown(),
    );
  }

  /** The exposition text. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
