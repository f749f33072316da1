/**
 * A reader of the node's server-sent events (`/v1/pulls/events`).
 *
 * @module
 */

/** The `data` of each "pulls" (or unnamed) server-sent event of a stream. */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncIterable<string> {
  let rest = "";
  const take = function* (text: string, final: boolean): Generator<string> {
    // Lines may end with CRLF, LF or CR; a CR at the end may be half of a CRLF.
    const raw = rest + text;
    const held = !final && raw.endsWith("\r") ? "\r" : "";
    let buffer = raw.slice(0, raw.length - held.length).replace(/\r\n?/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const field = (line: string, name: string) =>
        line.startsWith(`${name}:`) ? line.slice(name.length + 1).replace(/^ /, "") : null;
      const type = lines.map((l) => field(l, "event")).findLast((v) => v !== null) ?? "pulls";
      const data = lines.map((l) => field(l, "data")).filter((v) => v !== null);
      if (type === "pulls" && data.length > 0) yield data.join("\n");
    }
    rest = buffer + held;
  };
  for await (const text of body.pipeThrough(new TextDecoderStream())) yield* take(text, false);
  yield* take("", true);
}
