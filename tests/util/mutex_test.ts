import { assertEquals } from "../helpers/assert.ts";
import { KeyedMutex, Mutex } from "../../src/util/mutex.ts";

const tick = () => new Promise((r) => setTimeout(r, 1));

Deno.test("Mutex runs tasks one at a time in order, even when one fails", async () => {
  const mutex = new Mutex();
  const events: string[] = [];
  const task = (name: string, fail = false) =>
    mutex.run(async () => {
      events.push(`start ${name}`);
      await tick();
      events.push(`end ${name}`);
      if (fail) throw new Error(name);
    });
  const results = await Promise.allSettled([task("a"), task("b", true), task("c")]);
  assertEquals(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
  assertEquals(events, ["start a", "end a", "start b", "end b", "start c", "end c"]);
});

Deno.test("KeyedMutex serializes per key and runs keys in parallel", async () => {
  const mutex = new KeyedMutex();
  const events: string[] = [];
  const task = (key: string, name: string) =>
    mutex.run(key, async () => {
      events.push(`start ${name}`);
      await tick();
      events.push(`end ${name}`);
    });
  await Promise.all([task("x", "x1"), task("y", "y1"), task("x", "x2")]);
  assertEquals(events.indexOf("start y1") < events.indexOf("end x1"), true);
  assertEquals(events.indexOf("start x2") > events.indexOf("end x1"), true);
});
