// LLM.int8 vectorwise quantization: row statistics, rounding, outlier columns and dequantization.

import { describe, expect, it } from "vitest";
import { INT8_DEQUANT_SCALE, ShapeError, int8VectorwiseDequant, int8VectorwiseQuant } from "../src/index.js";
import { randn } from "./helpers/random.js";

describe("int8VectorwiseQuant", () => {
  it("scales each row by 127 / absmax and rounds half to even", () => {
    const m = new Float32Array([1, -0.5, 0.25, 2, /* row 1 */ 0, 0, 0, 0]);
    const { CB, SCB, outlierCols } = int8VectorwiseQuant(m, 2, 4);
    expect([...SCB]).toEqual([2, 0]);
    expect([...CB]).toEqual([64, -32, 16, 127, 0, 0, 0, 0]); // 63.5 → 64 (even), −31.75 → −32, 15.875 → 16
    expect(outlierCols.length).toBe(0);
  });

  it("excludes outliers from the row absmax, zeroes outlier columns and reports them", () => {
    const m = new Float32Array([1, 8, -0.5, 0.25, /* row 1 */ 0.5, 1, -7, 0.5]);
    const { CB, SCB, outlierCols } = int8VectorwiseQuant(m, 2, 4, { threshold: 6 });
    expect([...outlierCols]).toEqual([1, 2]);
    expect([...SCB]).toEqual([1, 1]);
    expect([...CB]).toEqual([127, 0, 0, 32, 64, 0, 0, 64]); // 63.5 rounds to the even 64
  });

  it("keeps non-outlier elements of a single row (rows == 1 zeroes only the outlier elements)", () => {
    const m = new Float32Array([1, 8, -0.5]);
    const { CB, outlierCols } = int8VectorwiseQuant(m, 1, 3, { threshold: 6 });
    expect([...outlierCols]).toEqual([1]);
    expect([...CB]).toEqual([127, 0, -64]);
  });

  it("round-trips random matrices within half a step per row", () => {
    const rows = 37;
    const cols = 129;
    const m = randn(rows * cols, 21);
    const { CB, SCB } = int8VectorwiseQuant(m, rows, cols);
    const w = int8VectorwiseDequant(CB, SCB, rows, cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c;
        expect(Math.abs(w[i]! - m[i]!)).toBeLessThanOrEqual((SCB[r]! / 127) * 0.5 + 1e-6);
        expect(w[i]).toBe(Math.fround(Math.fround(CB[i]! * SCB[r]!) * INT8_DEQUANT_SCALE));
      }
    }
  });

  it("rejects mismatched sizes", () => {
    expect(() => int8VectorwiseQuant(new Float32Array(5), 2, 3)).toThrowError(ShapeError);
    expect(() => int8VectorwiseQuant(new Float32Array(6), 2, 3, { threshold: -1 })).toThrowError(/threshold/);
    expect(() => int8VectorwiseDequant(new Int8Array(6), new Float32Array(3), 2, 3)).toThrowError(/SCB/);
  });
});
