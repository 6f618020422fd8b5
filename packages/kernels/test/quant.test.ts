// Tests of the native quantizers: NF4/FP4 quantize4bit (+Async) and dequantize4bit byte-identical to
// @lowbit/dtypes (every blocksize, f32/f16/bf16, odd n, tail blocks, zero / NaN / Inf blocks, values on the
// decision thresholds), the spec §20 golden vectors, nested-absmax dequant, 8-bit blockwise with both dynamic
// maps (midpoint ties included), LLM.int8 vectorwise quantization, and typed errors for bad arguments; every block
// runs on the CPU and on each CUDA device the addon reports (describeOnDevices).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import {
  DTYPES,
  DYNAMIC_MAP_SIGNED,
  DYNAMIC_MAP_UNSIGNED,
  FP4_THRESHOLDS,
  NF4_THRESHOLDS,
  QUANT4_BLOCKSIZES,
  BLOCKWISE8_BLOCKSIZES,
  dequantize4bit,
  dequantizeBlockwise,
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  int8VectorwiseQuant,
  quantize4bit,
  quantizeBlockwise,
  stateAbsmax,
  type FloatDType,
  type QuantType as QuantTypeName,
} from "@lowbit/dtypes";
import { afterAll, expect, it } from "vitest";

import { ArgumentError, DTypeError, DisposedError, QuantType, ShapeError, getBinding, type NativeStorage, type QuantTypeId } from "../src/index.js";
import { describeOnDevices, testDevice } from "./devices.js";
import { makeRng, randn } from "./reference/linalg.js";

const b = getBinding();
const id = (name: keyof typeof DTYPES): number => DTYPES[name].id;

const tmp = mkdtempSync(join(tmpdir(), "lowbit-quant-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function storageOf(data: ArrayBufferView): NativeStorage {
  const s = b.allocate(testDevice(), Math.max(data.byteLength, 1));
  if (data.byteLength > 0) b.upload(s, 0, data);
  return s;
}
function download<T extends ArrayBufferView>(s: NativeStorage, out: T, offset = 0): T {
  if (out.byteLength > 0) b.download(s, offset, out);
  return out;
}
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");

/** Float values of a float32 array or of float16 / bfloat16 bits. */
function decode(values: Float32Array | Uint16Array, dtype: FloatDType): number[] {
  if (values instanceof Float32Array) return Array.from(values);
  return Array.from(values, (h) => (dtype === "float16" ? f16BitsToF32(h) : bf16BitsToF32(h)));
}

/**
 * Element-wise Object.is: -0.0 and +0.0 differ, every NaN matches every NaN (JS engines do not preserve NaN payloads
 * and signs, so NaN bits are not compared).
 */
function expectSameValues(got: number[], want: number[], what: string): void {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i])) expect.fail(`${what}: element ${i} is ${got[i]}, want ${want[i]}`);
  }
}

/** float32 values as the raw array of `dtype` (f16/bf16 as bits). */
function raw(values: Float32Array, dtype: FloatDType): Float32Array | Uint16Array {
  if (dtype === "float32") return values;
  return Uint16Array.from(values, (v) => (dtype === "float16" ? f32ToF16Bits(v) : f32ToBf16Bits(v)));
}

/**
 * Test input of length n exercising the special cases: random normals, an all-zero block, NaN, ±Inf (destroying its
 * block), tiny negatives (FP4 sign), a block with absmax 1 holding every NF4 / FP4 threshold and the FP4
 * literal/midpoint gaps exactly, and an all-zero final block when the input is long enough.
 */
