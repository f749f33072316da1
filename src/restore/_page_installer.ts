/**
 * Puts pages into one VM's guest memory through its userfaultfd: a page for
 * a fault, or every page of a chunk at once for the working set (copies that
 * do not wake, then one wake per run). Private to `src/restore/`.
 *
 * @module
 */

import type { PageAt, PageMap } from "./_page_map.ts";
import type { MemoryImage } from "./session_types.ts";
import type { FillResult, UffdSys } from "./uffd_sys.ts";

/** Fill attempts in a row that may answer "again" before the session gives up. */
const MAX_AGAIN = 1000;

/** What a {@linkcode PageInstaller} works on. */
export interface PageInstallerOptions {
  sys: UffdSys;
  /** The guest memory's userfaultfd. */
  uffd: number;
  pages: PageMap;
  memory: MemoryImage;
  /** Whether the session has ended (fills stop then). */
  ended(): boolean;
  /** Reads the events a fill waits behind (`EAGAIN`). */
  readPending(): void;
}

/** Installs pages of the memory file into the VM. */
export class PageInstaller {
  readonly #o: PageInstallerOptions;
  readonly #pageSize: number;
  readonly #pageBuffer: Uint8Array;
  #chunkBuffer: Uint8Array | null = null;

  constructor(options: PageInstallerOptions) {
    this.#o = options;
    this.#pageSize = options.pages.pageSize;
    this.#pageBuffer = new Uint8Array(this.#pageSize);
  }

  /** The chunks a page at `fileOffset` covers (one, unless pages are larger than chunks). */
  chunksOf(fileOffset: number): number[] {
    const { chunkSize, chunks } = this.#o.memory;
    const first = Math.floor(fileOffset / chunkSize);
    const last = Math.min(chunks - 1, Math.floor((fileOffset + this.#pageSize - 1) / chunkSize));
    const out: number[] = [];
    for (let c = first; c <= last; c++) out.push(c);
    return out;
  }

  /** Installs one page: zeros when removed or in zero chunks, else its bytes. */
  installPage(at: PageAt, wake: boolean): void {
    const { memory, pages } = this.#o;
    const zero = pages.isRemoved(at.page) ||
      this.chunksOf(at.fileOffset).every((c) => memory.state(c) === "zero");
    if (zero) {
      this.#fill(at.address, this.#pageSize, null, wake);
    } else {
      memory.read(this.#pageBuffer, at.fileOffset);
      this.#fill(at.address, this.#pageSize, this.#pageBuffer, wake);
    }
    pages.markInstalled(at.page);
  }

  /**
   * Installs the pages of `chunk` that are in some region and not there yet
   * (nor removed when `skipRemoved`, nor on their way), without waking, then
   * wakes each run. Every chunk the pages cover must be ready or zero.
   * Returns pages filled.
   */
  installChunk(chunk: number, skipRemoved: boolean): number {
    const { memory, pages } = this.#o;
    const ps = this.#pageSize;
    const start = chunk * memory.chunkSize;
    const end = Math.min(start + memory.chunkSize, memory.size);
    const firstPage = Math.floor(start / ps);
    const lastPage = Math.ceil(end / ps) - 1;
    // Pages beyond this chunk (huge pages over several chunks) need those chunks too.
    const spanStart = firstPage * ps;
    const spanEnd = (lastPage + 1) * ps;
    for (let c = Math.floor(spanStart / memory.chunkSize); c * memory.chunkSize < spanEnd; c++) {
      if (c < memory.chunks && memory.state(c) === "missing") return 0;
    }
    let filled = 0;
    let runStart = -1;
    let runAddress = 0;
    let runZero = false;
    for (let p = firstPage; p <= lastPage + 1; p++) {
      const address = p <= lastPage ? pages.addressOfPage(p) : null;
      const removed = pages.isRemoved(p);
      const eligible = address !== null && !pages.isInstalled(p) &&
        !pages.pending.has(p) && !(skipRemoved && removed);
      if (
        runStart >= 0 &&
        (!eligible || address !== runAddress + (p - runStart) * ps || removed !== runZero)
      ) {
        filled += this.#installRun(runStart, p, runZero);
        runStart = -1;
      }
      if (eligible && runStart < 0) {
        runStart = p;
        runAddress = address;
        runZero = removed;
      }
    }
    return filled;
  }

  /**
   * Installs file pages `first..end-1` (contiguous in the VM; zeros when
   * `removed`) and wakes them.
   */
  #installRun(first: number, end: number, removed: boolean): number {
    const { memory, pages } = this.#o;
    const ps = this.#pageSize;
    const address = pages.addressOfPage(first)!;
    const length = (end - first) * ps;
    const fileOffset = first * ps;
    let zero = true;
    for (
      let c = Math.floor(fileOffset / memory.chunkSize);
      c * memory.chunkSize < fileOffset + length && c < memory.chunks;
      c++
    ) {
      if (!removed && memory.state(c) !== "zero") zero = false;
    }
    let filled: number;
    if (zero) {
      filled = this.#fill(address, length, null, false);
    } else {
      if (!this.#chunkBuffer || this.#chunkBuffer.length < length) {
        this.#chunkBuffer = new Uint8Array(Math.max(length, memory.chunkSize));
      }
      const bytes = this.#chunkBuffer.subarray(0, length);
      memory.read(bytes, fileOffset);
      filled = this.#fill(address, length, bytes, false);
    }
    if (!this.#o.ended()) this.#o.sys.wake(this.#o.uffd, address, length);
    for (let p = first; p < end; p++) pages.markInstalled(p);
    return filled;
  }

  /**
   * Fills `length` bytes at `address` (copying `src`, or zero pages when
   * null), page by page past pages already there. Returns the pages filled.
   * Positional like the `UFFDIO_COPY` and `UFFDIO_ZEROPAGE` calls it wraps.
   */
  #fill(address: number, length: number, src: Uint8Array | null, wake: boolean): number {
    const { sys, uffd } = this.#o;
    let at = 0;
    let filled = 0;
    let again = 0;
    while (at < length && !this.#o.ended()) {
      const result: FillResult = src === null
        ? sys.zeroPage(uffd, address + at, length - at, wake)
        : sys.copy(uffd, address + at, src.subarray(at, length), wake);
      at += result.done;
      filled += result.done / this.#pageSize;
      if (result.stop === null || result.done > 0) {
        again = 0;
        continue;
      }
      if (result.stop === "exists") {
        // Someone else's fault filled this page first: it is there; wake
        // whoever waits on it (that fill may not have woken anyone).
        sys.wake(uffd, address + at, this.#pageSize);
        at += this.#pageSize;
      } else if (result.stop === "gone") {
        break; // the VM exited or unmapped it; the pidfd or an event says which
      } else if (++again > MAX_AGAIN) {
        throw new Error(`the VM's memory layout kept changing during a fill at ${address + at}`);
      } else {
        this.#o.readPending(); // a pending event holds the fill back: read it
        // A page the event removed gets zeros from now on; a later fault asks for it again.
      }
    }
    return filled;
  }
}
