import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import { randomBytes, tempDir } from "../helpers/temp.ts";
import { DenoFileSystem, type FileStat, type FileSystem, isNoSpace } from "../../src/fs/mod.ts";
import { MEMORY_DEV, MEMORY_PAGE_SIZE, MemoryFileSystem } from "../../src/fs/memory.ts";
import { Journal, type JournalRecord, type JournalStateMachine } from "../../src/journal/mod.ts";
import { silentLogger } from "../../src/log/mod.ts";
import { VirtualClock } from "../../src/util/clock.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Runs operations for a case: `attempt` gives an operation's result, or its
 * error as `Class CODE`, and keeps the error's message (both must agree on
 * messages too, the root path aside).
 */
class Recorder {
  readonly messages: string[] = [];
  readonly #root: string;

  constructor(root: string) {
    this.#root = root;
  }

  attempt = async (fn: () => Promise<unknown>): Promise<unknown> => {
    try {
      const value = await fn();
      return value === undefined ? "ok" : value;
    } catch (err) {
      const code = (err as { code?: string }).code;
      this.messages.push((err as Error).message.replaceAll(this.#root, "<root>"));
      return `${(err as Error).constructor.name}${code ? ` ${code}` : ""}`;
    }
  };
}

/** What both file systems report alike (not ino, dev, blocks, times, directory sizes). */
function shape(stat: FileStat | null): unknown {
  if (stat === null) return null;
  if (stat.isDirectory) return { dir: true, type: (stat.mode ?? 0) & 0o170000 };
  return { file: true, size: stat.size, mode: stat.mode };
}

async function write(fs: FileSystem, path: string, text: string | Uint8Array): Promise<void> {
  const handle = await fs.open(path, { write: true, create: true, truncate: true });
  try {
    await handle.writeAt(typeof text === "string" ? encoder.encode(text) : text, 0);
  } finally {
    handle.close();
  }
}

async function read(fs: FileSystem, path: string): Promise<string> {
  return decoder.decode(await fs.readFile(path));
}

interface Case {
  name: string;
  /** Runs against a file system whose `root` exists and is empty; returns observations. */
  run(fs: FileSystem, root: string, attempt: Recorder["attempt"]): Promise<unknown>;
  /** What both must observe (with `<root>` for the root path). */
  expected: unknown;
}

const cases: Case[] = [
  {
    name: "open() creates, refuses and truncates like Deno.open",
    async run(fs, root, attempt) {
      const f = `${root}/f`;
      const out: Record<string, unknown> = {};
      out.missing = await attempt(() => fs.open(`${root}/missing`));
      out.missingParent = await attempt(() =>
        fs.open(`${root}/no/f`, { write: true, create: true })
      );
      await write(fs, f, "hello");
      out.createNewExisting = await attempt(() => fs.open(f, { write: true, createNew: true }));
      await fs.mkdir(`${root}/d`);
      out.createNewDir = await attempt(() =>
        fs.open(`${root}/d`, { write: true, createNew: true })
      );
      out.writeDir = await attempt(() => fs.open(`${root}/d`, { write: true }));
      out.createWithoutWrite = await attempt(() => fs.open(`${root}/g`, { create: true }));
      out.truncateWithoutWrite = await attempt(() => fs.open(f, { truncate: true }));
      const reader = await fs.open(f);
      out.size = await reader.size();
      out.writeReadOnly = await attempt(() => reader.writeAt(encoder.encode("x"), 0));
      out.truncateReadOnly = await attempt(() => reader.truncate(0));
      reader.close();
      const created = await fs.open(`${root}/new`, { write: true, createNew: true, mode: 0o600 });
      created.close();
      out.createdMode = shape(await fs.stat(`${root}/new`));
      const truncating = await fs.open(f, { write: true, truncate: true, mode: 0o600 });
      out.truncated = await truncating.size();
      truncating.close();
      out.keptMode = shape(await fs.stat(f));
      out.readFileDir = await attempt(() => fs.readFile(`${root}/d`));
      out.readFileMissing = await attempt(() => fs.readFile(`${root}/missing`));
      const dir = await fs.open(`${root}/d`);
      out.dirStat = shape(await dir.stat());
      out.readDirHandle = await attempt(() => dir.readAt(new Uint8Array(1), 0));
      dir.close();
      return out;
    },
    expected: {
      missing: "NotFound ENOENT",
      missingParent: "NotFound ENOENT",
      createNewExisting: "AlreadyExists EEXIST",
      createNewDir: "AlreadyExists EEXIST",
      writeDir: "IsADirectory EISDIR",
      createWithoutWrite: "Error",
      truncateWithoutWrite: "Error",
      size: 5,
      writeReadOnly: "Error EBADF",
      truncateReadOnly: "TypeError EINVAL",
      createdMode: { file: true, size: 0, mode: 0o100600 },
      truncated: 0,
      keptMode: { file: true, size: 0, mode: 0o100644 },
      readFileDir: "IsADirectory EISDIR",
      readFileMissing: "NotFound ENOENT",
      dirStat: { dir: true, type: 0o040000 },
      readDirHandle: "IsADirectory EISDIR",
    },
  },
  {
    name: "readAt() and writeAt() handle holes, the end of file and truncate()",
    async run(fs, root) {
      const out: Record<string, unknown> = {};
      const handle = await fs.open(`${root}/sparse`, { write: true, create: true });
      await handle.writeAt(encoder.encode("abc"), 10);
      out.size = await handle.size();
      const buffer = new Uint8Array(16).fill(0xff);
      out.read = await handle.readAt(buffer, 0);
      out.bytes = [...buffer];
      out.atEnd = await handle.readAt(buffer, 13);
      out.pastEnd = await handle.readAt(buffer, 1000);
      // Across a page boundary of the memory file system, far past the end.
      const big = randomBytes(100_000, 7);
      await handle.writeAt(big, 3 * MEMORY_PAGE_SIZE - 77);
      const back = new Uint8Array(big.length);
      out.bigRead = await handle.readAt(back, 3 * MEMORY_PAGE_SIZE - 77);
      out.bigSame = back.every((byte, i) => byte === big[i]);
      const hole = new Uint8Array(1000).fill(1);
      await handle.readAt(hole, 50_000);
      out.holeIsZero = hole.every((byte) => byte === 0);
      await handle.truncate(11);
      out.shrunk = await handle.size();
      await handle.truncate(20);
      const after = new Uint8Array(20);
      out.extendedRead = await handle.readAt(after, 0);
      out.extended = [...after];
      out.stat = shape(await handle.stat());
      await handle.writeAt(new Uint8Array(0), 500);
      out.emptyWriteSize = await handle.size();
      handle.close();
      out.readFile = [...await fs.readFile(`${root}/sparse`)];
      return out;
    },
    expected: {
      size: 13,
      read: 13,
      bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 97, 98, 99, 0xff, 0xff, 0xff],
      atEnd: 0,
      pastEnd: 0,
      bigRead: 100_000,
      bigSame: true,
      holeIsZero: true,
      shrunk: 11,
      extendedRead: 20,
      extended: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 97, 0, 0, 0, 0, 0, 0, 0, 0, 0],
      stat: { file: true, size: 20, mode: 0o100644 },
      emptyWriteSize: 20,
      readFile: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 97, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    },
  },
  {
    name: "an open file keeps its inode through rename, replacement and unlink",
    async run(fs, root, attempt) {
      const out: Record<string, unknown> = {};
      await write(fs, `${root}/a`, "first");
      const handle = await fs.open(`${root}/a`, { write: true });
      const ino = (await handle.stat()).ino;
      await fs.rename(`${root}/a`, `${root}/b`);
      out.renamedSameInode = (await fs.stat(`${root}/b`)).ino === ino;
      // Replace b by another file: the handle still sees the old one.
      await write(fs, `${root}/c`, "second!");
      await fs.rename(`${root}/c`, `${root}/b`);
      out.pathNow = await read(fs, `${root}/b`);
      out.handleStat = shape(await handle.stat());
      out.handleSameInode = (await handle.stat()).ino === ino;
      const buffer = new Uint8Array(5);
      await handle.readAt(buffer, 0);
      out.handleReads = decoder.decode(buffer);
      // Unlink: still readable and writable through the handle.
      await fs.remove(`${root}/b`);
      out.gone = await fs.statOrNull(`${root}/b`);
      await handle.writeAt(encoder.encode("!"), 5);
      out.sizeAfterUnlink = await handle.size();
      out.statAfterUnlink = shape(await handle.stat());
      handle.close();
      handle.close();
      out.readClosed = await attempt(() => handle.readAt(buffer, 0));
      out.writeClosed = await attempt(() => handle.writeAt(buffer, 0));
      out.statClosed = await attempt(() => handle.stat());
      out.sizeClosed = await attempt(() => handle.size());
      out.syncClosed = await attempt(() => handle.sync());
      out.names = await fs.readDir(root);
      return out;
    },
    expected: {
      renamedSameInode: true,
      pathNow: "second!",
      handleStat: { file: true, size: 5, mode: 0o100644 },
      handleSameInode: true,
      handleReads: "first",
      gone: null,
      sizeAfterUnlink: 6,
      statAfterUnlink: { file: true, size: 6, mode: 0o100644 },
      readClosed: "BadResource",
      writeClosed: "BadResource",
      statClosed: "BadResource",
      sizeClosed: "BadResource",
      syncClosed: "BadResource",
      names: [],
    },
  },
  {
    name: "rename() over files and directories follows POSIX",
    async run(fs, root, attempt) {
      const out: Record<string, unknown> = {};
      const p = (name: string) => `${root}/${name}`;
      await write(fs, p("f1"), "one");
      await write(fs, p("f2"), "two");
      await fs.mkdir(p("empty"));
      await fs.mkdir(p("full/sub"));
      await write(fs, p("full/sub/x"), "x");
      await fs.mkdir(p("src/inner"));
      await write(fs, p("src/inner/y"), "y");
      out.fileOverFile = await attempt(() => fs.rename(p("f1"), p("f2")));
      out.f2 = await read(fs, p("f2"));
      out.dirOverFile = await attempt(() => fs.rename(p("src"), p("f2")));
      out.fileOverDir = await attempt(() => fs.rename(p("f2"), p("empty")));
      out.dirOverFull = await attempt(() => fs.rename(p("src"), p("full")));
      out.dirIntoItself = await attempt(() => fs.rename(p("src"), p("src/inner/deeper")));
      out.dirOntoChild = await attempt(() => fs.rename(p("full/sub"), p("full")));
      out.missing = await attempt(() => fs.rename(p("nope"), p("x")));
      out.missingParent = await attempt(() => fs.rename(p("f2"), p("no/f2")));
      out.fileSlash = await attempt(() => fs.rename(p("f2/"), p("f3")));
      out.self = await attempt(() => fs.rename(p("f2"), p("f2")));
      out.dirSelfSlash = await attempt(() => fs.rename(p("src"), p("src/")));
      out.dirOverEmpty = await attempt(() => fs.rename(p("src"), p("empty")));
      out.moved = await read(fs, p("empty/inner/y"));
      out.srcGone = await fs.statOrNull(p("src"));
      await fs.link(p("f2"), p("f2-link"));
      out.linksOntoEachOther = await attempt(() => fs.rename(p("f2"), p("f2-link")));
      out.names = await fs.readDir(root);
      out.viaDots = await attempt(() => fs.rename(p("full/./sub/../sub"), p("moved-sub")));
      out.after = await fs.readDir(root);
      return out;
    },
    expected: {
      fileOverFile: "ok",
      f2: "one",
      dirOverFile: "NotADirectory ENOTDIR",
      fileOverDir: "IsADirectory EISDIR",
      dirOverFull: "Error ENOTEMPTY",
      dirIntoItself: "TypeError EINVAL",
      dirOntoChild: "Error ENOTEMPTY",
      missing: "NotFound ENOENT",
      missingParent: "NotFound ENOENT",
      fileSlash: "NotADirectory ENOTDIR",
      self: "ok",
      dirSelfSlash: "ok",
      dirOverEmpty: "ok",
      moved: "y",
      srcGone: null,
      linksOntoEachOther: "ok",
      names: ["empty", "f2", "f2-link", "full"],
      viaDots: "ok",
      after: ["empty", "f2", "f2-link", "full", "moved-sub"],
    },
  },
  {
    name: "link() shares the inode, and the data lives while a name or handle does",
    async run(fs, root, attempt) {
      const out: Record<string, unknown> = {};
      await write(fs, `${root}/a`, "shared");
      await fs.mkdir(`${root}/d`);
      out.link = await attempt(() => fs.link(`${root}/a`, `${root}/b`));
      out.sameInode = (await fs.stat(`${root}/a`)).ino === (await fs.stat(`${root}/b`)).ino;
      out.sameDev = (await fs.stat(`${root}/a`)).dev === (await fs.stat(`${root}/b`)).dev;
      const handle = await fs.open(`${root}/b`, { write: true });
      await handle.writeAt(encoder.encode("S"), 0);
      out.throughOtherName = await read(fs, `${root}/a`);
      out.ontoExisting = await attempt(() => fs.link(`${root}/a`, `${root}/b`));
      out.ontoDir = await attempt(() => fs.link(`${root}/a`, `${root}/d`));
      out.missing = await attempt(() => fs.link(`${root}/nope`, `${root}/c`));
      out.dir = await attempt(() => fs.link(`${root}/d`, `${root}/d2`));
      out.missingParent = await attempt(() => fs.link(`${root}/a`, `${root}/no/c`));
      await fs.remove(`${root}/a`);
      out.otherNameStays = await read(fs, `${root}/b`);
      await fs.remove(`${root}/b`);
      const buffer = new Uint8Array(6);
      out.handleReads = await handle.readAt(buffer, 0);
      out.text = decoder.decode(buffer);
      handle.close();
      out.names = await fs.readDir(root);
      return out;
    },
    expected: {
      link: "ok",
      sameInode: true,
      sameDev: true,
      throughOtherName: "Shared",
      ontoExisting: "AlreadyExists EEXIST",
      ontoDir: "AlreadyExists EEXIST",
      missing: "NotFound ENOENT",
      dir: "PermissionDenied EPERM",
      missingParent: "NotFound ENOENT",
      otherNameStays: "Shared",
      handleReads: 6,
      text: "Shared",
      names: ["d"],
    },
  },
  {
    name: "remove() deletes files and trees; a missing path is not an error",
    async run(fs, root, attempt) {
      const out: Record<string, unknown> = {};
      await fs.mkdir(`${root}/t/a/b`);
      await fs.mkdir(`${root}/t/c`);
      await write(fs, `${root}/t/a/b/f`, "deep");
      await write(fs, `${root}/t/g`, "g");
      await write(fs, `${root}/keep`, "k");
      await fs.chmod(`${root}/t/g`, 0o444);
      const handle = await fs.open(`${root}/t/a/b/f`);
      out.tree = await attempt(() => fs.remove(`${root}/t`));
      out.gone = await fs.statOrNull(`${root}/t`);
      const buffer = new Uint8Array(4);
      await handle.readAt(buffer, 0);
      out.openSurvives = decoder.decode(buffer);
      handle.close();
      out.missing = await attempt(() => fs.remove(`${root}/t`));
      out.missingParent = await attempt(() => fs.remove(`${root}/no/such/path`));
      out.underFile = await attempt(() => fs.remove(`${root}/keep/x`));
      out.file = await attempt(() => fs.remove(`${root}/keep`));
      out.names = await fs.readDir(root);
      return out;
    },
    expected: {
      tree: "ok",
      gone: null,
      openSurvives: "deep",
      missing: "ok",
      missingParent: "ok",
      underFile: "NotADirectory ENOTDIR",
      file: "ok",
      names: [],
    },
  },
  {
    name: "mkdir(), readDir(), stat(), statOrNull() and chmod()",
    async run(fs, root, attempt) {
      const out: Record<string, unknown> = {};
      out.deep = await attempt(() => fs.mkdir(`${root}/x/y/z`));
      out.again = await attempt(() => fs.mkdir(`${root}/x/y`));
      await write(fs, `${root}/x/file`, "12345");
      out.overFile = await attempt(() => fs.mkdir(`${root}/x/file`));
      out.underFile = await attempt(() => fs.mkdir(`${root}/x/file/sub`));
      out.viaMissingDotDot = await attempt(() => fs.mkdir(`${root}/m/../n`));
      for (const name of ["b", "B", "a", "10", "9", "é", "_z"]) {
        await write(fs, `${root}/x/y/${name}`, "");
      }
      out.sorted = await fs.readDir(`${root}/x/y`);
      out.readDirFile = await attempt(() => fs.readDir(`${root}/x/file`));
      out.readDirMissing = await attempt(() => fs.readDir(`${root}/nope`));
      out.statDir = shape(await fs.stat(`${root}/x`));
      out.statFile = shape(await fs.stat(`${root}/x/file`));
      out.statMissing = await attempt(() => fs.stat(`${root}/nope`));
      out.statOrNullMissing = await fs.statOrNull(`${root}/nope`);
      out.statOrNullMissingParent = await fs.statOrNull(`${root}/nope/deeper`);
      out.statOrNullUnderFile = await attempt(() => fs.statOrNull(`${root}/x/file/deeper`));
      out.statFileSlash = await attempt(() => fs.stat(`${root}/x/file/`));
      out.chmod = await attempt(() => fs.chmod(`${root}/x/file`, 0o444));
      out.chmodded = shape(await fs.stat(`${root}/x/file`));
      out.chmodMissing = await attempt(() => fs.chmod(`${root}/nope`, 0o600));
      out.root = await fs.readDir(root);
      return out;
    },
    expected: {
      deep: "ok",
      again: "ok",
      overFile: "AlreadyExists EEXIST",
      underFile: "NotADirectory ENOTDIR",
      viaMissingDotDot: "ok",
      sorted: ["10", "9", "B", "_z", "a", "b", "z", "é"],
      readDirFile: "NotADirectory ENOTDIR",
      readDirMissing: "NotFound ENOENT",
      statDir: { dir: true, type: 0o040000 },
      statFile: { file: true, size: 5, mode: 0o100644 },
      statMissing: "NotFound ENOENT",
      statOrNullMissing: null,
      statOrNullMissingParent: null,
      statOrNullUnderFile: "NotADirectory ENOTDIR",
      statFileSlash: "NotADirectory ENOTDIR",
      chmod: "ok",
      chmodded: { file: true, size: 5, mode: 0o100444 },
      chmodMissing: "NotFound ENOENT",
      root: ["m", "n", "x"],
    },
  },
  {
    name: "realPath() normalises the path and requires it to exist; syncDir() needs it too",
    async run(fs, root, attempt) {
      const out: Record<string, unknown> = {};
      await fs.mkdir(`${root}/a/b`);
      await write(fs, `${root}/a/f`, "");
      const strip = (path: unknown) =>
        typeof path === "string" ? path.replace(root, "<root>") : path;
      out.dots = strip(await attempt(() => fs.realPath(`${root}//a/./b/../b/`)));
      out.up = strip(await attempt(() => fs.realPath(`${root}/a/b/../..`)));
      out.file = strip(await attempt(() => fs.realPath(`${root}/a/b/../f`)));
      out.throughMissing = await attempt(() => fs.realPath(`${root}/a/missing/../f`));
      out.missing = await attempt(() => fs.realPath(`${root}/a/missing`));
      out.fileSlash = await attempt(() => fs.realPath(`${root}/a/f/`));
      out.statDotted = shape(await fs.stat(`${root}/a/./b/../f`));
      out.syncDir = await attempt(() => fs.syncDir(`${root}/a`));
      out.syncDirMissing = await attempt(() => fs.syncDir(`${root}/nope`));
      const handle = await fs.open(`${root}/a/f`);
      out.sync = await attempt(() => handle.sync({ metadata: true }));
      handle.close();
      return out;
    },
    expected: {
      dots: "<root>/a/b",
      up: "<root>",
      file: "<root>/a/f",
      throughMissing: "NotFound ENOENT",
      missing: "NotFound ENOENT",
      fileSlash: "NotADirectory ENOTDIR",
      statDotted: { file: true, size: 0, mode: 0o100644 },
      syncDir: "ok",
      syncDirMissing: "NotFound ENOENT",
      sync: "ok",
    },
  },
];

