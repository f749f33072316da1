/**
 * Reading an agent's journal file from outside the agent (end-to-end tests
 * that must know a record reached the file before they kill the process).
 *
 * @module
 */

import { decodeStateRecord } from "../../src/cache/mod.ts";
import { scanJournal } from "../../src/journal/mod.ts";

/**
 * Names whose access times the journal file of `dataDir` holds (touch
 * records written so far, whether fsynced or not: they survive a kill -9).
 */
export async function journaledTouches(dataDir: string): Promise<Set<string>> {
  const names = new Set<string>();
  const bytes = await Deno.readFile(`${dataDir}/journal/wal`).catch(() => null);
  if (bytes === null) return names;
  for (const record of scanJournal(bytes)?.records ?? []) {
    const decoded = decodeStateRecord(record);
    if (decoded.t === "touch") { for (const name of decoded.names) names.add(name); }
  }
  return names;
}
