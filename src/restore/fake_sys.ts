/**
 * An in-memory stand-in for the kernel side of a restore session: a VM
 * process with registered memory, its userfaultfd, its pidfd. Tests touch
 * pages (a fault is queued and the touch waits until the page is there and
 * its waiters were woken), remove ranges (the balloon), unmap, remap, fork
 * and exit, and the session under test answers through {@linkcode UffdSys}.
 * No real I/O and no timers: it runs under a VirtualClock.
 *
 * @module
 */

import type { FillResult, UffdEvent, UffdSys } from "./uffd_sys.ts";

interface Waiter {
  page: number;
  resolve(): void;
}

/** A fake VM and kernel. Descriptors: the uffd, the pidfd, and event fds it hands out. */
export class FakeUffdSys implements UffdSys {
  readonly pageSize: number;
  readonly uffd = 100;
  readonly pidfd = 101;
  /** Installed pages by address. */
  readonly pages = new Map<number, Uint8Array>();
  /** Address ranges registered (the VM's guest memory). */
  readonly mapped: { start: number; end: number }[] = [];
  readonly calls = { copy: 0, zeroPage: 0, wake: 0, kill: 0, exists: 0, again: 0 };
  readonly closed = new Set<number>();
  readonly #events: UffdEvent[] = [];
  readonly #waiters: Waiter[] = [];
  readonly #notified = new Set<number>();
  #nextFd = 200;
  #alive = true;
  /** A non-cooperative event not read yet: fills answer "again" (mmap_changing). */
  #changing = 0;
  #pollWake: (() => void) | null = null;

  constructor(options: { pageSize?: number; regions: { start: number; size: number }[] }) {
    this.pageSize = options.pageSize ?? 4096;
    for (const r of options.regions) this.mapped.push({ start: r.start, end: r.start + r.size });
  }

  get alive(): boolean {
    return this.#alive;
  }

  /** Faults waiting for their page. */
  get waiting(): number {
    return this.#waiters.length;
  }

  // --- what the VM does ---------------------------------------------------------

  /** Reads the page at `address`: resolves with its bytes once installed and woken. */
  touch(address: number): Promise<Uint8Array> {
    const page = address - (address % this.pageSize);
    const there = this.pages.get(page);
    if (there) return Promise.resolve(there);
    if (!this.#isMapped(page)) return Promise.reject(new Error(`SIGSEGV at ${address}`));
    return new Promise((resolve) => {
      this.#waiters.push({ page, resolve: () => resolve(this.pages.get(page)!) });
      this.#push({ kind: "pagefault", address, write: false });
    });
  }

  /** `madvise(MADV_DONTNEED)`: the pages go, and a remove event is queued. */
  remove(start: number, end: number): void {
    for (let a = start; a < end; a += this.pageSize) this.pages.delete(a);
    this.#changing++;
    this.#push({ kind: "remove", start, end });
  }

  unmap(start: number, end: number): void {
    for (let a = start; a < end; a += this.pageSize) this.pages.delete(a);
    const next = this.mapped.flatMap((m) => {
      if (m.end <= start || m.start >= end) return [m];
      const out = [];
      if (m.start < start) out.push({ start: m.start, end: start });
      if (m.end > end) out.push({ start: end, end: m.end });
      return out;
    });
    this.mapped.splice(0, this.mapped.length, ...next);
    this.#changing++;
    this.#push({ kind: "unmap", start, end });
  }

  /** `mremap` of a whole mapped range. */
  remap(from: number, to: number, length: number): void {
    for (let a = 0; a < length; a += this.pageSize) {
      const bytes = this.pages.get(from + a);
      this.pages.delete(from + a);
      if (bytes) this.pages.set(to + a, bytes);
    }
    for (const m of this.mapped) {
      if (m.start === from && m.end === from + length) {
        m.start = to;
        m.end = to + length;
      }
    }
    this.#changing++;
    this.#push({ kind: "remap", from, to, length });
  }

  /** `fork`: a descriptor arrives with the event. */
  fork(): number {
    const fd = this.#nextFd++;
    this.#push({ kind: "fork", fd });
    return fd;
  }

  /** The VM process exits: its pidfd becomes readable. */
  exit(): void {
    this.#alive = false;
    this.#wakePoll();
  }

  // --- UffdSys ------------------------------------------------------------------

  poll(fds: readonly number[], _timeoutMs: number): Promise<number[]> {
    const ready = () =>
      fds.map((fd) => {
        if (this.closed.has(fd)) return 0x20; // POLLNVAL
        if (fd === this.uffd) return this.#events.length > 0 ? 1 : 0;
        if (fd === this.pidfd) return this.#alive ? 0 : 1;
        return this.#notified.has(fd) ? 1 : 0;
      });
    const now = ready();
    if (now.some((r) => r !== 0)) return Promise.resolve(now);
    return new Promise((resolve) => {
      this.#pollWake = () => {
        const later = ready();
        if (later.some((r) => r !== 0)) {
          this.#pollWake = null;
          resolve(later);
        }
      };
    });
  }