Deno.test("MemoryFileSystem agrees with DenoFileSystem", async (t) => {
  for (const { name, run, expected } of cases) {
    await t.step(name, async () => {
      await using dir = await tempDir();
      const root = await Deno.realPath(dir.path);
      const memory = new MemoryFileSystem();
      await memory.mkdir(root);
      const realRecorder = new Recorder(root);
      const fakeRecorder = new Recorder(root);
      const real = await run(new DenoFileSystem(), root, realRecorder.attempt);
      const fake = await run(memory, root, fakeRecorder.attempt);
      assertEquals(fake, real, "MemoryFileSystem differs from DenoFileSystem");
      assertEquals(fakeRecorder.messages, realRecorder.messages, "error messages differ");
      assertEquals(real, expected, "DenoFileSystem differs from the expected observations");
      assertEquals(memory.openHandles, 0);
    });
  }
});

Deno.test("MemoryFileSystem fails writes beyond capacityBytes with ENOSPC, writing nothing", async () => {
  const fs = new MemoryFileSystem({ capacityBytes: 100_000 });
  await write(fs, "/a", randomBytes(60_000, 1));
  assertEquals(fs.usedBytes, 60_000);
  const handle = await fs.open("/b", { write: true, create: true });
  await handle.writeAt(encoder.encode("head"), 0);
  const err = await assertRejects(() => handle.writeAt(randomBytes(50_000, 2), 4));
  assert(isNoSpace(err), String(err));
  assert((err as Error).message.includes("ENOSPC"));
  assertEquals((err as { code?: string }).code, "ENOSPC");
  assertEquals(await handle.size(), 4);
  assertEquals(await read(fs, "/b"), "head");
  assertEquals(fs.usedBytes, 60_004);
  // Overwriting stored bytes costs nothing.
  await write(fs, "/a", randomBytes(60_000, 3));
  assertEquals(fs.usedBytes, 60_004);
  // An unlinked file still open keeps its bytes until closed.
  const reader = await fs.open("/a");
  await fs.remove("/a");
  assertEquals(fs.usedBytes, 60_004);
  await assertRejects(() => handle.writeAt(randomBytes(50_000, 2), 4), isNoSpace);
  reader.close();
  assertEquals(fs.usedBytes, 4);
  await handle.writeAt(randomBytes(50_000, 2), 4);
  assertEquals(fs.usedBytes, 50_004);
  // Truncating frees; extending by truncate allocates nothing.
  await handle.truncate(10);
  assertEquals(fs.usedBytes, 10);
  await handle.truncate(10_000_000);
  assertEquals(fs.usedBytes, 10);
  handle.close();
  fs.capacityBytes = 5;
  await assertRejects(() => write(fs, "/c", "123456"), isNoSpace);
  assertEquals(await read(fs, "/c"), "");
  fs.capacityBytes = Infinity;
  await write(fs, "/c", "123456");
  assertEquals(fs.usedBytes, 16);
});

