/**
 * The origin's bucket: a missing one makes the origin unhealthy with the
 * reason (status, log, `snapmesh status`) until it exists; with
 * `--origin-create-bucket` the agent creates it. Real agents, s3rver (or
 * MinIO, see tests/helpers/s3.ts) and the real AWS SDK.
 */

import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  type S3Client,
} from "@aws-sdk/client-s3";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { type AgentProcess, runSnapmesh, startAgent } from "../helpers/agent_process.ts";
import { startS3, type TestS3 } from "../helpers/s3.ts";
import { randomBytes, tempDir } from "../helpers/temp.ts";

const TOKEN = "bucket-token";
const auth = { Authorization: `Bearer ${TOKEN}` };

interface OriginStatus {
  healthy: boolean;
  lastError: string | null;
  bucket: string;
}

async function originStatus(agent: AgentProcess): Promise<OriginStatus> {
  const response = await fetch(`${agent.url}/v1/status`, { headers: auth });
  return (await response.json()).origin;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

async function publish(agent: AgentProcess, name: string): Promise<Response> {
  const put = await fetch(`${agent.url}/v1/snapshots/${name}/files/mem`, {
    method: "PUT",
    body: randomBytes(3 * 1024 * 1024, name.length),
    headers: auth,
  });
  assertEquals(put.status, 201, await put.text());
  return await fetch(`${agent.url}/v1/snapshots/${name}/commit`, {
    method: "POST",
    headers: auth,
  });
}

async function keys(client: S3Client, bucket: string): Promise<string[]> {
  const page = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
  return (page.Contents ?? []).map((o) => o.Key!).sort();
}

/** Empties and deletes a bucket this test made (matters on a shared MinIO). */
async function dropBucket(s3: TestS3, bucket: string): Promise<void> {
  try {
    const all = await keys(s3.client, bucket);
    if (all.length > 0) {
      await s3.client.send(
        new DeleteObjectsCommand({
          Bucket: bucket,
          Delete: { Objects: all.map((Key) => ({ Key })) },
        }),
      );
    }
    await s3.client.send(new DeleteBucketCommand({ Bucket: bucket }));
  } catch {
    // Never created.
  }
}

function agentArgs(s3: TestS3, bucket: string, ...extra: string[]): string[] {
  return [
    "--token",
    TOKEN,
    "--origin-endpoint",
    s3.endpoint,
    "--origin-bucket",
    bucket,
    "--push",
    "sync",
    ...extra,
  ];
}

Deno.test("a missing bucket: origin unhealthy with the reason until it exists, then pushes land", async () => {
  await using s3 = await startS3();
  await using tmp = await tempDir();
  const bucket = `missing-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await using agent = await startAgent({
      dataDir: `${tmp.path}/data`,
      args: agentArgs(s3, bucket),
      env: s3.env,
    });
    await waitFor("the origin to be reported unhealthy", async () => {
      const o = await originStatus(agent);
      return !o.healthy && o.lastError !== null;
    });
    const origin = await originStatus(agent);
    assertMatch(origin.lastError!, new RegExp(`bucket "${bucket}" does not exist`));
    assertMatch(origin.lastError!, /--origin-create-bucket/);
    const warn = agent.logs().split("\n").find((l) => l.includes("origin bucket does not exist"));
    assert(warn && JSON.parse(warn).level === "warn", `a warning in the log:\n${agent.logs()}`);

    const status = await runSnapmesh(["status"], {
      env: { SNAPMESH_NODE: agent.url, SNAPMESH_TOKEN: TOKEN },
    });
    assertEquals(status.code, 0, status.stderr);
    assertMatch(status.stdout, new RegExp(`UNHEALTHY: bucket "${bucket}" does not exist`));

    // A push fails (the commit itself is kept) and the origin stays unhealthy.
    const failed = await publish(agent, "fn-early");
    assertEquals(failed.status, 502, await failed.text());
    assertEquals((await originStatus(agent)).healthy, false);

    // Once the bucket exists, the next push lands and the origin is healthy.
    await s3.client.send(new CreateBucketCommand({ Bucket: bucket }));
    const landed = await publish(agent, "fn-late");
    assertEquals(landed.status, 201, await landed.text());
    assertEquals((await originStatus(agent)).healthy, true);
    // The queued push of the first snapshot is retried and lands too.
    await waitFor("the queued push to land", async () => {
      return (await keys(s3.client, bucket)).includes("fn-early/manifest.json");
    }, 30_000);
    assert((await keys(s3.client, bucket)).includes("fn-late/manifest.json"));
  } finally {
    await dropBucket(s3, bucket);
  }
});

Deno.test("--origin-create-bucket creates a missing bucket at start, and pushes land in it", async () => {
  await using s3 = await startS3();
  await using tmp = await tempDir();
  const bucket = `created-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await using agent = await startAgent({
      dataDir: `${tmp.path}/data`,
      args: agentArgs(s3, bucket, "--origin-create-bucket"),
      env: s3.env,
    });
    await waitFor("the bucket to be created", async () => {
      try {
        await s3.client.send(new HeadBucketCommand({ Bucket: bucket }));
        return true;
      } catch {
        return false;
      }
    });
    await waitFor(
      "the log line",
      () => Promise.resolve(agent.logs().includes("created the origin bucket")),
    );
    const origin = await originStatus(agent);
    assertEquals([origin.bucket, origin.healthy], [bucket, true]);
    const committed = await publish(agent, "fn-created");
    assertEquals(committed.status, 201, await committed.text());
    assertEquals(await keys(s3.client, bucket), [
      "fn-created/files/mem",
      "fn-created/manifest.json",
    ]);
  } finally {
    await dropBucket(s3, bucket);
  }
});
