// Tests of the neural-network kernels (unary ... adamw) against the float64 references in reference/nn.ts,
// for float32 (rel ~1e-5) and bfloat16 / float16 (rel ~1e-2), plus the typed errors of bad arguments; every block
// runs on the CPU and on each CUDA device the addon reports (describeOnDevices).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { DTYPES, bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "@lowbit/dtypes";
import { afterAll, expect, it } from "vitest";

import {
  ArgumentError,
  BinaryOp,
  DTypeError,
  ReduceOp,
  ShapeError,
  UnaryOp,
  getBinding,
  type NativeStorage,
} from "../src/index.js";
import { describeOnDevices, testDevice } from "./devices.js";
import * as ref from "./reference/nn.js";
import type { FloatName } from "./reference/nn.js";

const binding = getBinding();

// ---- helpers ------------------------------------------------------------------------------------------

/** mulberry32: a small seeded generator so every run sees the same inputs. */
function makeRng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function uniform(rand: () => number, n: number, lo: number, hi: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rand();
  return out;
}

const FLOATS: FloatName[] = ["float32", "bfloat16", "float16"];
const TOL: Record<FloatName, number> = { float32: 1e-5, bfloat16: 1e-2, float16: 1e-2 };

interface DeviceTensor {
  storage: NativeStorage;
  /** The values exactly as stored (after rounding to the dtype). */
  values: Float64Array;
}

/** Uploads values rounded to `dtype` into a new storage on the test's device. */
function put(dtype: FloatName, values: ArrayLike<number>): DeviceTensor {
  const n = values.length;
  const storage = binding.allocate(testDevice(), Math.max(4, n * DTYPES[dtype].bytes));
  const stored = Float64Array.from({ length: n }, (_, i) => ref.roundTo(dtype, values[i]!));
  if (dtype === "float32") binding.upload(storage, 0, Float32Array.from(stored));
  else binding.upload(storage, 0, Uint16Array.from(stored, dtype === "bfloat16" ? f32ToBf16Bits : f32ToF16Bits));
  return { storage, values: stored };
}

/** A zeroed storage on the test's device for n elements of dtype. */
function alloc(dtype: keyof typeof DTYPES, n: number): NativeStorage {
  return binding.allocate(testDevice(), Math.max(4, Math.ceil(n * DTYPES[dtype].bytes)));
}

/** n elements of `dtype` read back as float64. */
function get(dtype: FloatName, storage: NativeStorage, n: number): Float64Array {
  if (dtype === "float32") {
    const a = new Float32Array(n);
    binding.download(storage, 0, a);
    return Float64Array.from(a);
  }
  const bits = new Uint16Array(n);
  binding.download(storage, 0, bits);
  return Float64Array.from(bits, dtype === "bfloat16" ? bf16BitsToF32 : f16BitsToF32);
}

function putInts(dtype: "int32" | "int64", values: readonly number[]): NativeStorage {
  const storage = alloc(dtype, values.length);
  if (dtype === "int32") binding.upload(storage, 0, Int32Array.from(values));
  else binding.upload(storage, 0, BigInt64Array.from(values, (v) => BigInt(v)));
  return storage;
}

function putBytes(values: readonly number[]): NativeStorage {
  const storage = alloc("uint8", values.length);
  binding.upload(storage, 0, Uint8Array.from(values));
  return storage;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/**
 * Asserts |actual - expected| <= atol + rtol * |expected| elementwise (NaN only matches NaN, infinities exactly);
 * reports the worst element.
 */
function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atol: number, label = ""): void {
  expect(actual.length, `${label} length`).toBe(expected.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    let ratio: number;
    if (Number.isNaN(e) || Number.isNaN(a)) ratio = Number.isNaN(e) && Number.isNaN(a) ? 0 : Infinity;
    else if (!Number.isFinite(e) || !Number.isFinite(a)) ratio = a === e ? 0 : Infinity;
    else ratio = Math.abs(a - e) / (atol + rtol * Math.abs(e));
    if (ratio > worst) {
      worst = ratio;
      at = i;
    }
  }
  const detail = at < 0 ? "" : `${label}: worst at [${at}]: actual ${actual[at]} expected ${expected[at]} (rtol ${rtol}, atol ${atol})`;
  expect(worst, detail).toBeLessThanOrEqual(1);
}

/** Rounds every value of a float64 result to the output dtype, as the kernel's single store does. */
function rounded(dtype: FloatName, values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values, (v) => ref.roundTo(dtype, v));
}

/** Runs fn and checks it throws an instance of `cls` with exactly `message` (when given). */
function expectError(fn: () => unknown, cls: new (...args: never[]) => Error, message?: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(cls);
  if (message !== undefined) expect((caught as Error).message).toBe(message);
}

