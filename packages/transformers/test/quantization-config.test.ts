// Tests for BitsAndBytesConfig against transformers 5.17 (test/fixtures/bnb-config-reference.json) and against the
// quantization_config blocks of the pre-quantized fixture checkpoints (tiny-llama-bnb-nf4 / -int8).

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ArgumentError } from "@lowbit/dtypes";
import { BitsAndBytesConfig, ConfigError, loadConfig, type BitsAndBytesConfigInit } from "../src/index.js";
import { localFixture, readJson, repoFixture } from "./helpers.js";

interface BnbCase {
  kwargs: Record<string, unknown>;
  to_dict: Record<string, unknown>;
  to_dict_keys: string[];
  to_diff_dict: Record<string, unknown>;
  quantization_method: string | null;
  json_sorted_indent2: string;
}
const REF = readJson<{ cases: Record<string, BnbCase> }>(localFixture("bnb-config-reference.json")).cases;
const camel = (k: string) => k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

describe("BitsAndBytesConfig matches transformers", () => {
  for (const [name, c] of Object.entries(REF)) {
    it(name, () => {
      const init = Object.fromEntries(Object.entries(c.kwargs).map(([k, v]) => [camel(k), v])) as BitsAndBytesConfigInit;
      const cfg = new BitsAndBytesConfig(init);
      expect(Object.keys(cfg.toDict())).toEqual(c.to_dict_keys);
      expect(cfg.toDict()).toEqual(c.to_dict);
      expect(cfg.toDiffDict()).toEqual(c.to_diff_dict);
      expect(cfg.quantizationMethod()).toBe(c.quantization_method);
      expect(cfg.toJsonString({ useDiff: false })).toBe(c.json_sorted_indent2);
      // The snake_case block round-trips through fromDict.
      expect(BitsAndBytesConfig.fromDict(c.to_dict).toDict()).toEqual(c.to_dict);
    });
  }

  it("has transformers' defaults", () => {
    const d = new BitsAndBytesConfig();
    expect(d).toMatchObject({
      loadIn8bit: false,
      loadIn4bit: false,
      llmInt8Threshold: 6.0,
      llmInt8SkipModules: null,
      llmInt8EnableFp32CpuOffload: false,
      llmInt8HasFp16Weight: false,
      bnb4bitComputeDtype: "float32",
      bnb4bitQuantType: "fp4",
      bnb4bitUseDoubleQuant: false,
      bnb4bitQuantStorage: "uint8",
      quantMethod: "bitsandbytes",
    });
    expect(d.isQuantizable()).toBe(false);
    // to_json_string(use_diff=True) of the default config: nothing differs.
    expect(d.toJsonString()).toBe("{}\n");
  });
});

describe("BitsAndBytesConfig and the pre-quantized checkpoints", () => {
  for (const dir of ["tiny-llama-bnb-nf4", "tiny-llama-bnb-int8"]) {
    it(`${dir}: fromDict reads the block, toDict writes it back key for key and byte for byte`, () => {
      const config = loadConfig(repoFixture(dir));
      const block = config.quantizationConfig;
      const q = BitsAndBytesConfig.fromDict(block, config.file);
      expect(q.unusedKeys).toEqual([]);
      const sorted = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));
      expect(JSON.stringify(sorted(q.toDict()))).toBe(JSON.stringify(block));
      // config.json nests the block one level deep; re-indent toJsonString and find it in the file verbatim.
      const nested = q.toJsonString({ useDiff: false }).trimEnd().replaceAll("\n", "\n  ");
      expect(readFileSync(config.file, "utf8")).toContain(`\n  "quantization_config": ${nested},\n`);
    });
  }

  it("reads what each checkpoint was quantized with", () => {
    const nf4 = BitsAndBytesConfig.fromDict(loadConfig(repoFixture("tiny-llama-bnb-nf4")).quantizationConfig);
    expect(nf4).toMatchObject({ loadIn4bit: true, bnb4bitQuantType: "nf4", bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: "float32" });
    expect(nf4.quantizationMethod()).toBe("nf4");
    const int8 = BitsAndBytesConfig.fromDict(loadConfig(repoFixture("tiny-llama-bnb-int8")).quantizationConfig);
    expect(int8).toMatchObject({ loadIn8bit: true, llmInt8Threshold: 6, llmInt8HasFp16Weight: false });
    expect(int8.quantizationMethod()).toBe("llm_int8");
  });
});

