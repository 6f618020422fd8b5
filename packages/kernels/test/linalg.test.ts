// Tests of the native matrix products: matmul / matmulAsync against a float64 reference (every transpose
// combination, odd sizes, batches with broadcast, f16/bf16, alpha/beta), gemm4bit against "dequantize then
// matmul" (plain and double-quant states, bias, each kernel path), the LLM.int8 products (exact int8 matmul,
// bit-exact int8MmDequant, the outlier add), and that bad arguments throw typed errors; the kernel blocks run on
// the CPU and on each CUDA device the addon reports (describeOnDevices).
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import {
  DTYPES,
  INT8_DEQUANT_SCALE,
  bf16BitsToF32,
  dequantTable,
  dequantize4bit,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  int8VectorwiseQuant,
  quantize4bit,
  type QuantType as QuantTypeName,
} from "@lowbit/dtypes";
import { afterAll, describe, expect, it } from "vitest";

import { ArgumentError, DTypeError, DisposedError, QuantType, ShapeError, getBinding, type NativeStorage } from "../src/index.js";
import { describeOnDevices, testDevice } from "./devices.js";
import {
  dequant4Ref,
  fusedScales,
  halfUlp,
  int8MatmulRef,
  int8MmDequantRef,
  int8OutlierRef,
  linearRef,
  makeRng,
  matmulRef,
  randInt,
  randNonZero,
  randn,
  roundTo,
  type FloatName,
  type MatmulShape,
} from "./reference/linalg.js";

const b = getBinding();
const id = (name: keyof typeof DTYPES): number => DTYPES[name].id;