/** Central finite difference of a scalar function of one element of x (float64). */
function finiteDiff(f: (x: Float64Array) => number, x: Float64Array, i: number, h = 1e-6): number {
  const xp = Float64Array.from(x);
  const xm = Float64Array.from(x);
  xp[i]! += h;
  xm[i]! -= h;
  return (f(xp) - f(xm)) / (2 * h);
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

const id = (name: FloatName | "int32" | "int64" | "uint8"): number => DTYPES[name].id;

// ---- unary ----------------------------------------------------------------------------------------------

/** Input ranges where each op is defined and well conditioned, and the alpha it is tested with. */
const UNARY_CASES: { op: ref.UnaryName; lo: number; hi: number; alpha: number }[] = [
  { op: "neg", lo: -4, hi: 4, alpha: 0 },
  { op: "exp", lo: -4, hi: 4, alpha: 0 },
  { op: "log", lo: 0.1, hi: 5, alpha: 0 },
  { op: "sqrt", lo: 0.1, hi: 5, alpha: 0 },
  { op: "rsqrt", lo: 0.1, hi: 5, alpha: 0 },
  { op: "abs", lo: -4, hi: 4, alpha: 0 },
  { op: "silu", lo: -6, hi: 6, alpha: 0 },
  { op: "gelu", lo: -5, hi: 5, alpha: 0 },
  { op: "geluTanh", lo: -5, hi: 5, alpha: 0 },
  { op: "relu", lo: -4, hi: 4, alpha: 0 },
  { op: "sigmoid", lo: -6, hi: 6, alpha: 0 },
  { op: "tanh", lo: -3, hi: 3, alpha: 0 },
  { op: "scale", lo: -4, hi: 4, alpha: 0.37 },
  { op: "addScalar", lo: -4, hi: 4, alpha: -1.25 },
  { op: "powScalar", lo: 0.2, hi: 3, alpha: 1.7 },
  { op: "powScalar", lo: 0.2, hi: 3, alpha: 2 },
  { op: "powScalar", lo: 0.2, hi: 3, alpha: -0.5 },
  { op: "square", lo: -4, hi: 4, alpha: 0 },
];

describeOnDevices("unary", () => {
  const n = 1037; // crosses the kernel's 1024-element block
  for (const dtype of FLOATS) {
    for (const c of UNARY_CASES) {
      it(`${c.op}(alpha=${c.alpha}) forward and backward, ${dtype}`, () => {
        const rand = makeRng(11 + c.op.length * 7 + c.alpha * 13);
        const x = put(dtype, uniform(rand, n, c.lo, c.hi));
        const gy = put(dtype, uniform(rand, n, -2, 2));
        const out = alloc(dtype, n);
        binding.unary(UnaryOp[c.op], out, 0, x.storage, 0, id(dtype), n, c.alpha);
        const want = rounded(dtype, Array.from(x.values, (v) => ref.unaryRef(c.op, v, c.alpha)));
        expectClose(get(dtype, out, n), want, TOL[dtype], 1e-6, `${c.op} forward`);

        const gx = alloc(dtype, n);
        binding.unaryBackward(UnaryOp[c.op], gx, 0, gy.storage, 0, x.storage, 0, id(dtype), n, c.alpha);
        const wantG = rounded(dtype, Array.from(x.values, (v, i) => gy.values[i]! * ref.unaryDerivRef(c.op, v, c.alpha)));
        expectClose(get(dtype, gx, n), wantG, TOL[dtype], 1e-6, `${c.op} backward`);
      });
    }
  }

  it("works in place (out = x)", () => {
    const rand = makeRng(5);
    const x = put("float32", uniform(rand, 300, -3, 3));
    binding.unary(UnaryOp.silu, x.storage, 0, x.storage, 0, id("float32"), 300, 0);
    expectClose(get("float32", x.storage, 300), rounded("float32", Array.from(x.values, (v) => ref.unaryRef("silu", v, 0))), 1e-5, 1e-7);
  });

  it("the analytic reference derivatives match finite differences of the forward references", () => {
    const rand = makeRng(3);
    for (const c of UNARY_CASES) {
      for (let k = 0; k < 20; k++) {
        const x0 = c.lo + (c.hi - c.lo) * rand();
        const fd = finiteDiff((x) => ref.unaryRef(c.op, x[0]!, c.alpha), Float64Array.of(x0), 0);
        expect(Math.abs(fd - ref.unaryDerivRef(c.op, x0, c.alpha)), `${c.op} at ${x0}`).toBeLessThan(1e-6 * (1 + Math.abs(fd)));
      }
    }
  });
});

// ---- binary ---------------------------------------------------------------------------------------------

describeOnDevices("binary", () => {
  // [shape, aStrides, bStrides, a elements, b elements]
  const layouts: { name: string; shape: number[]; as: number[]; bs: number[]; na: number; nb: number }[] = [
    { name: "contiguous", shape: [3, 5, 7], as: [35, 7, 1], bs: [35, 7, 1], na: 105, nb: 105 },
    { name: "row broadcast", shape: [3, 5, 7], as: [35, 7, 1], bs: [0, 1, 0], na: 105, nb: 5 },
    { name: "transposed a, scalar b", shape: [4, 6], as: [1, 4], bs: [0, 0], na: 24, nb: 1 },
    { name: "long inner, broadcast rows", shape: [3, 2500], as: [2500, 1], bs: [0, 1], na: 7500, nb: 2500 },
    { name: "column broadcast, strided a", shape: [5, 1, 9], as: [20, 0, 2], bs: [1, 0, 0], na: 100, nb: 5 },
  ];
  const ops: ref.BinaryName[] = ["add", "sub", "mul", "div", "maximum", "minimum"];
  for (const dtype of FLOATS) {
    for (const l of layouts) {
      it(`${l.name}, every op, ${dtype}`, () => {
        const rand = makeRng(l.na + l.nb);
        const a = put(dtype, uniform(rand, l.na, -3, 3));
        // b bounded away from zero so div is well conditioned.
        const b = put(dtype, Array.from(uniform(rand, l.nb, 0.5, 3), (v) => (rand() < 0.5 ? -v : v)));
        const numel = l.shape.reduce((p, d) => p * d, 1);
        for (const op of ops) {
          const out = alloc(dtype, numel);
          binding.binary(BinaryOp[op], out, 0, a.storage, 0, l.as, b.storage, 0, l.bs, id(dtype), l.shape);
          const want = rounded(dtype, ref.binaryRef(op, a.values, l.as, b.values, l.bs, l.shape));
          expectClose(get(dtype, out, numel), want, TOL[dtype], 1e-6, `${op} ${l.name}`);
        }
      });
    }
  }

  it("maximum / minimum propagate NaN like torch", () => {
    const a = put("float32", [1, NaN, 3, -2]);
    const b = put("float32", [NaN, 2, 1, -5]);
    for (const op of ["maximum", "minimum"] as const) {
      const out = alloc("float32", 4);
      binding.binary(BinaryOp[op], out, 0, a.storage, 0, [1], b.storage, 0, [1], id("float32"), [4]);
      expect(Array.from(get("float32", out, 4))).toEqual(Array.from(ref.binaryRef(op, a.values, [1], b.values, [1], [4])));
    }
  });

  it("rejects strides that do not match the shape or reach past the storage", () => {
    const a = put("float32", uniform(makeRng(1), 6, -1, 1));
    const out = alloc("float32", 6);
    expectError(
      () => binding.binary(BinaryOp.add, out, 0, a.storage, 0, [3], a.storage, 0, [3, 1], id("float32"), [2, 3]),
      ShapeError,
      "Expected aStrides and bStrides of length 2 (the length of shape) but received 1 and 2",
    );
    expectError(
      () => binding.binary(BinaryOp.add, out, 0, a.storage, 0, [4, 1], a.storage, 0, [3, 1], id("float32"), [2, 3]),
      ShapeError,
      "Expected 28 bytes after the byte offset for a but received a storage with 24 bytes there",
    );
    expectError(() => binding.binary(BinaryOp.add, out, 0, a.storage, 0, [-3, 1], a.storage, 0, [3, 1], id("float32"), [2, 3]), ArgumentError);
  });
});

// ---- reductions -------------------------------------------------------------------------------------------

describeOnDevices("reduce / argmax", () => {
  const shapes: [number, number, number][] = [
    [3, 257, 1],
    [2, 131, 5],
    [1, 300, 600],
    [4, 1, 3],
    [2, 1000, 1],
  ];
  for (const dtype of FLOATS) {
    for (const [outer, n, inner] of shapes) {
      it(`sum / mean / max over (${outer}, ${n}, ${inner}), ${dtype}`, () => {
        const rand = makeRng(outer * 1000 + n + inner);
        const x = put(dtype, uniform(rand, outer * n * inner, -2, 2));
        for (const op of ["sum", "mean", "max"] as const) {
          const out = alloc(dtype, outer * inner);
          binding.reduce(ReduceOp[op], out, 0, x.storage, 0, id(dtype), outer, n, inner);
          const want = ref.reduceRef(op, x.values, outer, n, inner);
          // Sums of mixed signs cancel: the tolerance is relative to the sum of magnitudes.
          const atol = op === "max" ? 0 : TOL[dtype] * (op === "sum" ? n : 1) * 0.2;
          expectClose(get(dtype, out, outer * inner), rounded(dtype, want), TOL[dtype], atol, op);
        }
      });
    }
  }

  it("sums a million float32 values to ~1e-6 relative (cascade summation on the CPU, tree reduction on CUDA)", () => {
    // The CPU's cascade sum stays within 1e-6; a GPU's block-tree order lands within a few 1e-6.
    const tol = testDevice() === "cpu" ? 1e-6 : 1e-5;
    const n = 1_000_003;
    const x = put("float32", uniform(makeRng(77), n, 0, 1));
    const out = alloc("float32", 1);
    binding.reduce(ReduceOp.sum, out, 0, x.storage, 0, id("float32"), 1, n, 1);
    const want = ref.reduceRef("sum", x.values, 1, n, 1)[0]!;
    expect(Math.abs(get("float32", out, 1)[0]! - want) / want).toBeLessThan(tol);
    // The same along a strided (n, inner) axis.
    const x3 = put("float32", uniform(makeRng(78), 300_000 * 3, 0, 1));
    const out3 = alloc("float32", 3);
    binding.reduce(ReduceOp.sum, out3, 0, x3.storage, 0, id("float32"), 1, 300_000, 3);
    const want3 = ref.reduceRef("sum", x3.values, 1, 300_000, 3);
    const got3 = get("float32", out3, 3);
    for (let i = 0; i < 3; i++) expect(Math.abs(got3[i]! - want3[i]!) / want3[i]!).toBeLessThan(tol);
  });

  it("empty reductions: sum 0, mean NaN; max of nothing is a ShapeError", () => {
    const x = alloc("float32", 1);
    const out = alloc("float32", 2);
    binding.reduce(ReduceOp.sum, out, 0, x, 0, id("float32"), 1, 0, 2);
    expect(Array.from(get("float32", out, 2))).toEqual([0, 0]);
    binding.reduce(ReduceOp.mean, out, 0, x, 0, id("float32"), 1, 0, 2);
    expect(Array.from(get("float32", out, 2))).toEqual([NaN, NaN]);
    expectError(() => binding.reduce(ReduceOp.max, out, 0, x, 0, id("float32"), 1, 0, 2), ShapeError, "Expected n >= 1 for a max reduction but received n = 0");
  });

  for (const dtype of FLOATS) {
    it(`argmax returns the first maximum, NaN counting as the maximum, ${dtype}`, () => {
      const rows = 6;
      const cols = 301;
      const values = uniform(makeRng(9), rows * cols, -5, 5);
      values[1 * cols + 7] = 9; // tie: the first index wins
      values[1 * cols + 200] = 9;
      values[2 * cols + 300] = 9; // the last column
      values[3 * cols + 50] = NaN; // NaN is the maximum (torch.argmax)
      values[3 * cols + 60] = NaN;
      const x = put(dtype, values);
      const out = alloc("int32", rows);
      binding.argmax(out, 0, x.storage, 0, id(dtype), rows, cols);
      const got = new Int32Array(rows);
      binding.download(out, 0, got);
      expect(Array.from(got)).toEqual(Array.from(ref.argmaxRef(x.values, rows, cols)));
      expect(got[1]).toBe(7);
      expect(got[3]).toBe(50);
    });
  }
});

// ---- softmax -----------------------------------------------------------------------------------------------

describeOnDevices("softmax / log_softmax", () => {
  for (const dtype of FLOATS) {
    for (const log of [false, true]) {
      it(`${log ? "log_softmax" : "softmax"} forward and backward, ${dtype}`, () => {
        for (const [rows, cols, spread] of [
          [7, 301, 4],
          [3, 1, 4],
          [5, 40, 60], // large logits: needs the max subtraction
        ] as const) {
          const rand = makeRng(rows * cols + (log ? 1 : 0));
          const x = put(dtype, uniform(rand, rows * cols, -spread, spread));
          const y = alloc(dtype, rows * cols);
          binding.softmax(y, 0, x.storage, 0, id(dtype), rows, cols, log);
          const want = ref.softmaxRef(x.values, rows, cols, log);
          const yv = get(dtype, y, rows * cols);
          expectClose(yv, rounded(dtype, want), TOL[dtype], log ? TOL[dtype] : 1e-7, "forward");

          const gy = put(dtype, uniform(rand, rows * cols, -1, 1));
          const gx = alloc(dtype, rows * cols);
          binding.softmaxBackward(gx, 0, gy.storage, 0, y, 0, id(dtype), rows, cols, log);
          const wantG = ref.softmaxBackwardRef(gy.values, yv, rows, cols, log);
          expectClose(get(dtype, gx, rows * cols), rounded(dtype, wantG), TOL[dtype], TOL[dtype] * 0.05 * maxAbs(wantG), "backward");
        }
      });
    }
  }

  it("the backward reference matches finite differences of the forward reference", () => {
    const rand = makeRng(4);
    const rows = 2;
    const cols = 5;
    const x = uniform(rand, rows * cols, -2, 2);
    const gy = uniform(rand, rows * cols, -1, 1);
    for (const log of [false, true]) {
      const y = ref.softmaxRef(x, rows, cols, log);
      const analytic = ref.softmaxBackwardRef(gy, y, rows, cols, log);
      for (let i = 0; i < x.length; i++) {
        const fd = finiteDiff((xx) => dot(gy, ref.softmaxRef(xx, rows, cols, log)), x, i);
        expect(Math.abs(fd - analytic[i]!)).toBeLessThan(1e-7);
      }
    }
  });
});

// ---- RMSNorm ----------------------------------------------------------------------------------------------------

describeOnDevices("rmsNorm", () => {
  const rows = 5;
  const cols = 129;
  const eps = 1e-6;
  const combos: [FloatName, FloatName][] = [
    ["float32", "float32"],
    ["bfloat16", "bfloat16"],
    ["bfloat16", "float32"],
    ["float16", "float16"],
  ];
  for (const [dtype, wDtype] of combos) {
    it(`forward and backward, x ${dtype}, w ${wDtype}`, () => {
      const rand = makeRng(21);
      const x = put(dtype, uniform(rand, rows * cols, -3, 3));
      const w = put(wDtype, uniform(rand, cols, 0.5, 1.5));
      const out = alloc(dtype, rows * cols);
      binding.rmsNorm(out, 0, x.storage, 0, w.storage, 0, id(dtype), id(wDtype), rows, cols, eps);
      const roundH = (v: number) => (dtype === "float32" ? v : ref.roundTo(dtype, v));
      const want = rounded(dtype, ref.rmsNormRef(x.values, w.values, rows, cols, eps, roundH));
      expectClose(get(dtype, out, rows * cols), want, TOL[dtype], 1e-6, "forward");

      const gy = put(dtype, uniform(rand, rows * cols, -1, 1));
      const gx = alloc(dtype, rows * cols);
      const gw = put("float32", new Array<number>(cols).fill(0.25)); // accumulated into
      binding.rmsNormBackward(gx, 0, gw.storage, 0, gy.storage, 0, x.storage, 0, w.storage, 0, id(dtype), id(wDtype), rows, cols, eps);
      const wantB = ref.rmsNormBackwardRef(gy.values, x.values, w.values, rows, cols, eps, roundH);
      expectClose(get(dtype, gx, rows * cols), rounded(dtype, wantB.gx), TOL[dtype], TOL[dtype] * 0.05 * maxAbs(wantB.gx), "gx");
      expectClose(get("float32", gw.storage, cols), Array.from(wantB.gw, (v) => v + 0.25), 1e-5, 1e-5, "gw");
    });
  }

  it("bfloat16: rounds h to bfloat16 before the weight multiply, as HF does", () => {
    const r = 64;
    const c = 256;
    const rand = makeRng(8);
    const x = put("bfloat16", uniform(rand, r * c, -3, 3));
    const w = put("bfloat16", uniform(rand, c, 0.3, 2.7));
    const out = alloc("bfloat16", r * c);
    binding.rmsNorm(out, 0, x.storage, 0, w.storage, 0, id("bfloat16"), id("bfloat16"), r, c, eps);
    const got = get("bfloat16", out, r * c);
    const hf = rounded("bfloat16", ref.rmsNormRef(x.values, w.values, r, c, eps, (v) => ref.roundTo("bfloat16", v)));
    const single = rounded("bfloat16", ref.rmsNormRef(x.values, w.values, r, c, eps));
    let matchHf = 0;
    let matchSingle = 0;
    for (let i = 0; i < got.length; i++) {
      if (got[i] === hf[i]) matchHf++;
      if (got[i] === single[i]) matchSingle++;
    }
    // float32 vs float64 math may flip a rare tie; the HF order must explain (nearly) every element, and
    // the test must be able to tell the two orders apart.
    expect(matchHf / got.length).toBeGreaterThan(0.995);
    expect(matchSingle / got.length).toBeLessThan(0.95);
  });

  it("the backward reference matches finite differences of the forward reference", () => {
    const rand = makeRng(6);
    const r = 2;
    const c = 7;
    const x = uniform(rand, r * c, -2, 2);
    const w = uniform(rand, c, 0.5, 1.5);
    const gy = uniform(rand, r * c, -1, 1);
    const { gx, gw } = ref.rmsNormBackwardRef(gy, x, w, r, c, eps);
    for (let i = 0; i < x.length; i++) {
      expect(Math.abs(finiteDiff((xx) => dot(gy, ref.rmsNormRef(xx, w, r, c, eps)), x, i) - gx[i]!)).toBeLessThan(1e-7);
    }
    for (let i = 0; i < c; i++) {
      expect(Math.abs(finiteDiff((ww) => dot(gy, ref.rmsNormRef(x, ww, r, c, eps)), w, i) - gw[i]!)).toBeLessThan(1e-7);
    }
  });
});

// ---- rope ----------------------------------------------------------------------------------------------

describeOnDevices("rope", () => {
  const B = 2;
  const H = 3;
  const T = 5;
  const D = 16;
  const invFreq = Array.from({ length: D / 2 }, (_, i) => Math.fround(1 / 10000 ** ((2 * i) / D)));
  const positions = [0, 1, 2, 3, 4, 1000, 1001, 2047, 4093, 7]; // (B, T), large values stress the float32 angle

  for (const dtype of FLOATS) {
    for (const posDtype of ["int32", "int64"] as const) {
      for (const scaling of [1, 0.8]) {
        it(`HF rotate_half, positions ${posDtype}, scaling ${scaling}, ${dtype}`, () => {
          const x = put(dtype, uniform(makeRng(31), B * H * T * D, -2, 2));
          const pos = putInts(posDtype, positions);
          const inv = put("float32", invFreq);
          const out = alloc(dtype, B * H * T * D);
          binding.rope(out, 0, x.storage, 0, id(dtype), pos, 0, id(posDtype), inv.storage, 0, B, H, T, D, scaling, false);
          const want = ref.ropeRef(x.values, positions, inv.values, B, H, T, D, scaling, false, dtype);
          const got = get(dtype, out, B * H * T * D);
          expectClose(got, rounded(dtype, want), TOL[dtype], TOL[dtype] * 0.1, "rope");

          // inverse(rope(x)) = x up to the rotation's rounding (cos^2 + sin^2 = scaling^2).
          const back = alloc(dtype, B * H * T * D);
          binding.rope(back, 0, out, 0, id(dtype), pos, 0, id(posDtype), inv.storage, 0, B, H, T, D, scaling, true);
          const wantBack = ref.ropeRef(got, positions, inv.values, B, H, T, D, scaling, true, dtype);
          expectClose(get(dtype, back, B * H * T * D), rounded(dtype, wantBack), TOL[dtype], TOL[dtype] * 0.1, "inverse");
          if (scaling === 1) {
            expectClose(get(dtype, back, B * H * T * D), x.values, dtype === "float32" ? 1e-5 : 3e-2, dtype === "float32" ? 1e-5 : 3e-2, "round trip");
          }
        });
      }
    }
  }

  it("works in place and rejects an odd head dim", () => {
    const x = put("float32", uniform(makeRng(2), 1 * 2 * 3 * 8, -1, 1));
    const pos = putInts("int32", [5, 6, 7]);
    const inv = put("float32", [1, 0.1, 0.01, 0.001]);
    binding.rope(x.storage, 0, x.storage, 0, id("float32"), pos, 0, id("int32"), inv.storage, 0, 1, 2, 3, 8, 1, false);
    const want = ref.ropeRef(x.values, [5, 6, 7], inv.values, 1, 2, 3, 8, 1, false, "float32");
    expectClose(get("float32", x.storage, 48), rounded("float32", want), 1e-5, 1e-6);
    expectError(
      () => binding.rope(x.storage, 0, x.storage, 0, id("float32"), pos, 0, id("int32"), inv.storage, 0, 1, 2, 3, 7, 1, false),
      ShapeError,
      "Expected an even head dim for D but received 7",
    );
  });
});

// ---- attention ------------------------------------------------------------------------------------------

interface AttentionCase extends ref.AttentionDims {
  name: string;
  /** (B, Tk) 1 = attend, 0 = padding, or null. */
  mask: number[] | null;
}

function leftPadMask(B: number, Tk: number, pads: number[]): number[] {
  const m: number[] = [];
  for (let b = 0; b < B; b++) for (let j = 0; j < Tk; j++) m.push(j < (pads[b] ?? 0) ? 0 : 1);
  return m;
}

const ATTENTION_CASES: AttentionCase[] = [
  { name: "GQA causal prefill", B: 2, Hq: 4, Hkv: 2, Tq: 7, Tk: 7, S: 7, D: 16, scale: 0.25, causal: true, qStart: 0, mask: null },
  {
    name: "GQA causal chunk after a partially filled cache, left padding",
    B: 2, Hq: 6, Hkv: 2, Tq: 5, Tk: 29, S: 40, D: 24, scale: 1 / Math.sqrt(24), causal: true, qStart: 24,
    mask: leftPadMask(2, 29, [0, 6]),
  },
  {
    name: "decode (Tq = 1) over several key blocks, GQA 4, left padding",
    B: 2, Hq: 8, Hkv: 2, Tq: 1, Tk: 300, S: 320, D: 32, scale: 1 / Math.sqrt(32), causal: true, qStart: 299,
    mask: leftPadMask(2, 300, [3, 70]),
  },
  { name: "decode, MHA (one row per task)", B: 1, Hq: 2, Hkv: 2, Tq: 1, Tk: 130, S: 130, D: 8, scale: 0.35, causal: true, qStart: 129, mask: null },
  {
    name: "non-causal with padding, several query blocks",
    B: 2, Hq: 3, Hkv: 3, Tq: 70, Tk: 70, S: 72, D: 12, scale: 0.3, causal: false, qStart: 0,
    mask: leftPadMask(2, 70, [0, 11]),
  },
];

function attentionInputs(c: AttentionCase, dtype: FloatName, seed: number) {
  const rand = makeRng(seed);
  const q = put(dtype, uniform(rand, c.B * c.Hq * c.Tq * c.D, -1.5, 1.5));
  const k = put(dtype, uniform(rand, c.B * c.Hkv * c.S * c.D, -1.5, 1.5));
  const v = put(dtype, uniform(rand, c.B * c.Hkv * c.S * c.D, -2, 2));
  const gOut = put(dtype, uniform(rand, c.B * c.Hq * c.Tq * c.D, -1, 1));
  const mask = c.mask === null ? null : putBytes(c.mask);
  return { q, k, v, gOut, mask };
}

function runAttention(c: AttentionCase, dtype: FloatName, t: ReturnType<typeof attentionInputs>) {
  const nq = c.B * c.Hq * c.Tq * c.D;
  const out = alloc(dtype, nq);
  const lse = alloc("float32", c.B * c.Hq * c.Tq);
  binding.attention(out, 0, t.q.storage, 0, t.k.storage, 0, t.v.storage, 0, id(dtype), c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.S, c.D, c.scale, c.causal, c.qStart, t.mask, 0, lse, 0);
  return { out, lse };
}

describeOnDevices("attention", () => {
  for (const dtype of FLOATS) {
    for (const c of ATTENTION_CASES) {
      it(`${c.name}, ${dtype}`, () => {
        const t = attentionInputs(c, dtype, c.Tk * 7 + c.Hq);
        const { out, lse } = runAttention(c, dtype, t);
        const want = ref.attentionRef(c, t.q.values, t.k.values, t.v.values, c.mask);
        const nq = c.B * c.Hq * c.Tq * c.D;
        expectClose(get(dtype, out, nq), rounded(dtype, want.out), TOL[dtype], TOL[dtype] * 0.1, "out");
        expectClose(get("float32", lse, c.B * c.Hq * c.Tq), want.lse, 1e-5, 1e-5, "lse");

        // Backward; dk / dv start as garbage to check they are overwritten, rows >= Tk zeroed.
        const nkv = c.B * c.Hkv * c.S * c.D;
        const dq = alloc(dtype, nq);
        const dk = put(dtype, new Array<number>(nkv).fill(7)).storage;
        const dv = put(dtype, new Array<number>(nkv).fill(7)).storage;
        binding.attentionBackward(
          dq, 0, dk, 0, dv, 0, t.gOut.storage, 0, t.q.storage, 0, t.k.storage, 0, t.v.storage, 0, out, 0, lse, 0,
          id(dtype), c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.S, c.D, c.scale, c.causal, c.qStart, t.mask, 0,
        );
        const g = ref.attentionBackwardRef(c, t.gOut.values, t.q.values, t.k.values, t.v.values, c.mask);
        // Half-precision runs feed the rounded forward output into rowsum(dO * O): a little looser.
        const rt = dtype === "float32" ? 1e-4 : 3e-2;
        expectClose(get(dtype, dq, nq), rounded(dtype, g.dq), rt, rt * 0.1 * maxAbs(g.dq), "dq");
        expectClose(get(dtype, dk, nkv), rounded(dtype, g.dk), rt, rt * 0.1 * maxAbs(g.dk), "dk");
        expectClose(get(dtype, dv, nkv), rounded(dtype, g.dv), rt, rt * 0.1 * maxAbs(g.dv), "dv");
      });
    }
  }

  it("a row that sees no key outputs zeros and lse = -inf, and gets zero gradients", () => {
    const c: AttentionCase = { name: "", B: 2, Hq: 2, Hkv: 1, Tq: 3, Tk: 4, S: 4, D: 8, scale: 0.5, causal: false, qStart: 0, mask: [0, 0, 0, 0, 1, 0, 1, 1] };
    const t = attentionInputs(c, "float32", 99);
    const { out, lse } = runAttention(c, "float32", t);
    const o = get("float32", out, 2 * 2 * 3 * 8);
    const l = get("float32", lse, 2 * 2 * 3);
    expect(Array.from(o.subarray(0, 48)).every((v) => v === 0)).toBe(true);
    expect(Array.from(l.subarray(0, 6))).toEqual(new Array<number>(6).fill(-Infinity));
    const want = ref.attentionRef(c, t.q.values, t.k.values, t.v.values, c.mask);
    expectClose(o, want.out, 1e-5, 1e-6, "out");
    const dq = alloc("float32", 96);
    const dk = alloc("float32", 64);
    const dv = alloc("float32", 64);
    binding.attentionBackward(dq, 0, dk, 0, dv, 0, t.gOut.storage, 0, t.q.storage, 0, t.k.storage, 0, t.v.storage, 0, out, 0, lse, 0, id("float32"), 2, 2, 1, 3, 4, 4, 8, 0.5, false, 0, t.mask, 0);
    const g = ref.attentionBackwardRef(c, t.gOut.values, t.q.values, t.k.values, t.v.values, c.mask);
    expect(Array.from(get("float32", dq, 96).subarray(0, 48)).every((v) => v === 0)).toBe(true);
    expectClose(get("float32", dq, 96), g.dq, 1e-4, 1e-6, "dq");
    expectClose(get("float32", dk, 64), g.dk, 1e-4, 1e-6, "dk");
    expectClose(get("float32", dv, 64), g.dv, 1e-4, 1e-6, "dv");
  });

  it("works without an lse output", () => {
    const c = ATTENTION_CASES[0]!;
    const t = attentionInputs(c, "float32", 5);
    const out = alloc("float32", c.B * c.Hq * c.Tq * c.D);
    binding.attention(out, 0, t.q.storage, 0, t.k.storage, 0, t.v.storage, 0, id("float32"), c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.S, c.D, c.scale, c.causal, c.qStart, null, 0, null, 0);
    expectClose(get("float32", out, c.B * c.Hq * c.Tq * c.D), ref.attentionRef(c, t.q.values, t.k.values, t.v.values, null).out, 1e-5, 1e-6);
  });

  it("the backward reference matches finite differences of the forward reference", () => {
    const c: ref.AttentionDims = { B: 1, Hq: 2, Hkv: 1, Tq: 3, Tk: 4, S: 5, D: 3, scale: 0.7, causal: true, qStart: 1 };
    const rand = makeRng(12);
    const q = uniform(rand, 2 * 3 * 3, -1, 1);
    const k = uniform(rand, 5 * 3, -1, 1);
    const v = uniform(rand, 5 * 3, -1, 1);
    const gOut = uniform(rand, 2 * 3 * 3, -1, 1);
    const mask = [0, 1, 1, 1];
    const g = ref.attentionBackwardRef(c, gOut, q, k, v, mask);
    const loss = (qq: Float64Array, kk: Float64Array, vv: Float64Array) => dot(gOut, ref.attentionRef(c, qq, kk, vv, mask).out);
    for (let i = 0; i < q.length; i++) expect(Math.abs(finiteDiff((x) => loss(x, k, v), q, i) - g.dq[i]!)).toBeLessThan(1e-7);
    for (let i = 0; i < k.length; i++) expect(Math.abs(finiteDiff((x) => loss(q, x, v), k, i) - g.dk[i]!)).toBeLessThan(1e-7);
    for (let i = 0; i < v.length; i++) expect(Math.abs(finiteDiff((x) => loss(q, k, x), v, i) - g.dv[i]!)).toBeLessThan(1e-7);
  });

  it("rejects inconsistent head counts and a cache smaller than Tk", () => {
    const s = alloc("float32", 1024);
    const f32 = id("float32");
    expectError(
      () => binding.attention(s, 0, s, 0, s, 0, s, 0, f32, 1, 3, 2, 1, 4, 4, 8, 1, true, 3, null, 0, null, 0),
      ShapeError,
      "Expected Hq to be a multiple of Hkv (2) but received Hq = 3",
    );
    expectError(
      () => binding.attention(s, 0, s, 0, s, 0, s, 0, f32, 1, 2, 2, 1, 9, 8, 8, 1, true, 8, null, 0, null, 0),
      ShapeError,
      "Expected Tk <= S (the cache capacity, 8) but received Tk = 9",
    );
    expectError(
      () => binding.attention(s, 0, s, 0, s, 0, s, 0, f32, 1, 2, 2, 1, 4, 4, 8, 1, true, 3, binding.allocate(testDevice(), 2), 0, null, 0),
      ShapeError,
      "Expected 4 bytes after the byte offset for mask but received a storage with 2 bytes there",
    );
  });
});

// ---- embedding --------------------------------------------------------------------------------------------

describeOnDevices("embedding", () => {
  const vocab = 50;
  const dim = 13;
  const n = 37;
  const ids = Array.from({ length: n }, (_, i) => (i * 17 + 3) % vocab);
  ids[5] = ids[9]!; // repeated ids accumulate in the backward

  for (const wDtype of FLOATS) {
    for (const idsDtype of ["int32", "int64"] as const) {
      it(`gathers rows and scatter-adds gradients, weight ${wDtype}, ids ${idsDtype}`, () => {
        const rand = makeRng(41);
        const w = put(wDtype, uniform(rand, vocab * dim, -1, 1));
        const idStorage = putInts(idsDtype, ids);
        const out = alloc(wDtype, n * dim);
        binding.embedding(out, 0, w.storage, 0, id(wDtype), idStorage, 0, id(idsDtype), n, dim, vocab);
        const want = ids.flatMap((t) => Array.from(w.values.subarray(t * dim, (t + 1) * dim)));
        expect(Array.from(get(wDtype, out, n * dim))).toEqual(want);

        const gy = put(wDtype, uniform(rand, n * dim, -1, 1));
        const gw = put("float32", new Array<number>(vocab * dim).fill(0.5));
        binding.embeddingBackward(gw.storage, 0, gy.storage, 0, id(wDtype), idStorage, 0, id(idsDtype), n, dim, vocab);
        const wantG = new Float64Array(vocab * dim).fill(0.5);
        for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) wantG[ids[i]! * dim + j]! += gy.values[i * dim + j]!;
        expectClose(get("float32", gw.storage, vocab * dim), wantG, 1e-6, 1e-7, "gw");
      });
    }
  }

  it("names the first out-of-range id and its position, and writes nothing", () => {
    const w = put("float32", uniform(makeRng(1), vocab * dim, -1, 1));
    const out = put("float32", new Array<number>(4 * dim).fill(3));
    for (const idsDtype of ["int32", "int64"] as const) {
      expectError(
        () => binding.embedding(out.storage, 0, w.storage, 0, id("float32"), putInts(idsDtype, [1, 2, 50, -1]), 0, id(idsDtype), 4, dim, vocab),
        ArgumentError,
        "Expected an id in [0, 50) (the vocabulary size) for ids[2] but received 50",
      );
      expectError(
        () => binding.embeddingBackward(out.storage, 0, w.storage, 0, id("float32"), putInts(idsDtype, [1, -7]), 0, id(idsDtype), 2, dim, 2),
        ArgumentError,
        "Expected an id in [0, 2) (the vocabulary size) for ids[1] but received -7",
      );
    }
    expect(Array.from(get("float32", out.storage, 4 * dim)).every((v) => v === 3)).toBe(true);
    expectError(
      () => binding.embedding(out.storage, 0, w.storage, 0, id("float32"), putInts("int32", [0]), 0, id("float32"), 1, dim, vocab),
      DTypeError,
      "Expected one of int32, int64 for idsDtype but received float32",
    );
  });

  it("deferCheck: the CPU still checks at once; CUDA writes zero rows and reports the first bad id at the next download", () => {
    const w = put("float32", uniform(makeRng(2), vocab * dim, -1, 1));
    const out = put("float32", new Array<number>(4 * dim).fill(3));
    const bad = putInts("int64", [1, 2, 50, -1]);
    const good = putInts("int32", [4, 0, 49, 7]);
    const want = [4, 0, 49, 7].flatMap((t) => Array.from(w.values.subarray(t * dim, (t + 1) * dim)));
    if (testDevice() === "cpu") {
      expectError(
        () => binding.embedding(out.storage, 0, w.storage, 0, id("float32"), bad, 0, id("int64"), 4, dim, vocab, true),
        ArgumentError,
        "Expected an id in [0, 50) (the vocabulary size) for ids[2] but received 50",
      );
    } else {
      // Queued without waiting; a second bad call before the report does not replace the first error.
      binding.embedding(out.storage, 0, w.storage, 0, id("float32"), bad, 0, id("int64"), 4, dim, vocab, true);
      binding.embedding(out.storage, 0, w.storage, 0, id("float32"), putInts("int32", [-3]), 0, id("int32"), 1, dim, vocab, true);
      expectError(
        () => get("float32", out.storage, 4 * dim),
        ArgumentError,
        `Expected an id in [0, 50) for embedding's ids[2] on ${testDevice()} but received 50 (checked on the device and reported at this synchronisation; the rows of bad ids were written as zeros)`,
      );
      // Reported once: the next read succeeds and shows the zero rows of the bad ids (row 0 was rewritten by the
      // second call, whose id -3 was also bad).
      const after = Array.from(get("float32", out.storage, 4 * dim));
      expect(after.slice(0, dim).every((v) => v === 0)).toBe(true);
      expect(after.slice(dim, 2 * dim)).toEqual(Array.from(w.values.subarray(2 * dim, 3 * dim)));
      expect(after.slice(2 * dim).every((v) => v === 0)).toBe(true);
    }
    // Good ids after a deferred error: the device keeps working and nothing is reported.
    binding.embedding(out.storage, 0, w.storage, 0, id("float32"), good, 0, id("int32"), 4, dim, vocab, true);
    expect(Array.from(get("float32", out.storage, 4 * dim))).toEqual(want);
  });
});

