// Test helpers: random float64 inputs, host↔tensor conversion, tolerance checks that report the worst
// element, a finite-difference gradient check against the float64 references, and a leak check.

import { expect } from "vitest";
import { memoryStats } from "@lowbit/kernels";
import { Generator, Tensor, fromTypedArray, tidy, type Device } from "../src/index.js";
import type { DType } from "@lowbit/dtypes";
import { numericGrads, type Arr } from "./reference.js";

/** Uniform values in [low, high), optionally kept at least `minAbs` away from 0. */
export function randArr(gen: Generator, shape: number[], options: { low?: number; high?: number; minAbs?: number } = {}): Arr {
  const n = shape.reduce((a, b) => a * b, 1);
  const low = options.low ?? -1;
  const high = options.high ?? 1;
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let v = low + (high - low) * gen.nextDouble();
    const m = options.minAbs ?? 0;
    if (Math.abs(v) < m) v = v < 0 ? -m - Math.abs(v) : m + Math.abs(v);
    // Round to float32 so the reference sees exactly the tensor's values.
    data[i] = Math.fround(v);
  }
  return { shape, data };
}

export function toTensor(a: Arr, device: Device, options: { dtype?: DType; requiresGrad?: boolean } = {}): Tensor {
  return fromTypedArray(Float32Array.from(a.data), a.shape, { device, dtype: options.dtype ?? "float32", requiresGrad: options.requiresGrad ?? false });
}

export function f64(t: Tensor): Float64Array {
  return Float64Array.from(t.toTypedArray() as ArrayLike<number>, Number);
}

/** |actual - expected| <= atol + rtol·|expected| everywhere; the failure names the worst index. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: { atol?: number; rtol?: number } = {}, label = ""): void {
  const atol = tol.atol ?? 1e-5;
  const rtol = tol.rtol ?? 1e-4;
  expect(actual.length, `${label} length`).toBe(expected.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    const excess = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(excess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    expect.fail(`${label}: element ${worst} is ${actual[worst]} but expected ${expected[worst]} (atol ${atol}, rtol ${rtol})`);
  }
}

/**
 * Checks the autograd gradients of `op` against central differences of the float64 reference `ref`:
 * L = sum(op(inputs) · r) for a random r. `wrt[i]` false skips input i (integer or frozen inputs).
 */
export function checkGrads(
  device: Device,
  op: (xs: Tensor[]) => Tensor,
  ref: (xs: Arr[]) => Arr,
  inputs: Arr[],
  options: { atol?: number; rtol?: number; wrt?: boolean[]; seed?: number } = {},
): void {
  const gen = new Generator(options.seed ?? 1234);
  const wrt = options.wrt ?? inputs.map(() => true);
  tidy(() => {
    const leaves = inputs.map((a, i) => toTensor(a, device, { requiresGrad: wrt[i] }));
    const y = op(leaves);
    const r = randArr(gen, [...y.shape]);
    y.backward(toTensor(r, device));
    const numeric = numericGrads(ref, inputs, r.data);
    leaves.forEach((leaf, i) => {
      if (!wrt[i]) return;
      expect(leaf.grad, `grad of input ${i}`).not.toBeNull();
      expectClose(f64(leaf.grad!), numeric[i]!, { atol: options.atol ?? 2e-3, rtol: options.rtol ?? 2e-3 }, `grad of input ${i}`);
    });
    for (const leaf of leaves) leaf.dispose();
  });
}

/** Runs fn and checks that the device's allocated bytes return to where they started. */
export function expectNoLeak(device: Device, fn: () => void): void {
  const before = memoryStats(device).allocatedBytes;
  fn();
  const after = memoryStats(device).allocatedBytes;
  expect(after - before, `bytes leaked on ${device}`).toBe(0);
}

/** A tensor's elements as plain numbers (row-major). */
export function vals(t: Tensor): number[] {
  return Array.from(t.toTypedArray() as ArrayLike<number | bigint>, Number);
}
