/**
 * `deno task bench origin`: pull a snapshot (about 30% zero chunks) from the
 * origin into an empty node, against a single `GetObject` stream of the same
 * objects to a file with the same SDK, in the same run.
 *
 * Both sides end with the bytes durable on disk (the pull fsyncs before it
 * answers; the reference fsyncs its file too). The origin is s3rver in its
 * own process.
 *
 * Options: --size-gib N (default 1), --reps N (default 3), --chunk-size (default 1MiB).
 *
 * @module
 */

import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { parseArgs } from "node:util";
import {
  GiB,
  median,
  MiB,
  saveResult,
  sleep,
  startAgent,
  table,
  writeMemFile,
} from "./_harness.ts";

const CREDENTIALS = {
  AWS_ACCESS_KEY_ID: "S3RVER",
  AWS_SECRET_ACCESS_KEY: "S3RVER",
  AWS_REGION: "us-east-1",
};

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      "size-gib": { type: "string", default: "1" },
      reps: { type: "string", default: "3" },
      "chunk-size": { type: "string", default: "1MiB" },
      work: { type: "string", default: "/tmp/snapmesh-bench-origin" },
    },
  });
  const size = Number(values["size-gib"]) * GiB;
  const reps = Number(values.reps);
  const work = values.work!;
  await Deno.remove(work, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${work}/s3`, { recursive: true });
  for (const [k, v] of Object.entries(CREDENTIALS)) Deno.env.set(k, v);

  // The origin, in its own process.
  const s3 = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_s3rver.ts", import.meta.url).pathname, `${work}/s3`],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = s3.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("listening on")) line += (await reader.read()).value ?? "";
  const endpoint = /(http:\/\/\S+)/.exec(line)![1]!;
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  const client = new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  const { CreateBucketCommand } = await import("@aws-sdk/client-s3");
  await client.send(new CreateBucketCommand({ Bucket: "bench" }));

  try {
    // A memory file: 1 MiB pieces, 3 of every 10 zero, the rest random.
    console.error(`bench origin: preparing and uploading a ${size / GiB} GiB snapshot`);
    const mem = `${work}/mem`;
    const nonZero = await writeMemFile(mem, size);
    const common = [
      "--origin-endpoint",
      endpoint,
      "--origin-bucket",
      "bench",
      "--cache-size",
      "100GiB",
      "--chunk-size",
      values["chunk-size"]!,
    ];
    {
      await using uploader = await startAgent([
        "--data-dir",
        `${work}/up`,
        "--push",
        "sync",
        ...common,
      ]);
      const put = await new Deno.Command("curl", {
        args: ["-sf", "-T", mem, `${uploader.url}/v1/snapshots/bench-fn/files/mem`],
        stdout: "null",
      }).output();
      if (!put.success) throw new Error("upload failed");
      const commit = await fetch(`${uploader.url}/v1/snapshots/bench-fn/commit`, {
        method: "POST",
      });
      if (commit.status !== 201) throw new Error(`commit failed: ${await commit.text()}`);
      await commit.body?.cancel();
    }
    await Deno.remove(`${work}/up`, { recursive: true });

    const ours: number[] = [];
    const theirs: number[] = [];
    const originBytes: number[] = [];
    for (let rep = 0; rep < reps; rep++) {
      // Reference: one GetObject stream to a file, then fsync.
      const started = performance.now();
      const response = await client.send(
        new GetObjectCommand({ Bucket: "bench", Key: "bench-fn/files/mem" }),
      );
      const out = await Deno.open(`${work}/reference`, {
        write: true,
        create: true,
        truncate: true,
      });
      for await (const chunk of response.Body!.transformToWebStream()) {
        let at = 0;
        while (at < chunk.length) at += await out.write(chunk.subarray(at));
      }
      await out.syncData();
      out.close();
      theirs.push((performance.now() - started) / 1000);
      await Deno.remove(`${work}/reference`);

      // snapmesh: pull into an empty node.
      const dataDir = `${work}/node-${rep}`;
      await using agent = await startAgent(["--data-dir", dataDir, ...common]);
      await sleep(200);
      const t0 = performance.now();
      const pull = await fetch(`${agent.url}/v1/snapshots/bench-fn/pull`, { method: "POST" });
      const result = await pull.json();
      if (pull.status !== 200) throw new Error(`pull failed: ${JSON.stringify(result)}`);
      ours.push((performance.now() - t0) / 1000);
      originBytes.push(result.bytes.origin);
      await Deno.remove(dataDir, { recursive: true });
    }
    const result = {
      date: new Date().toISOString(),
      sizeBytes: size,
      nonZeroBytes: nonZero,
      chunkSize: values["chunk-size"],
      snapmeshSeconds: ours,
      singleStreamSeconds: theirs,
      originBytes,
      speedup: median(theirs) / median(ours),
      originBytesRatio: median(originBytes) / nonZero,
    };
    console.log(table([
      ["measure", "snapmesh pull (median)", "single GetObject stream (median)", "ratio", "target"],
      [
        `${size / GiB} GiB, 30% zero chunks (s)`,
        median(ours).toFixed(2),
        median(theirs).toFixed(2),
        `${result.speedup.toFixed(2)}x faster`,
        ">= 1.0x",
      ],
      [
        "origin bytes read",
        `${(median(originBytes) / MiB).toFixed(0)} MiB`,
        `non-zero bytes ${(nonZero / MiB).toFixed(0)} MiB`,
        `${result.originBytesRatio.toFixed(3)}x`,
        "<= 1.0x",
      ],
    ]));
    console.log(`\nresults: ${await saveResult("origin", result)}`);
    return 0;
  } finally {
    client.destroy();
    s3.kill("SIGTERM");
    await s3.status;
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
