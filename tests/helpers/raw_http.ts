/**
 * A raw HTTP/1.1 request, path sent byte for byte (like `curl --path-as-is`):
 * fetch() would normalize `..` away before the agent ever saw it.
 *
 * @module
 */

/** Sends `METHOD path` to `baseUrl` as written and returns status and body. */
export async function rawRequest(
  baseUrl: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  payload = "",
): Promise<{ status: number; body: string }> {
  const url = new URL(baseUrl);
  const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
  try {
    const lines = [`${method} ${path} HTTP/1.1`, `Host: ${url.host}`, "Connection: close"];
    if (payload !== "") lines.push(`Content-Length: ${new TextEncoder().encode(payload).length}`);
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    await conn.write(new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n" + payload));
    let text = "";
    const buffer = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
    const body = text.slice(text.indexOf("\r\n\r\n") + 4);
    return { status, body };
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the server.
    }
  }
}