const tmp = mkdtempSync(join(tmpdir(), "lowbit-linalg-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function storageOf(data: ArrayBufferView): NativeStorage {
  const s = b.allocate(testDevice(), Math.max(data.byteLength, 1));
  if (data.byteLength > 0) b.upload(s, 0, data);
  return s;
}

/** Float values stored as `dtype`: the raw array to upload and the exact values the kernel sees. */
function encode(values: Float32Array, dtype: FloatName): { raw: Float32Array | Uint16Array; values: Float64Array } {
  if (dtype === "float32") return { raw: values, values: Float64Array.from(values) };
  const toBits = dtype === "float16" ? f32ToF16Bits : f32ToBf16Bits;
  const raw = Uint16Array.from(values, (v) => toBits(v));
  return { raw, values: Float64Array.from(raw, (h) => (dtype === "float16" ? f16BitsToF32(h) : bf16BitsToF32(h))) };
}

/** `n` elements of a storage read back as float values of `dtype`. */
function readFloats(s: NativeStorage, dtype: FloatName, n: number, offset = 0): Float64Array {
  if (dtype === "float32") {
    const out = new Float32Array(n);
    b.download(s, offset, out);
    return Float64Array.from(out);
  }
  const bits = new Uint16Array(n);
  b.download(s, offset, bits);
  return Float64Array.from(bits, (h) => (dtype === "float16" ? f16BitsToF32(h) : bf16BitsToF32(h)));
}

/**
 * Every element within the float32-evaluation error (relErr * sum of |terms|) plus one rounding to the output dtype.
 * Reports the first failing index so a failure says where.
 */
function expectClose(actual: Float64Array, ref: { value: Float64Array; magnitude: Float64Array }, outDtype: FloatName, relErr = 2e-6): void {
  expect(actual.length).toBe(ref.value.length);
  for (let i = 0; i < actual.length; i++) {
    const want = ref.value[i]!;
    const tol = relErr * ref.magnitude[i]! + halfUlp(outDtype) * 1.01 * Math.abs(want) + 1e-30;
    if (!(Math.abs(actual[i]! - want) <= tol)) {
      expect.fail(`element ${i}: got ${actual[i]}, want ${want} (tolerance ${tol})`);
    }
  }
}

// ---- matmul ----------------------------------------------------------------------------------------------

interface MatmulRun {
  shape: MatmulShape;
  dtype: FloatName;
  outDtype: FloatName;
  seed: number;
  /** Initial out contents (default random). */
  outInit?: (i: number) => number;
}

function extent(batch: number, stride: number, per: number): number {
  return batch === 0 || per === 0 ? 0 : (batch - 1) * stride + per;
}

function setupMatmul(run: MatmulRun) {
  const { shape: s, dtype, outDtype } = run;
  const rand = makeRng(run.seed);
  const a = encode(randNonZero(rand, extent(s.batch, s.strideA, s.M * s.K)), dtype);
  const bm = encode(randNonZero(rand, extent(s.batch, s.strideB, s.K * s.N)), dtype);
  const outLen = extent(s.batch, s.strideOut, s.M * s.N);
  const init = new Float32Array(outLen);
  for (let i = 0; i < outLen; i++) init[i] = run.outInit ? run.outInit(i) : (rand() - 0.5) * 4;
  const out = encode(init, outDtype);
  const sa = storageOf(a.raw);
  const sb = storageOf(bm.raw);
  const so = storageOf(out.raw);
  const args = [
    so, 0, sa, 0, sb, 0, id(dtype), id(outDtype), s.batch, s.M, s.N, s.K, s.transA, s.transB, s.strideA, s.strideB, s.strideOut, s.alpha, s.beta,
  ] as const;
  const ref = matmulRef(a.values, bm.values, out.values, s);
  return { args, so, sa, sb, ref, outLen };
}

function runMatmul(run: MatmulRun): void {
  const { args, so, ref, outLen } = setupMatmul(run);
  b.matmul(...args);
  expectClose(readFloats(so, run.outDtype, outLen), ref, run.outDtype, run.dtype === "float32" ? 2e-6 : 4e-6);
}

function plain(M: number, N: number, K: number, transA: boolean, transB: boolean, alpha = 1, beta = 0): MatmulShape {
  return { batch: 1, M, N, K, transA, transB, strideA: 0, strideB: 0, strideOut: 0, alpha, beta };
}

describeOnDevices("matmul", (device) => {
  const SIZES = [1, 7, 33, 130];

  it("matches the float64 reference for every transpose combination and odd sizes", () => {
    let seed = 1;
    for (const transA of [false, true])
      for (const transB of [false, true])
        for (const M of SIZES)
          for (const N of SIZES)
            for (const K of SIZES) runMatmul({ shape: plain(M, N, K, transA, transB), dtype: "float32", outDtype: "float32", seed: seed++ });
  });

  it("applies alpha and beta", () => {
    runMatmul({ shape: plain(9, 20, 33, false, true, 0.5, 0.25), dtype: "float32", outDtype: "float32", seed: 7 });
    runMatmul({ shape: plain(40, 17, 5, true, false, -2, 1), dtype: "float32", outDtype: "float32", seed: 8 });
    runMatmul({ shape: plain(1, 64, 100, false, false, 1.5, -0.5), dtype: "float32", outDtype: "float32", seed: 9 });
  });

  it("ignores out (even NaN) when beta is 0", () => {
    runMatmul({ shape: plain(13, 29, 31, false, false, 1, 0), dtype: "float32", outDtype: "float32", seed: 10, outInit: () => Number.NaN });
    runMatmul({ shape: plain(2, 29, 31, false, true, 1, 0), dtype: "float32", outDtype: "float32", seed: 11, outInit: () => Number.NaN });
  });

  it("K = 0 gives beta * out", () => {
    runMatmul({ shape: plain(5, 6, 0, false, false, 1, 0.5), dtype: "float32", outDtype: "float32", seed: 12 });
    runMatmul({ shape: plain(5, 6, 0, false, false, 1, 0), dtype: "float32", outDtype: "float32", seed: 13 });
  });

  it("spans several cache blocks (K > 256, M > 120, N > 16) in every output dtype", () => {
    for (const outDtype of ["float32", "float16", "bfloat16"] as const) {
      runMatmul({ shape: plain(250, 70, 600, false, true, 1, 0.5), dtype: "float32", outDtype, seed: 20 });
    }
    runMatmul({ shape: plain(131, 300, 520, true, false), dtype: "float32", outDtype: "float32", seed: 21 });
  });

  it("batches with strides, padding between items and broadcast (stride 0)", () => {
    const M = 7, N = 33, K = 19;
    const base = { M, N, K, alpha: 1, beta: 1 };
    const sentinel = 12345;
    // out padded by 3 elements between items: the padding must stay untouched.
    const run = (shape: MatmulShape, seed: number) =>
      runMatmul({ shape, dtype: "float32", outDtype: "float32", seed, outInit: (i) => (i % shape.strideOut >= M * N ? sentinel : (i % 5) - 2) });
    run({ ...base, batch: 4, transA: false, transB: false, strideA: M * K, strideB: K * N + 5, strideOut: M * N + 3 }, 30);
    run({ ...base, batch: 3, transA: false, transB: true, strideA: 0, strideB: K * N, strideOut: M * N + 3 }, 31);
    run({ ...base, batch: 3, transA: true, transB: false, strideA: M * K, strideB: 0, strideOut: M * N + 3 }, 32);
    run({ ...base, batch: 64, transA: false, transB: true, strideA: M * K, strideB: N * K, strideOut: M * N + 3 }, 33);
    // Small-M items (the streaming path) in a batch.
    run({ ...base, M: 2, batch: 5, transA: true, transB: true, strideA: 2 * K, strideB: K * N, strideOut: 2 * N + 3 }, 34);
  });

  it("reads float16 / bfloat16 inputs and rounds once to the output dtype", () => {
    let seed = 40;
    for (const dtype of ["float16", "bfloat16"] as const)
      for (const outDtype of ["float32", "float16", "bfloat16"] as const)
        for (const [M, N, K] of [[1, 33, 130], [3, 7, 33], [33, 130, 7], [130, 33, 300]] as const)
          for (const transB of [false, true]) runMatmul({ shape: plain(M, N, K, false, transB, 1, 0.5), dtype, outDtype, seed: seed++ });
  });

  it("matmulAsync resolves to the same bytes as matmul, and survives disposal of its inputs", async () => {
    const run: MatmulRun = { shape: plain(70, 90, 300, false, true, 0.75, 0.5), dtype: "bfloat16", outDtype: "float32", seed: 50 };
    const sync = setupMatmul(run);
    b.matmul(...sync.args);
    const want = new Float32Array(sync.outLen);
    b.download(sync.so, 0, want);
    const asyncRun = setupMatmul(run);
    const promise = b.matmulAsync(...asyncRun.args);
    asyncRun.sa.dispose(); // the worker holds the memory until it finishes
    asyncRun.sb.dispose();
    await expect(promise).resolves.toBeUndefined();
    const got = new Float32Array(asyncRun.outLen);
    b.download(asyncRun.so, 0, got);
    expect(got).toEqual(want);
  });

  it("rejects bad arguments with typed errors", () => {
    const { args } = setupMatmul({ shape: plain(4, 5, 6, false, false), dtype: "float32", outDtype: "float32", seed: 60 });
    const call = (patch: Record<number, unknown>) => () => {
      const a: unknown[] = [...args];
      for (const [k, v] of Object.entries(patch)) a[Number(k)] = v;
      (b.matmul as (...x: unknown[]) => void)(...a);
    };
    expect(call({})).not.toThrow();
    expect(call({ 6: id("int8") })).toThrow(DTypeError);
    expect(call({ 7: id("int32") })).toThrow(DTypeError);
    expect(call({ 9: 5 })).toThrow(ShapeError); // a too small for M = 5
    expect(call({ 11: 7 })).toThrow(ShapeError); // a and b too small for K = 7
    expect(call({ 1: 4 })).toThrow(ShapeError); // out offset leaves too few bytes
    const big = b.allocate(testDevice(), 4096);
    expect(call({ 0: big, 1: 2 })).toThrow(ArgumentError); // misaligned out offset
    expect(call({ 9: -1 })).toThrow(ArgumentError);
    expect(call({ 9: 1.5 })).toThrow(ArgumentError);
    expect(call({ 12: 1 })).toThrow(ArgumentError); // transA must be a boolean
    expect(call({ 17: Number.NaN })).toThrow(ArgumentError);
    expect(call({ 0: {} })).toThrow(ArgumentError);
    expect(call({ 8: 2, 16: 3 })).toThrow(ArgumentError); // strideOut < M*N: batch items would overlap
    expect(call({ 0: big, 2: big })).toThrow(ArgumentError); // out overlaps a
    const disposed = b.allocate(testDevice(), 1024);
    disposed.dispose();
    expect(call({ 4: disposed })).toThrow(DisposedError);
    // A read-only file mapping as the output (a CPU storage: next to CUDA storages the call mixes devices).
    if (device === "cpu") {
      const path = join(tmp, "mapped.bin");
      writeFileSync(path, Buffer.alloc(4 * 5 * 4));
      const mapped = b.mapFile(path);
      expect(call({ 0: mapped })).toThrow(ArgumentError);
      expect(() => (b.matmulAsync as (...x: unknown[]) => unknown)(...[mapped, ...args.slice(1)])).toThrow(ArgumentError);
    }
  });
});

// ---- gemm4bit ------------------------------------------------------------------------------------------

interface Gemm4Case {
  M: number;
  N: number;
  K: number;
  blocksize: number;
  quantType: QuantTypeName;
  nested: boolean;
  bias: boolean;
  dtype: FloatName;
  seed: number;
}

function runGemm4(c: Gemm4Case): void {
  const rand = makeRng(c.seed);
  const nk = c.N * c.K;
  const w = randn(rand, nk);
  const { packed, state } = quantize4bit(w, { blocksize: c.blocksize, quantType: c.quantType, compressStatistics: c.nested });
  const s2 = state.state2;
  const scales = fusedScales(state.absmax, s2 === null ? null : { absmax: s2.absmax, code: s2.code, offset: state.offset ?? 0 });
  const wq = dequant4Ref(packed, scales, dequantTable(c.quantType), nk, c.blocksize);
  if (!c.nested) {
    // The reference weights are exactly what @lowbit/dtypes' dequantize4bit produces.
    expect(wq).toEqual(dequantize4bit(packed, state, "float32"));
  }
  const x = encode(randn(rand, c.M * c.K), c.dtype);
  const bias = c.bias ? encode(randn(rand, c.N), c.dtype) : null;
  const out = b.allocate(testDevice(), c.M * c.N * DTYPES[c.dtype].bytes);
  const sx = storageOf(x.raw);
  const sp = storageOf(packed);
  const sa = storageOf(state.absmax);
  const sn = s2 === null ? null : storageOf(s2.absmax);
  const sc = s2 === null ? null : storageOf(s2.code);
  const sbias = bias === null ? null : storageOf(bias.raw);
  b.gemm4bit(
    out, 0, sx, 0, id(c.dtype), sp, 0, sa, 0, sn, 0, sc, 0, state.offset ?? 0,
    c.M, c.N, c.K, c.blocksize, QuantType[c.quantType], sbias, 0,
  );
  const ref = linearRef(x.values, wq, bias === null ? null : bias.values, c.M, c.N, c.K);
  // The CPU evaluates in float32. The CUDA kernels multiply 16-bit activations by the weights in the
  // activation dtype (like bitsandbytes' SIMT kernel, spec §17), so each product carries one 16-bit rounding.
  const relErr = testDevice() === "cpu" || c.dtype === "float32" ? 2e-6 : c.dtype === "bfloat16" ? 8e-3 : 1e-3;
  expectClose(readFloats(out, c.dtype, c.M * c.N), ref, c.dtype, relErr);
}

describeOnDevices("gemm4bit", () => {
  it("equals dequantize-then-matmul for plain and double-quant states, with and without bias", () => {
    let seed = 100;
    for (const quantType of ["nf4", "fp4"] as const)
      for (const nested of [false, true])
        for (const M of [1, 3, 17])
          for (const bias of [false, true]) runGemm4({ M, N: 37, K: 256, blocksize: 64, quantType, nested, bias, dtype: "float32", seed: seed++ });
  });

  it("handles every row layout: K % 32 == 0, rows straddling absmax blocks, K % 32 != 0 and odd K", () => {
    let seed = 200;
    for (const K of [64, 96, 130, 257, 1000])
      for (const blocksize of [32, 64, 128, 4096])
        for (const M of [1, 2, 4, 5, 20]) runGemm4({ M, N: 11, K, blocksize, quantType: "nf4", nested: (K + M) % 2 === 0, bias: M % 2 === 1, dtype: "float32", seed: seed++ });
  });

  it("reads and writes float16 / bfloat16 activations", () => {
    let seed = 300;
    for (const dtype of ["float16", "bfloat16"] as const)
      for (const M of [1, 3, 33]) runGemm4({ M, N: 24, K: 320, blocksize: 64, quantType: "nf4", nested: true, bias: true, dtype, seed: seed++ });
  });

  it("matches at the sizes of a real layer (M = 1, 16 and 48, K = 4096)", () => {
    runGemm4({ M: 1, N: 64, K: 4096, blocksize: 64, quantType: "nf4", nested: true, bias: false, dtype: "float32", seed: 400 });
    // 16 rows x 4096 float32 exceed the L2 budget for x: the streaming path sweeps K in chunks.
    runGemm4({ M: 16, N: 70, K: 4096, blocksize: 128, quantType: "nf4", nested: true, bias: true, dtype: "bfloat16", seed: 402 });
    runGemm4({ M: 48, N: 40, K: 4096, blocksize: 64, quantType: "fp4", nested: false, bias: true, dtype: "float32", seed: 401 });
  });

  it("rejects bad arguments with typed errors", () => {
    const M = 2, N = 4, K = 64;
    const { packed, state } = quantize4bit(randn(makeRng(1), N * K), { blocksize: 64, compressStatistics: true });
    const s2 = state.state2!;
    const args: unknown[] = [
      b.allocate(testDevice(), M * N * 4), 0, storageOf(randn(makeRng(2), M * K)), 0, id("float32"),
      storageOf(packed), 0, storageOf(state.absmax), 0, storageOf(s2.absmax), 0, storageOf(s2.code), 0, state.offset ?? 0,
      M, N, K, 64, QuantType.nf4, null, 0,
    ];
    const call = (patch: Record<number, unknown>) => () => {
      const a = [...args];
      for (const [k, v] of Object.entries(patch)) a[Number(k)] = v;
      (b.gemm4bit as (...x: unknown[]) => void)(...a);
    };
    expect(call({})).not.toThrow();
    expect(call({ 17: 48 })).toThrow(ArgumentError); // blocksize
    expect(call({ 18: 2 })).toThrow(ArgumentError); // quantType
    expect(call({ 4: id("int8") })).toThrow(DTypeError);
    expect(call({ 15: 8 })).toThrow(ShapeError); // packed too small for N = 8
    expect(call({ 11: null })).toThrow(ArgumentError); // nestedAbsmax without nestedCode
    expect(call({ 9: null, 11: null })).toThrow(ShapeError); // plain state needs float32 absmax: 4 bytes per block
    expect(call({ 19: b.allocate(testDevice(), 8) })).toThrow(ShapeError); // bias too small
    expect(call({ 13: Number.POSITIVE_INFINITY })).toThrow(ArgumentError);
  });
});

// ---- LLM.int8 ----------------------------------------------------------------------------------------------

describeOnDevices("int8Matmul", () => {
  it("is exact int32 A @ B^T, full int8 range included", () => {
    let seed = 500;
    for (const [M, N, K] of [[1, 1, 1], [1, 45, 301], [37, 45, 301], [2, 3, 16], [64, 70, 4096], [5, 9, 33]] as const) {
      const rand = makeRng(seed++);
      const a = Int8Array.from(randInt(rand, M * K, -128, 127));
      const bm = Int8Array.from(randInt(rand, N * K, -128, 127));
      if (K >= 16) a.fill(-128, 0, 16), bm.fill(-128, 0, 16); // -128 * -128 products in the vector lanes
      const out = b.allocate(testDevice(), M * N * 4);
      b.int8Matmul(out, 0, storageOf(a), 0, storageOf(bm), 0, M, N, K);
      const got = new Int32Array(M * N);
      b.download(out, 0, got);
      expect(got).toEqual(int8MatmulRef(a, bm, M, N, K));
    }
  });

  it("rejects bad arguments with typed errors", () => {
    const a = storageOf(new Int8Array(12));
    const out = b.allocate(testDevice(), 64);
    expect(() => b.int8Matmul(out, 0, a, 0, a, 0, 3, 3, 4)).not.toThrow();
    expect(() => b.int8Matmul(out, 0, a, 0, a, 0, 4, 3, 4)).toThrow(ShapeError);
    expect(() => b.int8Matmul(out, 2, a, 0, a, 0, 3, 3, 4)).toThrow(ArgumentError);
    expect(() => b.int8Matmul(a, 0, a, 0, a, 0, 1, 1, 4)).toThrow(ArgumentError); // out overlaps a
  });
});

describeOnDevices("int8MmDequant", () => {
  function runDequant(outDtype: FloatName, withBias: boolean, seed: number): void {
    const M = 9, N = 37;
    const rand = makeRng(seed);
    const C = Int32Array.from(randInt(rand, M * N, -300000, 300000));
    C[0] = 0;
    C[1] = -1;
    const rowStats = Float32Array.from({ length: M }, () => 0.05 + rand() * 8);
    const colStats = Float32Array.from({ length: N }, () => 0.05 + rand() * 8);
    const bias = withBias ? encode(randn(rand, N), outDtype) : null;
    const out = b.allocate(testDevice(), M * N * DTYPES[outDtype].bytes);
    b.int8MmDequant(out, 0, id(outDtype), storageOf(C), 0, storageOf(rowStats), 0, storageOf(colStats), 0, bias === null ? null : storageOf(bias.raw), 0, M, N);
    const want = int8MmDequantRef(C, rowStats, colStats, bias === null ? null : bias.values, outDtype, M, N);
    expect(readFloats(out, outDtype, M * N)).toEqual(want);
  }

  it("is bit-exact with bitsandbytes' fp16 fmaf form, bias fused for fp16 and added afterwards otherwise", () => {
    let seed = 600;
    for (const outDtype of ["float16", "bfloat16", "float32"] as const) for (const withBias of [false, true]) runDequant(outDtype, withBias, seed++);
  });
});

describeOnDevices("int8OutlierMatmulAdd", () => {
  it("adds x[:, cols] @ dequant(CB)[:, cols]^T to out", () => {
    let seed = 700;
    for (const dtype of ["float32", "bfloat16"] as const) {
      const rand = makeRng(seed++);
      const M = 5, N = 23, K = 40;
      const x = encode(randn(rand, M * K), dtype);
      const CB = Int8Array.from(randInt(rand, N * K, -127, 127));
      const SCB = Float32Array.from({ length: N }, () => 0.1 + rand() * 3);
      const cols = Int32Array.from([0, 3, 17, 39]);
      const init = encode(randn(rand, M * N), dtype);
      const out = storageOf(init.raw);
      b.int8OutlierMatmulAdd(out, 0, storageOf(x.raw), 0, id(dtype), storageOf(CB), 0, storageOf(SCB), 0, storageOf(cols), 0, cols.length, M, N, K);
      const ref = int8OutlierRef(init.values, x.values, CB, SCB, cols, M, N, K, INT8_DEQUANT_SCALE);
      expectClose(readFloats(out, dtype, M * N), ref, dtype, 1e-6);
    }
  });

  it("rejects column indices outside [0, K)", () => {
    const out = b.allocate(testDevice(), 4);
    const x = storageOf(new Float32Array(4));
    const cb = storageOf(new Int8Array(4));
    const scb = storageOf(new Float32Array(1));
    expect(() => b.int8OutlierMatmulAdd(out, 0, x, 0, id("float32"), cb, 0, scb, 0, storageOf(Int32Array.from([4])), 0, 1, 1, 1, 4)).toThrow(ArgumentError);
    expect(() => b.int8OutlierMatmulAdd(out, 0, x, 0, id("float32"), cb, 0, scb, 0, storageOf(Int32Array.from([-1])), 0, 1, 1, 1, 4)).toThrow(ArgumentError);
    expect(() => b.int8OutlierMatmulAdd(out, 0, x, 0, id("float32"), cb, 0, scb, 0, storageOf(Int32Array.from([3])), 0, 2, 1, 1, 4)).toThrow(ShapeError);
  });

  it("composes into the LLM.int8 forward: int8 product + dequant + outliers ≈ x @ W^T", () => {
    const rand = makeRng(800);
    const M = 6, N = 40, K = 96, threshold = 2.5;
    const x = randn(rand, M * K);
    x[3] = 7; // outlier columns 3 and 50
    x[2 * K + 50] = -4;
    const w = randn(rand, N * K, 0.2);
    const qx = int8VectorwiseQuant(x, M, K, { threshold });
    const qw = int8VectorwiseQuant(w, N, K);
    const sx = storageOf(x);
    const CA = b.allocate(testDevice(), M * K), SCA = b.allocate(testDevice(), M * 4);
    const cols = b.int8VectorwiseQuant(CA, 0, SCA, 0, sx, 0, id("float32"), M, K, threshold);
    expect(cols).toEqual(qx.outlierCols);
    const CB = storageOf(qw.CB);
    const C = b.allocate(testDevice(), M * N * 4);
    b.int8Matmul(C, 0, CA, 0, CB, 0, M, N, K);
    const out = b.allocate(testDevice(), M * N * 4);
    b.int8MmDequant(out, 0, id("float32"), C, 0, SCA, 0, storageOf(qw.SCB), 0, null, 0, M, N);
    b.int8OutlierMatmulAdd(out, 0, sx, 0, id("float32"), CB, 0, storageOf(qw.SCB), 0, storageOf(cols), 0, cols.length, M, N, K);
    const got = readFloats(out, "float32", M * N);
    const ref = linearRef(x, w, null, M, N, K);
    let err = 0, norm = 0;
    for (let i = 0; i < M * N; i++) {
      err += (got[i]! - ref.value[i]!) ** 2;
      norm += ref.value[i]! ** 2;
    }
    expect(Math.sqrt(err / norm)).toBeLessThan(0.03); // int8 quantization error, not a kernel tolerance
  });

  it("outliers kept where they are found (list storage, nCols = -1) give the same CB, SCB, list and product", () => {
    const rand = makeRng(900);
    const N = 24, K = 200, threshold = 3;
    for (const M of [1, 5]) {
      const x = randn(rand, M * K, 0.4); // |x| < 3 but for the planted outliers
      for (const c of [7, 150, 199]) x[(M - 1) * K + c] = 5 + c / 100; // outlier columns 7, 150, 199
      const w = randn(rand, N * K, 0.2);
      const qw = int8VectorwiseQuant(w, N, K);
      const sx = storageOf(x);
      const CB = storageOf(qw.CB), SCB = storageOf(qw.SCB);
      const run = (device: boolean): { CA: Int8Array; SCA: Float32Array; list: Int32Array; out: Float64Array } => {
        const CA = b.allocate(testDevice(), M * K), SCA = b.allocate(testDevice(), M * 4);
        const list = b.allocate(testDevice(), (K + 1) * 4);
        const cols = b.int8VectorwiseQuant(CA, 0, SCA, 0, sx, 0, id("float32"), M, K, threshold, device ? list : null, 0);
        const out = storageOf(new Float32Array(M * N).fill(0.25));
        if (device) {
          expect(cols.length).toBe(0);
          b.int8OutlierMatmulAdd(out, 0, sx, 0, id("float32"), CB, 0, SCB, 0, list, 0, -1, M, N, K);
        } else {
          b.upload(list, 0, Int32Array.from([cols.length, ...cols]));
          b.int8OutlierMatmulAdd(out, 0, sx, 0, id("float32"), CB, 0, SCB, 0, storageOf(cols), 0, cols.length, M, N, K);
        }
        const host = { CA: new Int8Array(M * K), SCA: new Float32Array(M), list: new Int32Array(4) };
        b.download(CA, 0, host.CA);
        b.download(SCA, 0, host.SCA);
        b.download(list, 0, host.list);
        return { ...host, out: readFloats(out, "float32", M * N) };
      };
      const onDevice = run(true);
      const onHost = run(false);
      expect(Array.from(onDevice.list)).toEqual([3, 7, 150, 199]);
      expect(onDevice.list).toEqual(onHost.list);
      expect(onDevice.CA).toEqual(onHost.CA);
      expect(onDevice.SCA).toEqual(onHost.SCA);
      expect(Array.from(onDevice.out)).toEqual(Array.from(onHost.out));
    }
    // A list the caller made: a count past K or a bad index is refused on the CPU (CUDA clamps and skips them).
    if (testDevice() === "cpu") {
      const out = b.allocate("cpu", 4), x1 = storageOf(new Float32Array(4)), cb = storageOf(new Int8Array(4)), scb = storageOf(new Float32Array(1));
      expect(() => b.int8OutlierMatmulAdd(out, 0, x1, 0, id("float32"), cb, 0, scb, 0, storageOf(Int32Array.from([5, 0, 0, 0, 0])), 0, -1, 1, 1, 4)).toThrow(ArgumentError);
      expect(() => b.int8OutlierMatmulAdd(out, 0, x1, 0, id("float32"), cb, 0, scb, 0, storageOf(Int32Array.from([1, 4, 0, 0, 0])), 0, -1, 1, 1, 4)).toThrow(ArgumentError);
    }
  });
});

// ---- portable kernels ---------------------------------------------------------------------------------------

describe("portable kernels (LOWBIT_CPU_ISA=generic)", () => {
  // The SIMD paths are chosen at run time; on an AVX2 machine every test above runs them. This reruns both kernel
  // test files in a child process with the portable code forced, the only code on CPUs without AVX2 (ARM64 included).
  it.skipIf(process.env.LOWBIT_CPU_ISA === "generic")("pass the matmul and quantization tests with SIMD disabled", () => {
    const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
    const vitest = join(dirname(createRequire(import.meta.url).resolve("vitest/package.json")), "vitest.mjs");
    const run = spawnSync(process.execPath, [vitest, "run", "test/linalg.test.ts", "test/quant.test.ts"], {
      cwd: packageDir,
      env: { ...process.env, LOWBIT_CPU_ISA: "generic" },
      encoding: "utf8",
      timeout: 280_000,
    });
    expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
  }, 300_000);
});

// roundTo is part of the reference module's contract; check the f16 / bf16 rounding it relies on once.
describe("reference helpers", () => {
  it("roundTo rounds through float32 to the storage dtype", () => {
    expect(roundTo("float16", 1 + 2 ** -11)).toBe(1);
    expect(roundTo("bfloat16", 1 + 2 ** -7)).toBe(1 + 2 ** -7);
    expect(roundTo("float32", 0.1)).toBe(Math.fround(0.1));
  });
});
