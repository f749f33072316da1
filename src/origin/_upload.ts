/**
 * One attempt at uploading a file to an S3 origin: multipart (8 MiB parts,
 * 4 at a time) above 8 MiB, aborted when it makes no progress, its parts
 * dropped when it fails. Private to `src/origin/`.
 *
 * @module
 */

import type * as S3 from "@aws-sdk/client-s3";
import { idleWatchdog } from "../util/idle_watchdog.ts";
import type { UploadOptions } from "./origin.ts";
import { StallError } from "./retry.ts";

/** What {@linkcode uploadOnce} needs: the SDK, the object, the file. */
export interface UploadAttempt extends Omit<UploadOptions, "signal"> {
  sdk: typeof S3;
  client: S3.S3Client;
  Upload: typeof import("@aws-sdk/lib-storage").Upload;
  bucket: string;
  key: string;
  /** An upload without progress for this long fails with a {@linkcode StallError}. */
  stallMs: number;
  /** This attempt's signal: aborts the upload. */
  signal: AbortSignal;
}

/** Uploads the file once; the caller retries. */
export async function uploadOnce(attempt: UploadAttempt): Promise<void> {
  const { sdk, client, Upload, bucket, key, size, open, onProgress, stallMs, signal } = attempt;
  // Progress is every byte the upload reads from the file, and every
  // part the origin acknowledges.
  // Abort an upload that makes no progress for the stall timeout.
  let stalled: StallError | null = null;
  const idle = idleWatchdog(stallMs, () => {
    stalled = new StallError(`Upload of ${key} made no progress for ${stallMs} ms`);
    abort();
  });
  const counted = open().pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        idle.touch();
        controller.enqueue(chunk);
      },
    }),
  );
  const upload = new Upload({
    client,
    params: {
      Bucket: bucket,
      Key: key,
      Body: counted,
      ContentLength: size,
      ContentType: "application/octet-stream",
    },
    partSize: 8 * 1024 * 1024,
    queueSize: 4,
    // We abort a failed multipart upload ourselves, best effort: letting
    // the library do it would replace the real error with the abort's
    // (some S3-compatible servers do not implement the abort at all).
    leavePartsOnError: true,
  });
  function abort() {
    upload.abort().catch(() => {});
  }
  signal.addEventListener("abort", abort, { once: true });
  upload.on("httpUploadProgress", (p) => {
    idle.touch();
    if (p.loaded !== undefined) onProgress?.(p.loaded);
  });
  try {
    await upload.done();
  } catch (err) {
    const uploadId = (upload as unknown as { uploadId?: string }).uploadId;
    if (uploadId) {
      // Awaited (for at most 2 s), so a shutdown does not exit before
      // the origin is told to drop the parts.
      await client.send(
        new sdk.AbortMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          UploadId: uploadId,
        }),
        { abortSignal: AbortSignal.timeout(2000) },
      ).catch(() => {});
    }
    throw stalled ?? err;
  } finally {
    idle.stop();
    signal.removeEventListener("abort", abort);
  }
}
