/**
 * The error of a bad setting.
 *
 * @module
 */

/** A setting has a bad value or an unknown key; the message names it. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}
