/**
 * Request heads: finding where one ends in a buffer, and parsing it strictly
 * (RFC 9112 §2-§7). Pure functions over bytes; the connection does the I/O.
 *
 * @module
 */

/** Longest request line accepted (method, target and version). */
export const MAX_REQUEST_LINE = 8 * 1024;
/** Largest header block accepted (all field lines and their line ends). */
export const MAX_HEADER_BYTES = 64 * 1024;
/** Most header fields accepted. */
export const MAX_HEADER_FIELDS = 100;

/** A request the server refuses before the handler sees it. */
export class HttpParseError extends Error {
  readonly status: 400 | 414 | 431 | 501 | 505;

  constructor(status: HttpParseError["status"], message: string) {
    super(message);
    this.name = "HttpParseError";
    this.status = status;
  }
}

/** What the server needs from a parsed request head. */
export interface RequestHead {
  method: string;
  /** The request target as sent, origin-form (starts with `/`). */
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: 0 | 1;
  /** Field names lowercased, values trimmed, in the order sent. */
  headers: [string, string][];
  /** The Host field value; null when absent (HTTP/1.0). */
  host: string | null;
  /** Declared body length; null when absent or chunked. */
  contentLength: number | null;
  chunked: boolean;
  /** The client asked for the connection to stay open (by default in 1.1). */
  keepAlive: boolean;
  expectContinue: boolean;
}

const CR = 13;
const LF = 10;

/**
 * Where the head starting at `start` ends (the offset just past its empty
 * line), or -1 when more bytes are needed. `scanned` is where the previous
 * call stopped (to avoid rescanning); the result's `scanned` is passed back.
 * Throws 414/431 as soon as a limit is exceeded, without waiting for more.
 */
export function findHeadEnd(
  buf: Uint8Array,
  start: number,
  end: number,
  state: { scanned: number; lineEnd: number },
): number {
  let from = Math.max(state.scanned, start);
  while (true) {
    const lf = buf.indexOf(LF, from);
    if (lf === -1 || lf >= end) break;
    if (state.lineEnd === -1) {
      // The request line ended.
      if (lf - start > MAX_REQUEST_LINE + 1) throw requestLineTooLong();
      state.lineEnd = lf + 1;
    } else if (isEmptyLineAt(buf, from, lf)) {
      return lf + 1;
    } else if (lf + 1 - state.lineEnd > MAX_HEADER_BYTES) {
      throw headersTooLarge();
    }
    from = lf + 1;
    state.scanned = from;
  }
  // An incomplete line: is it already over a limit?
  if (state.lineEnd === -1) {
    if (end - start > MAX_REQUEST_LINE + 1) throw requestLineTooLong();
  } else if (end - state.lineEnd > MAX_HEADER_BYTES) {
    throw headersTooLarge();
  }
  return -1;
}

/** True when the line from `from` to the LF at `lf` is empty (`\n` or `\r\n`). */
function isEmptyLineAt(buf: Uint8Array, from: number, lf: number): boolean {
  return lf === from || (lf === from + 1 && buf[from] === CR);
}

function requestLineTooLong(): HttpParseError {
  return new HttpParseError(414, `Request line longer than ${MAX_REQUEST_LINE} bytes`);
}

function headersTooLarge(): HttpParseError {
  return new HttpParseError(431, `Header block larger than ${MAX_HEADER_BYTES} bytes`);
}

/** tchar (RFC 9110 §5.6.2), by byte. */
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TOKEN[c.charCodeAt(0)] = 1;
}

const decoder = new TextDecoder();

/** Header bytes as a string, one char per byte (field values are ISO-8859-1 at most). */
function latin1(buf: Uint8Array, start: number, end: number, ascii: boolean): string {
  if (ascii) return decoder.decode(buf.subarray(start, end));
  let out = "";
  for (let at = start; at < end; at += 4096) {
    out += String.fromCharCode(...buf.subarray(at, Math.min(end, at + 4096)));
  }
  return out;
}

