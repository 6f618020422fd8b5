// Fused nn ops: softmax / logSoftmax, rmsNorm, rope, embedding, cross-entropy and dropout, forward
// against the float64 references and backward by finite differences, on every device.

import { describe, expect, it } from "vitest";
import * as lb from "../src/index.js";
import { Generator, tidy } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import * as ref from "./reference.js";
import { checkGrads, expectClose, f64, randArr, toTensor, vals } from "./util.js";

/** Moves axis `dim` of a row-major Arr to the end (and back with `inverse`). */
function moveLast(a: ref.Arr, dim: number, inverse = false): ref.Arr {
  const r = a.shape.length;
  const perm = [...a.shape.keys()].filter((i) => i !== dim).concat([dim]);
  const p = inverse ? perm.map((_, i) => perm.indexOf(i)) : perm;
  const shape = p.map((i) => a.shape[i]!);
  const st = ref.stridesOf(a.shape);
  const ost = ref.stridesOf(shape);
  const out = new Float64Array(a.data.length);
  for (let i = 0; i < out.length; i++) {
    let rem = i;
    let src = 0;
    for (let d = 0; d < r; d++) {
      const idx = Math.floor(rem / ost[d]!);
      rem -= idx * ost[d]!;
      src += idx * st[p[d]!]!;
    }
    out[i] = a.data[src]!;
  }
  return { shape, data: out };
}

