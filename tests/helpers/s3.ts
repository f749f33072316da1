/**
 * The S3 server tests talk to: s3rver on 127.0.0.1:0 with a temp directory,
 * or a real MinIO / S3 when SNAPMESH_TEST_S3_ENDPOINT is set (with
 * SNAPMESH_TEST_S3_BUCKET and the usual AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY). Each test gets its own key prefix.
 *
 * @module
 */

import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import S3rver from "s3rver";

/** An S3 endpoint with a bucket and a prefix of its own. */
export interface TestS3 extends AsyncDisposable {
  endpoint: string;
  bucket: string;
  prefix: string;
  /** Environment for agents (credentials). */
  env: Record<string, string>;
  client: S3Client;
  /** Keys under the test prefix, relative to it, sorted. */
  keys(): Promise<string[]>;
  get(key: string): Promise<Uint8Array | null>;
  put(key: string, body: Uint8Array): Promise<void>;
}

/** Starts (or connects to) the S3 server for one test. */
export async function startS3(): Promise<TestS3> {
  const external = Deno.env.get("SNAPMESH_TEST_S3_ENDPOINT");
  let endpoint: string;
  let bucket: string;
  let env: Record<string, string>;
  let stop: () => Promise<void>;
  if (external) {
    endpoint = external.replace(/\/+$/, "");
    bucket = Deno.env.get("SNAPMESH_TEST_S3_BUCKET") ?? "snapmesh-test";
    env = {
      AWS_ACCESS_KEY_ID: Deno.env.get("AWS_ACCESS_KEY_ID") ?? "",
      AWS_SECRET_ACCESS_KEY: Deno.env.get("AWS_SECRET_ACCESS_KEY") ?? "",
      AWS_REGION: Deno.env.get("AWS_REGION") ?? "us-east-1",
    };
    stop = async () => {};
  } else {
    const directory = await Deno.makeTempDir({ prefix: "snapmesh-s3rver-" });
    const server = new S3rver({ port: 0, address: "127.0.0.1", directory, silent: true });
    const address = await server.run();
    endpoint = `http://127.0.0.1:${address.port}`;
    bucket = "snapmesh-test";
    env = { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER", AWS_REGION: "us-east-1" };
    stop = async () => {
      await server.close();
      await Deno.remove(directory, { recursive: true }).catch(() => {});
    };
  }
  const client = new S3Client({
    endpoint,
    region: env.AWS_REGION!,
    forcePathStyle: true,
    credentials: {
      accessKeyId: env.AWS_ACCESS_KEY_ID!,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY!,
    },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  try {
    await client.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  }
  const prefix = `t${crypto.randomUUID().slice(0, 8)}`;
  const list = async () => {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(
        new ListObjectsV2Command({
          Bucket: bucket,
          Prefix: `${prefix}/`,
          ContinuationToken: token,
        }),
      );
      for (const o of page.Contents ?? []) keys.push(o.Key!);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys;
  };
  return {
    endpoint,
    bucket,
    prefix,
    env,
    client,
    async keys() {
      return (await list()).map((k) => k.slice(prefix.length + 1)).sort();
    },
    async get(key) {
      try {
        const r = await client.send(
          new GetObjectCommand({ Bucket: bucket, Key: `${prefix}/${key}` }),
        );
        return await r.Body!.transformToByteArray();
      } catch (err) {
        if (
          (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404
        ) {
          return null;
        }
        throw err;
      }
    },
    async put(key, body) {
      await client.send(
        new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/${key}`, Body: body }),
      );
    },
    async [Symbol.asyncDispose]() {
      if (external) {
        const keys = await list();
        for (let i = 0; i < keys.length; i += 1000) {
          await client.send(
            new DeleteObjectsCommand({
              Bucket: bucket,
              Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) },
            }),
          );
        }
      }
      client.destroy();
      await stop();
    },
  };
}
