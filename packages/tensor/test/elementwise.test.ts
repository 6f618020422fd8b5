// Elementwise ops, forward against the float64 references and backward by finite differences, on
// every device; broadcasting, scalar operands and low-precision dtypes included.

import { describe, expect, it } from "vitest";
import * as lb from "../src/index.js";
import { Generator, tidy, type Tensor } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import * as ref from "./reference.js";
import { checkGrads, expectClose, f64, randArr, toTensor, vals } from "./util.js";

type UnaryCase = { name: string; op: (x: Tensor) => Tensor; ref: (x: number) => number; low?: number; high?: number; minAbs?: number };

const UNARY: UnaryCase[] = [
  { name: "neg", op: lb.neg, ref: ref.UNARY.neg! },
  { name: "exp", op: lb.exp, ref: ref.UNARY.exp! },
  { name: "log", op: lb.log, ref: ref.UNARY.log!, low: 0.2, high: 3 },
  { name: "sqrt", op: lb.sqrt, ref: ref.UNARY.sqrt!, low: 0.2, high: 3 },
  { name: "rsqrt", op: lb.rsqrt, ref: ref.UNARY.rsqrt!, low: 0.2, high: 3 },
  { name: "abs", op: lb.abs, ref: ref.UNARY.abs!, minAbs: 0.05 },
  { name: "silu", op: lb.silu, ref: ref.UNARY.silu!, low: -3, high: 3 },
  { name: "gelu", op: (x) => lb.gelu(x), ref: ref.UNARY.gelu!, low: -3, high: 3 },
  { name: "gelu tanh", op: (x) => lb.gelu(x, "tanh"), ref: ref.UNARY.geluTanh!, low: -3, high: 3 },
  { name: "relu", op: lb.relu, ref: ref.UNARY.relu!, minAbs: 0.05 },
  { name: "sigmoid", op: lb.sigmoid, ref: ref.UNARY.sigmoid!, low: -4, high: 4 },
  { name: "tanh", op: lb.tanh, ref: ref.UNARY.tanh!, low: -2, high: 2 },
  { name: "square", op: lb.square, ref: ref.UNARY.square! },
  { name: "pow 3", op: (x) => lb.pow(x, 3), ref: (x) => x ** 3 },
  { name: "pow 0.5", op: (x) => lb.pow(x, 0.5), ref: (x) => x ** 0.5, low: 0.2, high: 3 },
  { name: "add scalar", op: (x) => lb.add(x, 1.5), ref: (x) => x + 1.5 },
  { name: "scalar sub", op: (x) => lb.sub(2, x), ref: (x) => 2 - x },
  { name: "mul scalar", op: (x) => lb.mul(x, -2.5), ref: (x) => x * -2.5 },
  { name: "div scalar", op: (x) => lb.div(x, 4), ref: (x) => x / 4 },
  { name: "scalar div", op: (x) => lb.div(1, x), ref: (x) => 1 / x, minAbs: 0.3 },
  { name: "maximum scalar", op: (x) => lb.maximum(x, 0.1), ref: (x) => Math.max(x, 0.1), minAbs: 0.15 },
];

forEachDevice((device) => {
  describe("unary", () => {
    for (const c of UNARY) {
      it(`${c.name}: forward and backward`, () => {
        const gen = new Generator(7);
        const x = randArr(gen, [3, 5], { low: c.low, high: c.high, minAbs: c.minAbs });
        tidy(() => {
          const y = c.op(toTensor(x, device));
          expect(y.shape).toEqual([3, 5]);
          expectClose(f64(y), ref.map(x, c.ref).data, { atol: 1e-5, rtol: 1e-5 }, c.name);
        });
        checkGrads(device, ([t]) => c.op(t!), ([a]) => ref.map(a!, c.ref), [x]);
      });
    }
  });

  describe("binary with broadcasting", () => {
    const ops = [
      { name: "add", op: lb.add, ref: (a: number, b: number) => a + b },
      { name: "sub", op: lb.sub, ref: (a: number, b: number) => a - b },
      { name: "mul", op: lb.mul, ref: (a: number, b: number) => a * b },
      { name: "div", op: lb.div, ref: (a: number, b: number) => a / b },
      { name: "maximum", op: lb.maximum, ref: Math.max },
      { name: "minimum", op: lb.minimum, ref: Math.min },
    ];
    const shapes: Array<[number[], number[]]> = [
      [[2, 3], [2, 3]],
      [[2, 3, 4], [4]],
      [[2, 1, 4], [3, 1]],
      [[1], [2, 3]],
      [[], [3, 2]],
    ];
    for (const o of ops) {
      for (const [sa, sb] of shapes) {
        it(`${o.name} ${JSON.stringify(sa)} ⊕ ${JSON.stringify(sb)}`, () => {
          const gen = new Generator(11);
          const a = randArr(gen, sa, { minAbs: 0.2 });
          const b = randArr(gen, sb, { minAbs: 0.2 });
          const want = ref.binary(a, b, o.ref);
          tidy(() => {
            const y = o.op(toTensor(a, device), toTensor(b, device));
            expect(y.shape).toEqual(want.shape);
            expectClose(f64(y), want.data, { atol: 1e-6, rtol: 1e-5 }, o.name);
          });
          checkGrads(device, ([x, z]) => o.op(x!, z!), ([x, z]) => ref.binary(x!, z!, o.ref), [a, b]);
        });
      }
    }

    it("maximum splits the gradient of ties evenly", () => {
      tidy(() => {
        const a = lb.tensor([1, 2, 3], { device, requiresGrad: true });
        const b = lb.tensor([1, 5, 0], { device, requiresGrad: true });
        lb.maximum(a, b).sum().backward();
        expect(vals(a.grad!)).toEqual([0.5, 0, 1]);
        expect(vals(b.grad!)).toEqual([0.5, 1, 0]);
        a.dispose();
        b.dispose();
      });
    });

    it("reads non-contiguous operands in place", () => {
      const gen = new Generator(3);
      const a = randArr(gen, [4, 3]);
      const b = randArr(gen, [3, 4]);
      tidy(() => {
        const y = lb.add(toTensor(a, device), toTensor(b, device).transpose(0, 1));
        expectClose(f64(y), ref.binary(a, ref.transpose2(b), (p, q) => p + q).data, { atol: 1e-6 });
      });
    });
  });

  describe("low-precision dtypes", () => {
    for (const dtype of ["float16", "bfloat16"] as const) {
      it(`${dtype}: mul and exp compute in float32 and round once`, () => {
        const gen = new Generator(5);
        const a = randArr(gen, [8]);
        const b = randArr(gen, [8]);
        tidy(() => {
          const ta = toTensor(a, device, { dtype });
          const tb = toTensor(b, device, { dtype });
          const y = lb.exp(lb.mul(ta, tb));
          expect(y.dtype).toBe(dtype);
          // Reference on the rounded inputs.
          const ra = ref.arr([8], f64(ta));
          const rb = ref.arr([8], f64(tb));
          const want = ref.map(ref.binary(ra, rb, (p, q) => p * q), Math.exp);
          const eps = dtype === "float16" ? 2 ** -10 : 2 ** -7;
          expectClose(f64(y), want.data, { atol: 1e-3, rtol: 2 * eps }, dtype);
        });
      });
    }
  });
});
