/**
 * The status page without a browser (the Chromium test may be skipped where
 * there is none): its script compiles, and the CSP allows exactly the inline
 * script and style it ships.
 */

import { createHash } from "node:crypto";
import { assert, assertEquals } from "../helpers/assert.ts";
import { STATUS_PAGE } from "../../src/api/status_page.ts";

function inline(tag: string): string {
  const match = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(STATUS_PAGE.html);
  assert(match, `no inline <${tag}>`);
  return match[1]!;
}

function hash(text: string): string {
  return `'sha256-${createHash("sha256").update(text).digest("base64")}'`;
}

Deno.test("status page: the script compiles and the CSP names its exact hashes", () => {
  const script = inline("script");
  // Compiles (a syntax error throws here); nothing runs.
  new Function(script);
  const csp = STATUS_PAGE.headers["Content-Security-Policy"];
  assert(csp.includes(`script-src ${hash(script)}`), csp);
  assert(csp.includes(`style-src ${hash(inline("style"))}`), csp);
  assert(csp.includes("default-src 'none'"), csp);
  // Data is only ever written as text.
  assertEquals(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/.test(script), false);
});
