import { assertEquals } from "../helpers/assert.ts";
import { sseData } from "../../src/cli/sse.ts";

function streamOf(...pieces: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const piece of pieces) controller.enqueue(encoder.encode(piece));
      controller.close();
    },
  });
}

async function collect(...pieces: string[]): Promise<string[]> {
  const out: string[] = [];
  for await (const data of sseData(streamOf(...pieces))) out.push(data);
  return out;
}

Deno.test("sseData() reads LF, CRLF and CR streams, split anywhere", async () => {
  const text = "event: pulls\nid: 1\ndata: [1]\n\nevent: pulls\ndata: [2]\n\n";
  for (const eol of ["\n", "\r\n", "\r"]) {
    const stream = text.replaceAll("\n", eol);
    assertEquals(await collect(stream), ["[1]", "[2]"], JSON.stringify(eol));
    // Split at every offset, including between the CR and the LF of a CRLF.
    for (let i = 1; i < stream.length; i++) {
      assertEquals(await collect(stream.slice(0, i), stream.slice(i)), ["[1]", "[2]"]);
    }
  }
});

Deno.test("sseData() joins multi-line data and skips other events and comments", async () => {
  assertEquals(
    await collect(
      ": keep-alive\n\n",
      "event: error\ndata: oops\n\n",
      "data: [\ndata:1]\n\n",
      "event: pulls\ndata:[]\n\n",
    ),
    ["[\n1]", "[]"],
  );
});
