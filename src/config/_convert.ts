/**
 * Turns one raw setting value (a flag, an environment variable or a config
 * file value) into its typed form, or a {@linkcode ConfigError} naming where
 * it came from. Private to `src/config/`.
 *
 * @module
 */

import { normalizePeerUrl } from "../cluster/discovery.ts";
import { isLogLevel } from "../log/mod.ts";
import { ConfigError } from "./config_error.ts";
import type { Setting } from "./settings.ts";
import { parseSize } from "./size.ts";
import { normalizePath, parseListen } from "./values.ts";

/** One raw value of a setting, and where it came from. */
export interface RawValue {
  /** As given: a string from a flag or the environment, any JSON value from the file. */
  value: unknown;
  /** Where it was given, for messages: `--cache-size`, `SNAPMESH_CACHE_SIZE`, … */
  where: string;
  /** The working directory relative paths are resolved against. */
  cwd: string;
}

/** The typed value of `setting` given as `raw`. */
export function convert(setting: Setting, { value, where, cwd }: RawValue): unknown {
  const fail = (form: string): never => {
    throw new ConfigError(`${where}: invalid value ${JSON.stringify(value)}; expected ${form}`);
  };
  const text = (): string => {
    if (typeof value === "string") return value;
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    return fail("a string");
  };
  switch (setting.kind) {
    case "string": {
      const s = text();
      if (s === "") fail("a non-empty string");
      return s;
    }
    case "path": {
      const s = text();
      if (s === "") fail("a path");
      return absolute(cwd, s);
    }
    case "size":
      try {
        return parseSize(typeof value === "number" ? value : text());
      } catch {
        return fail("a size in bytes, like 1048576, 500MB or 10GiB");
      }
    case "ms": {
      const match = /^(\d+)(ms|s|m|h)?$/.exec(text().trim());
      if (!match) return fail("a duration like 30000, 30s, 2m or 24h");
      const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? "ms"]!;
      return Number(match[1]) * unit;
    }
    case "count": {
      const s = text().trim();
      if (!/^\d{1,9}$/.test(s) || Number(s) < 1) return fail("a whole number of at least 1");
      return Number(s);
    }
    case "list": {
      const items = Array.isArray(value)
        ? value.map(String)
        : text().split(",").map((s) => s.trim()).filter((s) => s !== "");
      return items.map((item) => {
        try {
          return normalizePeerUrl(item);
        } catch (err) {
          throw new ConfigError(`${where}: invalid peer URL ${(err as Error).message}`);
        }
      });
    }
    case "url":
      return normalizeUrl(text()) ?? fail("an http(s) URL");
    case "push": {
      const s = text();
      return s === "async" || s === "sync" || s === "off" ? s : fail("async, sync or off");
    }
    case "level": {
      const s = text();
      return isLogLevel(s) ? s : fail("debug, info, warn or error");
    }
    case "bool":
      if (typeof value === "boolean") return value;
      if (/^(1|true|yes)$/i.test(text())) return true;
      if (/^(0|false|no)$/i.test(text())) return false;
      return fail("true or false");
    case "listen":
      return parseListen(text()) ?? fail("HOST:PORT, like 127.0.0.1:7070 or [::1]:0");
  }
}
function normalizeUrl(text: string): string | null {
  try {
    const url = new URL(text);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    return url.href.replace(/\/+$/, "");
  } catch {
    return null;
  }
}

/** `path` made absolute against `cwd`, normalized. */
export function absolute(cwd: string, path: string): string {
  if (path.startsWith("/")) return normalizePath(path);
  return normalizePath(`${cwd}/${path}`);
}
