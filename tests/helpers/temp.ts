/**
 * Temp directories that clean themselves up.
 *
 * @module
 */

/** A temp directory removed by `Symbol.asyncDispose` (use with `await using`). */
export async function tempDir(
  prefix = "snapmesh-test-",
): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await makeWritable(path);
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Read-only cached files are fine to delete, but be safe with directories. */
async function makeWritable(path: string): Promise<void> {
  try {
    for await (const entry of Deno.readDir(path)) {
      const child = `${path}/${entry.name}`;
      if (entry.isDirectory) {
        await Deno.chmod(child, 0o755).catch(() => {});
        await makeWritable(child);
      }
    }
  } catch {
    // Already gone.
  }
}

/** Deterministic pseudo-random bytes (xorshift), fast enough for hundreds of MiB. */
export function randomBytes(length: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, length >>> 2);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  for (let i = words.length << 2; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** sha256 (hex) of bytes. */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
