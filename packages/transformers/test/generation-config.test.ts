// Tests for GenerationConfig against transformers 5.17 (test/fixtures/generation-reference.json): loading
// generation_config.json, the config.json fallback, global defaults, overrides, and validation errors.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ArgumentError } from "@lowbit/dtypes";
import { ConfigError, GENERATION_DEFAULTS, GENERATION_PARAM_NAMES, GenerationConfig } from "../src/index.js";
import { localFixture, readJson, repoFixture, withTempDir } from "./helpers.js";

interface GenRef {
  global_defaults: Record<string, unknown>;
  cases: Record<string, { files: Record<string, unknown>; expected: Record<string, unknown> }>;
}
const REF = readJson<GenRef>(localFixture("generation-reference.json"));
const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

describe("GenerationConfig.fromPretrained matches transformers", () => {
  for (const [name, c] of Object.entries(REF.cases)) {
    it(name, () => {
      withTempDir((dir) => {
        for (const [f, content] of Object.entries(c.files)) writeFileSync(join(dir, f), JSON.stringify(content));
        const g = GenerationConfig.fromPretrained(dir);
        const genFile = c.files["generation_config.json"] as Record<string, unknown> | undefined;
        expect(g.fromModelConfig).toBe(genFile === undefined || genFile["_from_model_config"] === true);
        for (const k of GENERATION_PARAM_NAMES) {
          const key = snake(k);
          if (!(key in c.expected)) continue;
          expect({ key, value: g.params[k] }).toEqual({ key, value: c.expected[key] ?? null });
        }
      });
    });
  }

  it("has transformers' global defaults for every typed field", () => {
    for (const k of GENERATION_PARAM_NAMES) {
      const key = snake(k);
      if (key in REF.global_defaults) expect({ key, value: GENERATION_DEFAULTS[k] ?? null }).toEqual({ key, value: REF.global_defaults[key] });
    }
  });
});

describe("GenerationConfig behaviour", () => {
  it("tiny-llama: generation_config.json, resolved with defaults", () => {
    const g = GenerationConfig.fromPretrained(repoFixture("tiny-llama"));
    expect(g.fromModelConfig).toBe(true); // the file itself says `_from_model_config: true`
    expect(g.extra).toMatchObject({ transformers_version: "5.17.0", output_attentions: false });
    const r = g.resolve();
    expect(r).toMatchObject({ maxLength: 20, doSample: false, topK: 50, topP: 1, temperature: 1, repetitionPenalty: 1, numBeams: 1, eosTokenIds: [2], padTokenId: null });
    expect(g.resolvePadTokenId()).toEqual({ id: 2, fromEos: true });
  });

  it("max_new_tokens wins over max_length", () => {
    const g = GenerationConfig.create({ maxLength: 50 });
    expect(g.maxLengthFor(7)).toBe(50);
    expect(g.update({ maxNewTokens: 10 }).maxLengthFor(7)).toBe(17);
    expect(GenerationConfig.create().maxLengthFor(3)).toBe(20);
  });

  it("overrides win, the original stays unchanged, toDict round-trips", () => {
    const g = GenerationConfig.fromDict({ eos_token_id: [2, 5], temperature: 0.7, do_sample: true, custom_key: "x" });
    const u = g.update({ temperature: 0.2, topK: 5, eosTokenId: 9 });
    expect(u.params).toMatchObject({ temperature: 0.2, topK: 5, doSample: true, eosTokenId: 9 });
    expect(g.params.temperature).toBe(0.7);
    expect(g.eosTokenIds).toEqual([2, 5]);
    expect(u.toDict()).toEqual({ do_sample: true, temperature: 0.2, top_k: 5, eos_token_id: 9, custom_key: "x" });
    expect(GenerationConfig.fromDict(u.toDict()).params).toEqual(u.params);
    expect(g.update({ temperature: null }).params.temperature).toBeNull();
  });

  it("rejects bad files and bad overrides with typed errors naming the field", () => {
    expect(() => GenerationConfig.fromDict({ top_k: 2.5 }, "g.json")).toThrowError(ConfigError);
    expect(() => GenerationConfig.fromDict({ top_k: 2.5 }, "g.json")).toThrowErrorMatchingInlineSnapshot(`[ConfigError: g.json, top_k: expected a non-negative integer but received 2.5 (number)]`);
    expect(() => GenerationConfig.fromDict({ eos_token_id: "2" }, "g.json")).toThrow(/eos_token_id: expected a token id or a list of token ids but received "2"/);
    expect(() => GenerationConfig.fromDict({ max_new_tokens: 0 }, "g.json")).toThrow(/max_new_tokens: expected a positive integer but received 0/);
    expect(() => GenerationConfig.fromDict([], "g.json")).toThrow(/must hold a JSON object/);
    expect(() => GenerationConfig.create({ topk: 3 } as never)).toThrowError(ArgumentError);
    expect(() => GenerationConfig.create({ topk: 3 } as never)).toThrow(/received the name "topk"/);
    expect(() => GenerationConfig.create({ doSample: "yes" as never })).toThrowErrorMatchingInlineSnapshot(`[ArgumentError: Expected a boolean for doSample but received "yes" (string)]`);
    expect(() => GenerationConfig.create({ doSample: true, temperature: 0 }).resolve()).toThrowErrorMatchingInlineSnapshot(
      `[ArgumentError: Expected a number > 0 when doSample is true (use doSample: false for greedy decoding) for temperature but received 0 (number)]`,
    );
    // Greedy decoding ignores sampling parameters, as transformers does (it only warns).
    expect(GenerationConfig.create({ doSample: false, temperature: 0 }).resolve().temperature).toBe(0);
    expect(() => GenerationConfig.create({ doSample: true, topP: 1.5 }).resolve()).toThrow(/topP/);
    expect(() => GenerationConfig.create({ repetitionPenalty: 0 }).resolve()).toThrow(/repetitionPenalty/);
    expect(() => GenerationConfig.create().maxLengthFor(-1)).toThrow(/inputLength/);
    withTempDir((dir) => {
      expect(() => GenerationConfig.fromPretrained(dir)).toThrow(/config\.json: cannot be read/);
    });
  });
});
