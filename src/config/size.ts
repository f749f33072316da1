/**
 * Byte sizes as people write them: `1048576`, `64KiB`, `500MB`, `1.5GiB`.
 *
 * @module
 */

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

const SIZE_PATTERN = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i;

/**
 * Parses a byte size. Decimal units (KB, MB, GB, TB) are powers of 1000,
 * binary units (KiB, MiB, GiB, TiB, and the bare K, M, G, T) powers of 1024.
 *
 * @throws {SyntaxError} when `text` is not a size
 */
export function parseSize(text: string | number): number {
  if (typeof text === "number") {
    if (!Number.isSafeInteger(text) || text < 0) {
      throw new SyntaxError(`Invalid size ${text}: expected a non-negative integer`);
    }
    return text;
  }
  const match = SIZE_PATTERN.exec(text);
  const unit = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new SyntaxError(
      `Invalid size ${
        JSON.stringify(text)
      }: expected bytes with an optional unit, like 500MB or 10GiB`,
    );
  }
  const bytes = Math.round(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes)) {
    throw new SyntaxError(`Invalid size ${JSON.stringify(text)}: too large`);
  }
  return bytes;
}

/** Formats bytes with a binary unit, for humans: `1.5 GiB`. */
export function formatSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return i === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[i]}`;
}