/** Parses the head in `buf[start, end)` (as found by {@linkcode findHeadEnd}). */
export function parseHead(buf: Uint8Array, start: number, end: number): RequestHead {
  // One pass over the bytes: no NUL, no bare CR, and note non-ASCII bytes.
  let ascii = true;
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b === 0) throw new HttpParseError(400, "NUL byte in the request head");
    if (b === CR && buf[i + 1] !== LF) throw new HttpParseError(400, "Bare CR in the request head");
    if (b >= 0x80) ascii = false;
  }
  const text = latin1(buf, start, end, ascii);
  const lines = text.split("\n");
  // The last two "lines" are the empty line and what follows its LF.
  lines.length -= 2;
  const requestLine = stripCr(lines[0]!);
  const { method, target, minor } = parseRequestLine(requestLine);

  const fieldCount = lines.length - 1;
  if (fieldCount > MAX_HEADER_FIELDS) {
    throw new HttpParseError(431, `More than ${MAX_HEADER_FIELDS} header fields`);
  }
  const headers: [string, string][] = [];
  let host: string | null = null;
  let hosts = 0;
  let contentLength: number | null = null;
  let transferEncoding: string | null = null;
  let connection = "";
  let expect = "";
  for (let i = 1; i < lines.length; i++) {
    const line = stripCr(lines[i]!);
    const first = line.charCodeAt(0);
    if (first === 0x20 || first === 0x09) {
      // RFC 9112 §5.2: obsolete line folding; we reject it.
      throw new HttpParseError(400, "Folded header lines are not accepted");
    }
    const colon = line.indexOf(":");
    if (colon <= 0) throw new HttpParseError(400, "A header line has no field name");
    for (let j = 0; j < colon; j++) {
      if (TOKEN[line.charCodeAt(j)] !== 1) {
        // Whitespace before the colon included (RFC 9112 §5.1: must be rejected).
        throw new HttpParseError(
          400,
          `Invalid header field name ${JSON.stringify(line.slice(0, colon))}`,
        );
      }
    }
    const name = line.slice(0, colon).toLowerCase();
    const value = trimOws(line.slice(colon + 1));
    for (let j = 0; j < value.length; j++) {
      const c = value.charCodeAt(j);
      if ((c < 0x20 && c !== 0x09) || c === 0x7f) {
        throw new HttpParseError(400, `Invalid character in header field "${name}"`);
      }
    }
    headers.push([name, value]);
    switch (name) {
      case "host":
        hosts++;
        host = value;
        break;
      case "content-length":
        contentLength = mergeContentLength(contentLength, value);
        break;
      case "transfer-encoding":
        transferEncoding = transferEncoding === null ? value : `${transferEncoding}, ${value}`;
        break;
      case "connection":
        connection = connection === "" ? value : `${connection}, ${value}`;
        break;
      case "expect":
        expect = value;
        break;
    }
  }

  if (minor === 1 && hosts !== 1) {
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1.
    throw new HttpParseError(
      400,
      hosts === 0 ? "Missing Host header" : "More than one Host header",
    );
  }
  if (hosts > 1) throw new HttpParseError(400, "More than one Host header");
  if (host !== null && !VALID_HOST.test(host)) {
    throw new HttpParseError(400, `Invalid Host header ${JSON.stringify(host)}`);
  }

  let chunked = false;
  if (transferEncoding !== null) {
    // RFC 9112 §6.1-6.3: both framings at once is how requests get smuggled.
    if (contentLength !== null) {
      throw new HttpParseError(400, "Content-Length and Transfer-Encoding together");
    }
    if (minor === 0) throw new HttpParseError(400, "Transfer-Encoding in an HTTP/1.0 request");
    const codings = transferEncoding.split(",").map((c) => c.trim().toLowerCase());
    if (codings.length !== 1 || codings[0] !== "chunked") {
      if (codings.at(-1) === "chunked" && codings.filter((c) => c === "chunked").length === 1) {
        throw new HttpParseError(501, `Transfer-Encoding ${transferEncoding} is not supported`);
      }
      if (codings.includes("chunked")) {
        throw new HttpParseError(
          400,
          `Invalid Transfer-Encoding ${JSON.stringify(transferEncoding)}`,
        );
      }
      throw new HttpParseError(501, `Transfer-Encoding ${transferEncoding} is not supported`);
    }
    chunked = true;
  }

  const options = connection.toLowerCase().split(",").map((c) => c.trim());
  const keepAlive = options.includes("close")
    ? false
    : minor === 1 || options.includes("keep-alive");
  const expectContinue = minor === 1 && expect.toLowerCase() === "100-continue";
  return {
    method,
    target,
    minor,
    headers,
    host,
    contentLength,
    chunked,
    keepAlive,
    expectContinue,
  };
}

/** reg-name, IPv4 or [IPv6], with an optional port (RFC 3986 §3.2.2); may be empty. */
const VALID_HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::\d{0,5})?$/;

function parseRequestLine(line: string): { method: string; target: string; minor: 0 | 1 } {
  const firstSpace = line.indexOf(" ");
  const lastSpace = line.lastIndexOf(" ");
  if (firstSpace <= 0 || lastSpace === firstSpace) {
    throw new HttpParseError(400, "Malformed request line");
  }
  const method = line.slice(0, firstSpace);
  for (let i = 0; i < method.length; i++) {
    if (TOKEN[method.charCodeAt(i)] !== 1) throw new HttpParseError(400, "Invalid method");
  }
  const version = line.slice(lastSpace + 1);
  let minor: 0 | 1;
  if (version === "HTTP/1.1") minor = 1;
  else if (version === "HTTP/1.0") minor = 0;
  else if (/^HTTP\/\d\.\d$/.test(version)) {
    throw new HttpParseError(505, `${version} is not supported; use HTTP/1.1`);
  } else throw new HttpParseError(400, "Malformed request line");
  const target = line.slice(firstSpace + 1, lastSpace);
  if (target.charCodeAt(0) !== 0x2f) {
    // Only origin-form: no `*` (OPTIONS), no absolute-form (proxies), no authority-form.
    throw new HttpParseError(400, "The request target must be an absolute path");
  }
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i);
    // Visible ASCII only; a fragment is never sent (RFC 9112 §3.2).
    if (c <= 0x20 || c >= 0x7f || c === 0x23) {
      throw new HttpParseError(400, "Invalid character in the request target");
    }
  }
  return { method, target, minor };
}

/** Several Content-Length values (fields or a list) must all be the same number. */
function mergeContentLength(previous: number | null, value: string): number {
  let merged = previous;
  for (const part of value.split(",")) {
    const digits = part.trim();
    if (!/^\d{1,15}$/.test(digits)) {
      throw new HttpParseError(400, `Invalid Content-Length ${JSON.stringify(value)}`);
    }
    const n = Number(digits);
    if (merged !== null && merged !== n) {
      throw new HttpParseError(400, "Conflicting Content-Length values");
    }
    merged = n;
  }
  return merged!;
}

function stripCr(line: string): string {
  return line.charCodeAt(line.length - 1) === CR ? line.slice(0, -1) : line;
}

function trimOws(value: string): string {
  let a = 0;
  let b = value.length;
  while (a < b && (value.charCodeAt(a) === 0x20 || value.charCodeAt(a) === 0x09)) a++;
  while (b > a && (value.charCodeAt(b - 1) === 0x20 || value.charCodeAt(b - 1) === 0x09)) b--;
  return value.slice(a, b);
}
