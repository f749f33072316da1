import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import {
  backoffMs,
  DEFAULT_RETRY,
  isRetryable,
  StallError,
  withRetries,
} from "../../src/origin/retry.ts";

/** An error shaped like the AWS SDK's service exceptions. */
function sdkError(name: string, status: number): Error {
  const err = new Error(`${name} (injected)`);
  err.name = name;
  (err as unknown as { $metadata: { httpStatusCode: number } }).$metadata = {
    httpStatusCode: status,
  };
  return err;
}

Deno.test("isRetryable: 5xx, throttling and S3's RequestTimeout (a 400) are retried", () => {
  assert(isRetryable(sdkError("InternalError", 500)));
  assert(isRetryable(sdkError("ServiceUnavailable", 503)));
  assert(isRetryable(sdkError("SlowDown", 503)));
  assert(isRetryable(sdkError("TooManyRequests", 429)));
  assert(isRetryable(sdkError("RequestTimeout", 400)), "S3 sends RequestTimeout as HTTP 400");
  assert(isRetryable(new StallError("idle")));
  assert(isRetryable(new TypeError("error sending request: connection reset")));
});

Deno.test("isRetryable: refusals and missing objects are not retried", () => {
  assert(!isRetryable(sdkError("AccessDenied", 403)));
  assert(!isRetryable(sdkError("NoSuchKey", 404)));
  assert(!isRetryable(sdkError("InvalidArgument", 400)));
  assert(!isRetryable("not an error"));
  assert(!isRetryable(new Error("the manifest says 10 bytes")));
});

Deno.test("backoffMs: full jitter under a capped exponential", () => {
  const policy = { attempts: 10, baseMs: 100, capMs: 1000 };
  assertEquals(backoffMs(1, policy, () => 0.999), 99);
  assertEquals(backoffMs(3, policy, () => 0.5), 200);
  assertEquals(backoffMs(9, policy, () => 0.999), 999, "capped");
  assertEquals(backoffMs(2, policy, () => 0), 0);
});

Deno.test("withRetries: retries what is retryable until the budget is spent", async () => {
  let calls = 0;
  const delays: number[] = [];
  const err = await assertRejects(() =>
    withRetries(() => {
      calls++;
      throw sdkError("SlowDown", 503);
    }, {
      policy: { ...DEFAULT_RETRY, attempts: 4 },
      sleep: () => Promise.resolve(),
      onRetry: (_e, _a, delay) => delays.push(delay),
    })
  );
  assertEquals((err as Error).name, "SlowDown");
  assertEquals(calls, 4);
  assertEquals(delays.length, 3);
});

Deno.test("withRetries: stops at the first failure that is not retryable, and returns a success", async () => {
  let calls = 0;
  await assertRejects(() =>
    withRetries(() => {
      calls++;
      throw sdkError("AccessDenied", 403);
    }, { sleep: () => Promise.resolve() })
  );
  assertEquals(calls, 1);
  let n = 0;
  const value = await withRetries(() => {
    if (++n < 3) throw new StallError("idle");
    return Promise.resolve("ok");
  }, { sleep: () => Promise.resolve() });
  assertEquals(value, "ok");
  assertEquals(n, 3);
});
