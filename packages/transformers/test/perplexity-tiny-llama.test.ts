// perplexity() / comparePerplexity() on the real tiny-llama checkpoint: the HF guide's values from transformers 5.17
// (test/fixtures/perplexity-reference.json, float32 model) for several windows, and one footprint + perplexity row per
// load mode, with bfloat16 ≈ float32 and the footprints transformers reports (fixtures/tiny-llama/expected.json).

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AutoModelForCausalLM, AutoTokenizer, comparePerplexity, formatPerplexityTable, perplexity, type PreTrainedCausalLM } from "../src/index.js";
import { localFixture, readJson, repoFixture } from "./helpers.js";

interface PplReference {
  text: string;
  input_ids: number[];
  cases: { dtype: string; max_length: number; stride: number; perplexity: number; scored_tokens: number }[];
}

const dir = repoFixture("tiny-llama");
const reference = readJson<PplReference>(localFixture("perplexity-reference.json"));
const footprints = readJson<Record<string, number>>(`${dir}/expected.json`);
let model: PreTrainedCausalLM;

beforeAll(async () => {
  model = await AutoModelForCausalLM.fromPretrained(dir, { dtype: "float32" });
});
afterAll(() => model.dispose());

describe("tiny-llama perplexity", () => {
  test.each(reference.cases.filter((c) => c.dtype === "float32").map((c) => [c.max_length, c.stride, c] as const))(
    "maxLength %i, stride %i matches transformers",
    (maxLength, stride, c) => {
      const tok = AutoTokenizer.fromPretrained(dir);
      const r = perplexity(model, tok, reference.text, { maxLength, stride });
      expect(r.textTokens).toBe(reference.input_ids.length);
      expect(r.scoredTokens).toBe(c.scored_tokens);
      expect(Math.abs(r.perplexity - c.perplexity) / c.perplexity).toBeLessThan(1e-4);
    },
  );

  test("comparePerplexity: one row per mode, bf16 ≈ fp32, quantized modes close, transformers' footprints", async () => {
    const events: string[] = [];
    const rows = await comparePerplexity(dir, reference.text, {
      modes: ["fp32", "bf16", "nf4", "fp4", "int8"],
      maxLength: 64,
      stride: 32,
      onProgress: (e) => events.push(`${e.mode}:${e.stage}`),
    });
    const by = Object.fromEntries(rows.map((r) => [r.mode, r]));
    expect(rows.map((r) => r.mode)).toEqual(["fp32", "bf16", "nf4", "fp4", "int8"]);
    const fp32 = by["fp32"]!;
    const want = reference.cases.find((c) => c.dtype === "float32" && c.max_length === 64 && c.stride === 32)!;
    expect(Math.abs(fp32.perplexity - want.perplexity) / want.perplexity).toBeLessThan(1e-4);
    expect(Math.abs(by["bf16"]!.perplexity - fp32.perplexity) / fp32.perplexity).toBeLessThan(0.01);
    for (const m of ["nf4", "fp4", "int8"]) {
      expect(Number.isFinite(by[m]!.perplexity)).toBe(true);
      expect(Math.abs(by[m]!.perplexity - fp32.perplexity) / fp32.perplexity).toBeLessThan(0.25);
    }
    // fp32 / bf16: half / a quarter of the float64 footprint, give or take the float32 rotary buffer.
    expect(Math.abs(fp32.footprintBytes - footprints["footprint_fp64"]! / 2)).toBeLessThanOrEqual(128);
    expect(Math.abs(by["bf16"]!.footprintBytes - footprints["footprint_fp64"]! / 4)).toBeLessThanOrEqual(128);
    expect(by["nf4"]!.footprintBytes).toBe(footprints["footprint_nf4"]);
    expect(by["fp4"]!.footprintBytes).toBe(footprints["footprint_fp4"]);
    // The fixture's int8 model kept float16 activations and unquantized weights (LLM.int8's usual setting).
    const [int8fp16] = await comparePerplexity(dir, reference.text, { modes: ["int8"], quantizedBaseDtype: "float16", maxLength: 64, stride: 32 });
    expect(int8fp16!.footprintBytes).toBe(footprints["footprint_int8"]);
    expect(Math.abs(int8fp16!.perplexity - fp32.perplexity) / fp32.perplexity).toBeLessThan(0.25);
    expect(by["int8"]!.footprintBytes).toBeGreaterThan(int8fp16!.footprintBytes);
    expect(events).toContain("nf4:load");
    expect(events).toContain("int8:eval");
    const table = formatPerplexityTable(rows).split("\n");
    expect(table.length).toBe(2 + rows.length);
    expect(table[0]).toMatch(/^mode\s+format\s+footprint/);
    expect(table[4]).toMatch(/^nf4 /);
  });

  test("comparePerplexity checks its modes", async () => {
    await expect(comparePerplexity(dir, "x", { modes: ["q2" as never] })).rejects.toThrowError(/modes/);
  });
});
