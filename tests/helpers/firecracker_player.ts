/**
 * Plays Firecracker's side of a `Uffd` memory backend, in its own process:
 * creates a userfaultfd, maps anonymous memory in two regions with a gap
 * (as Firecracker does for guest memory above 3 GiB), registers both for
 * missing faults (with remove events, for the balloon), connects to the
 * agent's socket and sends the region mappings with the descriptor as
 * `SCM_RIGHTS` in one message. Then it follows commands, one JSON object a
 * line on stdin, and answers one JSON line each on stdout:
 *
 * - `{"op":"touch","ranges":[[offset,length],…],"check":true}`: reads every
 *   page of the ranges (memory-file offsets) in order, each first access a
 *   fault the agent serves; with `check`, compares with `--file`. Answers
 *   `{pages, mismatches, firstMismatch, ms, latencyUs:{p50,p99,max}}`.
 * - `{"op":"zero","ranges":…}`: like touch, but every byte must be zero.
 * - `{"op":"remove","offset":o,"length":n}`: `madvise(MADV_DONTNEED)`, as
 *   a balloon inflating does.
 * - `{"op":"exit"}`.
 *
 * Usage: `deno run --allow-ffi --allow-read firecracker_player.ts --socket S
 * --file MEM --size N [--gap N] [--split N] [--page-size-kib] [--close-socket]`
 *
 * With `--map-file PATH` instead of `--socket`, it plays today's `File`
 * backend: the memory file mapped privately, no userfaultfd (for the
 * benchmark's baseline).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  addressOf,
  check,
  cString,
  libc,
  MADV_DONTNEED,
  MAP_ANONYMOUS,
  MAP_NORESERVE,
  MAP_PRIVATE,
  O_CLOEXEC,
  O_NONBLOCK,
  pointerAt,
  PROT_READ,
  PROT_WRITE,
  SYS_USERFAULTFD,
  UFFD_API,
  UFFD_FEATURE_EVENT_REMOVE,
  UFFDIO_API,
  UFFDIO_REGISTER,
  UFFDIO_REGISTER_MODE_MISSING,
} from "../../src/restore/libc.ts";
import { connectUnix, sendWithFds } from "../../src/restore/unix_socket.ts";

const PAGE = 4096;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    socket: { type: "string" },
    file: { type: "string" },
    size: { type: "string" },
    gap: { type: "string", default: String(64 * 1024 * 1024) },
    split: { type: "string" },
    "page-size-kib": { type: "boolean", default: false },
    "close-socket": { type: "boolean", default: false },
    "map-file": { type: "string" },
  },
});
const size = Number(values.size);
const gap = Number(values.gap);
// The first region's size: half the memory, on a page boundary.
const split = values.split ? Number(values.split) : Math.floor(size / 2 / PAGE) * PAGE;
const lc = libc();

let regions: { base: number; size: number; offset: number }[];
if (values["map-file"]) {
  const fd = lc.open(cString(values["map-file"]), 0, 0);
  if (fd < 0) throw new Error(`cannot open ${values["map-file"]}`);
  const mapped = lc.mmap(null, BigInt(size), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0n);
  lc.close(fd);
  const base = Number(Deno.UnsafePointer.value(mapped));
  if (base === 0 || base === 2 ** 64 - 1) throw new Error("mmap of the file failed");
  regions = [{ base, size, offset: 0 }];
} else {
  regions = connectWithUffd();
}

function connectWithUffd(): { base: number; size: number; offset: number }[] {
  const uffd = Number(
    lc.syscall(BigInt(SYS_USERFAULTFD), BigInt(O_CLOEXEC | O_NONBLOCK), 0n, 0n, 0n),
  );
  if (uffd < 0) throw new Error("userfaultfd() failed");
  const api = new Uint8Array(24);
  const apiView = new DataView(api.buffer);
  apiView.setBigUint64(0, BigInt(UFFD_API), true);
  apiView.setBigUint64(8, BigInt(UFFD_FEATURE_EVENT_REMOVE), true);
  check("UFFDIO_API", lc.ioctl(uffd, BigInt(UFFDIO_API), api));

  const total = split + gap + (size - split);
  const base = lc.mmap(
    null,
    BigInt(total),
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
    -1,
    0n,
  );
  const baseAddress = Number(Deno.UnsafePointer.value(base));
  if (baseAddress === 0 || baseAddress === 2 ** 64 - 1) throw new Error("mmap failed");
  // The gap: nothing mapped between the two regions.
  check("munmap", lc.munmap(pointerAt(baseAddress + split), BigInt(gap)));
  const regions = [
    { base: baseAddress, size: split, offset: 0 },
    { base: baseAddress + split + gap, size: size - split, offset: split },
  ];
  for (const r of regions) {
    const reg = new Uint8Array(32);
    const view = new DataView(reg.buffer);
    view.setBigUint64(0, BigInt(r.base), true);
    view.setBigUint64(8, BigInt(r.size), true);
    view.setBigUint64(16, BigInt(UFFDIO_REGISTER_MODE_MISSING), true);
    check("UFFDIO_REGISTER", lc.ioctl(uffd, BigInt(UFFDIO_REGISTER), reg));
  }

  const mappings = regions.map((r) =>
    values["page-size-kib"]
      ? { base_host_virt_addr: r.base, size: r.size, offset: r.offset, page_size_kib: PAGE / 1024 }
      : { base_host_virt_addr: r.base, size: r.size, offset: r.offset, page_size: PAGE }
  );
  const sock = connectUnix(values.socket!);
  sendWithFds(sock, new TextEncoder().encode(JSON.stringify(mappings)), [uffd]);
  if (values["close-socket"]) lc.close(sock);
  return regions;
}

const file = values.file ? await Deno.open(values.file, { read: true }) : null;

function addressOfOffset(offset: number): number {
  for (const r of regions) {
    if (offset >= r.offset && offset < r.offset + r.size) return r.base + (offset - r.offset);
  }
  throw new RangeError(`offset ${offset} is outside the memory`);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function touch(ranges: [number, number][], mode: "check" | "zero" | "none") {
  const latencies: number[] = [];
  let pages = 0;
  let mismatches = 0;
  let firstMismatch: number | null = null;
  const expected = new Uint8Array(PAGE);
  const started = performance.now();
  for (const [offset, length] of ranges) {
    for (let at = offset - (offset % PAGE); at < offset + length; at += PAGE) {
      const address = addressOfOffset(at);
      const view = new Deno.UnsafePointerView(pointerAt(address));
      const t0 = performance.now();
      view.getUint8(0); // the access that faults
      latencies.push((performance.now() - t0) * 1000);
      pages++;
      if (mode === "none") continue;
      const actual = new Uint8Array(
        Deno.UnsafePointerView.getArrayBuffer(pointerAt(address), PAGE),
      );
      if (mode === "zero") expected.fill(0);
      else {
        file!.seekSync(at, Deno.SeekMode.Start);
        let got = 0;
        while (got < PAGE) {
          const n = file!.readSync(expected.subarray(got));
          if (n === null) break;
          got += n;
        }
        expected.fill(0, got);
      }
      let same = true;
      for (let i = 0; i < PAGE; i++) {
        if (actual[i] !== expected[i]) {
          same = false;
          break;
        }
      }
      if (!same) {
        mismatches++;
        firstMismatch ??= at;
      }
    }
  }
  const ms = performance.now() - started;
  latencies.sort((a, b) => a - b);
  return {
    pages,
    mismatches,
    firstMismatch,
    ms,
    latencyUs: {
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      max: latencies[latencies.length - 1] ?? 0,
    },
  };
}

function write(value: unknown): void {
  const bytes = new TextEncoder().encode(JSON.stringify(value) + "\n");
  let at = 0;
  while (at < bytes.length) at += Deno.stdout.writeSync(bytes.subarray(at));
}

write({ ready: true, pid: Deno.pid, regions, bufferCheck: addressOf(new Uint8Array(1)) > 0 });

const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
let buffered = "";
for await (const part of lines) {
  buffered += part;
  let newline: number;
  while ((newline = buffered.indexOf("\n")) >= 0) {
    const line = buffered.slice(0, newline);
    buffered = buffered.slice(newline + 1);
    if (line.trim() === "") continue;
    const command = JSON.parse(line);
    switch (command.op) {
      case "touch":
        write(touch(command.ranges, command.check === false ? "none" : "check"));
        break;
      case "zero":
        write(touch(command.ranges, "zero"));
        break;
      case "remove": {
        const address = addressOfOffset(command.offset);
        check("madvise", lc.madvise(pointerAt(address), BigInt(command.length), MADV_DONTNEED));
        write({ removed: command.length });
        break;
      }
      case "exit":
        write({ exiting: true });
        Deno.exit(0);
    }
  }
}