function specialInput(n: number, bs: number, seed: number): Float32Array {
  const x = randn(makeRng(seed), n, 2);
  const nb = Math.ceil(n / bs);
  if (nb >= 3) x.fill(0, bs, Math.min(n, 2 * bs)); // block 1: all zero
  if (nb >= 4) {
    const s = 2 * bs;
    x[s] = Number.NaN;
    x[s + 3] = Number.NaN;
    x[s + 5] = -1e-4; // tiny negatives / positives next to a large value
    x[s + 6] = 1e-4;
    x[s + 7] = -0;
  }
  if (nb >= 5) x[3 * bs + 1] = Number.POSITIVE_INFINITY;
  if (nb >= 6) {
    // Block 4: absmax exactly 1, so xs = x and every threshold is hit exactly (ties go to the lower code).
    const s = 4 * bs;
    const ts = [...NF4_THRESHOLDS, ...FP4_THRESHOLDS, ...FP4_THRESHOLDS.map((t) => -t), 0.0026041667, 0.208333343, 0.583333373, -0.8333333];
    x[s] = 1;
    for (let j = 0; j < ts.length && 1 + j < Math.min(bs, n - s); j++) x[s + 1 + j] = ts[j]!;
  }
  if (nb >= 7) x.fill(0, (nb - 1) * bs, n); // an all-zero tail block (odd n pads with the NaN code 0 there)
  return x;
}

// ---- 4-bit ----------------------------------------------------------------------------------------------

function nativeQuantize4(x: Float32Array, dtype: FloatDType, bs: number, qt: QuantTypeName): { packed: Uint8Array; absmax: Float32Array } {
  const n = x.length;
  const sx = storageOf(raw(x, dtype));
  const sp = b.allocate(testDevice(), Math.ceil(n / 2) + 1);
  const sa = b.allocate(testDevice(), Math.ceil(n / bs) * 4 + 4);
  b.quantize4bit(sp, 0, sa, 0, sx, 0, id(dtype), n, bs, QuantType[qt]);
  return { packed: download(sp, new Uint8Array(Math.ceil(n / 2))), absmax: download(sa, new Float32Array(Math.ceil(n / bs))) };
}

