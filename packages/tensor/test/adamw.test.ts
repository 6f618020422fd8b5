// AdamW against a float64 torch.optim.AdamW reference over several steps (decoupled weight decay,
// bias correction), parameter groups, zeroGrad and argument checks.

import { describe, expect, it } from "vitest";
import * as lb from "../src/index.js";
import { AdamW, Generator, tidy } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import * as ref from "./reference.js";
import { expectClose, f64, randArr, toTensor, vals } from "./util.js";

forEachDevice((device) => {
  describe("AdamW", () => {
    it("matches torch.optim.AdamW over 5 steps, with two parameter groups", () => {
      const gen = new Generator(81);
      const p0 = randArr(gen, [3, 4]);
      const p1 = randArr(gen, [5]);
      const grads = Array.from({ length: 5 }, () => [randArr(gen, [3, 4]), randArr(gen, [5])]);
      const h0 = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };
      const h1 = { lr: 5e-3, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0 };
      const a = toTensor(p0, device, { requiresGrad: true });
      const b = toTensor(p1, device, { requiresGrad: true });
      const opt = new AdamW(
        [
          { params: [a] },
          { params: [b], lr: h1.lr, betas: [h1.beta1, h1.beta2], eps: h1.eps, weightDecay: h1.weightDecay },
        ],
        { lr: h0.lr, betas: [h0.beta1, h0.beta2], eps: h0.eps, weightDecay: h0.weightDecay },
      );
      const state = [p0, p1].map((p) => ({ p: Float64Array.from(p.data), m: new Float64Array(p.data.length), v: new Float64Array(p.data.length) }));
      try {
        for (let s = 0; s < 5; s++) {
          a.grad = toTensor(grads[s]![0]!, device);
          b.grad = toTensor(grads[s]![1]!, device);
          opt.step();
          opt.zeroGrad();
          expect(a.grad).toBeNull();
          [h0, h1].forEach((h, i) => ref.adamwStep(state[i]!.p, grads[s]![i]!.data, state[i]!.m, state[i]!.v, s + 1, h));
        }
        expectClose(f64(a), state[0]!.p, { atol: 1e-6, rtol: 1e-5 }, "group 0");
        expectClose(f64(b), state[1]!.p, { atol: 1e-6, rtol: 1e-5 }, "group 1");
        expect(opt.stateOf(a)!.step).toBe(5);
      } finally {
        opt.dispose();
        a.dispose();
        b.dispose();
      }
    });

    it("skips parameters without gradients and rejects bad arguments", () => {
      tidy(() => {
        const p = lb.ones([2], { device, requiresGrad: true });
        const opt = new AdamW([p], { lr: 0.1 });
        opt.step();
        expect(vals(p)).toEqual([1, 1]);
        expect(() => new AdamW([p], { lr: -1 })).toThrow(lb.ArgumentError);
        expect(() => new AdamW([p], { betas: [0.9, 1] })).toThrow(lb.ArgumentError);
        expect(() => new AdamW([p, p])).toThrow(/more than once/);
        expect(() => new AdamW([lb.ones([2], { device, dtype: "int32" })])).toThrow(lb.DTypeError);
        opt.dispose();
        p.dispose();
      });
    });
  });
});
