/**
 * Manifest type, canonical encoding, digest, validation and names.
 *
 * @module
 */

export * from "./chunk.ts";
export * from "./manifest.ts";
export * from "./names.ts";
