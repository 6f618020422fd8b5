// Tests for config.json parsing (llama / mistral / qwen2) against what transformers 5.17 derives for the same files
// (test/fixtures/config-reference.json, made by tooling/scripts/gen-transformers-fixtures.py), plus error cases.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { AutoConfig, ConfigError, loadConfig, parseConfig, type PretrainedConfig } from "../src/index.js";
import { localFixture, readJson, repoFixture, withTempDir } from "./helpers.js";

interface ConfigCase {
  config: Record<string, unknown>;
  expected: Record<string, unknown>;
}
const REF = readJson<{ cases: Record<string, ConfigCase> }>(localFixture("config-reference.json")).cases;

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).code).toBe("ERR_FILE");
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError, nothing was thrown");
}

describe("parseConfig matches transformers", () => {
  for (const [name, { config, expected }] of Object.entries(REF)) {
    it(name, () => {
      const c = parseConfig(structuredClone(config), `${name}/config.json`);
      expect(c.modelType).toBe(expected["model_type"]);
      expect(c.vocabSize).toBe(expected["vocab_size"]);
      expect(c.hiddenSize).toBe(expected["hidden_size"]);
      expect(c.intermediateSize).toBe(expected["intermediate_size"]);
      expect(c.numHiddenLayers).toBe(expected["num_hidden_layers"]);
      expect(c.numAttentionHeads).toBe(expected["num_attention_heads"]);
      expect(c.numKeyValueHeads).toBe(expected["num_key_value_heads"]);
      // Qwen2 has no head_dim attribute; its modeling code uses hidden_size // num_attention_heads.
      expect(c.headDim).toBe(expected["head_dim"] ?? (expected["hidden_size"] as number) / (expected["num_attention_heads"] as number));
      expect(c.hiddenAct).toBe(expected["hidden_act"]);
      expect(c.maxPositionEmbeddings).toBe(expected["max_position_embeddings"]);
      expect(c.rmsNormEps).toBe(expected["rms_norm_eps"]);
      expect(c.tieWordEmbeddings).toBe(expected["tie_word_embeddings"]);
      expect(c.bosTokenId).toBe(expected["bos_token_id"]);
      expect(c.eosTokenId).toEqual(expected["eos_token_id"]);
      expect(c.padTokenId).toBe(expected["pad_token_id"]);
      expect(c.useCache).toBe(expected["use_cache"]);
      expect(c.attentionDropout).toBe(expected["attention_dropout"]);
      expect(c.dtype).toBe(expected["dtype"]);
      expect(c.ropeParametersDict).toEqual(expected["rope_parameters"]);
      if (c.modelType === "llama") {
        expect(c.attentionBias).toBe(expected["attention_bias"]);
        expect(c.mlpBias).toBe(expected["mlp_bias"]);
        const b = expected["attention_bias"] as boolean;
        expect(c.projectionBias).toEqual({ q: b, k: b, v: b, o: b, mlp: expected["mlp_bias"] });
      }
      if (c.modelType === "mistral") {
        expect(c.slidingWindow).toBe(expected["sliding_window"]);
        expect(c.projectionBias).toEqual({ q: false, k: false, v: false, o: false, mlp: false });
      }
      if (c.modelType === "qwen2") {
        expect(c.slidingWindow).toBe(expected["sliding_window"]);
        expect(c.useSlidingWindow).toBe(expected["use_sliding_window"]);
        expect(c.maxWindowLayers).toBe(expected["max_window_layers"]);
        expect(c.layerTypes).toEqual(expected["layer_types"]);
        expect(c.projectionBias).toEqual({ q: true, k: true, v: true, o: false, mlp: false });
      }
    });
  }
});

describe("config details", () => {
  it("reads tiny-llama's config.json from its folder", () => {
    const c = AutoConfig.fromPretrained(repoFixture("tiny-llama"));
    expect(c.modelType).toBe("llama");
    expect(c.file).toBe(join(repoFixture("tiny-llama"), "config.json"));
    expect(c.architectures).toEqual(["LlamaForCausalLM"]);
    expect(c.eosTokenIds).toEqual([2]);
    expect(c.layerTypes).toEqual(["full_attention", "full_attention"]);
    expect(c.ropeParameters).toMatchObject({ ropeType: "default", ropeTheta: 10000, factor: null });
    expect(c.quantizationConfig).toBeNull();
  });

  it("keeps the raw quantization_config block of pre-quantized checkpoints", () => {
    const c = loadConfig(repoFixture("tiny-llama-bnb-nf4"));
    expect(c.quantizationConfig).toMatchObject({ quant_method: "bitsandbytes", bnb_4bit_quant_type: "nf4" });
    expect(c.dtype).toBe("float32");
    expect(loadConfig(repoFixture("tiny-llama-bnb-int8/config.json")).dtype).toBe("float16");
  });

  it("eos_token_id as a list, mistral sliding window on every layer, head_dim that is not hidden/heads", () => {
    const c = REF["llama-legacy-torch-dtype-eos-list"] as ConfigCase;
    expect(parseConfig(c.config).eosTokenIds).toEqual([128001, 128008, 128009]);
    const m = parseConfig({ model_type: "mistral", num_hidden_layers: 3 });
    expect(m.layerTypes).toEqual(["sliding_attention", "sliding_attention", "sliding_attention"]);
    const nemo = parseConfig((REF["mistral-nemo-head-dim"] as ConfigCase).config);
    expect(nemo.headDim).toBe(128);
    expect(nemo.slidingWindow).toBeNull();
    expect(nemo.layerTypes.every((t) => t === "full_attention")).toBe(true);
  });

  it("qwen2 layer_types given explicitly", () => {
    const q = parseConfig({ model_type: "qwen2", num_hidden_layers: 2, use_sliding_window: true, sliding_window: 16, layer_types: ["sliding_attention", "full_attention"] });
    expect(q.layerTypes).toEqual(["sliding_attention", "full_attention"]);
  });

  it("reads both rope generations into the same standardized form", () => {
    const legacy = parseConfig({ model_type: "llama", rope_theta: 500000.0, rope_scaling: { type: "llama3", factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0 }, max_position_embeddings: 131072 });
    expect(legacy.ropeParameters).toMatchObject({ ropeType: "llama3", ropeTheta: 500000, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 131072 });
    const tf5 = parseConfig({ model_type: "llama", rope_parameters: { rope_type: "yarn", factor: 4.0, rope_theta: 1e6, original_max_position_embeddings: 4096, truncate: null } });
    expect(tf5.ropeParameters).toMatchObject({ ropeType: "yarn", factor: 4, ropeTheta: 1e6, originalMaxPositionEmbeddings: 4096, truncate: false });
  });
});

