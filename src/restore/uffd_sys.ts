/**
 * The syscall layer of a restore session, behind one small interface: read
 * userfaultfd events, fill pages (`UFFDIO_COPY`, `UFFDIO_ZEROPAGE`), wake
 * waiters, wait on descriptors, and stop the VM. {@linkcode LinuxUffdSys}
 * is the real one (FFI); the session logic is unit-tested against a fake.
 *
 * @module
 */

import {
  addressOf,
  check,
  EAGAIN,
  EEXIST,
  EINTR,
  ENOENT,
  errno,
  ESRCH,
  libc,
  POLLIN,
  SIGKILL,
  SYS_PIDFD_OPEN,
  SYS_PIDFD_SEND_SIGNAL,
  SysError,
  UFFD_EVENT_FORK,
  UFFD_EVENT_PAGEFAULT,
  UFFD_EVENT_REMAP,
  UFFD_EVENT_REMOVE,
  UFFD_EVENT_UNMAP,
  UFFD_MSG_SIZE,
  UFFD_PAGEFAULT_FLAG_WRITE,
  UFFDIO_COPY,
  UFFDIO_COPY_MODE_DONTWAKE,
  UFFDIO_WAKE,
  UFFDIO_ZEROPAGE,
  UFFDIO_ZEROPAGE_MODE_DONTWAKE,
} from "./libc.ts";

/** One message read from a userfaultfd. Addresses are the VM process's. */
export type UffdEvent =
  | { kind: "pagefault"; address: number; write: boolean }
  /** `madvise(MADV_DONTNEED/REMOVE)` (the balloon): the range reads as zeros from now on. */
  | { kind: "remove"; start: number; end: number }
  /** `munmap`: the range is gone. */
  | { kind: "unmap"; start: number; end: number }
  /** `mremap`: `length` bytes moved from `from` to `to`. */
  | { kind: "remap"; from: number; to: number; length: number }
  /** `fork`: a descriptor for the child's memory, now open in this process. */
  | { kind: "fork"; fd: number }
  | { kind: "unknown"; event: number };

/**
 * The outcome of a fill (copy or zero page). `done` bytes at the start of
 * the range were filled; then, unless the whole range was:
 * - `exists`: the next page is already there (another thread's fault);
 * - `again`: the mapping is changing (a remove or unmap event is pending:
 *   read events, then retry);
 * - `gone`: the VM process exited or unmapped the range.
 */
export interface FillResult {
  done: number;
  stop: "exists" | "again" | "gone" | null;
}

/** The system calls a restore session makes. */
export interface UffdSys {
  /**
   * Waits until one of `fds` is readable (or hung up), at most `timeoutMs`
   * (-1: no limit), without blocking the event loop. Resolves with each
   * descriptor's `revents`.
   */
  poll(fds: readonly number[], timeoutMs: number): Promise<number[]>;
  /** Reads the events pending on `uffd` (at most `max`), without blocking. */
  readEvents(uffd: number, max: number): UffdEvent[];
  /** Copies `src` to `dst` in the VM; `wake`: wake the threads waiting there. */
  copy(uffd: number, dst: number, src: Uint8Array, wake: boolean): FillResult;
  /** Maps zero pages over `length` bytes at `dst`. */
  zeroPage(uffd: number, dst: number, length: number, wake: boolean): FillResult;
  /** Wakes the threads waiting on `length` bytes at `start`. */
  wake(uffd: number, start: number, length: number): void;
  /** A descriptor that becomes readable on {@linkcode UffdSys.notify} (to end a poll). */
  eventFd(): number;
  notify(fd: number): void;
  /** A pidfd of `pid`, or null when that process is gone already. */
  pidfdOpen(pid: number): number | null;
  /** SIGKILL through a pidfd (never hits a recycled PID). */
  kill(pidfd: number): void;
  close(fd: number): void;
}

/** The real syscall layer, through libc. */
export class LinuxUffdSys implements UffdSys {
  readonly #messages = new Uint8Array(UFFD_MSG_SIZE * 64);
  readonly #copy = new Uint8Array(40);
  readonly #zero = new Uint8Array(32);
  readonly #range = new Uint8Array(16);
  readonly #eventValue = new Uint8Array(8);
  readonly #copyView = new DataView(this.#copy.buffer);
  readonly #zeroView = new DataView(this.#zero.buffer);
  readonly #rangeView = new DataView(this.#range.buffer);

  async poll(fds: readonly number[], timeoutMs: number): Promise<number[]> {
    const set = new Uint8Array(8 * fds.length);
    const view = new DataView(set.buffer);
    fds.forEach((fd, i) => {
      view.setInt32(i * 8, fd, true);
      view.setInt16(i * 8 + 4, POLLIN, true);
    });
    // `set` stays referenced until the call returns (the worker thread writes into it).
    const n = await libc().pollAsync(set, BigInt(fds.length), timeoutMs);
    if (n < 0) return fds.map(() => 0); // EINTR: the caller polls again
    return fds.map((_, i) => view.getInt16(i * 8 + 6, true));
  }

  readEvents(uffd: number, max: number): UffdEvent[] {
    const out: UffdEvent[] = [];
    const buffer = this.#messages;
    const view = new DataView(buffer.buffer);
    while (out.length < max) {
      const want = Math.min(buffer.length, (max - out.length) * UFFD_MSG_SIZE);
      const n = Number(libc().read(uffd, buffer, BigInt(want)));
      if (n < 0) {
        const code = errno();
        if (code === EAGAIN || code === EINTR) break;
        throw new SysError("read(userfaultfd)", code);
      }
      if (n === 0) break;
      for (let at = 0; at + UFFD_MSG_SIZE <= n; at += UFFD_MSG_SIZE) {
        out.push(decodeEvent(view, at));
      }
      if (n < want) break;
    }
    return out;
  }

