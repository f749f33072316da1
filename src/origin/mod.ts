/**
 * The S3/MinIO origin: reads with retries and stall detection, uploads,
 * listing, deletion.
 *
 * @module
 */

export * from "./retry.ts";
export * from "./s3_origin.ts";
export * from "./remote_manifests.ts";
export * from "./pusher.ts";
export * from "./memory_origin.ts";
export * from "./open.ts";
export * from "./origin.ts";