describe("config errors name the file and key", () => {
  it("unknown or missing model_type", () => {
    expect(errorOf(() => parseConfig({ model_type: "gpt2" }, "m/config.json"))).toMatchInlineSnapshot(
      `"m/config.json, model_type: model_type "gpt2" is not supported (supported: llama, mistral, qwen2)"`,
    );
    expect(errorOf(() => parseConfig({}, "m/config.json"))).toMatchInlineSnapshot(
      `"m/config.json, model_type: expected model_type to be one of llama, mistral, qwen2 but received undefined"`,
    );
    expect(errorOf(() => parseConfig([1], "m/config.json"))).toMatchInlineSnapshot(`"m/config.json: must hold a JSON object but holds Array(1)"`);
  });

  it("fields of the wrong type or range", () => {
    expect(errorOf(() => parseConfig({ model_type: "llama", hidden_size: "4096" }, "c.json"))).toMatchInlineSnapshot(
      `"c.json, hidden_size: expected a positive integer but received "4096" (string)"`,
    );
    expect(errorOf(() => parseConfig({ model_type: "llama", num_attention_heads: 32, num_key_value_heads: 5 }, "c.json"))).toMatchInlineSnapshot(
      `"c.json, num_key_value_heads: expected a divisor of num_attention_heads (32) but received 5 (number)"`,
    );
    expect(errorOf(() => parseConfig({ model_type: "llama", hidden_size: 100, num_attention_heads: 3 }, "c.json"))).toMatch(
      /hidden_size: expected a multiple of num_attention_heads \(3\) when head_dim is not given but received 100/,
    );
    expect(errorOf(() => parseConfig({ model_type: "llama", eos_token_id: [2, "x"] }, "c.json"))).toMatch(/eos_token_id: expected a non-negative integer token id, a list of them, or null but received Array\(2\)/);
    expect(errorOf(() => parseConfig({ model_type: "llama", dtype: "int8" }, "c.json"))).toMatch(/c\.json, dtype: expected one of float32, float16, bfloat16 but received "int8"/);
    expect(errorOf(() => parseConfig({ model_type: "llama", torch_dtype: "float64" }, "c.json"))).toMatch(/torch_dtype: expected one of float32/);
    expect(errorOf(() => parseConfig({ model_type: "llama", tie_word_embeddings: 1 }, "c.json"))).toMatch(/tie_word_embeddings: expected a boolean but received 1/);
    expect(errorOf(() => parseConfig({ model_type: "llama", quantization_config: "bnb" }, "c.json"))).toMatch(/quantization_config: expected an object/);
    expect(errorOf(() => parseConfig({ model_type: "qwen2", num_hidden_layers: 2, layer_types: ["full_attention"] }, "c.json"))).toMatch(
      /layer_types: expected a list of 2 entries/,
    );
  });

  it("rope parameters", () => {
    expect(errorOf(() => parseConfig({ model_type: "llama", rope_scaling: { type: "linear" } }, "c.json"))).toMatchInlineSnapshot(
      `"c.json, rope_parameters.factor: rope_type "linear" requires factor"`,
    );
    expect(errorOf(() => parseConfig({ model_type: "llama", rope_parameters: { rope_type: "longrope" } }, "c.json"))).toMatch(/rope_type "longrope" is not supported yet/);
    expect(errorOf(() => parseConfig({ model_type: "llama", rope_parameters: { rope_type: "ntk" } }, "c.json"))).toMatch(
      /rope_parameters\.rope_type: expected one of default, linear, dynamic, yarn, llama3 but received "ntk"/,
    );
    expect(errorOf(() => parseConfig({ model_type: "llama", rope_parameters: { rope_type: "llama3", factor: 8, low_freq_factor: 4, high_freq_factor: 1 } }, "c.json"))).toMatch(
      /high_freq_factor: expected a number greater than low_freq_factor/,
    );
    expect(errorOf(() => parseConfig({ model_type: "llama", rope_theta: -1 }, "c.json"))).toMatch(/rope_parameters\.rope_theta: expected a number > 0/);
  });

  it("unreadable or invalid config files", () => {
    withTempDir((dir) => {
      expect(errorOf(() => loadConfig(dir))).toMatch(/config\.json: cannot be read/);
      writeFileSync(join(dir, "config.json"), "{oops");
      expect(errorOf(() => loadConfig(dir))).toMatch(/config\.json: is not valid JSON/);
    });
  });
});

// Compile-time check that the union narrows on modelType.
export function headBias(c: PretrainedConfig): boolean {
  return c.modelType === "llama" ? c.attentionBias : c.modelType === "qwen2";
}
