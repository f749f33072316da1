/**
 * The one logger: JSON lines on stderr, with levels and redaction of secrets.
 *
 * @module
 */

/** Log levels, least to most severe. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Field names whose values are never written out. */
const SECRET_FIELD = /token|secret|password|authorization|credential|accesskey/i;

/** Structured fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Least severe level written. @default "info" */
  level?: LogLevel;
  /** Where lines go. @default a writer to stderr */
  write?: (line: string) => void;
  /** Fields added to every line (for example the node id). */
  base?: LogFields;
}

/** A structured logger; `child` adds fields to every line. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

/** True when `level` names a log level. */
export function isLogLevel(level: string): level is LogLevel {
  return Object.hasOwn(LEVELS, level);
}

/** Creates a logger that writes one JSON object per line. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const threshold = LEVELS[options.level ?? "info"];
  const write = options.write ?? writeStderr;
  const base = options.base ?? {};

  function make(fields: LogFields): Logger {
    function emit(level: LogLevel, msg: string, extra?: LogFields): void {
      if (LEVELS[level] < threshold) return;
      const line = { ts: new Date().toISOString(), level, msg, ...fields, ...extra };
      write(JSON.stringify(line, redact));
    }
    return {
      debug: (msg, extra) => emit("debug", msg, extra),
      info: (msg, extra) => emit("info", msg, extra),
      warn: (msg, extra) => emit("warn", msg, extra),
      error: (msg, extra) => emit("error", msg, extra),
      child: (extra) => make({ ...fields, ...extra }),
    };
  }
  return make(base);
}

/** A logger that drops everything (for tests and tools). */
export const silentLogger: Logger = createLogger({ write: () => {} });

function redact(key: string, value: unknown): unknown {
  if (SECRET_FIELD.test(key) && value !== undefined && value !== null && value !== "") {
    return "[redacted]";
  }
  if (value instanceof Error) {
    return { name: value.name, message: redactUrlPasswords(value.message) };
  }
  if (typeof value === "string") return redactUrlPasswords(value);
  return value;
}

const URL_PASSWORD = /(\b[a-z][a-z0-9+.-]*:\/\/[^\s/:@]*:)[^\s/@]+@/gi;

/** `http://user:secret@host` → `http://user:[redacted]@host`, wherever it appears in `text`. */
export function redactUrlPasswords(text: string): string {
  return text.includes("@") ? text.replace(URL_PASSWORD, "$1[redacted]@") : text;
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch {
    // stderr closed: nothing sensible left to do with a log line.
  }
}