Deno.test("MemoryFileSystem counts only written pages of sparse files in blocks", async () => {
  const fs = new MemoryFileSystem();
  const handle = await fs.open("/sparse", { write: true, create: true });
  await handle.truncate(1024 ** 3);
  let stat = await handle.stat();
  assertEquals([stat.size, stat.blocks, fs.usedBytes], [1024 ** 3, 0, 0]);
  // A written page costs from its start to the last byte written in it.
  await handle.writeAt(encoder.encode("x"), 10 * MEMORY_PAGE_SIZE + 1000);
  stat = await handle.stat();
  assertEquals([stat.size, stat.blocks, fs.usedBytes], [1024 ** 3, 2, 1001]);
  await handle.writeAt(new Uint8Array(2 * MEMORY_PAGE_SIZE), 0);
  stat = await handle.stat();
  assertEquals(stat.blocks, Math.ceil((2 * MEMORY_PAGE_SIZE + 1001) / 512));
  assertEquals(fs.usedBytes, 2 * MEMORY_PAGE_SIZE + 1001);
  await handle.truncate(MEMORY_PAGE_SIZE + 10);
  stat = await handle.stat();
  assertEquals([stat.size, stat.blocks, fs.usedBytes], [
    MEMORY_PAGE_SIZE + 10,
    129,
    MEMORY_PAGE_SIZE + 10,
  ]);
  handle.close();
  const dense = randomBytes(100_000, 5);
  await write(fs, "/dense", dense);
  assertEquals((await fs.stat("/dense")).blocks, Math.ceil(100_000 / 512));
  assertEquals(await fs.readFile("/dense"), dense);
  // Appending in small writes stays correct across page boundaries.
  const appender = await fs.open("/log", { write: true, create: true });
  let size = 0;
  for (let i = 0; i < 3000; i++) {
    const record = encoder.encode(`record ${i}\n`);
    await appender.writeAt(record, size);
    size += record.length;
  }
  appender.close();
  const lines = (await read(fs, "/log")).trimEnd().split("\n");
  assertEquals(lines.length, 3000);
  assertEquals(lines[2999], "record 2999");
  assertEquals((await fs.stat("/log")).blocks, Math.ceil(size / 512));
});

