/**
 * Text forms of listen addresses and absolute paths.
 *
 * @module
 */

/** Parses `host:port` (`[v6]:port` for IPv6; an empty host means all interfaces). */
export function parseListen(text: string): { hostname: string; port: number } | null {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  if (!match) return null;
  const port = Number(match[3]);
  if (port > 65535) return null;
  const hostname = match[1] ?? (match[2] === "" ? "0.0.0.0" : match[2]!);
  return { hostname, port };
}
/** Collapses `.`, `..` and repeated slashes of an absolute path. */
export function normalizePath(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return "/" + out.join("/");
}
/** `host:port`, bracketing IPv6 hosts. */
export function formatListen(listen: { hostname: string; port: number }): string {
  return listen.hostname.includes(":")
    ? `[${listen.hostname}]:${listen.port}`
    : `${listen.hostname}:${listen.port}`;
}
