/**
 * The agent: a facade over the services of one data directory.
 *
 * @module
 */

export * from "./agent.ts";
export * from "./removal.ts";
export type { CommitRequest, CommitResult, StageResult } from "../drafts/mod.ts";
export type {
  FileInfo,
  OpenedFile,
  PullAccepted,
  PullOptions,
  PullResult,
  SnapshotSummary,
  VerifyResult,
} from "../reads/mod.ts";
export type { FileVerification } from "../store/mod.ts";
export type { RebuildReport } from "../cache/mod.ts";
export type { PeerCredentials } from "./wiring.ts";
export type { AgentRecovery } from "./startup.ts";
