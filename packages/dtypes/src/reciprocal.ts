// The reciprocal bitsandbytes' CUDA kernels compute: they are built with --use_fast_math, so
// `1.0f / absmax` is the hardware approximation rcp.approx.ftz.f32, which differs from the IEEE
// quotient by one ulp for about 13% of inputs (spec-bitsandbytes.md P1). Where it differs, a scaled
// value can land on the other side of a code threshold, so reproducing checkpoints byte for byte needs
// the same reciprocal.
//
// The correction below was measured on an NVIDIA H100 (tooling/scripts/rcp-approx/): for every
// float32 mantissa a float16 or bfloat16 value can have (the low 13 mantissa bits zero), whether the
// approximation is one ulp above or below the IEEE result. Weights and activations in checkpoints are
// 16-bit, so their block absmax always has such a mantissa. For other float32 values the IEEE
// reciprocal is returned (bitsandbytes may then differ by one code for values within an ulp of a
// threshold: conformance level L1 of the spec).

function bitset(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Bit k (MSB first): the approximate reciprocal of mantissa k << 13 is one ulp above the IEEE one. */
const UP = bitset(
  "00106800000080000000001060c04000002018400000000000184000600000080800000000a0c0000000002000001000201810c040400100462010004080205001c0900110001800000000000000100001b000101801000c000008800000000000007400050401000000000000aa000400000090800080000080001804000000",
);
/** Bit k: one ulp below. */
const DOWN = bitset(
  "02020000800200020204038000000003010000008000900000000214000000000000200100000000040000040000000000004001000000140000006000000000000000000002000000000000020000000000000000000000000000000001000000010000000000000000000000000000000000000000022c0400000000002080",
);

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The table's correction (-1, 0 or +1 ulp) for the 10-bit mantissa k (k = float32 mantissa >> 13). */
export function rcpCorrection(k: number): number {
  const byte = k >> 3;
  const mask = 0x80 >> (k & 7);
  if (UP[byte]! & mask) return 1;
  if (DOWN[byte]! & mask) return -1;
  return 0;
}

/**
 * 1 / x as bitsandbytes' CUDA kernels compute it (rcp.approx.ftz.f32) for x with a 16-bit mantissa,
 * and the IEEE float32 reciprocal otherwise. Subnormal inputs and results flush to zero as on CUDA.
 */
export function cudaReciprocal(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const exp = (bits >>> 23) & 0xff;
  if (exp === 0) return (bits & 0x80000000) !== 0 ? -Infinity : Infinity; // ±0 and subnormals (FTZ)
  if (exp === 0xff) return Math.fround(1 / x); // Inf → 0, NaN → NaN
  f32[0] = 1 / x;
  const rExp = (u32[0]! >>> 23) & 0xff;
  if (rExp === 0) return (bits & 0x80000000) !== 0 ? -0 : 0; // subnormal result (FTZ)
  if ((bits & 0x1fff) === 0) {
    const d = rcpCorrection((bits >>> 13) & 0x3ff);
    if (d !== 0) u32[0] = u32[0]! + d; // moves the magnitude by one ulp; the sign bit is untouched
  }
  return f32[0]!;
}
