// AutoModelForCausalLM.fromConfig: a model from a config alone with seeded random weights (transformers' from_config +
// _init_weights), placed through the same device maps as fromPretrained and quantized exactly as fromPretrained
// quantizes loaded weights. Checked on tiny configs: the initializer's distribution and determinism (drawn and pooled
// tensors), biases / norms / padding row, tied heads, the memory footprint, forward, savePretrained → fromPretrained
// round trips (float, NF4, LLM.int8), and typed errors for bad options.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ArgumentError } from "@lowbit/dtypes";
import { DeviceMapError } from "@lowbit/accelerate";
import { Linear4bit, Linear8bitLt, type Tensor } from "@lowbit/tensor";
import {
  AutoModelForCausalLM,
  BitsAndBytesConfig,
  ConfigError,
  LlamaForCausalLM,
  PretrainedLinear,
  loadConfig,
  type FromConfigOptions,
  type PreTrainedCausalLM,
} from "../src/index.js";
import { repoFixture } from "./helpers.js";

/** A tiny Llama (the fixture's shapes, pad_token_id 0 so that the padding row is zeroed). */
const TINY_RAW: Record<string, unknown> = { ...loadConfig(repoFixture("tiny-llama")).raw, pad_token_id: 0 };
const PROMPT = [1, 17, 342, 99, 5, 870];

function values(t: Tensor): Float32Array {
  return t.to("float32").toTypedArray() as Float32Array;
}

function stats(a: Float32Array): { mean: number; std: number } {
  let s = 0;
  for (const v of a) s += v;
  const mean = s / a.length;
  let q = 0;
  for (const v of a) q += (v - mean) ** 2;
  return { mean, std: Math.sqrt(q / a.length) };
}

function build(raw: Record<string, unknown>, options: FromConfigOptions): PreTrainedCausalLM {
  return AutoModelForCausalLM.fromConfig(raw, { onWarning: () => {}, ...options });
}

/** Every state-dict tensor as float32 values (int8 / packed tensors as their integers). */
function snapshot(m: PreTrainedCausalLM): Map<string, Float32Array> {
  return new Map(Object.entries(m.stateDict()).map(([k, t]) => [k, Float32Array.from(t.toTypedArray() as ArrayLike<number>)]));
}

/** Whether two snapshots hold the same names and bit-identical values. */
function sameSnapshot(a: Map<string, Float32Array>, b: Map<string, Float32Array>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) {
    const w = b.get(k);
    if (w === undefined || !Buffer.from(v.buffer, v.byteOffset, v.byteLength).equals(Buffer.from(w.buffer, w.byteOffset, w.byteLength))) return false;
  }
  return true;
}

/** Runs `fn` with a fresh temporary folder, removed once the returned promise settles. */
async function withTempDirAsync(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "lowbit-from-config-"));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function logitsOf(m: PreTrainedCausalLM): Float32Array {
  const { logits } = m.forward({ inputIds: [PROMPT] });
  try {
    return values(logits);
  } finally {
    logits.dispose();
  }
}

/** The error `fn` throws. */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a throw");
}