describeOnDevices("quantize4bit", (device) => {
  it("reproduces the spec §20 golden vectors (NF4 and FP4, bs 64, n = 130)", () => {
    const x = Float32Array.from({ length: 130 }, (_, i) => Math.sin(0.37 * i) * (1 + (i % 7) / 3));
    const nf4 = nativeQuantize4(x, "float32", 64, "nf4");
    expect(hex(nf4.packed)).toBe(
      "79bdeee98631004457adfbccb95243222479bdeeed8642100557adefbba8521432347cacdedc9642111167aceffaa8531033357bebcddc95532112479cdefe9830",
    );
    expect(Array.from(new Uint32Array(nf4.absmax.buffer), (u) => u.toString(16))).toEqual(["403f866a", "403a92d1", "3f91d636"]);
    expect(hex(nativeQuantize4(x, "float32", 64, "fp4").packed)).toBe(
      "064223261ecabbcce172345546edfddadc164522251ecdabbfe175234476edacdddf1474522569fdaaaae175233771edabcccf142455546fecdaaac164223261cb",
    );
  });

  it("is byte-identical to @lowbit/dtypes for every blocksize, type, input dtype, odd n and special value", () => {
    let seed = 1;
    for (const bs of QUANT4_BLOCKSIZES)
      for (const qt of ["nf4", "fp4"] as const)
        for (const dtype of ["float32", "float16", "bfloat16"] as const)
          for (const n of [1, 2, 31, bs - 1, bs, bs + 1, 7 * bs + 3, 7 * bs + 64]) {
            const x = specialInput(n, bs, seed++);
            const want = quantize4bit(raw(x, dtype), { blocksize: bs, quantType: qt, dtype });
            const got = nativeQuantize4(x, dtype, bs, qt);
            expect(hex(got.packed), `bs ${bs} ${qt} ${dtype} n ${n}`).toBe(hex(want.packed));
            expect(got.absmax, `bs ${bs} ${qt} ${dtype} n ${n}`).toEqual(want.state.absmax);
          }
  });

  it("codes zero blocks 0x00 (r = inf, NaN -> 0) and keeps -FLT_MAX as the absmax of an all-NaN block", () => {
    const x = new Float32Array(130).fill(0);
    x.fill(Number.NaN, 64, 128);
    x[128] = 1;
    const q = nativeQuantize4(x, "float32", 64, "nf4");
    expect(q.packed.subarray(0, 64).every((v) => v === 0)).toBe(true);
    expect(q.absmax[0]).toBe(0);
    expect(q.absmax[1]).toBe(-3.4028234663852886e38);
  });

  it("quantize4bitAsync writes the same bytes and survives disposal of its input", async () => {
    const n = 64 * 1000 + 17;
    const x = specialInput(n, 64, 99);
    const want = quantize4bit(x, { blocksize: 64, quantType: "nf4" });
    const sx = storageOf(x);
    const sp = b.allocate(testDevice(), Math.ceil(n / 2));
    const sa = b.allocate(testDevice(), Math.ceil(n / 64) * 4);
    const promise = b.quantize4bitAsync(sp, 0, sa, 0, sx, 0, id("float32"), n, 64, QuantType.nf4);
    sx.dispose();
    await expect(promise).resolves.toBeUndefined();
    expect(hex(download(sp, new Uint8Array(Math.ceil(n / 2))))).toBe(hex(want.packed));
    expect(download(sa, new Float32Array(Math.ceil(n / 64)))).toEqual(want.state.absmax);
  });

  it("rejects bad arguments with typed errors", () => {
    const n = 100;
    const sx = storageOf(new Float32Array(n));
    const sp = b.allocate(testDevice(), 50);
    const sa = b.allocate(testDevice(), 8);
    const ok = () => b.quantize4bit(sp, 0, sa, 0, sx, 0, id("float32"), n, 64, QuantType.nf4);
    expect(ok).not.toThrow();
    expect(() => b.quantize4bit(sp, 0, sa, 0, sx, 0, id("float32"), n, 48, QuantType.nf4)).toThrow(ArgumentError);
    expect(() => b.quantize4bit(sp, 0, sa, 0, sx, 0, id("float32"), n, 8192, QuantType.nf4)).toThrow(ArgumentError);
    expect(() => b.quantize4bit(sp, 0, sa, 0, sx, 0, id("float32"), n, 64, 2 as QuantTypeId)).toThrow(ArgumentError);
    expect(() => b.quantize4bit(sp, 0, sa, 0, sx, 0, id("int8"), n, 64, QuantType.nf4)).toThrow(DTypeError);
    expect(() => b.quantize4bit(sp, 0, sa, 0, sx, 0, id("float32"), n + 2, 64, QuantType.nf4)).toThrow(ShapeError); // packed too small
    expect(() => b.quantize4bit(sp, 0, sa, 0, sx, 0, id("float32"), n, 32, QuantType.nf4)).toThrow(ShapeError); // absmax too small
    expect(() => b.quantize4bit(sp, 0, sa, 2, sx, 0, id("float32"), 50, 64, QuantType.nf4)).toThrow(ArgumentError); // misaligned absmax
    expect(() => b.quantize4bit(sp, 0, sa, 0, sp, 0, id("float32"), 8, 64, QuantType.nf4)).toThrow(ArgumentError); // packed overlaps x
    // A read-only file mapping as the output (a CPU storage: next to CUDA storages the call mixes devices).
    if (device === "cpu") {
      const path = join(tmp, "packed.bin");
      writeFileSync(path, Buffer.alloc(50));
      const mapped = b.mapFile(path);
      expect(() => b.quantize4bit(mapped, 0, sa, 0, sx, 0, id("float32"), n, 64, QuantType.nf4)).toThrow(ArgumentError);
      expect(() => b.quantize4bitAsync(mapped, 0, sa, 0, sx, 0, id("float32"), n, 64, QuantType.nf4)).toThrow(ArgumentError);
    }
    const gone = b.allocate(testDevice(), 400);
    gone.dispose();
    expect(() => b.quantize4bit(sp, 0, sa, 0, gone, 0, id("float32"), n, 64, QuantType.nf4)).toThrow(DisposedError);
  });
});

