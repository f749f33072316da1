// Chunk bitmaps: bit `c` (byte `c >> 3`, bit `c & 7`) stands for chunk `c`.

/** True when bit `index` of `bits` is set (bit `c` = chunk `c`). */
export function bit(bits: Uint8Array, index: number): boolean {
  return ((bits[index >> 3] ?? 0) & (1 << (index & 7))) !== 0;
}

/** A copy of `bits` sized for `total` chunks (extra bits dropped, missing ones clear). */
export function copyBits(bits: Uint8Array, total: number): Uint8Array {
  const out = new Uint8Array(Math.ceil(total / 8));
  out.set(bits.subarray(0, out.length));
  return out;
}
