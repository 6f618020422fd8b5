// 8-bit blockwise quantization with a 256-entry codebook (bitsandbytes quantize_blockwise /
// dequantize_blockwise, CUDA reference semantics: spec-bitsandbytes.md §5, §11).

import { DYNAMIC_MAP_SIGNED } from "./codebooks.js";
import { ArgumentError, expected } from "./errors.js";
import { fromFloat32 } from "./float.js";
import { cudaReciprocal } from "./reciprocal.js";
import { checkFloatDType, checkLength, checkOneOf, floatInput, type FloatArray, type FloatDType } from "./validate.js";

/** Blocksizes bitsandbytes' CUDA quantize_blockwise accepts. */
export const BLOCKWISE8_BLOCKSIZES = [64, 128, 256, 512, 1024, 2048, 4096] as const;

export interface Blockwise8Options {
  /** Elements per absmax block (default 4096, as bitsandbytes). */
  blocksize?: number;
  /** A sorted float32[256] codebook; default the signed dynamic map. */
  code?: Float32Array;
  /** What a Uint16Array input holds. */
  dtype?: FloatDType;
}

export interface Blockwise8Result {
  /** One code per element (n,). */
  codes: Uint8Array;
  /** float32 absmax per block (ceil(n / blocksize),). */
  absmax: Float32Array;
  code: Float32Array;
  blocksize: number;
  /** dtype of the input, which dequantization returns by default. */
  dtype: FloatDType;
}

/** Per-block absmax in float32: max |x| ignoring NaN, starting from -FLT_MAX (an all-NaN block keeps it). */
export function blockAbsmax(x: Float32Array, blocksize: number): Float32Array {
  const nBlocks = Math.ceil(x.length / blocksize);
  const absmax = new Float32Array(nBlocks);
  for (let b = 0; b < nBlocks; b++) {
    const end = Math.min(x.length, (b + 1) * blocksize);
    let am = -3.4028234663852886e38;
    for (let i = b * blocksize; i < end; i++) {
      const a = Math.abs(x[i]!);
      if (a > am) am = a; // NaN compares false: skipped, like fmaxf
    }
    absmax[b] = am;
  }
  return absmax;
}

/**
 * The CUDA nearest-code search (`dQuantize<0>`): a 7-step binary search from pivot 127 ending on an
 * even index, then one midpoint comparison. Exact midpoint ties go to the even index; NaN gives 0.
 * `xs` must be a float32 value; `code` is sorted ascending.
 */
export function nearestCode8(xs: number, code: Float32Array): number {
  let pivot = 127;
  let lower = 0;
  let upper = 255;
  for (let step = 64; step >= 1; step >>= 1) {
    if (xs > code[pivot]!) {
      lower = pivot;
      pivot += step;
    } else {
      upper = pivot;
      pivot -= step;
    }
  }
  const val = code[pivot]!;
  if (xs > val) {
    const mid = Math.fround(code[upper]! + val) * 0.5;
    return xs > mid ? upper : pivot;
  }
  const mid = Math.fround(code[lower]! + val) * 0.5;
  return xs < mid ? lower : pivot;
}

function checkCode(code: unknown, name: string): Float32Array {
  if (!(code instanceof Float32Array) || code.length !== 256) {
    throw new ArgumentError(expected("a Float32Array(256) codebook", name, code));
  }
  return code;
}

/** Quantizes float32 values already decoded (no argument checks); used by double quantization too. */
export function quantizeBlockwiseF32(x: Float32Array, blocksize: number, code: Float32Array): { codes: Uint8Array; absmax: Float32Array } {
  const absmax = blockAbsmax(x, blocksize);
  const codes = new Uint8Array(x.length);
  for (let b = 0; b < absmax.length; b++) {
    const r = cudaReciprocal(absmax[b]!); // one reciprocal per block, then x * r (CUDA form)
    const end = Math.min(x.length, (b + 1) * blocksize);
    for (let i = b * blocksize; i < end; i++) codes[i] = nearestCode8(Math.fround(x[i]! * r), code);
  }
  return { codes, absmax };
}

/** Dequantizes to float32 values (no argument checks). */
export function dequantizeBlockwiseF32(codes: Uint8Array, absmax: Float32Array, blocksize: number, code: Float32Array): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = code[codes[i]!]! * absmax[Math.floor(i / blocksize)]!;
  return out;
}

/** bitsandbytes `quantize_blockwise`: one code per element, one float32 absmax per block. */
export function quantizeBlockwise(values: FloatArray, options: Blockwise8Options = {}): Blockwise8Result {
  const blocksize = checkOneOf(options.blocksize ?? 4096, BLOCKWISE8_BLOCKSIZES, "blocksize");
  const code = checkCode(options.code ?? DYNAMIC_MAP_SIGNED, "code");
  const input = floatInput(values, options.dtype, "values");
  const { codes, absmax } = quantizeBlockwiseF32(input.values, blocksize, code);
  return { codes, absmax, code, blocksize, dtype: input.dtype };
}

/**
 * bitsandbytes `dequantize_blockwise`: out[i] = T(fp32(code[q[i]] * absmax[i / blocksize])).
 * Returns float32 values, or float16 / bfloat16 bits in a Uint16Array.
 */
export function dequantizeBlockwise(
  codes: Uint8Array,
  state: { absmax: Float32Array; blocksize: number; code?: Float32Array; dtype?: FloatDType },
  outDtype: FloatDType = state.dtype ?? "float32",
): Float32Array | Uint16Array {
  if (!(codes instanceof Uint8Array)) throw new ArgumentError(expected("a Uint8Array of codes", "codes", codes));
  const blocksize = checkOneOf(state.blocksize, BLOCKWISE8_BLOCKSIZES, "state.blocksize");
  if (!(state.absmax instanceof Float32Array)) throw new ArgumentError(expected("a Float32Array", "state.absmax", state.absmax));
  checkLength(state.absmax.length, Math.ceil(codes.length / blocksize), "state.absmax");
  const code = checkCode(state.code ?? DYNAMIC_MAP_SIGNED, "state.code");
  const out = dequantizeBlockwiseF32(codes, state.absmax, blocksize, code);
  return fromFloat32(out, checkFloatDType(outDtype, "outDtype")) as Float32Array | Uint16Array;
}
