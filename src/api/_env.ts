/**
 * What every route module of the API shares: the app's dependencies and
 * the Hono environment. Private to `src/api/`.
 *
 * @module
 */

import type { Agent } from "../agent/mod.ts";
import type { HttpRequestInfo } from "../http/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { AuthOptions, Role } from "./auth.ts";

/** Dependencies of {@linkcode createApp}. */
export interface AppDeps {
  /** Resolves with the agent once recovery finished. */
  agent: Promise<Agent>;
  /** True once `agent` has resolved. */
  isReady(): boolean;
  /** Why a ready agent cannot take changes now (`/readyz` answers 503), or null. */
  notReadyReason?(): string | null;
  /** The full-access token (used when `auth` is not given: one token opens everything). */
  token?: string | null;
  /** Roles: full and read tokens, and how peers authenticate. @default from `token` */
  auth?: AuthOptions;
  metrics: Metrics;
  log: Logger;
  nodeId: string;
  version: string;
  /** Aborted when the agent shuts down: event streams end. */
  shutdown?: AbortSignal;
  /** How long `/v1` requests wait for recovery before 503. @default 30000 */
  readyTimeoutMs?: number;
}

/** The Hono environment of the app: per-request variables. */
export type Env = {
  Bindings: Partial<HttpRequestInfo>;
  Variables: { agent: Agent; requestId: string; expected: boolean; role: Role };
};