describeOnDevices("dequantize4bit", () => {
  it("is bit-identical to @lowbit/dtypes in every output dtype", () => {
    let seed = 50;
    for (const bs of [32, 64, 256, 4096])
      for (const qt of ["nf4", "fp4"] as const)
        for (const n of [1, 63, 8 * bs + 1]) {
          const x = specialInput(n, bs, seed++);
          const { packed, state } = quantize4bit(x, { blocksize: bs, quantType: qt });
          const sp = storageOf(packed);
          const sa = storageOf(state.absmax);
          for (const outDtype of ["float32", "float16", "bfloat16"] as const) {
            const out = b.allocate(testDevice(), n * DTYPES[outDtype].bytes);
            b.dequantize4bit(out, 0, id(outDtype), sp, 0, sa, 0, n, bs, QuantType[qt]);
            const want = dequantize4bit(packed, state, outDtype);
            const got = outDtype === "float32" ? download(out, new Float32Array(n)) : download(out, new Uint16Array(n));
            expectSameValues(decode(got, outDtype), decode(want, outDtype), `bs ${bs} ${qt} n ${n} ${outDtype}`);
          }
        }
  });

  it("rejects bad arguments with typed errors", () => {
    const sp = storageOf(new Uint8Array(32));
    const sa = storageOf(new Float32Array(1));
    const out = b.allocate(testDevice(), 256);
    expect(() => b.dequantize4bit(out, 0, id("float32"), sp, 0, sa, 0, 64, 64, QuantType.fp4)).not.toThrow();
    expect(() => b.dequantize4bit(out, 0, id("int32"), sp, 0, sa, 0, 64, 64, QuantType.fp4)).toThrow(DTypeError);
    expect(() => b.dequantize4bit(out, 0, id("float32"), sp, 0, sa, 0, 65, 64, QuantType.fp4)).toThrow(ShapeError);
    expect(() => b.dequantize4bit(out, 0, id("float32"), sp, 0, sa, 0, 64, 100, QuantType.fp4)).toThrow(ArgumentError);
  });
});

describeOnDevices("dequantizeNestedAbsmax", () => {
  it("equals @lowbit/dtypes' two-rounding absmax of a double-quant state", () => {
    for (const nBlocksTarget of [1, 255, 256, 257, 1000]) {
      const x = randn(makeRng(nBlocksTarget), nBlocksTarget * 64, 3);
      const { state } = quantize4bit(x, { blocksize: 64, compressStatistics: true });
      const s2 = state.state2!;
      const nb = state.absmax.length;
      const out = b.allocate(testDevice(), nb * 4);
      b.dequantizeNestedAbsmax(out, 0, storageOf(state.absmax), 0, storageOf(s2.absmax), 0, storageOf(s2.code), 0, state.offset ?? 0, nb, 256);
      expect(download(out, new Float32Array(nb))).toEqual(stateAbsmax(state));
    }
  });

  it("rejects bad arguments with typed errors", () => {
    const out = b.allocate(testDevice(), 16);
    const q = storageOf(new Uint8Array(4));
    const nested = storageOf(new Float32Array(1));
    const code = storageOf(DYNAMIC_MAP_SIGNED);
    expect(() => b.dequantizeNestedAbsmax(out, 0, q, 0, nested, 0, code, 0, 0.5, 4, 256)).not.toThrow();
    expect(() => b.dequantizeNestedAbsmax(out, 0, q, 0, nested, 0, code, 0, 0.5, 4, 100)).toThrow(ArgumentError);
    expect(() => b.dequantizeNestedAbsmax(out, 0, q, 0, nested, 0, q, 0, 0.5, 4, 256)).toThrow(ShapeError); // code needs 1 KiB
    expect(() => b.dequantizeNestedAbsmax(out, 0, q, 0, nested, 0, code, 0, Number.NaN, 4, 256)).toThrow(ArgumentError);
  });
});

// ---- 8-bit blockwise -----------------------------------------------------------------------------------------

function nativeQuantize8(x: Float32Array, dtype: FloatDType, bs: number, code: Float32Array): { codes: Uint8Array; absmax: Float32Array } {
  const n = x.length;
  const sq = b.allocate(testDevice(), Math.max(n, 1));
  const sa = b.allocate(testDevice(), Math.ceil(n / bs) * 4 + 4);
  b.quantizeBlockwise8(sq, 0, sa, 0, storageOf(raw(x, dtype)), 0, id(dtype), n, bs, storageOf(code), 0);
  return { codes: download(sq, new Uint8Array(n)), absmax: download(sa, new Float32Array(Math.ceil(n / bs))) };
}

