/**
 * Bucketed sets of chunk numbers by availability, with O(1) add, remove and
 * random pick: the rarest-first queue.
 */
export class Buckets {
  readonly #lists: number[][] = [];
  readonly #where: Int32Array;
  readonly #pos: Int32Array;

  constructor(size: number) {
    this.#where = new Int32Array(size).fill(-1);
    this.#pos = new Int32Array(size);
  }

  has(chunk: number): boolean {
    return this.#where[chunk]! >= 0;
  }

  add(chunk: number, bucket: number): void {
    if (this.#where[chunk]! >= 0) this.remove(chunk);
    while (this.#lists.length <= bucket) this.#lists.push([]);
    const list = this.#lists[bucket]!;
    this.#where[chunk] = bucket;
    this.#pos[chunk] = list.length;
    list.push(chunk);
  }

  remove(chunk: number): void {
    const bucket = this.#where[chunk]!;
    if (bucket < 0) return;
    const list = this.#lists[bucket]!;
    const at = this.#pos[chunk]!;
    const last = list.pop()!;
    if (last !== chunk) {
      list[at] = last;
      this.#pos[last] = at;
    }
    this.#where[chunk] = -1;
  }

  /** Chunks of `bucket`, the live array (do not modify). */
  list(bucket: number): readonly number[] {
    return this.#lists[bucket] ?? [];
  }

  get depth(): number {
    return this.#lists.length;
  }
}
