// scaledDotProductAttention (GQA, causal, padding mask, explicit scale/qStart) against the float64
// reference with finite-difference gradients, and KVCache decoding that matches full attention.

import { describe, expect, it } from "vitest";
import * as lb from "../src/index.js";
import { Generator, KVCache, tidy } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import * as ref from "./reference.js";
import { checkGrads, expectClose, expectNoLeak, f64, randArr, toTensor } from "./util.js";

forEachDevice((device) => {
  const gen = new Generator(51);

  describe("scaledDotProductAttention", () => {
    const cases = [
      { name: "MHA, no mask", Hq: 2, Hkv: 2, Tq: 4, Tk: 4, opts: {} },
      { name: "GQA causal", Hq: 4, Hkv: 2, Tq: 5, Tk: 5, opts: { causal: true } },
      { name: "GQA causal + padding mask", Hq: 4, Hkv: 1, Tq: 4, Tk: 4, opts: { causal: true, mask: [[1, 1, 1, 1], [0, 1, 1, 1]] } },
      { name: "queries at the end of longer keys, custom scale", Hq: 2, Hkv: 1, Tq: 2, Tk: 5, opts: { causal: true, scale: 0.3 } },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const B = 2;
        const D = 4;
        const q = randArr(gen, [B, c.Hq, c.Tq, D], { low: -2, high: 2 });
        const k = randArr(gen, [B, c.Hkv, c.Tk, D], { low: -2, high: 2 });
        const v = randArr(gen, [B, c.Hkv, c.Tk, D]);
        const o = c.opts as { causal?: boolean; mask?: number[][]; scale?: number };
        tidy(() => {
          const mask = o.mask ? lb.tensor(o.mask, { dtype: "uint8", device }) : null;
          const run = ([tq, tk, tv]: lb.Tensor[]) => lb.scaledDotProductAttention(tq!, tk!, tv!, { causal: o.causal, scale: o.scale, mask });
          const y = run([toTensor(q, device), toTensor(k, device), toTensor(v, device)]);
          expect(y.shape).toEqual([B, c.Hq, c.Tq, D]);
          const want = ref.attention(q, k, v, { causal: o.causal, scale: o.scale, mask: o.mask ?? null });
          expectClose(f64(y), want.data, { atol: 2e-5, rtol: 1e-4 });
          checkGrads(device, run, ([a, b, d]) => ref.attention(a!, b!, d!, { causal: o.causal, scale: o.scale, mask: o.mask ?? null }), [q, k, v]);
        });
      });
    }

    it("rejects mismatched heads and shapes with ShapeError", () => {
      tidy(() => {
        const q = lb.zeros([1, 3, 2, 4], { device });
        const k = lb.zeros([1, 2, 2, 4], { device });
        expect(() => lb.scaledDotProductAttention(q, k, k)).toThrow(/multiple of key\/value heads/);
        expect(() => lb.scaledDotProductAttention(lb.zeros([1, 2, 2, 4], { device }), k, lb.zeros([1, 2, 3, 4], { device }))).toThrow(lb.ShapeError);
        expect(() => lb.scaledDotProductAttention(lb.zeros([1, 2, 2, 4], { device }), k, k, { mask: lb.ones([1, 3], { dtype: "uint8", device }) })).toThrow(/mask/);
      });
    });
  });

  describe("KVCache", () => {
    it("decoding one token at a time equals causal attention over the whole sequence, without reallocating", () => {
      const B = 2;
      const Hq = 4;
      const Hkv = 2;
      const T = 6;
      const D = 8;
      const q = randArr(gen, [B, Hq, T, D]);
      const k = randArr(gen, [B, Hkv, T, D]);
      const v = randArr(gen, [B, Hkv, T, D]);
      const cache = new KVCache({ layers: 2, batch: B, kvHeads: Hkv, maxSeq: 16, headDim: D, device });
      try {
        const full = ref.attention(q, k, v, { causal: true });
        // Prefill 2 positions, then decode 4 single steps, all on layer 1.
        const steps: Array<[number, number]> = [[0, 2], [2, 1], [3, 1], [4, 1], [5, 1]];
        expectNoLeak(device, () => {
          for (const [start, len] of steps) {
            tidy(() => {
              const qt = toTensor(q, device).narrow(2, start, len);
              const { k: kc, v: vc } = cache.append(1, toTensor(k, device).narrow(2, start, len), toTensor(v, device).narrow(2, start, len));
              expect(kc.shape).toEqual([B, Hkv, start + len, D]);
              expect(kc.storage).toBe(cache.get(1).k.storage);
              const y = lb.scaledDotProductAttention(qt, kc, vc, { causal: true });
              // Reference rows [start, start + len).
              const want: number[] = [];
              for (let b = 0; b < B; b++) for (let h = 0; h < Hq; h++) for (let t = start; t < start + len; t++) want.push(...full.data.slice(((b * Hq + h) * T + t) * D, ((b * Hq + h) * T + t + 1) * D));
              expectClose(f64(y), want, { atol: 2e-5, rtol: 1e-4 }, `step at ${start}`);
            });
          }
        });
        expect(cache.length(1)).toBe(T);
        tidy(() => expect(cache.update(0, lb.zeros([B, Hkv, 1, D], { device }), lb.zeros([B, Hkv, 1, D], { device })).k.shape).toEqual([B, Hkv, 1, D]));
        expect(cache.length(0)).toBe(1);
        expect(() => cache.append(1, lb.zeros([B, Hkv, 11, D], { device }), lb.zeros([B, Hkv, 11, D], { device }))).toThrow(/capacity/);
        expect(() => cache.append(0, lb.zeros([B, 3, 1, D], { device }), lb.zeros([B, 3, 1, D], { device }))).toThrow(lb.ShapeError);
        expect(() => cache.append(2, lb.zeros([B, Hkv, 1, D], { device }), lb.zeros([B, Hkv, 1, D], { device }))).toThrow(lb.ArgumentError);
        cache.crop(3);
        expect(cache.length(1)).toBe(3);
        cache.reset();
        expect(cache.length(1)).toBe(0);
      } finally {
        cache.dispose();
      }
    });
  });
});
