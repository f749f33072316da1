import { assert, assertEquals } from "../helpers/assert.ts";
import { createLogger } from "../../src/log/mod.ts";

Deno.test("createLogger() writes JSON lines at or above its level", () => {
  const lines: string[] = [];
  const log = createLogger({ level: "info", write: (l) => lines.push(l), base: { node: "n1" } });
  log.debug("hidden");
  log.info("shown", { n: 1 });
  log.child({ requestId: "r" }).error("bad", { error: new Error("boom") });
  assertEquals(lines.length, 2);
  const first = JSON.parse(lines[0]!);
  assertEquals([first.level, first.msg, first.node, first.n], ["info", "shown", "n1", 1]);
  const second = JSON.parse(lines[1]!);
  assertEquals(second.requestId, "r");
  assertEquals(second.error, { name: "Error", message: "boom" });
});

Deno.test("createLogger() never writes secrets", () => {
  const lines: string[] = [];
  const log = createLogger({ write: (l) => lines.push(l) });
  log.info("config", {
    token: "t0p-secret",
    secretAccessKey: "AKIA-secret",
    headers: { Authorization: "Bearer t0p-secret" },
    nested: { password: "pw-secret" },
    endpoint: "http://minio:url-secret@minio.internal:9000",
    error: new Error("cannot reach https://u:err-secret@peer:7070/v1"),
  });
  const text = lines.join("\n");
  assert(text.includes("http://minio:[redacted]@minio.internal:9000"), text);
  for (const secret of ["t0p-secret", "AKIA-secret", "pw-secret", "url-secret", "err-secret"]) {
    assert(!text.includes(secret), secret);
  }
  assert(text.includes("[redacted]"));
});