  // The fault path avoids BigInt: 64-bit fields are written as two 32-bit halves.
  copy(uffd: number, dst: number, src: Uint8Array, wake: boolean): FillResult {
    const view = this.#copyView;
    setU64(view, 0, dst);
    setU64(view, 8, addressOf(src));
    setU64(view, 16, src.length);
    setU64(view, 24, wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE);
    setU64(view, 32, 0);
    const result = libc().ioctl(uffd, COPY, this.#copy);
    const code = result < 0 ? errno() : 0;
    return fillResult("UFFDIO_COPY", {
      result,
      code,
      reported: getI64(view, 32),
      length: src.length,
    });
  }

  zeroPage(uffd: number, dst: number, length: number, wake: boolean): FillResult {
    const view = this.#zeroView;
    setU64(view, 0, dst);
    setU64(view, 8, length);
    setU64(view, 16, wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE);
    setU64(view, 24, 0);
    const result = libc().ioctl(uffd, ZEROPAGE, this.#zero);
    const code = result < 0 ? errno() : 0;
    return fillResult("UFFDIO_ZEROPAGE", { result, code, reported: getI64(view, 24), length });
  }

  wake(uffd: number, start: number, length: number): void {
    const view = this.#rangeView;
    setU64(view, 0, start);
    setU64(view, 8, length);
    const result = libc().ioctl(uffd, WAKE, this.#range);
    if (result < 0) {
      const code = errno();
      // The VM is gone or the range was unmapped: nobody left to wake.
      if (code !== ESRCH && code !== ENOENT && code !== 22) throw new SysError("UFFDIO_WAKE", code);
    }
  }

  eventFd(): number {
    // EFD_CLOEXEC | EFD_NONBLOCK
    return check("eventfd", libc().eventfd(0, 0o2000000 | 0o4000));
  }

  notify(fd: number): void {
    new DataView(this.#eventValue.buffer).setBigUint64(0, 1n, true);
    libc().write(fd, this.#eventValue, 8n);
  }

  pidfdOpen(pid: number): number | null {
    const fd = Number(libc().syscall(BigInt(SYS_PIDFD_OPEN), BigInt(pid), 0n, 0n, 0n));
    if (fd >= 0) return fd;
    const code = errno();
    if (code === ESRCH) return null;
    throw new SysError(`pidfd_open(${pid})`, code);
  }

  kill(pidfd: number): void {
    const r = Number(
      libc().syscall(BigInt(SYS_PIDFD_SEND_SIGNAL), BigInt(pidfd), BigInt(SIGKILL), 0n, 0n),
    );
    if (r < 0) {
      const code = errno();
      if (code !== ESRCH) throw new SysError("pidfd_send_signal(SIGKILL)", code);
    }
  }

  close(fd: number): void {
    libc().close(fd);
  }
}

const COPY = BigInt(UFFDIO_COPY);
const ZEROPAGE = BigInt(UFFDIO_ZEROPAGE);
const WAKE = BigInt(UFFDIO_WAKE);

function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value >>> 0, true);
  view.setUint32(at + 4, Math.floor(value / 0x1_0000_0000), true);
}

/** A signed 64-bit field whose value fits in a double (a byte count or -errno). */
function getI64(view: DataView, at: number): number {
  return view.getInt32(at + 4, true) * 0x1_0000_0000 + view.getUint32(at, true);
}

/** What a fill ioctl answered: its result, errno, the bytes it reported, the bytes asked. */
function fillResult(
  what: string,
  { result, code, reported, length }: {
    result: number;
    code: number;
    reported: number;
    length: number;
  },
): FillResult {
  if (result >= 0) return { done: length, stop: null };
  const done = Math.max(0, reported);
  // A partial fill reports the bytes done and EAGAIN; the next call at the
  // stop point tells why it stopped.
  if (done > 0) return { done, stop: "again" };
  switch (code) {
    case EEXIST:
      return { done: 0, stop: "exists" };
    case EAGAIN:
      return { done: 0, stop: "again" };
    case ESRCH:
    case ENOENT:
      return { done: 0, stop: "gone" };
    default:
      throw new SysError(what, code);
  }
}

function decodeEvent(view: DataView, at: number): UffdEvent {
  const event = view.getUint8(at);
  const u64 = (offset: number) => Number(view.getBigUint64(at + 8 + offset, true));
  switch (event) {
    case UFFD_EVENT_PAGEFAULT:
      return {
        kind: "pagefault",
        address: u64(8),
        write: (u64(0) & UFFD_PAGEFAULT_FLAG_WRITE) !== 0,
      };
    case UFFD_EVENT_REMOVE:
      return { kind: "remove", start: u64(0), end: u64(8) };
    case UFFD_EVENT_UNMAP:
      return { kind: "unmap", start: u64(0), end: u64(8) };
    case UFFD_EVENT_REMAP:
      return { kind: "remap", from: u64(0), to: u64(8), length: u64(16) };
    case UFFD_EVENT_FORK:
      return { kind: "fork", fd: view.getUint32(at + 8, true) };
    default:
      return { kind: "unknown", event };
  }
}
