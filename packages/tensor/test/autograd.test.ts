// Autograd engine semantics: accumulation across backward calls, shared subgraphs, noGrad, detach,
// freed graphs and retainGraph, explicit output gradients, and checkpoint() equivalence.

import { describe, expect, it } from "vitest";
import * as lb from "../src/index.js";
import { Generator, checkpoint, noGrad, tidy } from "../src/index.js";
import { memoryStats } from "@lowbit/kernels";
import { forEachDevice } from "./devices.js";
import * as ref from "./reference.js";
import { expectClose, expectNoLeak, f64, randArr, toTensor, vals } from "./util.js";

forEachDevice((device) => {
  describe("autograd", () => {
    it("accumulates .grad across backward calls", () => {
      tidy(() => {
        const x = lb.tensor([1, 2, 3], { device, requiresGrad: true });
        x.square().sum().backward();
        x.square().sum().backward();
        expect(vals(x.grad!)).toEqual([4, 8, 12]);
        x.grad = null;
        x.mul(5).sum().backward();
        expect(vals(x.grad!)).toEqual([5, 5, 5]);
        x.dispose();
      });
    });

    it("sums gradients where a tensor is used twice (diamond)", () => {
      tidy(() => {
        const x = lb.tensor([0.5, -1.5], { device, requiresGrad: true });
        const y = x.exp();
        const z = y.mul(y).add(y.mul(3)); // z = e^2x + 3e^x
        z.sum().backward();
        const want = [0.5, -1.5].map((v) => 2 * Math.exp(2 * v) + 3 * Math.exp(v));
        expectClose(f64(x.grad!), want, { atol: 1e-5, rtol: 1e-5 });
        x.dispose();
      });
    });

    it("noGrad and detach record nothing", () => {
      tidy(() => {
        const x = lb.tensor([1, 2], { device, requiresGrad: true });
        const y = noGrad(() => x.mul(2));
        expect(y.requiresGrad).toBe(false);
        expect(x.detach().requiresGrad).toBe(false);
        expect(x.mul(2).gradFn).toBe("mul");
        expect(() => y.backward()).toThrow(lb.ArgumentError);
        x.dispose();
      });
    });

    it("a freed graph cannot run backward twice unless retained", () => {
      tidy(() => {
        const x = lb.tensor([1, 2], { device, requiresGrad: true });
        const loss = x.exp().sum();
        loss.backward(undefined, { retainGraph: true });
        loss.backward();
        expectClose(f64(x.grad!), [2 * Math.E, 2 * Math.exp(2)], { atol: 1e-5, rtol: 1e-6 });
        expect(() => loss.backward()).toThrow(/already freed/);
        x.dispose();
      });
    });

    it("non-scalar outputs need an explicit gradient of their shape", () => {
      tidy(() => {
        const x = lb.tensor([1, 2, 3], { device, requiresGrad: true });
        const y = x.mul(2);
        expect(() => y.backward()).toThrow(lb.ShapeError);
        expect(() => y.backward(lb.ones([2], { device }))).toThrow(lb.ShapeError);
        y.backward(lb.tensor([1, 0, -1], { device }));
        expect(vals(x.grad!)).toEqual([2, 0, -2]);
        x.dispose();
      });
    });

    it("intermediates disposed by tidy still serve backward; the graph leaks nothing", () => {
      expectNoLeak(device, () => {
        const x = lb.tensor([1, 2, 3], { device, requiresGrad: true });
        const loss = tidy(() => x.exp().mul(x).sum()); // x e^x
        loss.backward();
        expectClose(f64(x.grad!), [1, 2, 3].map((v) => (1 + v) * Math.exp(v)), { atol: 1e-5, rtol: 1e-5 });
        loss.dispose();
        x.dispose();
      });
      // A graph dropped without backward releases its saved tensors too.
      expectNoLeak(device, () => {
        const x = lb.tensor([1, 2, 3], { device, requiresGrad: true });
        tidy(() => {
          x.exp().mul(x).sum();
        });
        x.dispose();
      });
    });

    it("linear with a frozen weight keeps no activation alive for backward", () => {
      tidy(() => {
        const x = lb.randn([64, 32], { device, requiresGrad: true, generator: new Generator(1) });
        const w = lb.randn([8, 32], { device, generator: new Generator(2) }); // frozen
        const h = x.mul(2); // scale saves nothing
        const y = lb.linear(h, w);
        const before = memoryStats(device).allocatedBytes;
        h.dispose();
        expect(before - memoryStats(device).allocatedBytes).toBe(64 * 32 * 4);
        y.sum().backward();
        expectClose(f64(x.grad!), ref.matmul(ref.arr([64, 8], new Float64Array(512).fill(2)), ref.arr([8, 32], f64(w))).data, { atol: 1e-4, rtol: 1e-5 });
        x.dispose();
      });
    });

    it("checkpoint gives the same gradients, for inputs and for parameters used inside", () => {
      const gen = new Generator(61);
      const xa = randArr(gen, [3, 4]);
      const wa = randArr(gen, [4]);
      const block = (w: lb.Tensor) => (h: lb.Tensor) => lb.tanh(h.mul(w)).exp().add(h);
      const grads = (useCheckpoint: boolean): [Float64Array, Float64Array] =>
        tidy(() => {
          const x = toTensor(xa, device, { requiresGrad: true });
          const w = toTensor(wa, device, { requiresGrad: true });
          const h = x.mul(2);
          const y = useCheckpoint ? checkpoint(block(w), h) : block(w)(h);
          y.square().sum().backward();
          const out: [Float64Array, Float64Array] = [f64(x.grad!), f64(w.grad!)];
          x.dispose();
          w.dispose();
          return out;
        });
      const [gx, gw] = grads(false);
      const [cx, cw] = grads(true);
      expectClose(cx, gx, { atol: 1e-6, rtol: 1e-6 }, "input grad");
      expectClose(cw, gw, { atol: 1e-6, rtol: 1e-6 }, "param grad");
    });

    it("checkpoint replays dropout masks from the default generator", () => {
      lb.manualSeed(3);
      tidy(() => {
        const x = lb.ones([64], { device, requiresGrad: true });
        const y = checkpoint((h) => lb.dropout(h, 0.5).mul(h), x);
        const kept = Array.from(y.toTypedArray() as Float32Array).map((v) => (v === 0 ? 0 : 1));
        y.sum().backward();
        // d/dx (m·x·x) = 2·m·x with m ∈ {0, 2}: 4 where kept, 0 elsewhere.
        expect(Array.from(x.grad!.toTypedArray() as Float32Array)).toEqual(kept.map((k) => 4 * k));
        x.dispose();
      });
    });
  });
});
