// Plain TypeScript references for the matmul, 4-bit GEMM and LLM.int8 kernels: float64 accumulation, exact
// integer math and an exactly emulated fmaf, so the native CPU kernels can be checked against obvious code.
// Slow and obvious on purpose.
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "@lowbit/dtypes";

export type FloatName = "float32" | "float16" | "bfloat16";

/** x rounded to a storage dtype (through float32, as the kernels store). */
export function roundTo(dtype: FloatName, x: number): number {
  switch (dtype) {
    case "float32":
      return Math.fround(x);
    case "float16":
      return f16BitsToF32(f32ToF16Bits(x));
    case "bfloat16":
      return bf16BitsToF32(f32ToBf16Bits(x));
  }
}

/** Relative half-ulp of a dtype: the largest relative error of one rounding to it (normal range). */
export function halfUlp(dtype: FloatName): number {
  return dtype === "float32" ? 2 ** -24 : dtype === "float16" ? 2 ** -11 : 2 ** -8;
}

// ---- deterministic random data -------------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function makeRng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box-Muller) as float32. */
export function randn(rand: () => number, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = 1 - rand();
    const v = rand();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

/** Non-zero values with |v| in [0.25, 1.25) and a random sign, as float32. */
export function randNonZero(rand: () => number, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rand() < 0.5 ? -1 : 1) * (0.25 + rand());
  return out;
}

/** Uniform integers in [lo, hi]. */
export function randInt(rand: () => number, n: number, lo: number, hi: number): number[] {
  return Array.from({ length: n }, () => lo + Math.floor(rand() * (hi - lo + 1)));
}

// ---- float matmul --------------------------------------------------------------------------------------

export interface MatmulShape {
  batch: number;
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
  /** Elements between batch items (0 broadcasts). */
  strideA: number;
  strideB: number;
  strideOut: number;
  alpha: number;
  beta: number;
}

/**
 * out[b] = alpha * op(A[b]) @ op(B[b]) + beta * out[b] in float64 over the given element values. Returns the new
 * out (same layout and length as `out`; elements between batch items are copied unchanged) and, per element, the
 * sum of |terms| (the scale of the rounding error a float32 evaluation may make).
 */
export function matmulRef(a: ArrayLike<number>, b: ArrayLike<number>, out: ArrayLike<number>, s: MatmulShape): { value: Float64Array; magnitude: Float64Array } {
  const value = Float64Array.from(out);
  const magnitude = new Float64Array(out.length);
  for (let t = 0; t < s.batch; t++) {
    const a0 = t * s.strideA;
    const b0 = t * s.strideB;
    const o0 = t * s.strideOut;
    for (let i = 0; i < s.M; i++) {
      for (let j = 0; j < s.N; j++) {
        let acc = 0;
        let mag = 0;
        for (let k = 0; k < s.K; k++) {
          const av = a[a0 + (s.transA ? k * s.M + i : i * s.K + k)]!;
          const bv = b[b0 + (s.transB ? j * s.K + k : k * s.N + j)]!;
          acc += av * bv;
          mag += Math.abs(av * bv);
        }
        const o = o0 + i * s.N + j;
        const prev = s.beta === 0 ? 0 : s.beta * out[o]!; // beta == 0 never reads out (NaN there does not leak)
        value[o] = s.alpha * acc + prev;
        magnitude[o] = Math.abs(s.alpha) * mag + Math.abs(prev);
      }
    }
  }
  return { value, magnitude };
}

// ---- fmaf ---------------------------------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** The float32 neighbour of float32 `r` in the direction of `toward`. */
function nextFloat32(r: number, toward: number): number {
  if (r === toward) return r;
  f32Scratch[0] = r;
  if (r === 0) {
    u32Scratch[0] = toward > 0 ? 1 : 0x80000001;
    return f32Scratch[0]!;
  }
  u32Scratch[0] = u32Scratch[0]! + ((toward > r) === (r > 0) ? 1 : -1);
  return f32Scratch[0]!;
}

/**
 * C's fmaf for float32 inputs in the normal range: fp32(a * b + c) with one rounding. a * b is exact in float64;
 * the float64 sum's error term (TwoSum) decides the exact-midpoint cases where rounding twice would go wrong.
 */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bv = s - p;
  const err = p - (s - bv) + (c - bv);
  const r = Math.fround(s);
  if (err === 0 || r === s) return r;
  const other = nextFloat32(r, s);
  if ((r + other) / 2 !== s) return r; // s is not a float32 midpoint: rounding s is rounding s + err
  const up = Math.max(r, other);
  const down = Math.min(r, other);
  return err > 0 ? up : down;
}

// ---- 4-bit GEMM ----------------------------------------------------------------------------------------