describe("fromConfig: transformers' initialization with a seeded generator", () => {
  it("draws N(0, initializer_range) weights, zero biases and padding row, unit norms", () => {
    const m = build(TINY_RAW, { seed: 7, dtype: "float32" });
    try {
      const sd = m.stateDict();
      expect(Object.keys(sd).length).toBe(1 + 2 * 9 + 2);
      for (const [name, t] of Object.entries(sd)) {
        expect(t.dtype).toBe("float32");
        const v = values(t);
        if (name.endsWith("norm.weight")) {
          expect(v.every((x) => x === 1), name).toBe(true);
          continue;
        }
        let w = v;
        if (name === "model.embed_tokens.weight") {
          expect(v.subarray(0, 128).every((x) => x === 0)).toBe(true); // pad_token_id 0
          w = v.subarray(128);
        }
        const { mean, std } = stats(w);
        expect(Math.abs(mean), name).toBeLessThan((4 * 0.02) / Math.sqrt(w.length));
        expect(Math.abs(std - 0.02) / 0.02, name).toBeLessThan(0.05);
      }
      expect(m.isLoadedIn4bit).toBe(false);
      expect(m.deviceMap["model.layers.1"]).toBe("cpu");
      expect(m.generationConfig?.resolve().eosTokenIds).toEqual([2]);
    } finally {
      m.dispose();
    }
  });

  it("is deterministic per seed, and the initializer range is an option", () => {
    const a = build(TINY_RAW, { seed: 3, dtype: "float32" });
    const b = build(TINY_RAW, { seed: 3, dtype: "float32" });
    const c = build(TINY_RAW, { seed: 4, dtype: "float32" });
    const wide = build(TINY_RAW, { seed: 3, dtype: "float32", initializerRange: 0.5 });
    try {
      const sa = snapshot(a);
      expect(sameSnapshot(snapshot(b), sa)).toBe(true);
      const key = "model.layers.0.mlp.up_proj.weight";
      expect(sameSnapshot(new Map([[key, snapshot(c).get(key)!]]), new Map([[key, sa.get(key)!]]))).toBe(false);
      // The same draws scaled: std 0.5 instead of 0.02.
      const w = snapshot(wide).get(key)!;
      const base = sa.get(key)!;
      let worst = 0;
      for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(w[i]! - 25 * base[i]!) / Math.abs(25 * base[i]!));
      expect(worst).toBeLessThan(1e-5);
    } finally {
      for (const m of [a, b, c, wide]) m.dispose();
    }
  });

  it("tiles tensors above randomPoolSize / 16 elements from a seeded pool, deterministically and with the same distribution", () => {
    const a = build(TINY_RAW, { seed: 5, dtype: "bfloat16", randomPoolSize: 4096 });
    const b = build(TINY_RAW, { seed: 5, dtype: "bfloat16", randomPoolSize: 4096 });
    try {
      const sa = snapshot(a);
      expect(sameSnapshot(snapshot(b), sa)).toBe(true);
      const up = sa.get("model.layers.0.mlp.up_proj.weight")!; // 344 × 128 elements: tiled from the pool
      const down = sa.get("model.layers.1.mlp.down_proj.weight")!;
      expect(up.length).toBeGreaterThan(4096); // longer than the pool: several windows
      expect(up).not.toEqual(down);
      const { mean, std } = stats(up);
      expect(Math.abs(mean)).toBeLessThan(0.002);
      expect(Math.abs(std - 0.02) / 0.02).toBeLessThan(0.1);
      expect((a as LlamaForCausalLM).model.layers[0]!.selfAttn.child<PretrainedLinear>("q_proj").weight.dtype).toBe("bfloat16");
      // Every tiled value is a pool value: far fewer distinct values than elements.
      expect(new Set(up).size).toBeLessThanOrEqual(4096);
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it("projection biases start at zero; a tied lm_head shares the embedding; the footprint is transformers'", () => {
    const qwen = build({ model_type: "qwen2", vocab_size: 96, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: true }, { seed: 1, dtype: "float32" });
    try {
      const sd = qwen.stateDict();
      for (const k of ["q_proj", "k_proj", "v_proj"]) expect(values(sd[`model.layers.1.self_attn.${k}.bias`]!).every((x) => x === 0)).toBe(true);
      expect(sd["lm_head.weight"]).toBe(sd["model.embed_tokens.weight"]);
      // Parameters (tied once) × 4 B plus the two float32 rotary buffers (head_dim / 2 each).
      const params = 96 * 32 + 2 * (32 * 32 + 32 + 2 * (16 * 32 + 16) + 32 * 32 + 3 * 32 * 48 + 2 * 32) + 32;
      expect(qwen.getMemoryFootprint()).toBe(params * 4 + 2 * 4 * 4);
    } finally {
      qwen.dispose();
    }
  });
});

describe("fromConfig models load, run, save and quantize like fromPretrained ones", () => {
  it("saves a checkpoint that fromPretrained loads to the same logits", () =>
    withTempDirAsync(async (dir) => {
      const m = build(TINY_RAW, { seed: 11, dtype: "float32" });
      try {
        const want = logitsOf(m);
        expect(want.length).toBe(PROMPT.length * 1000);
        expect(want.every(Number.isFinite)).toBe(true);
        m.savePretrained(dir);
        const back = await AutoModelForCausalLM.fromPretrained(dir, { dtype: "float32" });
        try {
          expect(logitsOf(back)).toEqual(want);
        } finally {
          back.dispose();
        }
      } finally {
        m.dispose();
      }
    }));

  it("quantizes random weights exactly as fromPretrained quantizes the same weights (NF4 + double quant, FP4, LLM.int8)", () =>
    withTempDirAsync(async (dir) => {
      const float = build(TINY_RAW, { seed: 12, dtype: "float32" });
      float.savePretrained(dir);
      float.dispose();
      const configs = [
        new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "nf4", bnb4bitUseDoubleQuant: true }),
        new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "fp4", bnb4bitComputeDtype: "float32" }),
        new BitsAndBytesConfig({ loadIn8bit: true }),
      ];
      for (const quantizationConfig of configs) {
        const q = build(TINY_RAW, { seed: 12, dtype: "float32", quantizationConfig });
        const loaded = await AutoModelForCausalLM.fromPretrained(dir, { dtype: "float32", quantizationConfig });
        try {
          const layer = (q as LlamaForCausalLM).model.layers[1]!.selfAttn.child("o_proj");
          expect(layer).toBeInstanceOf(quantizationConfig.loadIn4bit ? Linear4bit : Linear8bitLt);
          expect(q.child("lm_head")).toBeInstanceOf(PretrainedLinear); // the default skip list
          expect(sameSnapshot(snapshot(q), snapshot(loaded))).toBe(true);
          expect(logitsOf(q)).toEqual(logitsOf(loaded));
          expect(q.getMemoryFootprint()).toBe(loaded.getMemoryFootprint());
        } finally {
          q.dispose();
          loaded.dispose();
        }
      }
    }));

  it("places units through the device maps (strategies with an injected inventory, Records)", () => {
    const auto = build(TINY_RAW, { deviceMap: "auto", deviceMapOptions: { inventory: { gpus: [], cpuAvailableBytes: 1e9 } } });
    try {
      expect(new Set(Object.values(auto.deviceMap))).toEqual(new Set(["cpu"]));
      expect(auto.dtype).toBe("bfloat16"); // the config's dtype
    } finally {
      auto.dispose();
    }
    const err = thrown(() => build(TINY_RAW, { deviceMap: { "model.layers": "cpu" } }));
    expect(err).toBeInstanceOf(DeviceMapError);
    expect((err as DeviceMapError).moduleName).toBe("model.embed_tokens");
  });

  it("bad options and configs are typed errors naming them", () => {
    const cases: Array<[() => unknown, RegExp]> = [
      [() => build(TINY_RAW, { init: "zeros" as never }), /Expected "random" for fromConfig's init but received "zeros"/],
      [() => build(TINY_RAW, { seed: 1.5 }), /Expected a safe integer for fromConfig's seed but received 1.5/],
      [() => build(TINY_RAW, { initializerRange: -1 }), /fromConfig's initializerRange/],
      [() => build(TINY_RAW, { randomPoolSize: 0 }), /fromConfig's randomPoolSize/],
      [() => build(TINY_RAW, { dtype: "float64" as never }), /fromConfig's dtype but received "float64"/],
      [() => build(TINY_RAW, { quantizationConfig: { loadIn4bit: true } as never }), /BitsAndBytesConfig or null for fromConfig's quantizationConfig/],
      [() => build(TINY_RAW, { device: "cpu" } as never), /received the name "device"/],
      [() => AutoModelForCausalLM.fromConfig(TINY_RAW, null as never), /options object/],
    ];
    for (const [fn, message] of cases) {
      const err = thrown(fn);
      expect(err).toBeInstanceOf(ArgumentError);
      expect(err.message).toMatch(message);
    }
    expect(thrown(() => build({ model_type: "gpt2" }, {}))).toBeInstanceOf(ConfigError);
    expect(thrown(() => build({ model_type: "llama", hidden_size: 30, num_attention_heads: 4 }, {}))).toBeInstanceOf(ConfigError);
  });
});
