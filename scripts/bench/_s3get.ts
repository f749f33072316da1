/**
 * Today's vHive remote mode, for the fleet benchmark: one node downloads an
 * object from the S3 server straight to a file (then fsyncs it).
 *
 * Usage: deno run -A scripts/bench/_s3get.ts ENDPOINT BUCKET KEY OUT
 *
 * @module
 */

import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { FetchHttpHandler } from "@smithy/fetch-http-handler";

const [endpoint, bucket, key, out] = Deno.args;
if (!out) {
  console.error("usage: _s3get.ts ENDPOINT BUCKET KEY OUT");
  Deno.exit(2);
}
const client = new S3Client({
  endpoint,
  region: "us-east-1",
  forcePathStyle: true,
  requestHandler: new FetchHttpHandler({ keepAlive: true }),
  requestChecksumCalculation: "WHEN_REQUIRED",
  responseChecksumValidation: "WHEN_REQUIRED",
});
const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
const file = await Deno.open(out, { write: true, create: true, truncate: true });
for await (const chunk of response.Body!.transformToWebStream()) {
  let at = 0;
  while (at < chunk.length) at += await file.write(chunk.subarray(at));
}
await file.syncData();
file.close();
