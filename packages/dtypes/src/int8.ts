// LLM.int8() vectorwise quantization (bitsandbytes int8_vectorwise_quant / int8_vectorwise_dequant,
// spec-bitsandbytes.md §12): per-row absmax scaling to int8, with outlier columns above a threshold.

import { ArgumentError, ShapeError, expected } from "./errors.js";
import { cudaReciprocal } from "./reciprocal.js";
import { checkInteger, floatInput, type FloatArray, type FloatDType } from "./validate.js";

export interface Int8VectorwiseOptions {
  /** Activations with |a| >= threshold are outliers (0 disables decomposition; transformers uses 6.0). */
  threshold?: number;
  /** What a Uint16Array input holds: "float16" (the dtype bitsandbytes quantizes in) or "bfloat16". */
  dtype?: FloatDType;
}

export interface Int8Vectorwise {
  /** (rows, cols) int8 codes. Outlier elements are 0; with rows > 1, whole outlier columns are 0. */
  CB: Int8Array;
  /** (rows,) float32 row absmax (not the scale), outliers excluded. */
  SCB: Float32Array;
  /** Ascending indices of columns holding an outlier (empty when threshold is 0). */
  outlierCols: Int32Array;
}

/** 1/127 as float32 (0x3c010204): bitsandbytes' int8 weight dequant constant. */
export const INT8_DEQUANT_SCALE = Math.fround(7.874015718698502e-3);

/** Round half to even, as CUDA's __float2int_rn. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * bitsandbytes `int8_vectorwise_quant` over a row-major (rows, cols) matrix:
 * q = round_half_even(fp32(a * scale)) with scale = __fdividef(127, absmax_row) = fp32(127 * rcp(absmax))
 * (cudaReciprocal). An all-zero row gives codes 0 and SCB 0.
 */
export function int8VectorwiseQuant(matrix: FloatArray, rows: number, cols: number, options: Int8VectorwiseOptions = {}): Int8Vectorwise {
  checkInteger(rows, "rows", 0);
  checkInteger(cols, "cols", 0);
  const threshold = options.threshold ?? 0;
  if (typeof threshold !== "number" || !(threshold >= 0)) throw new ArgumentError(expected("a number >= 0", "threshold", threshold));
  const { values: a } = floatInput(matrix, options.dtype, "matrix");
  if (a.length !== rows * cols) throw new ShapeError(`Expected rows * cols = ${rows * cols} elements for matrix but received ${a.length}`);
  const useThreshold = threshold > 0;
  const CB = new Int8Array(rows * cols);
  const SCB = new Float32Array(rows);
  const isOutlierCol = new Uint8Array(cols);
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    let am = 0;
    for (let c = 0; c < cols; c++) {
      const v = Math.abs(a[row + c]!);
      if (useThreshold && v >= threshold) {
        isOutlierCol[c] = 1;
        continue;
      }
      if (v > am) am = v;
    }
    SCB[r] = am;
    const scale = Math.fround(127 * cudaReciprocal(am)); // inf for an all-zero row: 0 * inf = NaN → 0
    for (let c = 0; c < cols; c++) {
      const v = a[row + c]!;
      if (useThreshold && Math.abs(v) >= threshold) continue; // outlier element → 0
      const q = roundHalfEven(Math.fround(v * scale));
      CB[row + c] = Number.isNaN(q) ? 0 : q;
    }
  }
  let nOutliers = 0;
  for (let c = 0; c < cols; c++) nOutliers += isOutlierCol[c]!;
  const outlierCols = new Int32Array(nOutliers);
  for (let c = 0, k = 0; c < cols; c++) if (isOutlierCol[c]) outlierCols[k++] = c;
  if (rows > 1) {
    for (const c of outlierCols) for (let r = 0; r < rows; r++) CB[r * cols + c] = 0;
  }
  return { CB, SCB, outlierCols };
}

/** bitsandbytes `int8_vectorwise_dequant`: W = fp32(fp32(CB * SCB) * 1/127), row-major (rows, cols). */
export function int8VectorwiseDequant(CB: Int8Array, SCB: Float32Array, rows: number, cols: number): Float32Array {
  if (!(CB instanceof Int8Array)) throw new ArgumentError(expected("an Int8Array", "CB", CB));
  if (!(SCB instanceof Float32Array)) throw new ArgumentError(expected("a Float32Array", "SCB", SCB));
  checkInteger(rows, "rows", 0);
  checkInteger(cols, "cols", 0);
  if (CB.length !== rows * cols) throw new ShapeError(`Expected rows * cols = ${rows * cols} elements for CB but received ${CB.length}`);
  if (SCB.length !== rows) throw new ShapeError(`Expected ${rows} row statistics for SCB but received ${SCB.length}`);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = SCB[r]!;
    for (let c = 0; c < cols; c++) out[r * cols + c] = Math.fround(CB[r * cols + c]! * s) * INT8_DEQUANT_SCALE;
  }
  return out;
}
