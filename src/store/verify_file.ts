/**
 * Full verification of a stored file against its manifest entry: size, the
 * digest of every chunk, and the sha256 of the whole file.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { errorMessage } from "../errors.ts";
import type { FileHandle } from "../fs/mod.ts";
import { chunkLength, type ManifestFile, verifyChunk } from "../manifest/mod.ts";

/** Result of verifying one file. */
export interface FileVerification {
  file: string;
  ok: boolean;
  size: number;
  badChunks: number[];
  problem?: string;
}

/**
 * Rehashes the file `open()` opens against `file` (chunks of `chunkSize`).
 * Never throws for damage: a missing file, a wrong size or wrong bytes are
 * reported in the result.
 */
export async function verifyStoredFile(
  open: () => Promise<FileHandle>,
  file: ManifestFile,
  chunkSize: number,
): Promise<FileVerification> {
  const result: FileVerification = { file: file.name, ok: true, size: file.size, badChunks: [] };
  let handle: FileHandle;
  try {
    handle = await open();
  } catch (err) {
    return { ...result, ok: false, problem: errorMessage(err) };
  }
  try {
    const actual = await handle.size();
    if (actual !== file.size) {
      return { ...result, ok: false, problem: `size is ${actual}, expected ${file.size}` };
    }
    const whole = createHash("sha256");
    const buffer = new Uint8Array(chunkSize);
    for (let i = 0; i < file.chunks.length; i++) {
      const length = chunkLength(file.size, chunkSize, i);
      const view = buffer.subarray(0, length);
      const n = await handle.readAt(view, i * chunkSize);
      whole.update(view.subarray(0, n));
      if (n !== length || verifyChunk(view, file.chunks[i] ?? null) === null) {
        result.badChunks.push(i);
      }
    }
    if (whole.digest("hex") !== file.sha256) result.ok = false;
    if (result.badChunks.length > 0) result.ok = false;
    if (!result.ok) {
      result.problem = result.badChunks.length > 0
        ? `${result.badChunks.length} chunk(s) differ from the manifest`
        : "whole-file sha256 differs from the manifest";
    }
    return result;
  } finally {
    handle.close();
  }
}
