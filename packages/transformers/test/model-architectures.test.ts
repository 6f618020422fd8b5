// Mistral (sliding window on every layer), Qwen2 (q/k/v biases, tied embeddings, a window on some layers, the
// transformers-4 rope_theta key) and dynamic-NTK RoPE on Llama, against float64 references made by
// test/fixtures/models/make_models.py (tiny random checkpoints; 14 positions, windows of 4–5 keys). Covers the
// windowed attention paths: a window folded into the key mask for one new position, and the explicit additive mask
// for several new positions (full forward, chunked prefill after a cache).

import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryStats } from "@lowbit/kernels";
import { availableDevices } from "@lowbit/tensor";
import {
  AutoModelForCausalLM,
  BitsAndBytesConfig,
  MistralForCausalLM,
  Qwen2ForCausalLM,
  readSafetensors,
  type PreTrainedCausalLM,
} from "../src/index.js";
import { localFixture, readJson, withTempDir } from "./helpers.js";

interface Expected {
  input_ids: number[][];
  batch_input_ids: number[][];
  batch_attention_mask: number[][];
}

function load(name: string): { dir: string; expected: Expected; logits: Float32Array; batch: Float32Array } {
  const dir = localFixture(`models/${name}`);
  const t = readSafetensors(join(dir, "expected.safetensors")).tensors;
  const f = (k: string): Float32Array => {
    const b = t.get(k)!.bytes;
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  };
  return { dir, expected: readJson<Expected>(join(dir, "expected.json")), logits: f("logits"), batch: f("batch_logits") };
}

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

function run(model: PreTrainedCausalLM, input: Parameters<PreTrainedCausalLM["forward"]>[0]): Float32Array {
  const { logits } = model.forward(input);
  const a = logits.toTypedArray() as Float32Array;
  logits.dispose();
  return a;
}

const measured: Record<string, number> = {};
afterAll(() => {
  for (const [k, v] of Object.entries(measured)) console.log(`max rel error ${k}: ${v.toExponential(3)}`);
});

for (const device of availableDevices()) {
  for (const name of ["tiny-mistral", "tiny-qwen2", "tiny-llama-dynamic"]) {
    describe(`${name} on ${device}`, () => {
      const fx = load(name);
      const V = 300;
      let model: PreTrainedCausalLM;
      beforeAll(async () => {
        model = await AutoModelForCausalLM.fromPretrained(fx.dir, { dtype: "float32", deviceMap: device });
      });
      afterAll(() => model.dispose());

      it("matches the float64 reference logits", () => {
        const e = relErr(run(model, { inputIds: fx.expected.input_ids }), fx.logits);
        measured[`${name} (${device})`] = e;
        expect(e).toBeLessThan(1e-4);
      });

      it("matches the left-padded batch at the attended positions", () => {
        const mask = fx.expected.batch_attention_mask;
        const got = run(model, { inputIds: fx.expected.batch_input_ids, attentionMask: mask });
        const flat = mask.flat();
        const e = relErr(got, fx.batch, (i) => flat[Math.floor(i / V)] === 1);
        measured[`${name} padded batch (${device})`] = e;
        expect(e).toBeLessThan(1e-4);
      });

      if (name !== "tiny-llama-dynamic") {
        // (Dynamic NTK recomputes the frequencies as the sequence grows, so cached keys legitimately differ there.)
        it("a KV cache with a chunked prefill and single steps gives the full-forward logits", () => {
          const before = memoryStats(device).allocatedBytes;
          const mask = fx.expected.batch_attention_mask;
          const ids = fx.expected.batch_input_ids;
          const B = ids.length;
          const T = ids[0]!.length;
          const full = run(model, { inputIds: ids, attentionMask: mask });
          const cache = model.createCache({ batchSize: B, maxLength: T });
          const got = new Float32Array(B * T * V);
          const put = (h: Float32Array, t0: number, n: number): void => {
            for (let b = 0; b < B; b++) got.set(h.subarray(b * n * V, (b + 1) * n * V), (b * T + t0) * V);
          };
          try {
            // 3 + 6 positions (the second chunk reaches past the window: the explicit-mask path with a cache),
            // then one position at a time (the window folded into the key mask).
            let t = 0;
            for (const n of [3, 6, 1, 1, 1, 1, 1]) {
              const h = run(model, { inputIds: ids.map((r) => r.slice(t, t + n)), attentionMask: mask.map((r) => r.slice(0, t + n)), cache });
              put(h, t, n);
              t += n;
            }
            expect(t).toBe(T);
          } finally {
            cache.dispose();
          }
          const flat = mask.flat();
          expect(relErr(got, full, (i) => flat[Math.floor(i / V)] === 1)).toBeLessThan(1e-5);
          // The windowed paths, the cache and every step freed what they allocated.
          expect(memoryStats(device).allocatedBytes).toBe(before);
        });
      }
    });
  }
}