  readEvents(uffd: number, max: number): UffdEvent[] {
    this.#check(uffd);
    const out = this.#events.splice(0, max);
    for (const e of out) if (e.kind !== "pagefault" && e.kind !== "fork") this.#changing--;
    return out;
  }

  copy(uffd: number, dst: number, src: Uint8Array, wake: boolean): FillResult {
    this.#check(uffd);
    this.calls.copy++;
    return this.#fill(dst, src.length, (at) => src.slice(at, at + this.pageSize), wake);
  }

  zeroPage(uffd: number, dst: number, length: number, wake: boolean): FillResult {
    this.#check(uffd);
    this.calls.zeroPage++;
    return this.#fill(dst, length, () => new Uint8Array(this.pageSize), wake);
  }

  wake(uffd: number, start: number, length: number): void {
    this.#check(uffd);
    this.calls.wake++;
    this.#wakeRange(start, start + length);
  }

  eventFd(): number {
    return this.#nextFd++;
  }

  notify(fd: number): void {
    this.#notified.add(fd);
    this.#wakePoll();
  }

  pidfdOpen(_pid: number): number | null {
    return this.#alive ? this.pidfd : null;
  }

  kill(pidfd: number): void {
    this.#check(pidfd);
    this.calls.kill++;
    this.exit();
  }

  close(fd: number): void {
    if (this.closed.has(fd)) throw new Error(`fd ${fd} closed twice`);
    this.closed.add(fd);
  }

  // --- internals ----------------------------------------------------------------

  #fill(
    dst: number,
    length: number,
    bytes: (at: number) => Uint8Array,
    wake: boolean,
  ): FillResult {
    if (!this.#alive) return { done: 0, stop: "gone" };
    if (this.#changing > 0) {
      this.calls.again++;
      return { done: 0, stop: "again" };
    }
    let done = 0;
    while (done < length) {
      const page = dst + done;
      if (!this.#isMapped(page)) break;
      if (this.pages.has(page)) {
        if (done === 0) this.calls.exists++;
        break;
      }
      this.pages.set(page, bytes(done));
      done += this.pageSize;
    }
    if (done > 0 && wake) this.#wakeRange(dst, dst + done);
    if (done === length) return { done, stop: null };
    if (done > 0) return { done, stop: "again" };
    return { done: 0, stop: this.#isMapped(dst) ? "exists" : "gone" };
  }

  #wakeRange(start: number, end: number): void {
    for (let i = this.#waiters.length - 1; i >= 0; i--) {
      const w = this.#waiters[i]!;
      if (w.page >= start && w.page < end && this.pages.has(w.page)) {
        this.#waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  #isMapped(address: number): boolean {
    return this.mapped.some((m) => address >= m.start && address < m.end);
  }

  #push(event: UffdEvent): void {
    this.#events.push(event);
    this.#wakePoll();
  }

  #wakePoll(): void {
    this.#pollWake?.();
  }

  #check(fd: number): void {
    if (this.closed.has(fd)) throw new Error(`fd ${fd} used after close`);
  }
}