async function scenario(fs: MemoryFileSystem, clock: VirtualClock): Promise<unknown[]> {
  const trace: unknown[] = [];
  await fs.mkdir("/data/snapshots");
  for (const name of ["c", "a", "b"]) {
    await write(fs, `/data/snapshots/${name}`, name.repeat(10));
    await clock.advance(1000);
  }
  await fs.link("/data/snapshots/a", "/data/a-link");
  await fs.rename("/data/snapshots/b", "/data/b");
  await fs.remove("/data/snapshots/c");
  for (const path of fs.files()) trace.push(path, await fs.stat(path));
  trace.push(await fs.readDir("/data"), await fs.stat("/data"), fs.usedBytes, fs.counters);
  return trace;
}

Deno.test("MemoryFileSystem is deterministic: same operations, same inodes, times and listings", async () => {
  const runs = [];
  for (let i = 0; i < 2; i++) {
    const clock = new VirtualClock();
    const fs = new MemoryFileSystem({ now: clock.now });
    runs.push(await scenario(fs, clock));
  }
  assertEquals(runs[1], runs[0]);
  const stat = runs[0]![1] as FileStat;
  assertEquals(stat.dev, MEMORY_DEV);
  assertEquals(stat.mtimeMs, Date.UTC(2025, 0, 1) + 1000);
  assertEquals(runs[0]!.filter((x) => typeof x === "string"), [
    "/data/a-link",
    "/data/b",
    "/data/snapshots/a",
  ]);
});