describeOnDevices("quantizeBlockwise8 / dequantizeBlockwise8", () => {
  it("reproduces the spec §20 8-bit golden vector (signed dynamic map, bs 64)", () => {
    const x = Float32Array.from({ length: 130 }, (_, i) => Math.sin(0.37 * i) * (1 + (i % 7) / 3));
    expect(hex(nativeQuantize8(x, "float32", 64, DYNAMIC_MAP_SIGNED).codes)).toBe(
      "7fc3d2e2eff4f0c4b83f2d1a0a0031313995cce2f7cfd6d7d0c13a2033281f1c2231a0c0cddbe7ece9dcaf433120110807373c9fc9def1ffced0cbbf3b240d3026232733a4d4c8d5e0e6e4d8c3493525170e0d173fa0c7d9ebf8fdcac7b93c2711002e2a2c37a7d1ebced8deddd3c136392c1f16151d2fa1c5d4e4f0f5f0c3b12e00",
    );
  });

  it("is byte-identical to @lowbit/dtypes for both dynamic maps, every blocksize and input dtype", () => {
    let seed = 200;
    for (const bs of BLOCKWISE8_BLOCKSIZES)
      for (const [name, code] of [["signed", DYNAMIC_MAP_SIGNED], ["unsigned", DYNAMIC_MAP_UNSIGNED]] as const)
        for (const dtype of ["float32", "float16", "bfloat16"] as const)
          for (const n of [1, bs - 1, 7 * bs + 5]) {
            const x = specialInput(n, bs, seed++);
            const want = quantizeBlockwise(raw(x, dtype), { blocksize: bs, code, dtype });
            const got = nativeQuantize8(x, dtype, bs, code);
            expect(hex(got.codes), `bs ${bs} ${name} ${dtype} n ${n}`).toBe(hex(want.codes));
            expect(got.absmax).toEqual(want.absmax);
          }
  });

  it("breaks exact midpoint ties toward the even index", () => {
    // absmax 1 (code[255]) so xs = x; every midpoint of adjacent signed-map codes, computed as the kernel does.
    const code = DYNAMIC_MAP_SIGNED;
    const x = new Float32Array(256);
    x[0] = 1;
    for (let i = 0; i < 255; i++) x[i + 1] = Math.fround(Math.fround(code[i]! + code[i + 1]!) * 0.5);
    const got = nativeQuantize8(x, "float32", 256, code);
    expect(got.codes).toEqual(quantizeBlockwise(x, { blocksize: 256, code }).codes);
    for (let i = 0; i < 255; i++) {
      const mid = x[i + 1]!;
      if (mid > code[i]! && mid < code[i + 1]!) expect(got.codes[i + 1]! % 2, `midpoint ${i}`).toBe(0);
    }
  });

  it("dequantizes bit-identically to @lowbit/dtypes", () => {
    const n = 5000;
    const x = specialInput(n, 256, 300);
    const q = quantizeBlockwise(x, { blocksize: 256 });
    for (const outDtype of ["float32", "float16", "bfloat16"] as const) {
      const out = b.allocate(testDevice(), n * DTYPES[outDtype].bytes);
      b.dequantizeBlockwise8(out, 0, id(outDtype), storageOf(q.codes), 0, storageOf(q.absmax), 0, storageOf(q.code), 0, n, 256);
      const want = dequantizeBlockwise(q.codes, q, outDtype);
      const got = outDtype === "float32" ? download(out, new Float32Array(n)) : download(out, new Uint16Array(n));
      expectSameValues(decode(got, outDtype), decode(want, outDtype), outDtype);
    }
  });

  it("rejects bad arguments with typed errors", () => {
    const n = 128;
    const sq = b.allocate(testDevice(), n);
    const sa = b.allocate(testDevice(), 8);
    const sx = storageOf(new Float32Array(n));
    const code = storageOf(DYNAMIC_MAP_SIGNED);
    expect(() => b.quantizeBlockwise8(sq, 0, sa, 0, sx, 0, id("float32"), n, 64, code, 0)).not.toThrow();
    expect(() => b.quantizeBlockwise8(sq, 0, sa, 0, sx, 0, id("float32"), n, 32, code, 0)).toThrow(ArgumentError);
    const unsorted = DYNAMIC_MAP_SIGNED.slice().reverse();
    expect(() => b.quantizeBlockwise8(sq, 0, sa, 0, sx, 0, id("float32"), n, 64, storageOf(unsorted), 0)).toThrow(ArgumentError);
    expect(() => b.quantizeBlockwise8(sq, 0, sa, 0, sx, 0, id("float32"), n, 64, storageOf(new Float32Array(128)), 0)).toThrow(ShapeError);
    expect(() => b.quantizeBlockwise8(sq, 0, sa, 0, sx, 0, id("uint8"), n, 64, code, 0)).toThrow(DTypeError);
    const out = b.allocate(testDevice(), n * 4);
    expect(() => b.dequantizeBlockwise8(out, 0, id("float32"), sq, 0, sa, 0, code, 0, n, 64)).not.toThrow();
    expect(() => b.dequantizeBlockwise8(out, 0, id("float32"), sq, 0, sa, 0, code, 0, n + 1, 64)).toThrow(ShapeError);
  });
});