/** The absmax-block scales a fused 4-bit GEMM uses: plain absmax, or fmaf(code[q], absmax2[b >> 8], offset). */
export function fusedScales(
  absmax: Float32Array | Uint8Array,
  nested: { absmax: Float32Array; code: Float32Array; offset: number } | null,
): Float32Array {
  if (nested === null) return Float32Array.from(absmax);
  const out = new Float32Array(absmax.length);
  for (let i = 0; i < absmax.length; i++) out[i] = fmaf(nested.code[absmax[i]!]!, nested.absmax[i >> 8]!, nested.offset);
  return out;
}

/** W (N, K) as the float32 values fp32(LUT[code] * scale[block]) of flat index n*K + k. */
export function dequant4Ref(packed: Uint8Array, scales: Float32Array, lut: Float32Array, n: number, blocksize: number): Float32Array {
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const byte = packed[i >> 1]!;
    const code = i % 2 === 0 ? byte >> 4 : byte & 15;
    w[i] = lut[code]! * scales[Math.floor(i / blocksize)]!;
  }
  return w;
}

/** y (M, N) = x (M, K) @ W (N, K)^T + bias in float64, with the per-element sum of |terms|. */
export function linearRef(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, M: number, N: number, K: number): { value: Float64Array; magnitude: Float64Array } {
  const value = new Float64Array(M * N);
  const magnitude = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = bias === null ? 0 : bias[n]!;
      let mag = Math.abs(acc);
      for (let k = 0; k < K; k++) {
        const t = x[m * K + k]! * w[n * K + k]!;
        acc += t;
        mag += Math.abs(t);
      }
      value[m * N + n] = acc;
      magnitude[m * N + n] = mag;
    }
  }
  return { value, magnitude };
}

// ---- LLM.int8 -----------------------------------------------------------------------------------------

/** out (M, N) int32 = A (M, K) @ B (N, K)^T with wrapping int32 accumulation. */
export function int8MatmulRef(a: Int8Array, b: Int8Array, M: number, N: number, K: number): Int32Array {
  const out = new Int32Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc = (acc + a[i * K + k]! * b[j * K + k]!) | 0;
      out[i * N + j] = acc;
    }
  }
  return out;
}

/** fp32(1/127^2) = 0x38820610, bitsandbytes' MM_DEQUANT_CONST. */
export const MM_DEQUANT_SCALE = Math.fround(6.200012e-5);

/**
 * bitsandbytes int8_mm_dequant as float values of `outDtype`: v = fp16(fmaf((C * row) * col, 1/127^2, bias16 or 0));
 * a float32 / bfloat16 bias is added to the fp16 result afterwards (fp16(v + bias), upstream's out.add_(bias));
 * then v is cast to outDtype. `bias` holds the bias values (already in outDtype) or null.
 */
export function int8MmDequantRef(
  C: Int32Array, rowStats: Float32Array, colStats: Float32Array, bias: ArrayLike<number> | null, outDtype: FloatName, M: number, N: number,
): Float64Array {
  const out = new Float64Array(M * N);
  for (let r = 0; r < M; r++) {
    for (let c = 0; c < N; c++) {
      const p = Math.fround(Math.fround(C[r * N + c]! * rowStats[r]!) * colStats[c]!);
      const fused = bias !== null && outDtype === "float16";
      let v = roundTo("float16", fmaf(p, MM_DEQUANT_SCALE, fused ? bias[c]! : 0));
      if (bias !== null && !fused) v = roundTo("float16", Math.fround(v + bias[c]!));
      out[r * N + c] = roundTo(outDtype, v);
    }
  }
  return out;
}

/**
 * The outlier part of LLM.int8: out + x[:, cols] @ (fp32(fp32(CB * SCB) * 1/127))[:, cols]^T in float64, with the
 * sum of |terms| per element.
 */
export function int8OutlierRef(
  out: ArrayLike<number>, x: ArrayLike<number>, CB: Int8Array, SCB: Float32Array, cols: ArrayLike<number>, M: number, N: number, K: number,
  inv127: number,
): { value: Float64Array; magnitude: Float64Array } {
  const value = new Float64Array(M * N);
  const magnitude = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = out[m * N + n]!;
      let mag = Math.abs(acc);
      for (let j = 0; j < cols.length; j++) {
        const c = cols[j]!;
        const w = Math.fround(Math.fround(CB[n * K + c]! * SCB[n]!) * inv127);
        const t = x[m * K + c]! * w;
        acc += t;
        mag += Math.abs(t);
      }
      value[m * N + n] = acc;
      magnitude[m * N + n] = mag;
    }
  }
  return { value, magnitude };
}