Deno.test("MemoryFileSystem extras: links, existence, counters, microtask completion, absolute paths", async () => {
  const fs = new MemoryFileSystem({ now: () => 42 });
  await fs.mkdir("/d");
  await write(fs, "/d/f", "x");
  await fs.link("/d/f", "/d/g");
  assertEquals(fs.linkCount("/d/f"), 2);
  await fs.remove("/d/g");
  assertEquals(fs.linkCount("/d/f"), 1);
  assertEquals([fs.exists("/d"), fs.exists("/d/f"), fs.exists("/d/g"), fs.exists("/d/f/x")], [
    true,
    true,
    false,
    false,
  ]);
  const handle = await fs.open("/d/f", { write: true });
  await handle.sync();
  await handle.sync({ metadata: true });
  assertEquals(fs.openHandles, 1);
  handle.close();
  await fs.syncDir("/d");
  assertEquals(fs.counters, { opens: 2, syncs: 2, syncDirs: 1 });
  assertEquals((await fs.stat("/d/f")).mtimeMs, 42);
  assertEquals(fs.openHandles, 0);

  // Results arrive in microtasks: no event loop turn is needed.
  let done = false;
  void fs.readFile("/d/f").then(() => done = true);
  for (let i = 0; i < 5 && !done; i++) await null;
  assert(done);

  await assertRejects(() => fs.stat("d/f"), (err) => err instanceof TypeError);
  await assertRejects(() => fs.mkdir("relative"), (err) => err instanceof TypeError);
  await assertRejects(() => fs.remove("/"), (err) => (err as { code?: string }).code === "EBUSY");
  assertEquals(await fs.realPath("/"), "/");
  assertEquals(await fs.realPath("/.."), "/");
});

