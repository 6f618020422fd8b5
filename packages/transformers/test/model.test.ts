// Parity of the causal LM with transformers + bitsandbytes on the tiny-llama fixtures (fixtures/README.md): float32
// logits vs the float64 reference, the left-padded batch, NF4 / FP4 / LLM.int8 quantized while loading, the
// pre-quantized checkpoints, memory footprints, savePretrained's bitsandbytes files, greedy decoding, and the KV cache.
// Every model test runs once per device @lowbit/tensor sees (CPU, plus each CUDA device when there is one).

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { availableDevices, fromTypedArray, type Tensor } from "@lowbit/tensor";
import { memoryStats } from "@lowbit/kernels";
import { AutoModelForCausalLM, BitsAndBytesConfig, readSafetensors, type PreTrainedCausalLM } from "../src/index.js";
import { readJson, repoFixture, withTempDir } from "./helpers.js";

/**
 * Quantized logits vs bitsandbytes' references (max abs error / max |logit|, float32 compute). The quantizers use
 * bitsandbytes' CUDA reciprocal (@lowbit/dtypes cudaReciprocal: rcp.approx.ftz emulated for 16-bit mantissas), so
 * tiny-llama's bf16-valued weights get exactly bitsandbytes' NF4 / FP4 / int8 codes.
 */
const QUANT4_TOLERANCE = 1e-4;

interface Expected {
  input_ids: number[][];
  greedy_ids: number[][];
  batch_input_ids: number[][];
  batch_attention_mask: number[][];
  footprint_nf4: number;
  footprint_fp4: number;
  footprint_int8: number;
  footprint_fp64: number;
}

const TINY = repoFixture("tiny-llama");
const NF4_DIR = repoFixture("tiny-llama-bnb-nf4");
const INT8_DIR = repoFixture("tiny-llama-bnb-int8");
const expected = readJson<Expected>(join(TINY, "expected.json"));
const reference = readSafetensors(join(TINY, "expected.safetensors")).tensors;

/** A float32 reference tensor from expected.safetensors. */
function ref(name: string): { data: Float32Array; shape: readonly number[] } {
  const t = reference.get(name);
  if (t === undefined) throw new Error(`expected.safetensors has no ${name}`);
  return { data: new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4), shape: t.shape };
}

