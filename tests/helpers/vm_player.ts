/**
 * Runs the Firecracker-playing helper (`firecracker_player.ts`) as its own
 * process and talks to it one JSON line at a time.
 *
 * @module
 */

const PLAYER = new URL("./firecracker_player.ts", import.meta.url).pathname;

/** Answer of a touch: pages read, mismatches, timings. */
export interface TouchResult {
  pages: number;
  mismatches: number;
  firstMismatch: number | null;
  ms: number;
  latencyUs: { p50: number; p99: number; max: number };
}

/** A running player. */
export interface VmPlayer extends AsyncDisposable {
  pid: number;
  status: Promise<Deno.CommandStatus>;
  /** Reads pages (memory-file offsets) and compares them with the memory file. */
  touch(ranges: [number, number][], check?: boolean): Promise<TouchResult>;
  /** Reads pages that must be all zero. */
  zero(ranges: [number, number][]): Promise<TouchResult>;
  /** `madvise(MADV_DONTNEED)` over file bytes `offset..offset+length`. */
  remove(offset: number, length: number): Promise<void>;
  exit(): Promise<void>;
  kill(): Promise<Deno.CommandStatus>;
  stderr(): string;
}

/** Options for {@linkcode startPlayer}. */
export interface PlayerOptions {
  socket: string;
  /** The memory file's bytes, to compare with. */
  file: string;
  size: number;
  /** Send `page_size_kib` as releases before 1.7 do. @default false */
  pageSizeKib?: boolean;
  /** Close the socket right after sending, as older releases do. @default false */
  closeSocket?: boolean;
}

/** Starts a player that connects to `socket` and waits for commands. */
export async function startPlayer(options: PlayerOptions): Promise<VmPlayer> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-ffi",
      "--allow-read",
      PLAYER,
      "--socket",
      options.socket,
      "--file",
      options.file,
      "--size",
      String(options.size),
      ...(options.pageSizeKib ? ["--page-size-kib"] : []),
      ...(options.closeSocket ? ["--close-socket"] : []),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let errors = "";
  const decoder = new TextDecoder();
  const stderrDone = (async () => {
    for await (const part of child.stderr) errors += decoder.decode(part, { stream: true });
  })();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const writer = child.stdin.getWriter();
  let buffer = "";
  const line = async (): Promise<Record<string, unknown>> => {
    while (!buffer.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`player exited: ${errors}`);
      buffer += value;
    }
    const at = buffer.indexOf("\n");
    const text = buffer.slice(0, at);
    buffer = buffer.slice(at + 1);
    return JSON.parse(text);
  };
  const send = async (command: unknown) => {
    await writer.write(new TextEncoder().encode(JSON.stringify(command) + "\n"));
    return await line();
  };
  let ended = false;
  const kill = async () => {
    if (!ended) {
      ended = true;
      try {
        child.kill("SIGKILL");
      } catch {
        // gone
      }
    }
    const status = await child.status;
    await writer.close().catch(() => {});
    await reader.cancel().catch(() => {});
    await stderrDone.catch(() => {});
    return status;
  };
  try {
    await line(); // {"ready": true}: the mappings and the descriptor were sent
  } catch (err) {
    await kill();
    throw err;
  }
  return {
    pid: child.pid,
    status: child.status,
    touch: (ranges, check = true) => send({ op: "touch", ranges, check }) as Promise<never>,
    zero: (ranges) => send({ op: "zero", ranges }) as Promise<never>,
    remove: async (offset, length) => void await send({ op: "remove", offset, length }),
    exit: async () => {
      await send({ op: "exit" });
      ended = true;
      await kill();
    },
    kill,
    stderr: () => errors,
    [Symbol.asyncDispose]: async () => void await kill(),
  };
}

/** Polls `check` until it returns true (a condition, not a fixed sleep). */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
