/**
 * What every client subcommand is made of: its shape, where it writes, and
 * the small helpers they share. Private to `src/cli/`.
 *
 * @module
 */

import { type OptionSpec, type ParsedArgs, UsageError } from "./args.ts";
import type { NodeClient } from "./client.ts";

/** Where a command writes. */
export interface CommandIo {
  out(text: string): void;
  err(text: string): void;
  env: Record<string, string | undefined>;
}

/** A client subcommand. */
export interface ClientCommand {
  usage: string;
  summary: string;
  options: Record<string, OptionSpec>;
  run(args: ParsedArgs, client: NodeClient, io: CommandIo): Promise<number>;
}

/** The one positional argument `what`, or a usage error. */
export function one(args: ParsedArgs, what: string, usage: string): string {
  if (args.positionals.length !== 1) throw new UsageError(`expected ${what}\nusage: ${usage}`);
  return args.positionals[0]!;
}

/** A usage error unless the command was given no positional arguments. */
export function none(args: ParsedArgs, usage: string): void {
  if (args.positionals.length > 0) throw new UsageError(`unexpected arguments\nusage: ${usage}`);
}

/** Prints `value` as indented JSON. */
export function json(io: CommandIo, value: unknown): void {
  io.out(JSON.stringify(value, null, 2));
}

/** Aligned columns, two spaces apart, the first row a header. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join(
    "\n",
  );
}