// ---- cross-entropy ------------------------------------------------------------------------------------------

describeOnDevices("crossEntropy", () => {
  const rows = 9;
  const cols = 97;
  const targets = [3, -100, 96, 0, 50, -100, 7, 7, 12];

  for (const dtype of FLOATS) {
    for (const tDtype of ["int32", "int64"] as const) {
      it(`losses, count and gradient with ignored rows, ${dtype}, targets ${tDtype}`, () => {
        const rand = makeRng(51);
        const logits = put(dtype, uniform(rand, rows * cols, -6, 6));
        const t = putInts(tDtype, targets);
        const losses = alloc("float32", rows);
        const count = binding.crossEntropy(losses, 0, logits.storage, 0, id(dtype), t, 0, id(tDtype), rows, cols, -100);
        const want = ref.crossEntropyRef(logits.values, targets, rows, cols, -100);
        expect(count).toBe(want.count);
        expect(count).toBe(7);
        expectClose(get("float32", losses, rows), want.losses, 1e-5, 1e-6, "losses");

        const g = alloc(dtype, rows * cols);
        binding.crossEntropyBackward(g, 0, logits.storage, 0, id(dtype), t, 0, id(tDtype), rows, cols, -100, 1 / count);
        const wantG = ref.crossEntropyBackwardRef(logits.values, targets, rows, cols, -100, 1 / count);
        expectClose(get(dtype, g, rows * cols), rounded(dtype, wantG), TOL[dtype], 1e-7, "glogits");
      });
    }
  }

  it("the gradient reference matches finite differences of the mean loss", () => {
    const rand = makeRng(2);
    const r = 3;
    const c = 6;
    const x = uniform(rand, r * c, -2, 2);
    const tg = [1, -1, 5];
    const analytic = ref.crossEntropyBackwardRef(x, tg, r, c, -1, 0.5);
    for (let i = 0; i < x.length; i++) {
      const fd = finiteDiff((xx) => 0.5 * ref.crossEntropyRef(xx, tg, r, c, -1).losses.reduce((a, b) => a + b, 0), x, i);
      expect(Math.abs(fd - analytic[i]!)).toBeLessThan(1e-7);
    }
  });

  it("checks targets against cols, honouring a custom ignore index", () => {
    const logits = put("float32", uniform(makeRng(3), 3 * 4, -1, 1));
    const losses = alloc("float32", 3);
    expectError(
      () => binding.crossEntropy(losses, 0, logits.storage, 0, id("float32"), putInts("int32", [0, 4, 1]), 0, id("int32"), 3, 4, -100),
      ArgumentError,
      "Expected a class index in [0, 4) or the ignore index (-100) for targets[1] but received 4",
    );
    expectError(
      () => binding.crossEntropyBackward(alloc("float32", 12), 0, logits.storage, 0, id("float32"), putInts("int64", [0, 1, -100]), 0, id("int64"), 3, 4, -1, 1),
      ArgumentError,
      "Expected a class index in [0, 4) or the ignore index (-1) for targets[2] but received -100",
    );
    expect(binding.crossEntropy(losses, 0, logits.storage, 0, id("float32"), putInts("int32", [-1, 3, -1]), 0, id("int32"), 3, 4, -1)).toBe(1);
  });
});

