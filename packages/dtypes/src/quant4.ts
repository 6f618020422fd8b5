// 4-bit blockwise quantization, NF4 and FP4, with optional double quantization of the absmax
// (bitsandbytes quantize_4bit / dequantize_4bit, CUDA reference semantics: spec-bitsandbytes.md §3–§9).
// Codes are packed two per byte, the first element in the high nibble.

import { blockAbsmax, dequantizeBlockwiseF32, quantizeBlockwiseF32 } from "./blockwise8.js";
import {
  DYNAMIC_MAP_SIGNED,
  FP4_CODE,
  FP4_MAGNITUDE_CODE,
  FP4_QUANT_MAP,
  FP4_THRESHOLDS,
  NF4_CODE,
  NF4_THRESHOLDS,
} from "./codebooks.js";
import { ArgumentError, expected } from "./errors.js";
import { cudaReciprocal } from "./reciprocal.js";
import { fromFloat32 } from "./float.js";
import { QuantState, type QuantType } from "./quant-state.js";
import { checkFloatDType, checkLength, checkOneOf, checkShape, floatInput, type FloatArray, type FloatDType } from "./validate.js";

/** Blocksizes bitsandbytes accepts for 4-bit quantization (32 since 0.49.2). */
export const QUANT4_BLOCKSIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096] as const;
/** Blocksize of the nested (double) quantization of the absmax; the fused kernels support only 256. */
export const NESTED_BLOCKSIZE = 256;
export const QUANT_TYPES: readonly QuantType[] = ["nf4", "fp4"];

export interface Quantize4bitOptions {
  /** Elements per absmax block (default 64). */
  blocksize?: number;
  /** "nf4" (default here, as transformers users set it) or "fp4". */
  quantType?: QuantType;
  /** Double quantization: the absmax itself is 8-bit quantized in blocks of 256 (default false). */
  compressStatistics?: boolean;
  /** What a Uint16Array input holds: "float16" or "bfloat16". */
  dtype?: FloatDType;
  /** Original tensor shape recorded in the state (default [n]). */
  shape?: number[];
}

export interface Quantized4bit {
  /** (ceil(n / 2),) packed codes, high nibble first. */
  packed: Uint8Array;
  state: QuantState;
}

const [N0, N1, N2, N3, N4, N5, N6, N7, N8, N9, N10, N11, N12, N13, N14] = NF4_THRESHOLDS as unknown as number[];
const [F0, F1, F2, F3, F4, F5, F6] = FP4_THRESHOLDS as unknown as number[];

/** NF4 code of a scaled float32 value: the number of thresholds t with xs > t (ties low, NaN → 0). */
export function nf4Code(xs: number): number {
  // A 4-level decision tree over the sorted thresholds (the CUDA dQuantizeNF4 shape).
  if (xs > N7!) {
    if (xs > N11!) {
      if (xs > N13!) return xs > N14! ? 15 : 14;
      return xs > N12! ? 13 : 12;
    }
    if (xs > N9!) return xs > N10! ? 11 : 10;
    return xs > N8! ? 9 : 8;
  }
  if (xs > N3!) {
    if (xs > N5!) return xs > N6! ? 7 : 6;
    return xs > N4! ? 5 : 4;
  }
  if (xs > N1!) return xs > N2! ? 3 : 2;
  return xs > N0! ? 1 : 0;
}

/** FP4 code of a scaled float32 value: sign bit for xs < 0, magnitude by the CUDA literal thresholds. */
export function fp4Code(xs: number): number {
  const sign = xs < 0 ? 8 : 0;
  const m = Math.abs(xs);
  let idx: number;
  if (m > F3!) idx = m > F5! ? (m > F6! ? 7 : 6) : m > F4! ? 5 : 4;
  else idx = m > F1! ? (m > F2! ? 3 : 2) : m > F0! ? 1 : 0;
  return sign | FP4_MAGNITUDE_CODE[idx]!;
}

/** Codebook used for dequantization (FP4 code 8 decodes to -0.0, as the CUDA LUT). */
export function dequantTable(quantType: QuantType): Float32Array {
  return quantType === "nf4" ? NF4_CODE : FP4_CODE;
}

/** The `quant_map` tensor bitsandbytes stores with a 4-bit weight. */
export function quantMap(quantType: QuantType): Float32Array {
  return quantType === "nf4" ? NF4_CODE : FP4_QUANT_MAP;
}

/**
 * Packs 4-bit codes of float32 values. absmax is computed per block (NaN ignored); each block scales by
 * r = 1 / absmax as the CUDA kernels compute it (cudaReciprocal) and codes fp32(x * r). An all-zero
 * block gives r = +inf and 0 * inf = NaN → code 0.
 */
