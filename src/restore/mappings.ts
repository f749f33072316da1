/**
 * The guest memory regions Firecracker sends with the userfaultfd: a JSON
 * array of `{base_host_virt_addr, size, offset, page_size}` (`page_size` in
 * bytes; releases before 1.7 send `page_size_kib` instead), one entry per
 * region, `offset` being where the region starts in the memory file.
 *
 * @module
 */

/** One region of guest memory in the VM process, and where it lies in the memory file. */
export interface RegionMapping {
  /** Address of the region in the VM process. */
  base: number;
  size: number;
  /** Offset of the region in the memory file. */
  offset: number;
  pageSize: number;
}

const MAX_REGIONS = 64;

/**
 * Parses and checks the mappings message: every region page-aligned, of one
 * page size (a power of two from 4 KiB to 1 GiB), within the memory file
 * (`fileSize` rounded up to a page), not overlapping another.
 *
 * @throws {SyntaxError} when the message is not the expected JSON
 * @throws {RangeError} when a region is out of bounds
 */
export function parseMappings(bytes: Uint8Array, fileSize: number): RegionMapping[] {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new SyntaxError(`Region mappings are not JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_REGIONS) {
    throw new SyntaxError(
      `Region mappings must be a JSON array of 1 to ${MAX_REGIONS} regions`,
    );
  }
  const regions = value.map((entry, i): RegionMapping => {
    if (typeof entry !== "object" || entry === null) {
      throw new SyntaxError(`Region ${i} is not an object`);
    }
    const e = entry as Record<string, unknown>;
    const field = (name: string): number => {
      const v = e[name];
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
        throw new SyntaxError(`Region ${i}: ${name} must be a non-negative integer`);
      }
      return v;
    };
    const pageSize = e.page_size !== undefined
      ? field("page_size")
      : e.page_size_kib !== undefined
      ? field("page_size_kib") * 1024
      : NaN;
    if (!Number.isFinite(pageSize)) {
      throw new SyntaxError(`Region ${i} has neither page_size nor page_size_kib`);
    }
    return {
      base: field("base_host_virt_addr"),
      size: field("size"),
      offset: field("offset"),
      pageSize,
    };
  });
  const pageSize = regions[0]!.pageSize;
  if (pageSize < 4096 || pageSize > 2 ** 30 || (pageSize & (pageSize - 1)) !== 0) {
    throw new RangeError(`Page size ${pageSize} is not a power of two from 4 KiB to 1 GiB`);
  }
  const limit = Math.ceil(fileSize / pageSize) * pageSize;
  regions.forEach((r, i) => {
    if (r.pageSize !== pageSize) {
      throw new RangeError(`Region ${i} has page size ${r.pageSize}, region 0 has ${pageSize}`);
    }
    if (r.size === 0 || r.base % pageSize || r.size % pageSize || r.offset % pageSize) {
      throw new RangeError(`Region ${i} is empty or not aligned to its ${pageSize}-byte pages`);
    }
    if (r.offset + r.size > limit) {
      throw new RangeError(
        `Region ${i} covers file bytes ${r.offset}..${r.offset + r.size}, ` +
          `beyond the memory file's ${fileSize} bytes`,
      );
    }
  });
  const byBase = [...regions].sort((a, b) => a.base - b.base);
  const byOffset = [...regions].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < regions.length; i++) {
    if (byBase[i]!.base < byBase[i - 1]!.base + byBase[i - 1]!.size) {
      throw new RangeError("Two regions overlap in the VM's address space");
    }
    if (byOffset[i]!.offset < byOffset[i - 1]!.offset + byOffset[i - 1]!.size) {
      throw new RangeError("Two regions overlap in the memory file");
    }
  }
  return regions;
}