describe("BitsAndBytesConfig validation", () => {
  it("constructor errors are ArgumentErrors naming the camelCase field", () => {
    expect(() => new BitsAndBytesConfig({ loadIn4bit: true, loadIn8bit: true })).toThrowError(ArgumentError);
    expect(() => new BitsAndBytesConfig({ loadIn4bit: "yes" as never })).toThrowErrorMatchingInlineSnapshot(`[ArgumentError: Expected a boolean for loadIn4bit but received "yes" (string)]`);
    expect(() => new BitsAndBytesConfig({ bnb4bitQuantType: "int4" as never })).toThrowErrorMatchingInlineSnapshot(`[ArgumentError: Expected "fp4" or "nf4" for bnb4bitQuantType but received "int4" (string)]`);
    expect(() => new BitsAndBytesConfig({ bnb4bitComputeDtype: "float64" })).toThrow(/one of float32, float16, bfloat16 \(or null for float32\) for bnb4bitComputeDtype but received "float64"/);
    expect(() => new BitsAndBytesConfig({ bnb4bitQuantStorage: "int4" as never })).toThrow(/bnb4bitQuantStorage/);
    expect(() => new BitsAndBytesConfig({ llmInt8Threshold: Number.NaN })).toThrow(/finite number ≥ 0 for llmInt8Threshold/);
    expect(() => new BitsAndBytesConfig({ llmInt8SkipModules: "lm_head" as never })).toThrow(/list of module names or null for llmInt8SkipModules/);
    expect(() => new BitsAndBytesConfig({ load_in_4bit: true } as never)).toThrow(/received the name "load_in_4bit"/);
  });

  it("accepts torch aliases for the compute dtype and normalizes them", () => {
    expect(new BitsAndBytesConfig({ bnb4bitComputeDtype: "torch.bfloat16" }).bnb4bitComputeDtype).toBe("bfloat16");
    expect(new BitsAndBytesConfig({ bnb4bitComputeDtype: "half" }).toDict()["bnb_4bit_compute_dtype"]).toBe("float16");
  });

  it("fromDict errors are ConfigErrors naming the file and snake_case key", () => {
    expect(() => BitsAndBytesConfig.fromDict({ quant_method: "gptq", bits: 4 }, "m/config.json")).toThrowErrorMatchingInlineSnapshot(
      `[ConfigError: m/config.json, quantization_config.quant_method: expected quant_method "bitsandbytes" but received "gptq" (string) (lowbit reads bitsandbytes checkpoints only)]`,
    );
    expect(() => BitsAndBytesConfig.fromDict({ bits: 4 }, "m/config.json")).toThrow(/has no quant_method and neither load_in_4bit nor load_in_8bit is true/);
    expect(() => BitsAndBytesConfig.fromDict({ quant_method: "bitsandbytes", bnb_4bit_quant_type: 4 }, "m/config.json")).toThrowErrorMatchingInlineSnapshot(
      `[ConfigError: m/config.json, quantization_config.bnb_4bit_quant_type: expected "fp4" or "nf4" but received 4 (number)]`,
    );
    expect(() => BitsAndBytesConfig.fromDict({ quant_method: "bitsandbytes", load_in_4bit: true, _load_in_4bit: false }, "c.json")).toThrow(/_load_in_4bit \(false \(boolean\)\) disagrees/);
    expect(() => BitsAndBytesConfig.fromDict("bnb", "c.json")).toThrowError(ConfigError);
  });

  it("fromDict: legacy blocks, private keys, nulls and unknown keys", () => {
    const legacy = BitsAndBytesConfig.fromDict({ load_in_8bit: true, llm_int8_threshold: 4 });
    expect(legacy.quantizationMethod()).toBe("llm_int8");
    expect(legacy.llmInt8Threshold).toBe(4);
    const priv = BitsAndBytesConfig.fromDict({ quant_method: "bitsandbytes", _load_in_4bit: true, bnb_4bit_compute_dtype: null, some_new_key: 1 });
    expect(priv.loadIn4bit).toBe(true);
    expect(priv.bnb4bitComputeDtype).toBe("float32");
    expect(priv.unusedKeys).toEqual(["some_new_key"]);
  });
});
