/**
 * Argument parsing, in one file: `node:util` parseArgs stands in for JSR's
 * `@std/cli`, which these machines cannot reach. Swapping parsers means
 * changing this file only.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** Bad usage: exit code 2, with the command's help hint. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** One option of a command. */
export interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
  multiple?: boolean;
}

/** Parsed options and positionals. */
export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

/**
 * Parses `args` strictly: unknown options and missing option values are
 * usage errors.
 */
export function parseCommandArgs(args: string[], options: Record<string, OptionSpec>): ParsedArgs {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as ParsedArgs["values"], positionals };
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify.*$/s, ""));
  }
}

/** A string option's value, or undefined. */
export function stringOption(args: ParsedArgs, name: string): string | undefined {
  const value = args.values[name];
  return typeof value === "string" ? value : undefined;
}

/** A repeatable string option's values. */
export function listOption(args: ParsedArgs, name: string): string[] {
  const value = args.values[name];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === "string");
  return typeof value === "string" ? [value] : [];
}

/** A boolean option's value. */
export function flagOption(args: ParsedArgs, name: string): boolean {
  return args.values[name] === true;
}