// ---- LLM.int8 vectorwise -----------------------------------------------------------------------------------

describeOnDevices("int8VectorwiseQuant", () => {
  function runInt8(x: Float32Array, rows: number, cols: number, threshold: number, dtype: FloatDType): void {
    const sx = storageOf(raw(x, dtype));
    const CB = b.allocate(testDevice(), Math.max(rows * cols, 1));
    const SCB = b.allocate(testDevice(), Math.max(rows * 4, 4));
    const cols_ = b.int8VectorwiseQuant(CB, 0, SCB, 0, sx, 0, id(dtype), rows, cols, threshold);
    const want = int8VectorwiseQuant(raw(x, dtype), rows, cols, { threshold, dtype });
    expect(cols_).toEqual(want.outlierCols);
    expect(download(CB, new Int8Array(rows * cols))).toEqual(want.CB);
    expect(download(SCB, new Float32Array(rows))).toEqual(want.SCB);
  }

  it("is identical to @lowbit/dtypes with and without a threshold, outlier columns zeroed when rows > 1", () => {
    let seed = 400;
    for (const dtype of ["float32", "float16", "bfloat16"] as const)
      for (const [rows, cols] of [[1, 40], [7, 33], [64, 300]] as const)
        for (const threshold of [0, 6, 6.1]) {
          const x = randn(makeRng(seed++), rows * cols, 2);
          x.fill(0, 0, Math.min(cols, x.length)); // row 0 all zero (SCB 0, codes 0)
          if (rows > 2) {
            x[cols + 5] = 9; // outliers
            x[2 * cols + 5] = -7;
            // fround(6.1) = 6.0999999 lies below the double 6.1: not an outlier at threshold 6.1 (the comparison
            // is in double, as @lowbit/dtypes), although it equals the threshold rounded to float32.
            x[2 * cols + 11] = Math.fround(6.1);
            x[cols + 12] = 6.1000004;
          }
          runInt8(x, rows, cols, threshold, dtype);
        }
  });

  it("keeps outlier elements 0 but does not zero columns for a single row", () => {
    const x = Float32Array.from([1, 8, -2, 0.5, -9, 3]);
    runInt8(x, 1, 6, 6, "float32");
  });

  it("rejects bad arguments with typed errors", () => {
    const sx = storageOf(new Float32Array(12));
    const CB = b.allocate(testDevice(), 12);
    const SCB = b.allocate(testDevice(), 12);
    expect(() => b.int8VectorwiseQuant(CB, 0, SCB, 0, sx, 0, id("float32"), 3, 4, 0)).not.toThrow();
    expect(() => b.int8VectorwiseQuant(CB, 0, SCB, 0, sx, 0, id("float32"), 3, 4, -1)).toThrow(ArgumentError);
    expect(() => b.int8VectorwiseQuant(CB, 0, SCB, 0, sx, 0, id("float32"), 4, 4, 0)).toThrow(ShapeError);
    expect(() => b.int8VectorwiseQuant(CB, 0, SCB, 0, sx, 0, id("int8"), 3, 4, 0)).toThrow(DTypeError);
  });
});
