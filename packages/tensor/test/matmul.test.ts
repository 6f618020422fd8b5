// matmul (2-D, batched, broadcast batch dims, transposed views, 1-D operands) and linear, forward
// against the float64 reference and backward by finite differences, on every device.

import { describe, expect, it } from "vitest";
import * as lb from "../src/index.js";
import { Generator, tidy } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import * as ref from "./reference.js";
import { checkGrads, expectClose, f64, randArr, toTensor } from "./util.js";

forEachDevice((device) => {
  const gen = new Generator(71);

  describe("matmul", () => {
    const shapes: Array<[number[], number[]]> = [
      [[3, 4], [4, 5]],
      [[2, 3, 4], [4, 5]],
      [[2, 3, 4], [2, 4, 5]],
      [[2, 1, 3, 4], [3, 4, 2]],
      [[3, 4], [2, 4, 5]],
      [[1, 4], [4, 1]],
    ];
    for (const [sa, sb] of shapes) {
      it(`${JSON.stringify(sa)} @ ${JSON.stringify(sb)}`, () => {
        const a = randArr(gen, sa);
        const b = randArr(gen, sb);
        const want = ref.matmul(a, b);
        tidy(() => {
          const y = lb.matmul(toTensor(a, device), toTensor(b, device));
          expect(y.shape).toEqual(want.shape);
          expectClose(f64(y), want.data, { atol: 1e-5, rtol: 1e-5 });
        });
        checkGrads(device, ([x, z]) => lb.matmul(x!, z!), ([x, z]) => ref.matmul(x!, z!), [a, b]);
      });
    }

    it("transposed views go to the kernel as transA / transB and match", () => {
      const a = randArr(gen, [2, 4, 3]); // used as a^T: (2, 3, 4)
      const b = randArr(gen, [5, 4]); // used as b^T: (4, 5)
      const want = ref.matmul(ref.transpose2(a), ref.transpose2(b));
      tidy(() => {
        const y = lb.matmul(toTensor(a, device).transpose(-1, -2), toTensor(b, device).T);
        expectClose(f64(y), want.data, { atol: 1e-5, rtol: 1e-5 });
        // A permuted (non-matrix-dense) operand is copied first.
        const c = randArr(gen, [3, 2, 4]);
        const y2 = lb.matmul(toTensor(c, device).permute(1, 0, 2), toTensor(b, device).T);
        const cp = ref.arr([2, 3, 4], f64(toTensor(c, device).permute(1, 0, 2)));
        expectClose(f64(y2), ref.matmul(cp, ref.transpose2(b)).data, { atol: 1e-5, rtol: 1e-5 });
      });
      checkGrads(device, ([x, z]) => lb.matmul(x!.transpose(-1, -2), z!.T), ([x, z]) => ref.matmul(ref.transpose2(x!), ref.transpose2(z!)), [a, b]);
    });

    it("1-D operands follow numpy", () => {
      const v = randArr(gen, [4]);
      const m = randArr(gen, [4, 3]);
      tidy(() => {
        const y = lb.matmul(toTensor(v, device), toTensor(m, device));
        expect(y.shape).toEqual([3]);
        expectClose(f64(y), ref.matmul(ref.arr([1, 4], v.data), m).data, { atol: 1e-5 });
        const dot = lb.matmul(toTensor(v, device), toTensor(v, device));
        expect(dot.shape).toEqual([]);
        expectClose(f64(dot), [v.data.reduce((s, x) => s + x * x, 0)], { atol: 1e-5 });
      });
    });

    it("bfloat16 inputs accumulate in float32", () => {
      const a = randArr(gen, [8, 64]);
      const b = randArr(gen, [64, 8]);
      tidy(() => {
        const ta = toTensor(a, device, { dtype: "bfloat16" });
        const tb = toTensor(b, device, { dtype: "bfloat16" });
        const y = lb.matmul(ta, tb);
        expect(y.dtype).toBe("bfloat16");
        const want = ref.matmul(ref.arr([8, 64], f64(ta)), ref.arr([64, 8], f64(tb)));
        expectClose(f64(y), want.data, { atol: 1e-2, rtol: 1e-2 });
      });
    });

    it("mismatched inner dims, dtypes or ranks throw typed errors", () => {
      tidy(() => {
        expect(() => lb.matmul(lb.zeros([2, 3], { device }), lb.zeros([4, 2], { device }))).toThrow(/inner dims differ/);
        expect(() => lb.matmul(lb.zeros([2, 3], { device }), lb.zeros([3, 2], { device, dtype: "float16" }))).toThrow(lb.DTypeError);
        expect(() => lb.matmul(lb.zeros([], { device }), lb.zeros([3], { device }))).toThrow(lb.ShapeError);
        expect(() => lb.matmul(lb.zeros([2, 2, 3], { device }), lb.zeros([3, 3, 2], { device }))).toThrow(/broadcast/);
      });
    });
  });

  describe("linear", () => {
    it("x (B, T, K) @ W^T + b, gradients for x, W and b", () => {
      const x = randArr(gen, [2, 3, 4]);
      const w = randArr(gen, [5, 4]);
      const b = randArr(gen, [5]);
      tidy(() => {
        const y = lb.linear(toTensor(x, device), toTensor(w, device), toTensor(b, device));
        expect(y.shape).toEqual([2, 3, 5]);
        expectClose(f64(y), ref.linear(x, w, b).data, { atol: 1e-5, rtol: 1e-5 });
      });
      checkGrads(device, ([p, q, r]) => lb.linear(p!, q!, r!), ([p, q, r]) => ref.linear(p!, q!, r!), [x, w, b]);
      checkGrads(device, ([p, q]) => lb.linear(p!, q!), ([p, q]) => ref.linear(p!, q!, null), [x, w]);
    });
  });
});