forEachDevice((device) => {
  const gen = new Generator(41);

  describe("softmax", () => {
    for (const log of [false, true]) {
      const name = log ? "logSoftmax" : "softmax";
      it(`${name} over the last dim`, () => {
        const x = randArr(gen, [3, 7], { low: -3, high: 3 });
        const f = log ? lb.logSoftmax : lb.softmax;
        tidy(() => expectClose(f64(f(toTensor(x, device))), ref.softmaxLast(x, log).data, { atol: 1e-6, rtol: 1e-5 }));
        checkGrads(device, ([t]) => f(t!), ([t]) => ref.softmaxLast(t!, log), [x]);
      });
      it(`${name} over a middle dim`, () => {
        const x = randArr(gen, [2, 5, 3], { low: -3, high: 3 });
        const f = log ? lb.logSoftmax : lb.softmax;
        const r = (t: ref.Arr): ref.Arr => moveLast(ref.softmaxLast(moveLast(t, 1), log), 1, true);
        tidy(() => expectClose(f64(f(toTensor(x, device), 1)), r(x).data, { atol: 1e-6, rtol: 1e-5 }));
        checkGrads(device, ([t]) => f(t!, 1), ([t]) => r(t!), [x]);
      });
    }
  });

  describe("rmsNorm", () => {
    it("matches HF LlamaRMSNorm, gradients for x and weight", () => {
      const x = randArr(gen, [2, 3, 8], { low: -2, high: 2 });
      const w = randArr(gen, [8], { low: 0.5, high: 1.5 });
      tidy(() => expectClose(f64(lb.rmsNorm(toTensor(x, device), toTensor(w, device), 1e-5)), ref.rmsNorm(x, w, 1e-5).data, { atol: 1e-5, rtol: 1e-5 }));
      checkGrads(device, ([t, u]) => lb.rmsNorm(t!, u!, 1e-5), ([t, u]) => ref.rmsNorm(t!, u!, 1e-5), [x, w]);
    });
    it("bfloat16 activations with a float32 weight", () => {
      const x = randArr(gen, [4, 16]);
      const w = randArr(gen, [16], { low: 0.5, high: 1.5 });
      tidy(() => {
        const xt = toTensor(x, device, { dtype: "bfloat16" });
        const y = lb.rmsNorm(xt, toTensor(w, device), 1e-6);
        expect(y.dtype).toBe("bfloat16");
        expectClose(f64(y), ref.rmsNorm(ref.arr([4, 16], f64(xt)), w, 1e-6).data, { atol: 1e-2, rtol: 1e-2 });
      });
    });
  });

  describe("rope", () => {
    it("rotate_half with (B, T) positions and attention scaling; backward is the inverse rotation", () => {
      const x = randArr(gen, [2, 3, 4, 8]);
      const positions = [
        [0, 1, 2, 3],
        [5, 6, 7, 9],
      ];
      tidy(() => {
        const inv = lb.ropeInvFreq(8, 10000, { device });
        const invHost = Array.from(inv.toTypedArray() as Float32Array);
        const pos = lb.tensor(positions, { dtype: "int32", device });
        const y = lb.rope(toTensor(x, device), pos, inv, { attentionScaling: 1.25 });
        expectClose(f64(y), ref.rope(x, positions, invHost, 1.25).data, { atol: 2e-5, rtol: 1e-4 });
        // (T,) positions broadcast over the batch; int64 accepted.
        const y1 = lb.rope(toTensor(x, device), lb.tensor([0, 1, 2, 3], { dtype: "int64", device }), inv);
        expectClose(f64(y1), ref.rope(x, [positions[0]!, positions[0]!], invHost).data, { atol: 2e-5, rtol: 1e-4 });
        checkGrads(device, ([t]) => lb.rope(t!, pos, inv, { attentionScaling: 1.25 }), ([t]) => ref.rope(t!, positions, invHost, 1.25), [x]);
        // Batch 1 reads a (T,) vector in place; a strided one (every other entry of a longer vector) too.
        const x1 = randArr(gen, [1, 3, 4, 8]);
        const y2 = lb.rope(toTensor(x1, device), lb.tensor([5, 6, 7, 9], { dtype: "int32", device }), inv);
        expectClose(f64(y2), ref.rope(x1, [positions[1]!], invHost).data, { atol: 2e-5, rtol: 1e-4 });
        const strided = lb.tensor([5, -1, 6, -1, 7, -1, 9, -1], { dtype: "int32", device }).slice(0, 0, 8, 2);
        const y3 = lb.rope(toTensor(x1, device), strided, inv);
        expectClose(f64(y3), ref.rope(x1, [positions[1]!], invHost).data, { atol: 2e-5, rtol: 1e-4 });
      });
    });
  });

  describe("embedding", () => {
    it("gathers rows; repeated ids accumulate their gradients", () => {
      const w = randArr(gen, [10, 4]);
      const ids = [3, 0, 3, 9, 1, 3];
      tidy(() => {
        const idT = lb.tensor([ids.slice(0, 3), ids.slice(3)], { dtype: "int32", device });
        const y = lb.embedding(toTensor(w, device), idT);
        expect(y.shape).toEqual([2, 3, 4]);
        expectClose(f64(y), ref.embedding(w, ids).data, { atol: 0 });
        checkGrads(device, ([t]) => lb.embedding(t!, idT), ([t]) => ref.embedding(t!, ids), [w]);
        expect(() => lb.embedding(toTensor(w, device), lb.tensor([10], { dtype: "int32", device }))).toThrow();
      });
    });
  });

  describe("crossEntropy", () => {
    for (const reduction of ["mean", "sum", "none"] as const) {
      it(`${reduction}, with ignored targets`, () => {
        const logits = randArr(gen, [6, 5], { low: -2, high: 2 });
        const targets = [1, -100, 4, 0, -100, 2];
        tidy(() => {
          const tT = lb.tensor(targets, { dtype: "int64", device });
          const loss = lb.crossEntropy(toTensor(logits, device), tT, { reduction });
          const want = ref.crossEntropy(logits, targets, -100, reduction);
          expect(loss.shape).toEqual(want.shape);
          expect(loss.dtype).toBe("float32");
          expectClose(f64(loss), want.data, { atol: 1e-5, rtol: 1e-5 });
          checkGrads(device, ([t]) => lb.crossEntropy(t!, tT, { reduction }), ([t]) => ref.crossEntropy(t!, targets, -100, reduction), [logits]);
        });
      });
    }
    it("logits (B, T, C) with targets (B, T); all ignored gives NaN", () => {
      const logits = randArr(gen, [2, 3, 4]);
      const targets = [0, 3, 2, 1, 1, 0];
      tidy(() => {
        const tT = lb.tensor([targets.slice(0, 3), targets.slice(3)], { dtype: "int32", device });
        const loss = lb.crossEntropy(toTensor(logits, device), tT);
        expectClose(f64(loss), ref.crossEntropy(ref.arr([6, 4], logits.data), targets).data, { atol: 1e-5 });
        expect(Number.isNaN(lb.crossEntropy(toTensor(logits, device), lb.full([2, 3], -100, { dtype: "int32", device })).item())).toBe(true);
        expect(() => lb.crossEntropy(toTensor(logits, device), lb.tensor([[0, 4, 0], [0, 0, 0]], { dtype: "int32", device }))).toThrow();
      });
    });
  });

  describe("dropout", () => {
    it("zeroes about p of the elements, scales the rest, and is reproducible", () => {
      tidy(() => {
        const x = lb.ones([4000], { device });
        const y1 = lb.dropout(x, 0.25, { generator: new Generator(5) });
        const y2 = lb.dropout(x, 0.25, { generator: new Generator(5) });
        const v = y1.toTypedArray() as Float32Array;
        expect(Array.from(v)).toEqual(vals(y2));
        const zeros = v.filter((e) => e === 0).length;
        expect(zeros / v.length).toBeGreaterThan(0.22);
        expect(zeros / v.length).toBeLessThan(0.28);
        expect(v.every((e) => e === 0 || Math.abs(e - 4 / 3) < 1e-6)).toBe(true);
        expect(vals(lb.dropout(x, 0.5, { training: false }))).toEqual(vals(x));
      });
      // The gradient is the same mask.
      const x = randArr(gen, [50]);
      checkGrads(
        device,
        ([t]) => lb.dropout(t!, 0.5, { generator: new Generator(9) }),
        ([t]) => {
          const g = new Generator(9);
          return ref.map(t!, (v) => (g.nextDouble() >= 0.5 ? 2 * v : 0));
        },
        [x],
      );
    });
  });
});
