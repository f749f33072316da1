/**
 * The origin a node's configuration names, built once at start by whoever
 * wires the agent (never deep inside it).
 *
 * @module
 */

import type { ServeConfig } from "../config/mod.ts";
import type { Logger } from "../log/mod.ts";
import type { Metrics } from "../metrics/mod.ts";
import type { Origin } from "./origin.ts";
import { S3Origin } from "./s3_origin.ts";

/** The S3 origin of `config`, or null when none is configured. */
export async function openOrigin(
  config: ServeConfig,
  options: { log: Logger; metrics: Metrics },
): Promise<Origin | null> {
  if (config.originEndpoint === null || config.originBucket === null) return null;
  const origin = await S3Origin.create({
    endpoint: config.originEndpoint,
    bucket: config.originBucket,
    prefix: config.originPrefix,
    region: config.originRegion,
    stallTimeoutMs: config.originStallTimeoutMs,
    log: options.log.child({ component: "origin" }),
    createBucket: config.originCreateBucket,
  });
  const { metrics } = options;
  origin.observer = {
    request: () => metrics.originRequests.inc(),
    retry: () => metrics.originRetries.inc(),
    error: () => metrics.originErrors.inc(),
  };
  return origin;
}
