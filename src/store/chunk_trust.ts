/**
 * Which chunks of which local files were verified against their manifest in
 * this process's lifetime. A chunk is hashed once (on receipt, at commit, or
 * on its first serve after a restart) and trusted afterwards; the scrubber
 * re-checks trusted chunks in the background, so rot is still caught.
 *
 * One bit per chunk: a terabyte of 1 MiB chunks costs 128 KiB.
 *
 * @module
 */

/** The trust of one file's chunks. */
export interface FileTrust {
  has(index: number): boolean;
  add(index: number): void;
}

/** One bit per chunk. */
class FileBits implements FileTrust {
  readonly bits: Uint8Array;

  constructor(chunks: number) {
    this.bits = new Uint8Array(Math.ceil(chunks / 8));
  }

  has(index: number): boolean {
    return (this.bits[index >> 3]! & (1 << (index & 7))) !== 0;
  }

  add(index: number): void {
    this.bits[index >> 3]! |= 1 << (index & 7);
  }
}

/** Verified chunks, by snapshot digest and file name. */
export class ChunkTrust {
  readonly #files = new Map<string, Map<string, FileBits>>();

  /**
   * The trust of file `file` of the snapshot at `digest`, with `chunks`
   * chunks: the same object on every call (nothing is allocated per read).
   */
  file(digest: string, file: string, chunks: number): FileTrust {
    let files = this.#files.get(digest);
    if (!files) {
      files = new Map();
      this.#files.set(digest, files);
    }
    let bits = files.get(file);
    if (!bits || bits.bits.length !== Math.ceil(chunks / 8)) {
      bits = new FileBits(chunks);
      files.set(file, bits);
    }
    return bits;
  }

  /** Trusts every chunk of a snapshot (its bytes were hashed as they were written). */
  trustAll(digest: string, files: { name: string; chunks: readonly unknown[] }[]): void {
    for (const f of files) {
      const trust = this.file(digest, f.name, f.chunks.length);
      for (let i = 0; i < f.chunks.length; i++) trust.add(i);
    }
  }

  /** Forgets a snapshot (removed, quarantined, or about to be re-verified). */
  forget(digest: string): void {
    this.#files.delete(digest);
  }

  /** Chunks trusted so far, over all files. */
  get trustedChunks(): number {
    let n = 0;
    for (const files of this.#files.values()) {
      for (const file of files.values()) {
        for (const byte of file.bits) {
          let b = byte;
          while (b) {
            n += b & 1;
            b >>= 1;
          }
        }
      }
    }
    return n;
  }
}
