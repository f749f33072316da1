/**
 * Unix stream sockets that carry descriptors (`SCM_RIGHTS`) and tell who is
 * on the other side (`SO_PEERCRED`), through libc: Deno's own Unix sockets
 * can do neither. Every descriptor is non-blocking and close-on-exec.
 *
 * @module
 */

import {
  AF_UNIX,
  check,
  EAGAIN,
  EINTR,
  errno,
  libc,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  SCM_RIGHTS,
  SO_PEERCRED,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
  SysError,
} from "./libc.ts";

/** Longest socket path (`sun_path` holds 108 bytes with the final NUL). */
export const MAX_SOCKET_PATH = 107;

/** The credentials of a connected peer. */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** A message with the descriptors that came with it. */
export interface ReceivedMessage {
  data: Uint8Array;
  fds: number[];
}

function sockaddr(path: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length > MAX_SOCKET_PATH) {
    throw new RangeError(`Socket path is longer than ${MAX_SOCKET_PATH} bytes: ${path}`);
  }
  const out = new Uint8Array(110);
  new DataView(out.buffer).setUint16(0, AF_UNIX, true);
  out.set(bytes, 2);
  return out;
}

/** Creates a listening socket at `path` (which must not exist). */
export function listenUnix(path: string, backlog = 4): number {
  const fd = check("socket", libc().socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  try {
    const address = sockaddr(path);
    check(`bind(${path})`, libc().bind(fd, address, address.length));
    check("listen", libc().listen(fd, backlog));
    return fd;
  } catch (err) {
    libc().close(fd);
    throw err;
  }
}

/** Accepts a connection, or null when none is waiting. */
export function acceptUnix(fd: number): number | null {
  const conn = libc().accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (conn >= 0) return conn;
  const code = errno();
  if (code === EAGAIN || code === EINTR) return null;
  throw new SysError("accept4", code);
}

/** Connects to the socket at `path` (blocking; for the test helper). */
export function connectUnix(path: string): number {
  const fd = check("socket", libc().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const address = sockaddr(path);
  try {
    check(`connect(${path})`, libc().connect(fd, address, address.length));
  } catch (err) {
    libc().close(fd);
    throw err;
  }
  return fd;
}

/** The process on the other side of a connection. */
export function peerCredentials(fd: number): PeerCredentials {
  const cred = new Uint8Array(12);
  const length = new Uint8Array(4);
  new DataView(length.buffer).setUint32(0, cred.length, true);
  check("getsockopt(SO_PEERCRED)", libc().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, length));
  const view = new DataView(cred.buffer);
  return {
    pid: view.getInt32(0, true),
    uid: view.getUint32(4, true),
    gid: view.getUint32(8, true),
  };
}

/** Room for this many descriptors in one message (more are dropped by the kernel, and said so). */
const MAX_FDS = 8;

/**
 * Receives one message and its descriptors without blocking: null when
 * nothing is waiting, `"closed"` when the peer closed without sending.
 * Descriptors received are close-on-exec; the caller owns them.
 */
export function receiveWithFds(fd: number, max = 64 * 1024): ReceivedMessage | null | "closed" {
  const data = new Uint8Array(max);
  const iov = new Uint8Array(16);
  const control = new Uint8Array(16 + 8 * Math.ceil((4 * MAX_FDS) / 8));
  const header = new Uint8Array(56);
  const iovView = new DataView(iov.buffer);
  iovView.setBigUint64(0, pointerValue(data), true);
  iovView.setBigUint64(8, BigInt(data.length), true);
  const h = new DataView(header.buffer);
  h.setBigUint64(16, pointerValue(iov), true); // msg_iov
  h.setBigUint64(24, 1n, true); // msg_iovlen
  h.setBigUint64(32, pointerValue(control), true); // msg_control
  h.setBigUint64(40, BigInt(control.length), true); // msg_controllen
  // data, iov and control stay referenced here while the (synchronous) call runs.
  const n = Number(libc().recvmsg(fd, header, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
  if (n < 0) {
    const code = errno();
    if (code === EAGAIN || code === EINTR) return null;
    throw new SysError("recvmsg", code);
  }
  const fds = controlFds(control, Number(h.getBigUint64(40, true)));
  if (n === 0 && fds.length === 0) return "closed";
  if ((h.getInt32(48, true) & MSG_CTRUNC) !== 0) {
    for (const received of fds) libc().close(received);
    throw new Error("recvmsg: descriptors were truncated (more than expected were sent)");
  }
  return { data: data.slice(0, n), fds };
}

/** Sends `data` with `fds` as `SCM_RIGHTS` in one message (blocking; for the test helper). */
export function sendWithFds(fd: number, data: Uint8Array, fds: number[]): void {
  const payload = data.slice();
  const iov = new Uint8Array(16);
  const iovView = new DataView(iov.buffer);
  iovView.setBigUint64(0, pointerValue(payload), true);
  iovView.setBigUint64(8, BigInt(payload.length), true);
  const space = 16 + 8 * Math.ceil((4 * fds.length) / 8);
  const control = new Uint8Array(space);
  const c = new DataView(control.buffer);
  c.setBigUint64(0, BigInt(16 + 4 * fds.length), true); // cmsg_len
  c.setInt32(8, SOL_SOCKET, true);
  c.setInt32(12, SCM_RIGHTS, true);
  fds.forEach((f, i) => c.setInt32(16 + 4 * i, f, true));
  const header = new Uint8Array(56);
  const h = new DataView(header.buffer);
  h.setBigUint64(16, pointerValue(iov), true);
  h.setBigUint64(24, 1n, true);
  h.setBigUint64(32, fds.length > 0 ? pointerValue(control) : 0n, true);
  h.setBigUint64(40, BigInt(fds.length > 0 ? space : 0), true);
  const n = check("sendmsg", libc().sendmsg(fd, header, 0));
  if (n !== payload.length) throw new Error(`sendmsg sent ${n} of ${payload.length} bytes`);
}

function controlFds(control: Uint8Array, length: number): number[] {
  const view = new DataView(control.buffer);
  const out: number[] = [];
  let at = 0;
  while (at + 16 <= length) {
    const len = Number(view.getBigUint64(at, true));
    if (len < 16) break;
    const level = view.getInt32(at + 8, true);
    const type = view.getInt32(at + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let i = at + 16; i + 4 <= at + len; i += 4) out.push(view.getInt32(i, true));
    }
    at += 8 * Math.ceil(len / 8);
  }
  return out;
}

function pointerValue(buffer: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer as Uint8Array<ArrayBuffer>)));
}
