/**
 * The first moments of a restore: Firecracker connects to the session's
 * socket and sends its one message (the region mappings, with the guest
 * memory's userfaultfd); the peer's credentials name the VM process.
 * Private to `src/restore/`.
 *
 * @module
 */

import { errorMessage } from "../errors.ts";
import type { Clock } from "../util/clock.ts";
import { POLLIN } from "./libc.ts";
import { parseMappings, type RegionMapping } from "./mappings.ts";
import type { SessionOutcome } from "./session_types.ts";
import type { UffdSys } from "./uffd_sys.ts";
import { acceptUnix, peerCredentials, receiveWithFds } from "./unix_socket.ts";

/** The session a VM connects to, as the handshake reads and updates it. */
export interface Listening {
  /** The listening socket (closed and set to -1 once the VM connected). */
  listenFd: number;
  /** Readable when the session ends meanwhile. */
  readonly wakeFd: number;
  /** The VM's connection, once accepted. */
  connFd: number | null;
  /** The VM process, once connected. */
  pid: number | null;
  readonly state: string;
  /** The memory file's size, which the mappings must lie within. */
  readonly memory: { readonly size: number };
  finish(outcome: SessionOutcome, reason: string): void;
}

/** What the VM sent: everything a {@linkcode RestoreSession} needs from it. */
export interface VmConnection {
  /** The guest memory's userfaultfd. */
  uffd: number;
  /** A pidfd of the VM process, or null when it had exited already. */
  pidfd: number | null;
  pid: number;
  regions: RegionMapping[];
}

/** Where a handshake waits and for how long. */
export interface HandshakeOptions {
  sys: UffdSys;
  clock: Clock;
  /** The VM must connect and send its message within this long. */
  timeoutMs: number;
}

/**
 * Waits for the VM to connect and send its memory. Resolves null when the
 * session ended meanwhile or the VM gave up (the session is then finished).
 *
 * @throws {Error} when the message carries no userfaultfd or unusable
 * mappings (the VM is stopped then: it cannot run without its memory)
 */
export async function awaitVm(
  entry: Listening,
  { sys, clock, timeoutMs }: HandshakeOptions,
): Promise<VmConnection | null> {
  const deadline = clock.monotonic() + timeoutMs;
  // 1. The VM connects.
  let conn: number | null = null;
  while (conn === null) {
    const left = Math.max(0, Math.round(deadline - clock.monotonic()));
    const [ready, woken] = await sys.poll([entry.listenFd, entry.wakeFd], left);
    if (entry.state === "ending" || woken) return null;
    if (ready! & POLLIN) conn = acceptUnix(entry.listenFd);
    else if (clock.monotonic() >= deadline) {
      entry.finish("ended", "the VM did not connect in time");
      return null;
    }
  }
  entry.connFd = conn;
  sys.close(entry.listenFd);
  entry.listenFd = -1;
  // 2. Its one message: the mappings, with the userfaultfd.
  let message = null;
  while (message === null) {
    const left = Math.max(0, Math.round(deadline - clock.monotonic()));
    const [ready, woken] = await sys.poll([conn, entry.wakeFd], Math.min(left, 60_000));
    if (entry.state === "ending" || woken) return null;
    if (ready === 0 && clock.monotonic() >= deadline) {
      entry.finish("ended", "the VM connected but sent nothing");
      return null;
    }
    const got = receiveWithFds(conn);
    if (got === "closed") {
      entry.finish("ended", "the VM closed the socket without sending its memory");
      return null;
    }
    message = got;
  }
  const credentials = peerCredentials(conn);
  entry.pid = credentials.pid;
  const pidfd = sys.pidfdOpen(credentials.pid);
  const [uffd, ...extra] = message.fds;
  for (const fd of extra) sys.close(fd);
  if (uffd === undefined) {
    if (pidfd !== null) sys.close(pidfd);
    throw new Error("the VM sent its mappings without a userfaultfd");
  }
  let regions;
  try {
    regions = parseMappings(message.data, entry.memory.size);
  } catch (err) {
    // The VM cannot run without its memory: stop it, explicitly.
    if (pidfd !== null) sys.kill(pidfd);
    sys.close(uffd);
    if (pidfd !== null) sys.close(pidfd);
    throw new Error(`the VM sent unusable mappings: ${errorMessage(err)}`);
  }
  return { uffd, pidfd, pid: credentials.pid, regions };
}
