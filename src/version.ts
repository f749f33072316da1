/**
 * The version, from deno.json (embedded in the compiled binary).
 *
 * @module
 */

import meta from "../deno.json" with { type: "json" };

/** snapmesh's version. */
export const VERSION: string = meta.version;
