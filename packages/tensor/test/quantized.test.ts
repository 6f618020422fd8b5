// Linear4bit and Linear8bitLt: quantization agrees byte for byte with @lowbit/dtypes, forward matches
// a float64 reference on the dequantized weight (fused and dequantize paths), gradients through a
// Linear4bit with a LoRA adapter equal those through the dequantized float32 weight, the weights never
// get gradients, and state dicts use bitsandbytes' keys.

import { describe, expect, it } from "vitest";
import { dequantize4bit, float32ToFloat16, float16ToFloat32, int8VectorwiseQuant, quantize4bit } from "@lowbit/dtypes";
import * as lb from "../src/index.js";
import { Generator, Linear4bit, Linear8bitLt, tidy } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import * as ref from "./reference.js";
import { expectClose, expectNoLeak, f64, randArr, toTensor, vals } from "./util.js";

forEachDevice((device) => {
  const gen = new Generator(91);

  describe("Linear4bit", () => {
    for (const quantType of ["nf4", "fp4"] as const) {
      for (const compressStatistics of [false, true]) {
        it(`${quantType}${compressStatistics ? " nested" : ""}: codes match dtypes, forward (fused and dequantized) matches the reference`, () => {
          const N = 24;
          const K = 128;
          const w = randArr(gen, [N, K]);
          const bias = randArr(gen, [N]);
          tidy(() => {
            const layer = Linear4bit.fromFloat(toTensor(w, device), { quantType, compressStatistics, blocksize: 64, bias: toTensor(bias, device) });
            try {
              const host = quantize4bit(Float32Array.from(w.data), { quantType, compressStatistics, blocksize: 64, shape: [N, K] });
              expect(vals(layer.weight)).toEqual(Array.from(host.packed));
              expect(layer.weight.shape).toEqual([(N * K) / 2, 1]);
              expect(layer.quantState.toJSONString()).toBe(host.state.toJSONString());
              const wdq = dequantize4bit(host.packed, host.state, "float32") as Float32Array;
              expectClose(f64(layer.dequantizeWeight("float32")), wdq, { atol: 0 }, "dequantizeWeight");
              const W = ref.arr([N, K], wdq);
              for (const M of [1, 3, 40]) {
                const x = randArr(gen, [M, K]);
                const y = layer.forward(toTensor(x, device));
                expect(y.shape).toEqual([M, N]);
                expectClose(f64(y), ref.linear(x, W, bias).data, { atol: 2e-4, rtol: 2e-4 }, `M=${M}`);
              }
            } finally {
              layer.dispose();
            }
          });
        });
      }
    }

    it("double quantization on the device: absmax codes, nested absmax and offset equal @lowbit/dtypes' over several nested blocks", () => {
      const N = 64;
      const K = 1024; // 1024 blocks of 64 → 4 nested blocks of 256
      const w = randArr(gen, [N, K]);
      const layer = Linear4bit.fromFloat(toTensor(w, device), { compressStatistics: true });
      try {
        const host = quantize4bit(Float32Array.from(w.data), { quantType: "nf4", compressStatistics: true, blocksize: 64, shape: [N, K] });
        expect(layer.quantState.offset).toBe(host.state.offset);
        expect(Array.from(layer.quantState.absmax)).toEqual(Array.from(host.state.absmax));
        expect(Array.from(layer.quantState.state2!.absmax)).toEqual(Array.from(host.state.state2!.absmax));
        expect(layer.quantState.state2!.absmax.length).toBe(4);
      } finally {
        layer.dispose();
      }
    });

    it("bfloat16 inputs with a float32 compute dtype come back as bfloat16", () => {
      const w = randArr(gen, [16, 64]);
      tidy(() => {
        const layer = Linear4bit.fromFloat(toTensor(w, device), { computeDtype: "float32" });
        const x = toTensor(randArr(gen, [2, 5, 64]), device, { dtype: "bfloat16" });
        const y = layer.forward(x);
        expect(y.dtype).toBe("bfloat16");
        expect(y.shape).toEqual([2, 5, 16]);
        const want = ref.linear(ref.arr([10, 64], f64(x)), ref.arr([16, 64], f64(layer.dequantizeWeight("float32"))), null);
        expectClose(f64(y), want.data, { atol: 2e-2, rtol: 1e-2 });
        layer.dispose();
      });
    });

    it("QLoRA: gradients through Linear4bit + a low-rank adapter equal those through the dequantized float32 weight", () => {
      const N = 16;
      const K = 64;
      const r = 4;
      const s = 2;
      const w = randArr(gen, [N, K]);
      const xa = randArr(gen, [2, 5, K]);
      const Aa = randArr(gen, [r, K], { low: -0.2, high: 0.2 });
      const Ba = randArr(gen, [N, r], { low: -0.2, high: 0.2 });
      const ga = randArr(gen, [2, 5, N]);
      for (const fusedMaxRows of [16, 0]) {
        expectNoLeak(device, () => {
          const wt = toTensor(w, device);
          const base = Linear4bit.fromFloat(wt, { compressStatistics: true, fusedMaxRows });
          wt.dispose();
          // y = x W^T + (x A^T) B^T · s
          const run = (quantized: boolean): Float64Array[] =>
            tidy(() => {
              const x = toTensor(xa, device, { requiresGrad: true });
              const A = toTensor(Aa, device, { requiresGrad: true });
              const B = toTensor(Ba, device, { requiresGrad: true });
              const wdq = base.dequantizeWeight("float32");
              const y0 = quantized ? base.forward(x) : lb.linear(x, wdq);
              const y = y0.add(lb.linear(lb.linear(x, A), B).mul(s));
              y.backward(toTensor(ga, device));
              const out = [f64(x.grad!), f64(A.grad!), f64(B.grad!)];
              for (const t of [x, A, B]) t.dispose();
              return out;
            });
          const q = run(true);
          const f = run(false);
          ["x", "A", "B"].forEach((name, i) => expectClose(q[i]!, f[i]!, { atol: 1e-4, rtol: 1e-4 }, `grad ${name}`));
          expect(base.weight.grad).toBeNull();
          expect(base.weight.requiresGrad).toBe(false);
          base.dispose();
        });
      }
    });

    it("uses bitsandbytes' state-dict keys and round-trips through fromStateDict / loadStateDict", () => {
      const w = randArr(gen, [8, 64]);
      tidy(() => {
        const a = Linear4bit.fromFloat(toTensor(w, device), { compressStatistics: true, bias: lb.zeros([8], { device }) });
        const sd = a.stateDict("layer");
        expect(Object.keys(sd)).toEqual([
          "layer.weight",
          "layer.bias",
          "layer.weight.absmax",
          "layer.weight.quant_map",
          "layer.weight.nested_absmax",
          "layer.weight.nested_quant_map",
          "layer.weight.quant_state.bitsandbytes__nf4",
        ]);
        expect(sd["layer.weight.absmax"]!.dtype).toBe("uint8");
        const b = Linear4bit.fromStateDict(sd, "layer");
        const x = toTensor(randArr(gen, [3, 64]), device);
        expectClose(f64(b.forward(x)), f64(a.forward(x)), { atol: 0 });
        const c = Linear4bit.fromFloat(toTensor(randArr(gen, [8, 64]), device), { compressStatistics: true, bias: lb.zeros([8], { device }) });
        const stripped = Object.fromEntries(Object.entries(sd).map(([k, v]) => [k.slice("layer.".length), v]));
        // c has another nested offset, so its JSON differs: loading is refused with a pointer to fromStateDict.
        expect(() => c.loadStateDict(stripped)).toThrow(/fromStateDict|shape/);
        const d = Linear4bit.fromStateDict(sd, "layer");
        d.loadStateDict(stripped);
        expectClose(f64(d.forward(x)), f64(a.forward(x)), { atol: 0 });
        for (const m of [a, b, c, d]) m.dispose();
      });
    });
  });

  describe("Linear8bitLt", () => {
    /** LLM.int8 forward in float64 following spec §12.5 (fp16 quantization input, outlier columns). */
    function int8Ref(x: ref.Arr, CB: Int8Array, SCB: Float32Array, bias: ref.Arr | null, N: number, threshold: number): Float64Array {
      const [M, K] = x.shape as [number, number];
      const xh = float32ToFloat16(Float32Array.from(x.data));
      const { CB: CA, SCB: SCA, outlierCols } = int8VectorwiseQuant(xh, M, K, { threshold, dtype: "float16" });
      const out = new Float64Array(M * N);
      for (let i = 0; i < M; i++)
        for (let j = 0; j < N; j++) {
          let c = 0;
          for (let k = 0; k < K; k++) c += CA[i * K + k]! * CB[j * K + k]!;
          let v = (c * SCA[i]! * SCB[j]!) / (127 * 127) + (bias ? bias.data[j]! : 0);
          v = float16ToFloat32(float32ToFloat16(Float32Array.of(v)))[0]!;
          if (threshold > 0) for (const col of outlierCols) v += x.data[i * K + col]! * ((CB[j * K + col]! * SCB[j]!) / 127);
          out[i * N + j] = v;
        }
      return out;
    }

    for (const threshold of [0, 1.5]) {
      it(`threshold ${threshold}: CB/SCB match dtypes, forward matches LLM.int8, grad_x = g @ (CB·SCB/127)`, () => {
        const N = 12;
        const K = 32;
        const w = randArr(gen, [N, K]);
        const bias = randArr(gen, [N]);
        const x = randArr(gen, [2, 3, K]);
        // A few activation outliers in columns 5 and 17.
        for (const [i, c] of [[0, 5], [4, 17]] as const) x.data[i * K + c] = Math.fround(i === 0 ? 3.5 : -2.75);
        tidy(() => {
          const layer = Linear8bitLt.fromFloat(toTensor(w, device), { threshold, bias: toTensor(bias, device) });
          const wh = float32ToFloat16(Float32Array.from(w.data));
          const host = int8VectorwiseQuant(wh, N, K, { dtype: "float16" });
          expect(vals(layer.weight)).toEqual(Array.from(host.CB));
          expect(vals(layer.SCB)).toEqual(Array.from(host.SCB));
          expect(Object.keys(layer.stateDict())).toEqual(["weight", "bias", "SCB", "weight_format"]);
          const sd = { ...layer.stateDict() };
          layer.loadStateDict(sd);
          expect(() => layer.loadStateDict({ ...sd, weight_format: lb.full([], 1, { dtype: "uint8", device }) })).toThrow(/weight_format 1/);

          const xt = toTensor(x, device, { requiresGrad: true });
          const y = layer.forward(xt);
          expect(y.shape).toEqual([2, 3, N]);
          expectClose(f64(y), int8Ref(ref.arr([6, K], x.data), host.CB, host.SCB, bias, N, threshold), { atol: 3e-3, rtol: 2e-3 });
          // Close to the float product too (quantization error only).
          expectClose(f64(y), ref.linear(ref.arr([6, K], x.data), w, bias).data, { atol: 0.15, rtol: 0.05 }, "vs float");

          const g = randArr(gen, [2, 3, N]);
          y.backward(toTensor(g, device));
          const wdq = ref.arr([N, K], Array.from(host.CB, (c, i) => Math.fround(Math.fround(c * host.SCB[Math.floor(i / K)]!) * Math.fround(7.874015718698502e-3))));
          expectClose(f64(xt.grad!), ref.matmul(ref.arr([6, N], g.data), wdq).data, { atol: 1e-5, rtol: 1e-5 }, "grad x");
          expect(layer.weight.grad).toBeNull();
          expect(layer.bias!.grad).not.toBeNull();
          xt.dispose();
          layer.dispose();
        });
      });
    }
  });
});