/** max |a - b| / max |b| over the elements where `use(i)` holds (the fixtures' relative error). */
function relErr(a: Float32Array, b: Float32Array, use: (i: number) => boolean = () => true): number {
  expect(a.length).toBe(b.length);
  let err = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    if (!use(i)) continue;
    err = Math.max(err, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return err / scale;
}

/** Logits of one prompt as a host float32 array (T × V). */
function promptLogits(model: PreTrainedCausalLM, ids: number[]): Float32Array {
  const { logits } = model.forward({ inputIds: [ids] });
  try {
    expect(logits.shape).toEqual([1, ids.length, model.config.vocabSize]);
    return toF32(logits);
  } finally {
    logits.dispose();
  }
}

function toF32(t: Tensor): Float32Array {
  const a = t.toTypedArray();
  if (!(a instanceof Float32Array)) throw new Error(`expected float logits but got ${t.dtype}`);
  return a;
}

/** Errors per prompt against `logits_<tag>.<i>`, recorded for the report at the end. */
const measured: Record<string, number[]> = {};
function checkPrompts(model: PreTrainedCausalLM, tag: string, tolerance: number, key: string): void {
  const errs = expected.input_ids.map((ids, i) => relErr(promptLogits(model, ids), ref(`logits_${tag}.${i}`).data));
  measured[key] = errs;
  for (const e of errs) expect(e).toBeLessThan(tolerance);
}

afterAll(() => {
  for (const [k, v] of Object.entries(measured)) console.log(`max rel error ${k}: ${v.map((e) => e.toExponential(3)).join(", ")}`);
});

for (const device of availableDevices()) {
  describe(`tiny-llama on ${device}`, () => {
    describe("float32", () => {
      let model: PreTrainedCausalLM;
      beforeAll(async () => {
        model = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32", deviceMap: device });
      });
      afterAll(() => model.dispose());

      it("matches the float64 logits of every prompt within 1e-4", () => {
        checkPrompts(model, "fp64", 1e-4, `fp32 vs fp64 (${device})`);
      });

      it("matches the left-padded batch at the attended positions", () => {
        const { logits } = model.forward({ inputIds: expected.batch_input_ids, attentionMask: expected.batch_attention_mask });
        const got = toF32(logits);
        logits.dispose();
        const want = ref("batch_logits_fp64");
        const V = model.config.vocabSize;
        const T = expected.batch_input_ids[0]!.length;
        const mask = expected.batch_attention_mask.flat();
        const e = relErr(got, want.data, (i) => mask[Math.floor(i / V)] === 1);
        measured[`fp32 padded batch (${device})`] = [e];
        expect(e).toBeLessThan(1e-4);
        expect(want.shape).toEqual([expected.batch_input_ids.length, T, V]);
      });

      it("the memory footprint is transformers' (the float64 figure with 4-byte parameters)", () => {
        const total = model.getMemoryFootprint();
        const params = model.getMemoryFootprint({ returnBuffers: false });
        // Buffers: inv_freq and original_inv_freq, float32 (16,) each, in every load mode (also in footprint_fp64).
        expect(total - params).toBe(2 * 16 * 4);
        expect(params * 2 + (total - params)).toBe(expected.footprint_fp64);
      });

      it("greedy decoding of 24 tokens by repeated full forward reproduces greedy_ids for prompt 0", () => {
        const ids = [...expected.input_ids[0]!];
        for (let s = 0; s < 24; s++) {
          const { logits } = model.forward({ inputIds: [ids], logitsToKeep: 1 }); // (1, 1, V)
          const next = logits.argmax(-1);
          ids.push(next.item());
          next.dispose();
          logits.dispose();
        }
        expect(ids.slice(expected.input_ids[0]!.length)).toEqual(expected.greedy_ids[0]);
      });

      it("forward with a KV cache, one position at a time, gives the full-forward logits", () => {
        const ids = [...expected.input_ids[0]!, ...expected.greedy_ids[0]!.slice(0, 6)];
        const full = promptLogits(model, ids);
        const V = model.config.vocabSize;
        const cache = model.createCache({ batchSize: 1, maxLength: ids.length });
        try {
          const P = 4;
          const pre = model.forward({ inputIds: [ids.slice(0, P)], cache }); // prefill (1, P, V)
          const chunks = [toF32(pre.logits)];
          pre.logits.dispose();
          expect(cache.length).toBe(P);
          for (let t = P; t < ids.length; t++) {
            const { logits } = model.forward({ inputIds: [[ids[t]!]], cache }); // (1, 1, V)
            chunks.push(toF32(logits));
            logits.dispose();
            expect(cache.length).toBe(t + 1);
          }
          const stepped = new Float32Array(ids.length * V);
          let o = 0;
          for (const c of chunks) {
            stepped.set(c, o);
            o += c.length;
          }
          const e = relErr(stepped, full);
          measured[`KV cache vs full forward (${device})`] = [e];
          expect(e).toBeLessThan(1e-5);
          // Past capacity: a typed error, and the cache is left as it was.
          expect(() => model.forward({ inputIds: [[1]], cache })).toThrowError(/exceed the cache capacity/);
          expect(cache.length).toBe(ids.length);
        } finally {
          cache.dispose();
        }
      });

      it("a left-padded batch through the KV cache gives the padded full-forward logits", () => {
        const B = expected.batch_input_ids.length;
        const T = expected.batch_input_ids[0]!.length;
        const V = model.config.vocabSize;
        const mask = expected.batch_attention_mask;
        // Positions as transformers' generate derives them from the mask: cumsum - 1, 1 on padding.
        const positions = mask.map((row) => {
          let c = 0;
          return row.map((m) => (m === 1 ? c++ : 1));
        });
        const full = model.forward({ inputIds: expected.batch_input_ids, attentionMask: mask, positionIds: positions });
        const want = toF32(full.logits);
        full.logits.dispose();
        const cache = model.createCache({ batchSize: B, maxLength: T });
        const got = new Float32Array(B * T * V);
        try {
          const P = 5;
          const pre = model.forward({
            inputIds: expected.batch_input_ids.map((r) => r.slice(0, P)),
            attentionMask: mask.map((r) => r.slice(0, P)),
            positionIds: positions.map((r) => r.slice(0, P)),
            cache,
          });
          const preHost = toF32(pre.logits);
          pre.logits.dispose();
          for (let b = 0; b < B; b++) got.set(preHost.subarray(b * P * V, (b + 1) * P * V), b * T * V);
          for (let t = P; t < T; t++) {
            const step = model.forward({
              inputIds: expected.batch_input_ids.map((r) => [r[t]!]),
              attentionMask: mask.map((r) => r.slice(0, t + 1)),
              positionIds: positions.map((r) => [r[t]!]),
              cache,
            });
            const h = toF32(step.logits);
            step.logits.dispose();
            for (let b = 0; b < B; b++) got.set(h.subarray(b * V, (b + 1) * V), (b * T + t) * V);
          }
        } finally {
          cache.dispose();
        }
        const flatMask = mask.flat();
        expect(relErr(got, want, (i) => flatMask[Math.floor(i / V)] === 1)).toBeLessThan(1e-5);
        // Positions derived from the mask and the default positions give the same attended logits (RoPE is relative).
        const ref64 = ref("batch_logits_fp64").data;
        expect(relErr(want, ref64, (i) => flatMask[Math.floor(i / V)] === 1)).toBeLessThan(1e-4);
      });

      it("ids, positions and mask given as tensors on the device (mask a view of a longer buffer) give the host-array logits", () => {
        const B = expected.batch_input_ids.length;
        const T = expected.batch_input_ids[0]!.length;
        const mask = expected.batch_attention_mask;
        const positions = mask.map((row) => {
          let c = 0;
          return row.map((m) => (m === 1 ? c++ : 1));
        });
        const host = model.forward({ inputIds: expected.batch_input_ids, attentionMask: mask, positionIds: positions });
        const want = toF32(host.logits);
        host.logits.dispose();
        const ids = fromTypedArray(Int32Array.from(expected.batch_input_ids.flat()), [B, T], { dtype: "int32", device });
        const pos = fromTypedArray(BigInt64Array.from(positions.flat(), (v) => BigInt(v)), [B, T], { dtype: "int64", device });
        const wide = new Uint8Array(B * (T + 3)); // (B, T + 3): the mask is the first T columns
        mask.forEach((row, b) => wide.set(row, b * (T + 3)));
        const maskBuf = fromTypedArray(wide, [B, T + 3], { dtype: "uint8", device });
        const maskView = maskBuf.narrow(1, 0, T);
        try {
          const dev = model.forward({ inputIds: ids, attentionMask: maskView, positionIds: pos });
          const got = toF32(dev.logits);
          dev.logits.dispose();
          expect(relErr(got, want)).toBeLessThan(1e-6);
          // An out-of-range id: a typed error on the CPU at once, on CUDA at the next device→host copy.
          const bad = fromTypedArray(Int32Array.from([3, model.config.vocabSize]), [1, 2], { dtype: "int32", device });
          try {
            const call = (): void => {
              const out = model.forward({ inputIds: bad });
              try {
                out.logits.toTypedArray();
              } finally {
                out.logits.dispose();
              }
            };
            expect(call).toThrowError(device === "cpu" ? /token id in \[0, 999\].*inputIds\[0\]\[1\]/ : /for embedding's ids\[1\] on cuda:\d+ but received 1000/);
          } finally {
            bad.dispose();
          }
        } finally {
          for (const t of [ids, pos, maskView, maskBuf]) t.dispose();
        }
      });

      it("forward frees every intermediate tensor", () => {
        const before = memoryStats(device).allocatedBytes;
        const { logits } = model.forward({ inputIds: expected.batch_input_ids, attentionMask: expected.batch_attention_mask });
        logits.dispose();
        expect(memoryStats(device).allocatedBytes).toBe(before);
      });
    });

    describe("NF4, double quantization, compute float32", () => {
      const nf4 = new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "nf4", bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: "float32" });
      let model: PreTrainedCausalLM;
      beforeAll(async () => {
        model = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32", deviceMap: device, quantizationConfig: nf4 });
      });
      afterAll(() => model.dispose());

      it("matches bitsandbytes' NF4 logits within 1e-4", () => {
        checkPrompts(model, "nf4", 1e-4, `NF4 (${device})`);
      });

      it("has transformers' memory footprint and the quantization state on top", () => {
        expect(model.isLoadedIn4bit).toBe(true);
        expect(model.getMemoryFootprint()).toBe(expected.footprint_nf4);
        expect(model.getMemoryFootprint({ includeQuantizationState: true })).toBeGreaterThan(expected.footprint_nf4);
      });

      it("keeps lm_head and the embeddings unquantized (the default skip list)", () => {
        const names = [...model.namedModules()].filter(([, m]) => m.constructor.name === "Linear4bit").map(([n]) => n);
        expect(names).toHaveLength(14);
        expect(names).not.toContain("lm_head");
      });

      it("the pre-quantized tiny-llama-bnb-nf4 loads to the same logits", async () => {
        const pre = await AutoModelForCausalLM.fromPretrained(NF4_DIR, { deviceMap: device });
        try {
          expect(pre.dtype).toBe("float32");
          expect(pre.isLoadedIn4bit).toBe(true);
          expect(pre.getMemoryFootprint()).toBe(expected.footprint_nf4);
          for (const ids of expected.input_ids) expect(promptLogits(pre, ids)).toEqual(promptLogits(model, ids));
        } finally {
          pre.dispose();
        }
      });

      it("savePretrained writes tiny-llama-bnb-nf4's quantized tensors byte for byte and its quantization_config", () => {
        withTempDir((dir) => {
          model.savePretrained(dir);
          const mine = readSafetensors(join(dir, "model.safetensors"));
          const theirs = readSafetensors(join(NF4_DIR, "model.safetensors"));
          expect([...mine.tensors.keys()].sort()).toEqual([...theirs.tensors.keys()].sort());
          for (const [name, t] of theirs.tensors) {
            const m = mine.tensors.get(name)!;
            expect({ name, dtype: m.dtype, shape: m.shape }).toEqual({ name, dtype: t.dtype, shape: t.shape });
            expect(Buffer.from(m.bytes).equals(Buffer.from(t.bytes)), name).toBe(true);
          }
          expect(mine.header.metadata).toEqual({ format: "pt" });
          // The whole file and config.json are transformers' bytes too.
          expect(readFileSync(join(dir, "model.safetensors")).equals(readFileSync(join(NF4_DIR, "model.safetensors")))).toBe(true);
          const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
          const want = JSON.parse(readFileSync(join(NF4_DIR, "config.json"), "utf8")) as Record<string, unknown>;
          expect(cfg["quantization_config"]).toEqual(want["quantization_config"]);
          expect(readFileSync(join(dir, "config.json"), "utf8")).toBe(readFileSync(join(NF4_DIR, "config.json"), "utf8"));
          expect(readFileSync(join(dir, "generation_config.json"), "utf8")).toBe(readFileSync(join(NF4_DIR, "generation_config.json"), "utf8"));
        });
      });

      it("a saved 4-bit model loads back to the same logits", async () => {
        const dir = mkdtempSync(join(tmpdir(), "lowbit-model-"));
        try {
          model.savePretrained(dir);
          const back = await AutoModelForCausalLM.fromPretrained(dir, { deviceMap: device });
          try {
            expect(promptLogits(back, expected.input_ids[1]!)).toEqual(promptLogits(model, expected.input_ids[1]!));
          } finally {
            back.dispose();
          }
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });
    });

    describe("FP4, no double quantization, compute float32", () => {
      it("matches bitsandbytes' FP4 logits within 1e-4 and has transformers' footprint", async () => {
        const fp4 = new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "fp4", bnb4bitUseDoubleQuant: false, bnb4bitComputeDtype: "float32" });
        const model = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32", deviceMap: device, quantizationConfig: fp4 });
        try {
          checkPrompts(model, "fp4", QUANT4_TOLERANCE, `FP4 (${device})`);
          expect(model.getMemoryFootprint()).toBe(expected.footprint_fp4);
        } finally {
          model.dispose();
        }
      });
    });

    describe("LLM.int8, threshold 6.0, float16", () => {
      const int8 = new BitsAndBytesConfig({ loadIn8bit: true, llmInt8Threshold: 6.0 });
      let model: PreTrainedCausalLM;
      beforeAll(async () => {
        model = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float16", deviceMap: device, quantizationConfig: int8 });
      });
      afterAll(() => model.dispose());

      it("matches bitsandbytes' int8 logits within 3e-2", () => {
        checkPrompts(model, "int8", 3e-2, `int8 (${device})`);
      });

      it("has transformers' memory footprint", () => {
        expect(model.isLoadedIn8bit).toBe(true);
        expect(model.getMemoryFootprint()).toBe(expected.footprint_int8);
      });

      it("the pre-quantized tiny-llama-bnb-int8 loads its own codes, close to quantizing while loading", async () => {
        const pre = await AutoModelForCausalLM.fromPretrained(INT8_DIR, { deviceMap: device });
        try {
          expect(pre.dtype).toBe("float16");
          expect(pre.isLoadedIn8bit).toBe(true);
          expect(pre.getMemoryFootprint()).toBe(expected.footprint_int8);
          const errs = expected.input_ids.map((ids, i) => {
            const a = promptLogits(pre, ids);
            expect(relErr(a, promptLogits(model, ids))).toBeLessThan(1e-2);
            return relErr(a, ref(`logits_int8.${i}`).data);
          });
          measured[`pre-quantized int8 checkpoint (${device})`] = errs;
          for (const e of errs) expect(e).toBeLessThan(3e-2);
        } finally {
          pre.dispose();
        }
      });

      it("savePretrained writes tiny-llama-bnb-int8's files exactly: int8 codes, SCB, weight_format, float tensors and config", () => {
        withTempDir((dir) => {
          model.savePretrained(dir);
          const mine = readSafetensors(join(dir, "model.safetensors"));
          const theirs = readSafetensors(join(INT8_DIR, "model.safetensors"));
          expect([...mine.tensors.keys()].sort()).toEqual([...theirs.tensors.keys()].sort());
          for (const [name, t] of theirs.tensors) {
            const m = mine.tensors.get(name)!;
            expect({ name, dtype: m.dtype, shape: m.shape }).toEqual({ name, dtype: t.dtype, shape: t.shape });
            expect(Buffer.from(m.bytes).equals(Buffer.from(t.bytes)), name).toBe(true);
          }
          expect(readFileSync(join(dir, "config.json"), "utf8")).toBe(readFileSync(join(INT8_DIR, "config.json"), "utf8"));
        });
      });
    });
  });
}
