/**
 * Async mutual exclusion, plain and keyed.
 *
 * @module
 */

/** Runs tasks one at a time, in the order they asked. */
export class Mutex {
  #tail: Promise<unknown> = Promise.resolve();
  #held = 0;

  /** True while a task runs or waits. */
  get busy(): boolean {
    return this.#held > 0;
  }

  run<T>(task: () => Promise<T>): Promise<T> {
    this.#held++;
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => {}).finally(() => this.#held--);
    return result;
  }
}

/** One {@linkcode Mutex} per key, created on demand and dropped when idle. */
export class KeyedMutex {
  #locks = new Map<string, { mutex: Mutex; users: number }>();

  async run<T>(key: string, task: () => Promise<T>): Promise<T> {
    let slot = this.#locks.get(key);
    if (!slot) {
      slot = { mutex: new Mutex(), users: 0 };
      this.#locks.set(key, slot);
    }
    slot.users++;
    try {
      return await slot.mutex.run(task);
    } finally {
      if (--slot.users === 0) this.#locks.delete(key);
    }
  }
}
