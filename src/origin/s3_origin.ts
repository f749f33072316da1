/**
 * The origin: any S3-compatible store (MinIO, AWS S3, s3rver), reached with
 * `@aws-sdk/client-s3` through a custom endpoint and path-style addressing.
 *
 * Bucket layout, readable with `mc` or `aws s3 cp`:
 *
 * ```
 * <prefix>/<name>/manifest.json     written last: the commit marker
 * <prefix>/<name>/files/<file>      whole files
 * ```
 *
 * Reads carry their own retries (capped exponential backoff with jitter) and
 * an idle watchdog on every body: the SDK alone can wait forever on a dead
 * connection. Credentials come from the standard AWS environment and
 * credential chain and are never logged.
 *
 * @module
 */

import type * as S3 from "@aws-sdk/client-s3";
import type { Logger } from "../log/mod.ts";
import {
  type ObjectInfo,
  type Origin,
  type OriginHealth,
  type OriginObserver,
  type OriginStats,
  snapshotPrefix,
  type UploadOptions,
} from "./origin.ts";
import { readObjectBody } from "./_object_body.ts";
import { uploadOnce } from "./_upload.ts";
import { DEFAULT_RETRY, type RetryPolicy, StallError, statusOf, withRetries } from "./retry.ts";

/** Options for {@linkcode S3Origin.create}. */
export interface S3OriginOptions {
  endpoint: string;
  bucket: string;
  /** Key prefix, without leading or trailing slashes ("" for none). */
  prefix: string;
  region: string;
  /** A body idle this long is aborted and retried. */
  stallTimeoutMs: number;
  log: Logger;
  retry?: RetryPolicy;
  /** Create the bucket when it does not exist. @default false */
  createBucket?: boolean;
  /** How often a missing bucket is looked for again. @default 15000 */
  bucketRecheckMs?: number;
}

type Sdk = typeof S3;

/** The modules an origin is built from, loaded only when there is one. */
interface SdkModules {
  sdk: Sdk;
  upload: typeof import("@aws-sdk/lib-storage").Upload;
  fetchHandler: typeof import("@smithy/fetch-http-handler").FetchHttpHandler;
}

/** An S3-compatible origin. */
export class S3Origin implements Origin {
  readonly endpoint: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly stats: OriginStats = {
    requests: 0,
    retries: 0,
    errors: 0,
    bytesRead: 0,
    bytesWritten: 0,
  };
  readonly #sdk: Sdk;
  readonly #client: S3.S3Client;
  readonly #upload: typeof import("@aws-sdk/lib-storage").Upload;
  readonly #stallMs: number;
  readonly #log: Logger;
  readonly #retry: RetryPolicy;
  readonly #region: string;
  readonly #createBucket: boolean;
  readonly #bucketRecheckMs: number;
  #healthy = true;
  #lastContact: number | null = null;
  #lastError: string | null = null;
  /** Looks for a missing bucket again, until it exists. */
  #recheck: ReturnType<typeof setInterval> | undefined;
  observer: OriginObserver = {};