// ---- AdamW ---------------------------------------------------------------------------------------------------

describeOnDevices("adamw", () => {
  const n = 1001;
  const steps = 6;
  const hp: ref.AdamWHyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };

  for (const [dtype, gDtype] of [
    ["float32", "float32"],
    ["bfloat16", "bfloat16"],
    ["float16", "float32"],
  ] as [FloatName, FloatName][]) {
    it(`${steps} steps match torch.optim.AdamW, param ${dtype}, grad ${gDtype}`, () => {
      const rand = makeRng(61);
      const p = put(dtype, uniform(rand, n, -1, 1));
      const m = alloc("float32", n);
      const v = alloc("float32", n);
      const rp = Float64Array.from(p.values);
      const rm = new Float64Array(n);
      const rv = new Float64Array(n);
      for (let step = 1; step <= steps; step++) {
        const g = put(gDtype, uniform(rand, n, -0.5, 0.5));
        binding.adamw(p.storage, 0, g.storage, 0, m, 0, v, 0, id(dtype), id(gDtype), n, hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weightDecay, step);
        ref.adamwRef(rp, g.values, rm, rv, hp, step);
        // The kernel stores the parameter in its dtype after every step; the reference does the same.
        for (let i = 0; i < n; i++) rp[i] = ref.roundTo(dtype, rp[i]!);
      }
      expectClose(get(dtype, p.storage, n), rp, dtype === "float32" ? 1e-5 : TOL[dtype], 1e-6, "param");
      expectClose(get("float32", m, n), rm, 1e-5, 1e-7, "m");
      expectClose(get("float32", v, n), rv, 1e-5, 1e-9, "v");
    });
  }

  it("rejects hyper-parameters torch rejects", () => {
    const s = alloc("float32", 4);
    expectError(() => binding.adamw(s, 0, s, 0, s, 0, s, 0, id("float32"), id("float32"), 1, 1e-3, 1, 0.999, 1e-8, 0, 1), ArgumentError);
    expectError(() => binding.adamw(s, 0, s, 0, s, 0, s, 0, id("float32"), id("float32"), 1, 1e-3, 0.9, 0.999, 1e-8, 0, 0), ArgumentError);
    expectError(() => binding.adamw(s, 0, s, 0, s, 0, s, 0, id("float32"), id("float32"), 1, -1, 0.9, 0.999, 1e-8, 0, 1), ArgumentError);
  });
});