/** Remembers every payload, in order. */
class PayloadLog implements JournalStateMachine {
  items: string[] = [];
  apply(record: JournalRecord): void {
    this.items.push(decoder.decode(record.payload));
  }
  snapshot(): Uint8Array {
    return encoder.encode(JSON.stringify(this.items));
  }
  restore(payload: Uint8Array | null): void {
    this.items = payload === null ? [] : JSON.parse(decoder.decode(payload));
  }
  isKnownType(type: number): boolean {
    return type === 1;
  }
}

Deno.test("The journal runs on a MemoryFileSystem: compaction, recovery, ENOSPC and heal", async () => {
  const fs = new MemoryFileSystem();
  const options = { fs, dir: "/data/journal", log: silentLogger, compactAfterBytes: 2000 };
  const first = new PayloadLog();
  const { journal } = await Journal.open(first, options);
  for (let round = 0; round < 10; round++) {
    const appends = [];
    for (let i = 0; i < 20; i++) {
      appends.push(journal.append(1, encoder.encode(`record ${round}.${i}`), { sync: i === 0 }));
    }
    await Promise.all(appends);
  }
  // Compaction runs after the appends it follows resolve: let the last finish.
  await journal.checkpoint();
  assert(journal.stats.checkpoints > 2, `${journal.stats.checkpoints} checkpoints`);
  fs.capacityBytes = fs.usedBytes;
  const err = await assertRejects(() =>
    journal.append(1, encoder.encode("no room"), { sync: true })
  );
  assert(isNoSpace((err as Error).cause ?? err), String(err));
  fs.capacityBytes = Infinity;
  assertEquals(await journal.heal(), true);
  await journal.append(1, encoder.encode("after heal"), { sync: true });
  await journal.close();
  assertEquals(fs.openHandles, 0);

  const second = new PayloadLog();
  const reopened = await Journal.open(second, options);
  assertEquals(second.items, [...first.items]);
  assertEquals(second.items.length, 201);
  assertEquals(second.items.at(-1), "after heal");
  await reopened.journal.close();
  assertEquals(await fs.readDir("/data/journal"), ["checkpoint", "wal"]);
});
