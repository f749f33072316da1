/**
 * The few libc calls lazy restore needs, through Deno's FFI (Linux x86-64
 * only): userfaultfd ioctls, Unix sockets that carry descriptors, poll,
 * pidfds and positional reads. Opened on first use, so nothing is loaded
 * (and no `--allow-ffi` is needed) unless a restore runs.
 *
 * Struct layouts and constants follow `<linux/userfaultfd.h>`,
 * `<sys/socket.h>` and `<poll.h>` for x86-64. Exported for the test helper
 * that plays Firecracker's side.
 *
 * @module
 */

const SYMBOLS = {
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64"], result: "i64" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  pread64: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /** The same call on a worker thread: the event loop stays free while it waits. */
  pollAsync: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  kill: { parameters: ["i32", "i32"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const;

/** The opened library. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;

/** libc, opened on first use. */
export function libc(): Libc {
  if (lib === null) {
    if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
      throw new Error(
        `Lazy restore needs Linux on x86-64 (this is ${Deno.build.os} on ${Deno.build.arch})`,
      );
    }
    lib = Deno.dlopen("libc.so.6", SYMBOLS);
  }
  return lib.symbols;
}

/** The calling thread's errno (read right after a failed synchronous call). */
export function errno(): number {
  const at = libc().__errno_location();
  return at === null ? 0 : new Deno.UnsafePointerView(at).getInt32();
}

/** A libc call failed: `code` is its errno. */
export class SysError extends Error {
  readonly errno: number;
  constructor(what: string, code: number) {
    super(`${what} failed: ${errnoText(code)} (errno ${code})`);
    this.name = "SysError";
    this.errno = code;
  }
}

/** The text of an errno value (`strerror`). */
export function errnoText(code: number): string {
  const text = libc().strerror(code);
  return text === null ? `errno ${code}` : new Deno.UnsafePointerView(text).getCString();
}

/** Throws {@linkcode SysError} when a call returned a negative value. */
export function check(what: string, result: number | bigint): number {
  const n = Number(result);
  if (n < 0) throw new SysError(what, errno());
  return n;
}

/** The address of a buffer, as a number (user-space addresses fit in 53 bits). */
export function addressOf(buffer: Uint8Array): number {
  const pointer = Deno.UnsafePointer.of(buffer as Uint8Array<ArrayBuffer>);
  return Number(Deno.UnsafePointer.value(pointer));
}

/** A pointer from an address. */
export function pointerAt(address: number): Deno.PointerObject {
  return Deno.UnsafePointer.create(BigInt(address))!;
}

/** A NUL-terminated copy of `text`. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

// --- constants ---------------------------------------------------------------

export const EAGAIN = 11;
export const EINTR = 4;
export const ENOENT = 2;
export const ESRCH = 3;
export const EEXIST = 17;
export const EFAULT = 14;
export const EINVAL = 22;
export const ENOMEM = 12;

export const O_RDONLY = 0;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const F_GETFL = 3;
export const F_SETFL = 4;

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SCM_RIGHTS = 1;
export const SO_PEERCRED = 17;
export const MSG_DONTWAIT = 0x40;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const MSG_CTRUNC = 0x8;

export const POLLIN = 0x1;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;

export const SIGKILL = 9;

export const SYS_USERFAULTFD = 323;
export const SYS_PIDFD_OPEN = 434;
export const SYS_PIDFD_SEND_SIGNAL = 424;

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_PRIVATE = 2;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MADV_DONTNEED = 4;

// <linux/userfaultfd.h>
export const UFFD_API = 0xaa;
export const UFFDIO_API = 0xc018aa3f;
export const UFFDIO_REGISTER = 0xc020aa00;
export const UFFDIO_UNREGISTER = 0x8010aa01;
export const UFFDIO_WAKE = 0x8010aa02;
export const UFFDIO_COPY = 0xc028aa03;
export const UFFDIO_ZEROPAGE = 0xc020aa04;
export const UFFDIO_REGISTER_MODE_MISSING = 1;
export const UFFDIO_COPY_MODE_DONTWAKE = 1;
export const UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1;

export const UFFD_EVENT_PAGEFAULT = 0x12;
export const UFFD_EVENT_FORK = 0x13;
export const UFFD_EVENT_REMAP = 0x14;
export const UFFD_EVENT_REMOVE = 0x15;
export const UFFD_EVENT_UNMAP = 0x16;
export const UFFD_PAGEFAULT_FLAG_WRITE = 1;

export const UFFD_FEATURE_EVENT_FORK = 1 << 1;
export const UFFD_FEATURE_EVENT_REMAP = 1 << 2;
export const UFFD_FEATURE_EVENT_REMOVE = 1 << 3;
export const UFFD_FEATURE_EVENT_UNMAP = 1 << 6;

/** Size of one `struct uffd_msg`. */
export const UFFD_MSG_SIZE = 32;
