// Reductions (sum, mean, max over any axes, keepdim) and argmax against the float64 references, with
// gradients by finite differences.

import { describe, expect, it } from "vitest";
import * as lb from "../src/index.js";
import { Generator, tidy } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import * as ref from "./reference.js";
import { checkGrads, expectClose, f64, randArr, toTensor, vals } from "./util.js";

forEachDevice((device) => {
  describe("reductions", () => {
    const gen = new Generator(31);
    const a = randArr(gen, [2, 3, 4]);
    const cases: Array<[number[] | undefined, boolean]> = [
      [undefined, false],
      [[0], false],
      [[1], true],
      [[-1], false],
      [[0, 2], false],
      [[0, 1], true],
      [[0, 1, 2], true],
    ];
    for (const op of ["sum", "mean", "max"] as const) {
      for (const [dims, keepdim] of cases) {
        it(`${op} over ${JSON.stringify(dims)} keepdim=${keepdim}`, () => {
          const all = dims ?? [0, 1, 2];
          const want = ref.reduce(a, all, op, keepdim);
          tidy(() => {
            const y = lb[op](toTensor(a, device), dims, keepdim);
            expect(y.shape).toEqual(want.shape);
            expectClose(f64(y), want.data, { atol: 1e-6, rtol: 1e-5 }, op);
          });
          checkGrads(device, ([x]) => lb[op](x!, dims, keepdim), ([x]) => ref.reduce(x!, all, op, keepdim), [a]);
        });
      }
    }

    it("max shares the gradient among ties", () => {
      tidy(() => {
        const x = lb.tensor([[1, 3, 3], [2, 0, -1]], { device, requiresGrad: true });
        lb.max(x, 1).sum().backward();
        expect(vals(x.grad!)).toEqual([0, 0.5, 0.5, 1, 0, 0]);
        x.dispose();
      });
    });

    it("argmax over any axis (first index on ties), int32", () => {
      tidy(() => {
        const t = toTensor(a, device);
        const am = lb.argmax(t, -1);
        expect(am.dtype).toBe("int32");
        expect(am.shape).toEqual([2, 3]);
        expect(vals(am)).toEqual(ref.argmaxLast(a));
        const am0 = lb.argmax(t, 1, true);
        expect(am0.shape).toEqual([2, 1, 4]);
        // Reference over axis 1: move it last.
        const moved = ref.arr([2, 4, 3], f64(t.permute(0, 2, 1)));
        expect(vals(am0)).toEqual(ref.argmaxLast(moved));
        expect(vals(lb.tensor([[2, 5, 5, 1]], { device }).argmax())).toEqual([1]);
      });
    });
  });
});