// ---- argument checks shared by every kernel -------------------------------------------------------------

describeOnDevices("argument checks", (device) => {
  const dir = mkdtempSync(join(tmpdir(), "lowbit-nn-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("empty sizes are accepted and write nothing", () => {
    const f32 = id("float32");
    const s = put("float32", [5, 5, 5, 5]);
    const ids = putInts("int32", [0]);
    binding.unary(UnaryOp.exp, s.storage, 0, s.storage, 0, f32, 0, 0);
    binding.binary(BinaryOp.add, s.storage, 0, s.storage, 0, [1, 0], s.storage, 0, [1, 0], f32, [0, 3]);
    binding.reduce(ReduceOp.max, s.storage, 0, s.storage, 0, f32, 0, 0, 4);
    binding.argmax(s.storage, 0, s.storage, 0, f32, 0, 0);
    binding.softmax(s.storage, 0, s.storage, 0, f32, 0, 7, false);
    binding.rmsNorm(s.storage, 0, s.storage, 0, s.storage, 0, f32, f32, 0, 4, 1e-6);
    binding.rope(s.storage, 0, s.storage, 0, f32, ids, 0, id("int32"), s.storage, 0, 1, 0, 1, 4, 1, false);
    binding.embedding(s.storage, 0, s.storage, 0, f32, ids, 0, id("int32"), 0, 4, 1);
    expect(binding.crossEntropy(s.storage, 0, s.storage, 0, f32, ids, 0, id("int32"), 0, 0, -100)).toBe(0);
    binding.adamw(s.storage, 0, s.storage, 0, s.storage, 0, s.storage, 0, f32, f32, 0, 1e-3, 0.9, 0.999, 1e-8, 0, 1);
    binding.attention(s.storage, 0, s.storage, 0, s.storage, 0, s.storage, 0, f32, 1, 2, 1, 0, 1, 1, 2, 1, true, 0, null, 0, null, 0);
    expect(Array.from(get("float32", s.storage, 4))).toEqual([5, 5, 5, 5]);
    // No valid key at all (Tk = 0): zero output, lse -inf, zero gradients over the whole cache.
    const out = put("float32", [5, 5, 5, 5]);
    const lse = put("float32", [5, 5]);
    binding.attention(out.storage, 0, s.storage, 0, s.storage, 0, s.storage, 0, f32, 1, 2, 1, 1, 0, 2, 2, 1, false, 0, null, 0, lse.storage, 0);
    expect(Array.from(get("float32", out.storage, 4))).toEqual([0, 0, 0, 0]);
    expect(Array.from(get("float32", lse.storage, 2))).toEqual([-Infinity, -Infinity]);
    const dk = put("float32", [7, 7, 7, 7]);
    const dv = put("float32", [7, 7, 7, 7]);
    const dq = put("float32", [7, 7, 7, 7]);
    binding.attentionBackward(dq.storage, 0, dk.storage, 0, dv.storage, 0, s.storage, 0, s.storage, 0, s.storage, 0, s.storage, 0, out.storage, 0, lse.storage, 0, f32, 1, 2, 1, 1, 0, 2, 2, 1, false, 0, null, 0);
    for (const t of [dq, dk, dv]) expect(Array.from(get("float32", t.storage, 4))).toEqual([0, 0, 0, 0]);
  });

  it("too-small storages throw ShapeError naming the argument", () => {
    const x = alloc("float32", 10);
    const out = alloc("float32", 9);
    expectError(
      () => binding.unary(UnaryOp.exp, out, 0, x, 0, id("float32"), 10, 0),
      ShapeError,
      "Expected 40 bytes after the byte offset for out but received a storage with 36 bytes there",
    );
    expectError(
      () => binding.softmax(x, 8, x, 0, id("float32"), 2, 5, false),
      ShapeError,
      "Expected 40 bytes after the byte offset for out but received a storage with 32 bytes there",
    );
    expectError(
      () => binding.rmsNorm(x, 0, x, 0, alloc("bfloat16", 4), 0, id("float32"), id("bfloat16"), 2, 5, 1e-6),
      ShapeError,
      "Expected 10 bytes after the byte offset for w but received a storage with 8 bytes there",
    );
  });

  it("unsupported dtypes throw DTypeError", () => {
    const x = alloc("float32", 4);
    expectError(
      () => binding.unary(UnaryOp.exp, x, 0, x, 0, id("int32"), 4, 0),
      DTypeError,
      "Expected one of float32, float16, bfloat16 for dtype but received int32",
    );
    expectError(
      () => binding.rope(x, 0, x, 0, id("float32"), x, 0, id("float32"), x, 0, 1, 1, 1, 2, 1, false),
      DTypeError,
      "Expected one of int32, int64 for posDtype but received float32",
    );
  });

  it("bad op ids, misaligned offsets and read-only outputs throw ArgumentError", () => {
    const x = alloc("float32", 8);
    expectError(() => binding.unary(99 as never, x, 0, x, 0, id("float32"), 4, 0), ArgumentError, "Expected an integer in [0, 15] for op but received 99 (number)");
    expectError(
      () => binding.unary(UnaryOp.exp, x, 2, x, 0, id("float32"), 4, 0),
      ArgumentError,
      "Expected a byte offset that is a multiple of 4 for outOffset but received an offset that is not",
    );
    // File mappings are CPU storages: next to a CUDA storage the call mixes devices (core.test.ts covers that).
    if (device === "cpu") {
      const file = join(dir, "weights.bin");
      writeFileSync(file, Buffer.alloc(64));
      const mapped = binding.mapFile(file);
      expectError(
        () => binding.unary(UnaryOp.exp, mapped, 0, x, 0, id("float32"), 4, 0),
        ArgumentError,
        "Expected a writable storage for out but received a read-only file mapping",
      );
      mapped.dispose();
    }
  });
});