  private constructor(
    { sdk, upload, fetchHandler }: SdkModules,
    options: S3OriginOptions,
  ) {
    this.#sdk = sdk;
    this.#upload = upload;
    this.endpoint = options.endpoint;
    this.bucket = options.bucket;
    this.prefix = options.prefix;
    this.#stallMs = options.stallTimeoutMs;
    this.#log = options.log;
    this.#retry = options.retry ?? DEFAULT_RETRY;
    this.#region = options.region;
    this.#createBucket = options.createBucket ?? false;
    this.#bucketRecheckMs = options.bucketRecheckMs ?? 15_000;
    this.#client = new sdk.S3Client({
      endpoint: options.endpoint,
      region: options.region,
      forcePathStyle: true,
      // Retries are ours (they also cover bodies that stall or break after
      // the SDK returned); the SDK would multiply them.
      maxAttempts: 1,
      // Checksums only where S3 requires them: not every S3-compatible
      // server speaks the newer trailing-checksum uploads, and every chunk
      // is verified by sha256 anyway.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // Deno's native fetch: about 30% less CPU per byte than the SDK's
      // default node:http handler running on Deno's Node compatibility layer.
      // No request timeout here: it would also cut a slow but healthy upload.
      // Our own watchdogs abort only what makes no progress.
      requestHandler: new fetchHandler({ keepAlive: true }),
    });
  }

  /** Loads the SDK (only agents with an origin pay for it) and builds the client. */
  static async create(options: S3OriginOptions): Promise<S3Origin> {
    const [sdk, storage, handler] = await Promise.all([
      import("@aws-sdk/client-s3"),
      import("@aws-sdk/lib-storage"),
      import("@smithy/fetch-http-handler"),
    ]);
    return new S3Origin(
      { sdk, upload: storage.Upload, fetchHandler: handler.FetchHttpHandler },
      options,
    );
  }

  snapshotPrefix(name: string): string {
    return snapshotPrefix(this.prefix, name);
  }

  manifestKey(name: string): string {
    return `${this.snapshotPrefix(name)}manifest.json`;
  }

  fileKey(name: string, file: string): string {
    return `${this.snapshotPrefix(name)}files/${file}`;
  }

  /** Health for `/v1/status`. */
  health(): OriginHealth {
    return {
      endpoint: this.endpoint,
      bucket: this.bucket,
      prefix: this.prefix,
      healthy: this.#healthy,
      lastContactMs: this.#lastContact === null ? null : Date.now() - this.#lastContact,
      lastError: this.#lastError,
    };
  }

  /**
   * Checks the origin at start: true when it answers. A bucket that does not
   * exist is created with `createBucket`; otherwise the origin is reported
   * unhealthy with the reason ({@linkcode health}, a warning in the log) and
   * looked for again every `bucketRecheckMs` until it exists.
   */
  async probe(): Promise<boolean> {
    const state = await this.checkBucket();
    return state !== "unreachable";
  }

  /**
   * Looks for the bucket (HeadBucket) and creates it when it is missing and
   * `createBucket` is set. "missing" leaves the origin unhealthy with the
   * reason; "unreachable" means the origin did not answer (see health()).
   */
  async checkBucket(): Promise<"ok" | "created" | "missing" | "unreachable"> {
    try {
      await this.#call(
        "check bucket",
        (signal) =>
          this.#client.send(new this.#sdk.HeadBucketCommand({ Bucket: this.bucket }), {
            abortSignal: signal,
          }),
      );
      return "ok";
    } catch (err) {
      // HeadBucket has no body: a missing bucket is a bare 404.
      if (!isMissingBucket(err) && statusOf(err) !== 404) return "unreachable";
    }
    if (!this.#createBucket) {
      this.#bucketMissing();
      return "missing";
    }
    try {
      await this.#call("create bucket", (signal) =>
        this.#client.send(
          new this.#sdk.CreateBucketCommand({
            Bucket: this.bucket,
            // AWS wants the region named, except for its default one.
            CreateBucketConfiguration: this.#region === "us-east-1"
              ? undefined
              : { LocationConstraint: this.#region as S3.BucketLocationConstraint },
          }),
          { abortSignal: signal },
        ));
    } catch (err) {
      // Another node created it at the same moment: as good as ours.
      if ((err as Error).name !== "BucketAlreadyOwnedByYou") {
        this.#bucketMissing(`it could not be created: ${(err as Error).message}`);
        return "missing";
      }
    }
    this.#bucketFound();
    this.#log.info("created the origin bucket", { bucket: this.bucket });
    return "created";
  }

  /** The bucket does not exist: unhealthy, with the reason, until it does. */
  #bucketMissing(why?: string): void {
    const first = this.#recheck === undefined;
    this.#healthy = false;
    this.#lastError = why
      ? `bucket "${this.bucket}" does not exist and ${why}`
      : `bucket "${this.bucket}" does not exist: create it, ` +
        `or start the agent with --origin-create-bucket`;
    if (!first) return;
    this.#log.warn("origin bucket does not exist; pushes and origin reads fail until it does", {
      bucket: this.bucket,
      reason: this.#lastError,
    });
    this.#recheck = setInterval(() => {
      this.checkBucket().catch(() => {});
    }, this.#bucketRecheckMs);
    // A check in the background must not keep the process alive.
    Deno.unrefTimer(this.#recheck);
  }

  #bucketFound(): void {
    if (this.#recheck === undefined) return;
    clearInterval(this.#recheck);
    this.#recheck = undefined;
    this.#log.info("origin bucket found", { bucket: this.bucket });
  }

  /**
   * Reads an object, or bytes `start..end` (inclusive) of it. Null when it
   * does not exist. Retried; a body idle for the stall timeout is aborted.
   */
  async getObject(
    key: string,
    options: { range?: [number, number]; signal?: AbortSignal } = {},
  ): Promise<Uint8Array | null> {
    try {
      return await this.#call(`get ${key}`, async (signal, answered) => {
        const response = await this.#client.send(
          new this.#sdk.GetObjectCommand({
            Bucket: this.bucket,
            Key: key,
            Range: options.range ? `bytes=${options.range[0]}-${options.range[1]}` : undefined,
          }),
          { abortSignal: signal },
        );
        // The head arrived: from here the body's own watchdog (progress,
        // not total time) is the only one.
        answered();
        const expected = response.ContentLength ?? null;
        return await readObjectBody(
          response.Body as { transformToWebStream(): ReadableStream<Uint8Array> },
          {
            expected,
            key,
            signal,
            stallMs: this.#stallMs,
            countRead: (bytes) => (this.stats.bytesRead += bytes),
          },
        );
      }, options.signal);
    } catch (err) {
      if (statusOf(err) === 404 || (err as Error).name === "NoSuchKey") return null;
      throw err;
    }
  }

  /** Lists every object under `prefix` (recursively). */
  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let token: string | undefined;
    do {
      const page = await this.#call(`list ${prefix}`, (signal) =>
        this.#client.send(
          new this.#sdk.ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            ContinuationToken: token,
          }),
          { abortSignal: signal },
        ));
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        out.push({ key: o.Key, size: o.Size ?? 0, lastModified: o.LastModified?.getTime() ?? 0 });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** Writes a small object in one request. */
  async putBytes(
    key: string,
    bytes: Uint8Array,
    options: { contentType?: string; signal?: AbortSignal } = {},
  ): Promise<void> {
    const contentType = options.contentType ?? "application/json";
    await this.#call(`put ${key}`, (signal) =>
      this.#client.send(
        new this.#sdk.PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: bytes,
          ContentType: contentType,
          ContentLength: bytes.length,
        }),
        { abortSignal: signal },
      ), options.signal);
    this.stats.bytesWritten += bytes.length;
  }

  /**
   * Uploads a local file of `size` bytes; multipart (8 MiB parts, 4 at a
   * time) above 8 MiB. A failed upload starts over, up to the retry policy.
   */
  async uploadFile(key: string, options: UploadOptions): Promise<void> {
    const { open, size, onProgress, signal } = options;
    await this.#call(
      `upload ${key}`,
      async (signal) => {
        await uploadOnce({
          sdk: this.#sdk,
          client: this.#client,
          Upload: this.#upload,
          bucket: this.bucket,
          key,
          size,
          open,
          ...(onProgress ? { onProgress } : {}),
          stallMs: this.#stallMs,
          signal,
        });
      },
      signal,
      { stall: false },
    );
    this.stats.bytesWritten += size;
  }

  /** Deletes one object (missing is fine). */
  async deleteObject(key: string): Promise<void> {
    await this.#call(
      `delete ${key}`,
      (signal) =>
        this.#client.send(new this.#sdk.DeleteObjectCommand({ Bucket: this.bucket, Key: key }), {
          abortSignal: signal,
        }),
    );
  }

  /** Deletes objects in batches of 1000. */
  async deleteObjects(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const result = await this.#call("delete objects", (signal) =>
        this.#client.send(
          new this.#sdk.DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
          }),
          { abortSignal: signal },
        ));
      const failed = result.Errors ?? [];
      if (failed.length > 0) {
        throw new Error(
          `Origin refused to delete ${failed.length} object(s), first ${failed[0]!.Key}: ${
            failed[0]!.Message
          }`,
        );
      }
    }
  }

  /**
   * Runs one request with retries. Each attempt gets its own abort signal,
   * fired by the caller's signal or by the stall watchdog (which guards the
   * wait for the response head; bodies are guarded by #readBody).
   */
  async #call<T>(
    what: string,
    attemptFn: (signal: AbortSignal, answered: () => void) => Promise<T>,
    outer?: AbortSignal,
    options: { stall?: boolean } = {},
  ): Promise<T> {
    try {
      const result = await withRetries(async () => {
        // Aborted before this attempt began: no listener would ever fire.
        outer?.throwIfAborted();
        this.stats.requests++;
        this.observer.request?.();
        const controller = new AbortController();
        const onOuter = () => controller.abort(outer!.reason);
        outer?.addEventListener("abort", onOuter, { once: true });
        let watchdog = options.stall === false ? undefined : setTimeout(
          () =>
            controller.abort(
              new StallError(`Origin did not answer ${what} for ${this.#stallMs} ms`),
            ),
          this.#stallMs,
        );
        try {
          return await attemptFn(controller.signal, () => {
            clearTimeout(watchdog);
            watchdog = undefined;
          });
        } catch (err) {
          // An abort by the watchdog surfaces as an AbortError: report the stall.
          if (controller.signal.aborted && controller.signal.reason instanceof StallError) {
            throw controller.signal.reason;
          }
          throw err;
        } finally {
          clearTimeout(watchdog);
          outer?.removeEventListener("abort", onOuter);
        }
      }, {
        policy: this.#retry,
        signal: outer,
        onRetry: (err, attempt, delay) => {
          this.stats.retries++;
          this.observer.retry?.(what, err);
          this.#log.debug("origin: retrying", { what, attempt, delayMs: delay, error: err });
        },
      });
      this.#healthy = true;
      this.#lastContact = Date.now();
      this.#bucketFound();
      return result;
    } catch (err) {
      if (isMissingBucket(err)) {
        // A 404, but not the "no such object" kind: nothing works until it exists.
        this.stats.errors++;
        this.observer.error?.(what, err);
        this.#lastContact = Date.now();
        this.#bucketMissing();
        throw err;
      }
      const status = statusOf(err);
      if (status === 404 || (err as Error).name === "NoSuchKey") {
        this.#healthy = true;
        this.#lastContact = Date.now();
        throw err;
      }
      this.stats.errors++;
      this.observer.error?.(what, err);
      this.#healthy = false;
      this.#lastError = `${what}: ${(err as Error).message}`;
      throw err;
    }
  }
}

/** True when S3 says the bucket itself does not exist (also a 404). */
function isMissingBucket(err: unknown): boolean {
  return (err as Error)?.name === "NoSuchBucket" ||
    (err as { Code?: string })?.Code === "NoSuchBucket";
}
