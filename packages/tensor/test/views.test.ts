// Layout ops: views share storage and move data correctly; copies (contiguous, cast, cat, stack,
// device moves) produce the reference values; every one of them passes gradients back.

import { describe, expect, it } from "vitest";
import * as lb from "../src/index.js";
import { Generator, tidy } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import * as ref from "./reference.js";
import { checkGrads, expectClose, f64, randArr, toTensor, vals } from "./util.js";

/** Reference permute of a row-major Arr. */
function permuteRef(a: ref.Arr, perm: number[]): ref.Arr {
  const shape = perm.map((p) => a.shape[p]!);
  const st = ref.stridesOf(a.shape);
  const out = new Float64Array(a.data.length);
  const ost = ref.stridesOf(shape);
  for (let i = 0; i < out.length; i++) {
    let rem = i;
    let src = 0;
    for (let d = 0; d < shape.length; d++) {
      const idx = Math.floor(rem / ost[d]!);
      rem -= idx * ost[d]!;
      src += idx * st[perm[d]!]!;
    }
    out[i] = a.data[src]!;
  }
  return { shape, data: out };
}

/** Reference slice (step >= 1) of one dim. */
function sliceRef(a: ref.Arr, dim: number, start: number, end: number, step = 1): ref.Arr {
  const shape = [...a.shape];
  shape[dim] = Math.ceil((end - start) / step);
  const out: number[] = [];
  const st = ref.stridesOf(a.shape);
  const n = ref.numel(shape);
  const ost = ref.stridesOf(shape);
  for (let i = 0; i < n; i++) {
    let rem = i;
    let src = 0;
    for (let d = 0; d < shape.length; d++) {
      const idx = Math.floor(rem / ost[d]!);
      rem -= idx * ost[d]!;
      src += (d === dim ? start + idx * step : idx) * st[d]!;
    }
    out.push(a.data[src]!);
  }
  return ref.arr(shape, out);
}

