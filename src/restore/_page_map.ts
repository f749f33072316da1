/**
 * Where the pages of one VM's guest memory are: the regions (VM addresses
 * over the memory file, as `remap` and `unmap` events move and drop them)
 * and, per page of the memory file, whether it is installed, removed by the
 * balloon (zero from now on), or on its way. Private to `src/restore/`.
 *
 * @module
 */

import type { RegionMapping } from "./mappings.ts";

/** Where a page is: its address now, and its place in the memory file. */
export interface PageAt {
  address: number;
  fileOffset: number;
  /** fileOffset / pageSize */
  page: number;
}

/** The layout of one VM's guest memory and the state of each file page. */
export class PageMap {
  readonly pageSize: number;
  /** Pages with an install on its way (a fault waiting for its chunk). */
  readonly pending = new Set<number>();
  readonly #regions: RegionMapping[];
  /** Pages installed, by file page. */
  readonly #installed: Uint8Array;
  /** Pages the balloon removed (zero from now on), by file page. */
  readonly #removed: Uint8Array;

  constructor(regions: RegionMapping[]) {
    this.#regions = regions.map((r) => ({ ...r }));
    this.pageSize = this.#regions[0]!.pageSize;
    const pages = Math.ceil(
      Math.max(...this.#regions.map((r) => r.offset + r.size)) / this.pageSize,
    );
    this.#installed = new Uint8Array(Math.ceil(pages / 8));
    this.#removed = new Uint8Array(Math.ceil(pages / 8));
  }

  isInstalled(page: number): boolean {
    return hasBit(this.#installed, page);
  }

  isRemoved(page: number): boolean {
    return hasBit(this.#removed, page);
  }

  /** File page `page` is in the VM now (a removed page no longer counts as removed). */
  markInstalled(page: number): void {
    clearBit(this.#removed, page);
    setBit(this.#installed, page);
  }

  /** The balloon removed the pages at `start..end`; returns how many pages that was. */
  remove(start: number, end: number): number {
    let count = 0;
    for (const { page } of this.#pagesIn(start, end)) {
      clearBit(this.#installed, page);
      setBit(this.#removed, page);
      count++;
    }
    return count;
  }

  /** The VM unmapped `start..end`. */
  unmap(start: number, end: number): void {
    const next: RegionMapping[] = [];
    for (const r of this.#regions) {
      for (const piece of cut(r, start, end).outside) next.push(piece);
    }
    this.#regions.splice(0, this.#regions.length, ...next);
  }

  /** The VM moved `length` bytes at `from` to `to`. */
  remap(from: number, to: number, length: number): void {
    const next: RegionMapping[] = [];
    for (const r of this.#regions) {
      const { inside, outside } = cut(r, from, from + length);
      next.push(...outside);
      if (inside) next.push({ ...inside, base: inside.base - from + to });
    }
    this.#regions.splice(0, this.#regions.length, ...next);
  }

  /** The page holding `address`, or null outside every region. */
  locate(address: number): PageAt | null {
    for (const r of this.#regions) {
      if (address >= r.base && address < r.base + r.size) {
        const pageAddress = address - ((address - r.base) % this.pageSize);
        const fileOffset = r.offset + (pageAddress - r.base);
        return { address: pageAddress, fileOffset, page: fileOffset / this.pageSize };
      }
    }
    return null;
  }

  /** Where file page `page` is mapped now, or null. */
  addressOfPage(page: number): number | null {
    const offset = page * this.pageSize;
    for (const r of this.#regions) {
      if (offset >= r.offset && offset < r.offset + r.size) return r.base + (offset - r.offset);
    }
    return null;
  }

  /** The mapped pages whose addresses lie in `start..end`. */
  #pagesIn(start: number, end: number): PageAt[] {
    const out: PageAt[] = [];
    for (const r of this.#regions) {
      const from = Math.max(start, r.base);
      const to = Math.min(end, r.base + r.size);
      for (let a = from - ((from - r.base) % this.pageSize); a < to; a += this.pageSize) {
        const fileOffset = r.offset + (a - r.base);
        out.push({ address: a, fileOffset, page: fileOffset / this.pageSize });
      }
    }
    return out;
  }
}

/** The part of `r` inside `start..end` (addresses) and the parts outside. */
function cut(
  r: RegionMapping,
  start: number,
  end: number,
): { inside: RegionMapping | null; outside: RegionMapping[] } {
  const lo = Math.max(start, r.base);
  const hi = Math.min(end, r.base + r.size);
  if (lo >= hi) return { inside: null, outside: [r] };
  const outside: RegionMapping[] = [];
  if (lo > r.base) outside.push({ ...r, size: lo - r.base });
  if (hi < r.base + r.size) {
    outside.push({ ...r, base: hi, size: r.base + r.size - hi, offset: r.offset + (hi - r.base) });
  }
  return {
    inside: { ...r, base: lo, size: hi - lo, offset: r.offset + (lo - r.base) },
    outside,
  };
}

function hasBit(bits: Uint8Array, i: number): boolean {
  return ((bits[i >> 3] ?? 0) & (1 << (i & 7))) !== 0;
}

function setBit(bits: Uint8Array, i: number): void {
  if ((i >> 3) < bits.length) bits[i >> 3]! |= 1 << (i & 7);
}

function clearBit(bits: Uint8Array, i: number): void {
  if ((i >> 3) < bits.length) bits[i >> 3]! &= ~(1 << (i & 7));
}