export function quantize4bitF32(x: Float32Array, blocksize: number, quantType: QuantType): { packed: Uint8Array; absmax: Float32Array } {
  const n = x.length;
  const absmax = blockAbsmax(x, blocksize);
  const packed = new Uint8Array(Math.ceil(n / 2));
  const codeOf = quantType === "nf4" ? nf4Code : fp4Code;
  // blocksize is even, so a byte never straddles two blocks.
  for (let b = 0; b < absmax.length; b++) {
    const r = cudaReciprocal(absmax[b]!);
    const end = Math.min(n, (b + 1) * blocksize);
    for (let i = b * blocksize; i < end; i += 2) {
      const hi = codeOf(Math.fround(x[i]! * r));
      // Odd n: the missing last element is the code of 0.0 (loads pad with zeros).
      // (For an all-zero block r = +inf, so the pad is NaN → code 0, exactly as on CUDA.)
      const lo = codeOf(Math.fround((i + 1 < end ? x[i + 1]! : 0) * r));
      packed[i >> 1] = (hi << 4) | lo;
    }
  }
  return { packed, absmax };
}

/** bitsandbytes `quantize_4bit`. */
export function quantize4bit(values: FloatArray, options: Quantize4bitOptions = {}): Quantized4bit {
  const blocksize = checkOneOf(options.blocksize ?? 64, QUANT4_BLOCKSIZES, "blocksize");
  const quantType = checkOneOf(options.quantType ?? "nf4", QUANT_TYPES, "quantType");
  const compress = options.compressStatistics ?? false;
  if (typeof compress !== "boolean") throw new ArgumentError(expected("a boolean", "compressStatistics", compress));
  const input = floatInput(values, options.dtype, "values");
  const shape = checkShape(options.shape ?? [input.values.length], input.values.length, "shape");
  const { packed, absmax } = quantize4bitF32(input.values, blocksize, quantType);
  const base = { quantType, blocksize, dtype: input.dtype, shape, code: quantMap(quantType) };
  if (!compress) return { packed, state: new QuantState({ ...base, absmax }) };

  // Double quantization: subtract the mean (float64 sum, rounded to float32), then 8-bit quantize
  // the centred absmax with the signed dynamic map in blocks of 256.
  let sum = 0;
  for (let i = 0; i < absmax.length; i++) sum += absmax[i]!;
  const offset = Math.fround(sum / absmax.length);
  const centred = new Float32Array(absmax.length);
  for (let i = 0; i < absmax.length; i++) centred[i] = absmax[i]! - offset;
  const q = quantizeBlockwiseF32(centred, NESTED_BLOCKSIZE, DYNAMIC_MAP_SIGNED);
  return {
    packed,
    state: new QuantState({
      ...base,
      absmax: q.codes,
      offset,
      state2: { absmax: q.absmax, code: DYNAMIC_MAP_SIGNED, blocksize: NESTED_BLOCKSIZE, dtype: "float32" },
    }),
  };
}

/**
 * The float32 absmax of a state. Nested states use the standalone path's two roundings:
 * fp32(fp32(code[q] * absmax2[i / 256]) + offset).
 */
export function stateAbsmax(state: QuantState): Float32Array {
  if (state.state2 === null) return state.absmax as Float32Array;
  const s2 = state.state2;
  const absmax = dequantizeBlockwiseF32(state.absmax as Uint8Array, s2.absmax, s2.blocksize, s2.code);
  const offset = state.offset ?? 0;
  for (let i = 0; i < absmax.length; i++) absmax[i] = absmax[i]! + offset;
  return absmax;
}

/** Dequantizes packed codes to float32 values (no argument checks). */
export function dequantize4bitF32(packed: Uint8Array, absmax: Float32Array, n: number, blocksize: number, quantType: QuantType): Float32Array {
  const lut = dequantTable(quantType);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const byte = packed[i >> 1]!;
    const scale = absmax[Math.floor(i / blocksize)]!;
    out[i] = lut[byte >> 4]! * scale;
    if (i + 1 < n) out[i + 1] = lut[byte & 15]! * scale;
  }
  return out;
}

/**
 * bitsandbytes `dequantize_4bit`: out[i] = T(fp32(LUT[code_i] * absmax[i / bs])). Returns float32
 * values, or float16 / bfloat16 bits in a Uint16Array, in `outDtype` (default the state's dtype).
 */
export function dequantize4bit(packed: Uint8Array, state: QuantState, outDtype: FloatDType = state.dtype): Float32Array | Uint16Array {
  if (!(packed instanceof Uint8Array)) throw new ArgumentError(expected("a Uint8Array of packed 4-bit codes", "packed", packed));
  if (!(state instanceof QuantState)) throw new ArgumentError(expected("a QuantState", "state", state));
  const dtype = checkFloatDType(outDtype, "outDtype");
  const n = state.numel;
  checkLength(packed.length, Math.ceil(n / 2), "packed");
  const out = dequantize4bitF32(packed, stateAbsmax(state), n, state.blocksize, state.quantType);
  return fromFloat32(out, dtype) as Float32Array | Uint16Array;
}
