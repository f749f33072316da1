/**
 * A watchdog for transfers that must keep moving: it fires once when
 * nothing happened for a while.
 *
 * @module
 */

/** A running {@linkcode idleWatchdog}. */
export interface IdleWatchdog {
  /** Something happened: the idle time starts again. */
  touch(): void;
  /** Stops watching; `onIdle` is not called after this. */
  stop(): void;
}

/**
 * Calls `onIdle` once when `touch()` has not been called for `ms`. One timer,
 * re-armed only when it fires: a timer per touch would cost more than the
 * reads it watches.
 */
export function idleWatchdog(ms: number, onIdle: () => void): IdleWatchdog {
  let last = Date.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const check = () => {
    const idle = Date.now() - last;
    if (idle < ms) {
      timer = setTimeout(check, ms - idle);
      return;
    }
    timer = undefined;
    onIdle();
  };
  timer = setTimeout(check, ms);
  return {
    touch() {
      last = Date.now();
    },
    stop() {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}
