/**
 * Defaults, flags + env + file merge, validation, sizes.
 *
 * @module
 */

export * from "./config.ts";
export * from "./size.ts";
export * from "./secrets.ts";
export * from "./template.ts";
