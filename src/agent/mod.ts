/**
 * The agent: a facade over the services of one data directory.
 *
 * @module
 */

export * from "./agent.ts";
export * from "./removal.ts";