describe("architecture specifics", () => {
  it("Mistral applies its window: without it only the positions past the window change", async () => {
    const fx = load("tiny-mistral");
    const m = await AutoModelForCausalLM.fromPretrained(fx.dir, { dtype: "float32" });
    const windowed = run(m, { inputIds: fx.expected.input_ids });
    expect(m).toBeInstanceOf(MistralForCausalLM);
    expect((m as MistralForCausalLM).slidingWindow).toBe(5);
    m.dispose();
    await withTempDirAsync(async (dir) => {
      cpSync(fx.dir, dir, { recursive: true });
      const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
      cfg["sliding_window"] = null;
      writeFileSync(join(dir, "config.json"), JSON.stringify(cfg));
      const full = await AutoModelForCausalLM.fromPretrained(dir, { dtype: "float32" });
      try {
        const plain = run(full, { inputIds: fx.expected.input_ids });
        const W = 5 * 300; // the first 5 positions see at most 5 keys: the window hides nothing there
        expect(relErr(windowed.subarray(0, W), plain.subarray(0, W))).toBeLessThan(1e-6);
        expect(relErr(windowed.subarray(W), plain.subarray(W))).toBeGreaterThan(1e-2);
      } finally {
        full.dispose();
      }
    });
  });

  it("Qwen2: biases, tied lm_head, a window on layer 1 only; saved in the transformers-5 config form", async () => {
    const fx = load("tiny-qwen2");
    const m = await AutoModelForCausalLM.fromPretrained(fx.dir, { dtype: "float32" });
    try {
      expect(m).toBeInstanceOf(Qwen2ForCausalLM);
      expect((m as Qwen2ForCausalLM).layerWindows).toEqual([null, 4]);
      const names = m.namedParameters().map(([n]) => n);
      expect(names).toContain("model.layers.0.self_attn.q_proj.bias");
      expect(names).not.toContain("model.layers.0.self_attn.o_proj.bias");
      expect(names).not.toContain("lm_head.weight"); // the tied weight is listed once, as embed_tokens
      withTempDir((dir) => {
        m.savePretrained(dir);
        const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
        expect(cfg["rope_parameters"]).toEqual({ rope_theta: 10000, rope_type: "default" });
        expect(cfg).not.toHaveProperty("rope_theta");
        expect(readFileSync(join(dir, "config.json"), "utf8")).toContain('"rope_theta": 10000.0');
        const saved = readSafetensors(join(dir, "model.safetensors")).tensors;
        expect(saved.has("lm_head.weight")).toBe(false);
        expect(saved.size).toBe(readSafetensors(join(fx.dir, "model.safetensors")).tensors.size);
      });
    } finally {
      m.dispose();
    }
  });

  it("Qwen2 in NF4 keeps the q/k/v biases (frozen) and stays close to float32", async () => {
    const fx = load("tiny-qwen2");
    const q = await AutoModelForCausalLM.fromPretrained(fx.dir, {
      dtype: "float32",
      quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "nf4", bnb4bitUseDoubleQuant: true }),
    });
    try {
      const kinds = new Map([...q.namedModules()].map(([n, x]) => [n, x.constructor.name]));
      expect(kinds.get("model.layers.1.self_attn.k_proj")).toBe("Linear4bit");
      // Tied: both sides of the tie are in the default skip list.
      expect(kinds.get("lm_head")).toBe("PretrainedLinear");
      const bias = q.namedParameters().find(([n]) => n === "model.layers.1.self_attn.k_proj.bias")![1];
      expect(bias.requiresGrad).toBe(false);
      // 4-bit weights on random data: logits within a few percent of the float reference.
      expect(relErr(run(q, { inputIds: fx.expected.input_ids }), fx.logits)).toBeLessThan(0.1);
    } finally {
      q.dispose();
    }
  });
});

/** A fresh temp folder for an async body, removed afterwards. */
async function withTempDirAsync(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "lowbit-arch-"));
  try {
    await fn(join(dir, "model"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
