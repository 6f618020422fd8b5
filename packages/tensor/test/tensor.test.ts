// Tensor creation and host transfers (zeros / ones / full / arange / tensor / fromTypedArray, f16 and
// bf16 decoding, toArray, item) and the seedable Generator (determinism, state, distributions).

import { describe, expect, it } from "vitest";
import * as lb from "../src/index.js";
import { Generator, tidy } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import { vals } from "./util.js";

forEachDevice((device) => {
  describe("creation and transfers", () => {
    it("zeros, ones, full, arange", () => {
      tidy(() => {
        const z = lb.zeros([2, 3], { device });
        expect(z.shape).toEqual([2, 3]);
        expect(z.strides).toEqual([3, 1]);
        expect(z.device).toBe(device);
        expect(z.dtype).toBe("float32");
        expect(vals(z)).toEqual([0, 0, 0, 0, 0, 0]);
        expect(vals(lb.ones([3], { device, dtype: "bfloat16" }))).toEqual([1, 1, 1]);
        expect(vals(lb.full([2], -7, { device, dtype: "int32" }))).toEqual([-7, -7]);
        const r = lb.arange(5, undefined, 1, { device });
        expect(r.dtype).toBe("int32");
        expect(vals(r)).toEqual([0, 1, 2, 3, 4]);
        expect(vals(lb.arange(1, 2, 0.25, { device }))).toEqual([1, 1.25, 1.5, 1.75]);
        expect(lb.zeros([0, 4], { device }).numel).toBe(0);
      });
    });

    it("tensor(), toArray(), item() and typed-array round trips per dtype", () => {
      tidy(() => {
        const t = lb.tensor([[1, 2, 3], [4, 5, 6]], { device });
        expect(t.shape).toEqual([2, 3]);
        expect(t.toArray()).toEqual([[1, 2, 3], [4, 5, 6]]);
        expect(t.transpose(0, 1).toArray()).toEqual([[1, 4], [2, 5], [3, 6]]);
        expect(lb.tensor(2.5, { device }).item()).toBe(2.5);
        expect(lb.tensor([true, false], { device, dtype: "bool" }).toArray()).toEqual([1, 0]);
        const i64 = lb.tensor([-3, 2 ** 40], { device, dtype: "int64" });
        expect(i64.toTypedArray()).toBeInstanceOf(BigInt64Array);
        expect(i64.toArray()).toEqual([-3, 2 ** 40]);
        const h = lb.fromTypedArray(Float32Array.from([0.1, 65504, 1e-8]), [3], { device, dtype: "float16" });
        const back = h.toTypedArray() as Float32Array;
        expect(back).toBeInstanceOf(Float32Array);
        expect(Array.from(back)).toEqual([0.0999755859375, 65504, 0]);
        const bits = lb.fromTypedArray(Uint16Array.from([0x3f80, 0xc000]), [2], { device, dtype: "bfloat16" });
        expect(vals(bits)).toEqual([1, -2]);
        expect(vals(lb.fromTypedArray(Int8Array.from([-128, 127]), undefined, { device }))).toEqual([-128, 127]);
      });
    });

    it("randn / rand are deterministic per generator and device-independent", () => {
      tidy(() => {
        const a = lb.randn([1000], { device, generator: new Generator(42) });
        const b = lb.randn([1000], { device: "cpu", generator: new Generator(42) });
        expect(vals(a)).toEqual(vals(b));
        const v = a.toTypedArray() as Float32Array;
        const mean = v.reduce((s, x) => s + x, 0) / v.length;
        const std = Math.sqrt(v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length);
        expect(Math.abs(mean)).toBeLessThan(0.1);
        expect(Math.abs(std - 1)).toBeLessThan(0.08);
        const u = lb.rand([1000], { device, generator: new Generator(1), low: -2, high: 3 }).toTypedArray() as Float32Array;
        expect(Math.min(...u)).toBeGreaterThanOrEqual(-2);
        expect(Math.max(...u)).toBeLessThan(3);
        expect(Math.abs(u.reduce((s, x) => s + x, 0) / u.length - 0.5)).toBeLessThan(0.15);
      });
    });
  });
});

describe("Generator", () => {
  it("the same seed gives the same stream; state save / restore replays it", () => {
    const g = new Generator(123);
    const first = Array.from({ length: 5 }, () => g.nextUint32());
    expect(Array.from({ length: 5 }, () => new Generator(123)).map((x) => x.nextUint32())).toEqual(Array(5).fill(first[0]));
    g.manualSeed(123);
    const state = g.getState();
    expect(Array.from({ length: 5 }, () => g.nextUint32())).toEqual(first);
    g.setState(state);
    expect(g.nextUint32()).toBe(first[0]);
    expect(new Generator(124).nextUint32()).not.toBe(first[0]);
    expect(new Generator(2 ** 40).nextUint32()).not.toBe(new Generator(0).nextUint32());
    expect(() => g.manualSeed(1.5)).toThrow(lb.ArgumentError);
    expect(() => g.setState([1, 2, 3] as never)).toThrow(lb.ArgumentError);
  });

  it("manualSeed seeds the default generator", () => {
    lb.manualSeed(9);
    const a = tidy(() => vals(lb.randn([4])));
    lb.manualSeed(9);
    const b = tidy(() => vals(lb.randn([4])));
    expect(a).toEqual(b);
  });
});