forEachDevice((device) => {
  const gen = new Generator(21);
  const a = randArr(gen, [2, 3, 4]);

  describe("views", () => {
    it("transpose, permute and contiguous", () => {
      tidy(() => {
        const t = toTensor(a, device);
        const p = t.permute(2, 0, 1);
        expect(p.shape).toEqual([4, 2, 3]);
        expect(p.isContiguous).toBe(false);
        expect(p.storage).toBe(t.storage);
        expectClose(f64(p), permuteRef(a, [2, 0, 1]).data, { atol: 0 });
        const c = p.contiguous();
        expect(c.isContiguous).toBe(true);
        expectClose(f64(c), permuteRef(a, [2, 0, 1]).data, { atol: 0 });
        expectClose(f64(t.transpose(0, 2)), permuteRef(a, [2, 1, 0]).data, { atol: 0 });
      });
      checkGrads(device, ([x]) => x!.permute(1, 2, 0).mul(2), ([x]) => ref.map(permuteRef(x!, [1, 2, 0]), (v) => 2 * v), [a]);
    });

    it("reshape views when it can and copies when it must", () => {
      tidy(() => {
        const t = toTensor(a, device);
        const r = t.reshape(6, 4);
        expect(r.storage).toBe(t.storage);
        expect(t.reshape([-1]).shape).toEqual([24]);
        const tt = t.transpose(1, 2); // (2, 4, 3) with strides (12, 1, 4): splitting dim 1 is a view, merging is not
        expect(tt.reshape(2, 2, 2, 3).storage).toBe(t.storage);
        const copied = tt.reshape(2, 12);
        expect(copied.storage).not.toBe(t.storage);
        expectClose(f64(copied), permuteRef(a, [0, 2, 1]).data, { atol: 0 });
        expect(() => tt.view(2, 12)).toThrow(lb.ShapeError);
        expect(() => t.reshape(5, 5)).toThrow(/cannot reshape 24 elements/);
      });
      checkGrads(device, ([x]) => x!.transpose(1, 2).reshape(2, 12).square(), ([x]) => ref.map(permuteRef(x!, [0, 2, 1]), (v) => v * v), [a]);
    });

    it("narrow and slice (with steps and negative bounds)", () => {
      tidy(() => {
        const t = toTensor(a, device);
        expectClose(f64(t.narrow(2, 1, 2)), sliceRef(a, 2, 1, 3).data, { atol: 0 });
        expectClose(f64(t.slice(2, 0, 4, 2)), sliceRef(a, 2, 0, 4, 2).data, { atol: 0 });
        expectClose(f64(t.slice(1, -2)), sliceRef(a, 1, 1, 3).data, { atol: 0 });
        expect(t.slice(1, 5, 9).shape).toEqual([2, 0, 4]);
      });
      checkGrads(device, ([x]) => x!.slice(2, 1, 4, 2).exp(), ([x]) => ref.map(sliceRef(x!, 2, 1, 4, 2), Math.exp), [a]);
      checkGrads(device, ([x]) => x!.narrow(1, 1, 2).mul(3), ([x]) => ref.map(sliceRef(x!, 1, 1, 3), (v) => 3 * v), [a]);
    });

    it("squeeze, unsqueeze, flatten and expand", () => {
      const b = randArr(gen, [3, 1]);
      tidy(() => {
        const t = toTensor(b, device);
        expect(t.unsqueeze(0).shape).toEqual([1, 3, 1]);
        expect(t.unsqueeze(-1).shape).toEqual([3, 1, 1]);
        expect(t.squeeze().shape).toEqual([3]);
        expect(t.squeeze(0).shape).toEqual([3, 1]);
        expect(toTensor(a, device).flatten(1).shape).toEqual([2, 12]);
        const e = t.expand(2, 3, 4);
        expect(e.shape).toEqual([2, 3, 4]);
        expect(e.strides).toEqual([0, 1, 0]);
        expectClose(f64(e), ref.binary(b, ref.arr([2, 3, 4], new Float64Array(24)), (p) => p).data, { atol: 0 });
        expect(t.expand(3, 2).shape).toEqual([3, 2]);
        expect(() => t.expand(2, 2)).toThrow(lb.ShapeError);
      });
      checkGrads(device, ([x]) => x!.unsqueeze(0).squeeze(-1).flatten().contiguous().exp(), ([x]) => ref.map(x!, Math.exp), [b]);
      checkGrads(device, ([x, y]) => lb.stack([x!, y!], 1).square(), ([x, y]) => {
        const out: number[] = [];
        for (let i = 0; i < 3; i++) out.push(x!.data[i]! ** 2, y!.data[i]! ** 2);
        return ref.arr([3, 2, 1], out);
      }, [b, randArr(gen, [3, 1])]);
      // expand's gradient sums over the broadcast dims.
      checkGrads(device, ([x]) => x!.expand(2, 3, 4).square(), ([x]) => ref.binary(x!, ref.arr([2, 3, 4], new Float64Array(24)), (p) => p * p), [b]);
    });
  });

  describe("copies", () => {
    it("cat and stack", () => {
      const b = randArr(gen, [2, 1, 4]);
      tidy(() => {
        const c = lb.cat([toTensor(a, device), toTensor(b, device)], 1);
        expect(c.shape).toEqual([2, 4, 4]);
        // Reference: concatenate along dim 1 by rows.
        const want: number[] = [];
        for (let i = 0; i < 2; i++) {
          want.push(...a.data.slice(i * 12, i * 12 + 12));
          want.push(...b.data.slice(i * 4, i * 4 + 4));
        }
        expectClose(f64(c), want, { atol: 0 });
        const s = lb.stack([toTensor(a, device), toTensor(a, device)], 0);
        expect(s.shape).toEqual([2, 2, 3, 4]);
        expect(() => lb.cat([toTensor(a, device), toTensor(randArr(gen, [2, 3, 5]), device)], 1)).toThrow(lb.ShapeError);
      });
      checkGrads(
        device,
        ([x, y]) => lb.cat([x!, y!], 1).mul(lb.cat([x!, y!], 1)),
        ([x, y]) => {
          const out: number[] = [];
          for (let i = 0; i < 2; i++) out.push(...x!.data.slice(i * 12, i * 12 + 12), ...y!.data.slice(i * 4, i * 4 + 4));
          return ref.map(ref.arr([2, 4, 4], out), (v) => v * v);
        },
        [a, b],
      );
    });

    it("casts between dtypes (round to nearest even) and back through autograd", () => {
      tidy(() => {
        const t = lb.tensor([1, 1.0009765625, 1.00048828125, 65504, 70000, -2.5], { device });
        expect(vals(t.to("float16"))).toEqual([1, 1.0009765625, 1, 65504, Infinity, -2.5]);
        expect(vals(t.to("bfloat16"))).toEqual([1, 1, 1, 65536, 70144, -2.5]);
        expect(vals(lb.tensor([1.7, -2.2, 3], { device }).to("int32"))).toEqual([1, -2, 3]);
        expect(lb.tensor([1, 2], { device }).to("float32").storage).toBeDefined();
      });
      checkGrads(device, ([x]) => x!.to("bfloat16").to("float32").mul(2), ([x]) => ref.map(x!, (v) => 2 * v), [a], { atol: 2e-2, rtol: 1e-2 });
    });

    it("moves between devices, and the gradient moves back", () => {
      tidy(() => {
        const t = toTensor(a, device, { requiresGrad: true });
        const c = t.to("cpu");
        expect(c.device).toBe("cpu");
        expectClose(f64(c), a.data, { atol: 0 });
        c.mul(3).sum().backward();
        expect(t.grad!.device).toBe(device);
        expectClose(f64(t.grad!), new Float64Array(24).fill(3), { atol: 0 });
        t.dispose();
      });
    });
  });
});
