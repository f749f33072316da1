/**
 * Pulls that fail on the node's own storage: a full disk answers 507 and
 * gives back the pull's reservation; any failed pull keeps only the bytes of
 * its verified chunks reserved (for a resume).
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { FaultFileSystem } from "../helpers/fault_fs.ts";
import { memFile, originArgs, startOrigin } from "../helpers/fixtures.ts";
import { errorCode, publish, testNode } from "../helpers/in_process.ts";
import { sha256 } from "../helpers/temp.ts";

const CHUNK = 64 * 1024;

/** Origin flags for an in-process agent (the SDK reads credentials from this process's env). */
function originFlags(o: Awaited<ReturnType<typeof startOrigin>>): Record<string, string> {
  for (const [key, value] of Object.entries(o.s3.env)) Deno.env.set(key, value);
  const args = originArgs(o);
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) flags[args[i]!.slice(2)] = args[i + 1]!;
  return flags;
}

Deno.test("a pull that hits ENOSPC answers 507, removes its partial and releases its reservation", async () => {
  await using o = await startOrigin();
  const flags = { ...originFlags(o), "chunk-size": "64KiB", "scrub-rate": "0" };
  const mem = memFile(40, 1, CHUNK);
  {
    await using source = await testNode({ ...flags, push: "sync" });
    assertEquals((await publish(source, "fn", { mem })).status, 201);
  }
  const fs = new FaultFileSystem();
  await using node = await testNode(flags, { fs });
  fs.faults = { match: (p) => p.includes("/partial/") && p.includes("/files/"), spaceLeft: 0 };
  const pull = await node.request("/v1/snapshots/fn/pull", { method: "POST" });
  assertEquals(pull.status, 507);
  assertEquals(await errorCode(pull), "insufficient_storage");
  assertEquals(node.agent.reservedBytes, 0);
  assertEquals([...Deno.readDirSync(`${node.dir}/partial`)].length, 0);
  fs.faults = {};
  const again = await node.request("/v1/snapshots/fn/pull", { method: "POST" });
  assertEquals(again.status, 200);
  const body = await again.json();
  assertEquals(await sha256(await Deno.readFile(body.paths.mem)), await sha256(mem));
  assertEquals(node.agent.reservedBytes, 0);
});

Deno.test("a pull that fails midway keeps only its verified chunks reserved, and resumes", async () => {
  await using o = await startOrigin();
  const flags = {
    ...originFlags(o),
    "chunk-size": "64KiB",
    "scrub-rate": "0",
    "origin-stall-timeout": "1s",
  };
  const mem = memFile(40, 2, CHUNK);
  {
    await using source = await testNode({ ...flags, push: "sync" });
    assertEquals((await publish(source, "fn", { mem })).status, 201);
  }
  await using node = await testNode(flags);
  // The first file requests get through, then the origin answers 500 to every GET.
  o.proxy.add({ kind: "status", status: 500, method: "GET", path: /files\/mem/, skip: 1 });
  const pull = await node.request("/v1/snapshots/fn/pull", { method: "POST" });
  assertEquals(pull.status, 502, await pull.clone().text());
  await pull.body?.cancel();
  const reserved = node.agent.reservedBytes;
  const total = 28 * CHUNK;
  assert(reserved > 0 && reserved < total / 2, `reserved ${reserved} of ${total}`);
  o.proxy.clear();
  const again = await node.request("/v1/snapshots/fn/pull", { method: "POST" });
  assertEquals(again.status, 200);
  const body = await again.json();
  assert(body.bytes.local > 0, `resumed: ${JSON.stringify(body.bytes)}`);
  assertEquals(body.source, "origin");
  assertEquals(await sha256(await Deno.readFile(body.paths.mem)), await sha256(mem));
  assertEquals(node.agent.reservedBytes, 0);
});
