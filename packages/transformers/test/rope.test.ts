// Tests for RoPE parameters against transformers 5.17's rotary module (test/fixtures/rope-reference.json, made by
// tooling/scripts/gen-transformers-fixtures.py): inv_freq bit for bit, the attention scaling, and the dynamic-NTK
// recompute sequence. torch's own float32 pow differs between its CPU paths in the last bit of a few results
// (glibc powf on the baseline kernels, SLEEF powf on AVX2), so each element must equal what one of them gives.

import { describe, expect, it } from "vitest";
import { computeRopeParameters, DynamicRope, dynamicInvFreq, parseConfig } from "../src/index.js";
import { f32Bits, localFixture, readJson } from "./helpers.js";

interface RopeCase {
  config: Record<string, unknown>;
  rope_parameters: Record<string, unknown>;
  head_dim: number;
  inv_freq_bits: number[];
  inv_freq_bits_avx2: number[];
  attention_scaling: number;
  dynamic_steps?: { seq_len: number; inv_freq_bits: number[]; inv_freq_bits_avx2: number[] }[];
}

/** Indices where `got` matches neither torch CPU path (must be none). */
function mismatches(got: Float32Array, baseline: number[], avx2: number[]): { index: number; got: number; baseline: number; avx2: number }[] {
  expect(got.length).toBe(baseline.length);
  return f32Bits(got)
    .map((g, i) => ({ index: i, got: g, baseline: baseline[i] as number, avx2: avx2[i] as number }))
    .filter((m) => m.got !== m.baseline && m.got !== m.avx2);
}
const REF = readJson<{ cases: Record<string, RopeCase> }>(localFixture("rope-reference.json")).cases;

describe("computeRopeParameters reproduces transformers bit for bit", () => {
  for (const [name, c] of Object.entries(REF)) {
    it(name, () => {
      const config = parseConfig(structuredClone(c.config), `${name}.json`);
      expect(config.headDim).toBe(c.head_dim);
      expect(config.ropeParametersDict).toEqual(c.rope_parameters);
      const r = computeRopeParameters(config);
      expect(r.invFreq.length).toBe(c.inv_freq_bits.length);
      expect(r.rotaryDim).toBe(2 * c.inv_freq_bits.length);
      expect(mismatches(r.invFreq, c.inv_freq_bits, c.inv_freq_bits_avx2)).toEqual([]);
      expect(r.attentionScaling).toBe(c.attention_scaling);
    });
  }
});

describe("dynamic NTK", () => {
  for (const [name, c] of Object.entries(REF).filter(([, c]) => c.dynamic_steps !== undefined)) {
    it(`${name}: DynamicRope follows transformers' grow / keep / reset sequence`, () => {
      const config = parseConfig(structuredClone(c.config));
      const rope = new DynamicRope(config);
      expect(mismatches(rope.current, c.inv_freq_bits, c.inv_freq_bits_avx2)).toEqual([]);
      for (const step of c.dynamic_steps ?? []) {
        expect({ seqLen: step.seq_len, mismatches: mismatches(rope.update(step.seq_len), step.inv_freq_bits, step.inv_freq_bits_avx2) }).toEqual({
          seqLen: step.seq_len,
          mismatches: [],
        });
      }
    });

    it(`${name}: dynamicInvFreq(seqLen) is the recompute for a sequence that grows to seqLen`, () => {
      const config = parseConfig(structuredClone(c.config));
      const steps = c.dynamic_steps ?? [];
      // The first growth step past max_position_embeddings in the sequence is a fresh recompute.
      const grow = steps.find((s) => s.seq_len > config.maxPositionEmbeddings);
      expect(grow).toBeDefined();
      expect(mismatches(dynamicInvFreq(config, grow?.seq_len ?? 0), grow?.inv_freq_bits ?? [], grow?.inv_freq_bits_avx2 ?? [])).toEqual([]);
      // Within max_position_embeddings the dynamic frequencies equal the original ones.
      expect(f32Bits(dynamicInvFreq(config, 10))).toEqual(f32Bits(computeRopeParameters(config).invFreq));
    });
  }
});

describe("rope argument errors", () => {
  it("rejects calls that do not fit the rope type", () => {
    const llama = parseConfig({ model_type: "llama" });
    expect(() => dynamicInvFreq(llama, 100)).toThrowErrorMatchingInlineSnapshot(`[ArgumentError: Expected a config with rope_type "dynamic" for dynamicInvFreq but received "default" (string)]`);
    expect(() => new DynamicRope(llama)).toThrow(/rope_type "dynamic" for DynamicRope/);
    const dyn = parseConfig({ model_type: "llama", rope_scaling: { type: "dynamic", factor: 2 } });
    expect(() => dynamicInvFreq(dyn, 0)).toThrowErrorMatchingInlineSnapshot(`[ArgumentError: Expected a positive integer for seqLen but received 0 (number)]`);
    expect(() => new DynamicRope(dyn).update(1.5)).toThrow(/positive integer for seqLen/);
    expect(() => computeRopeParameters({ headDim: 0, maxPositionEmbeddings: 10, ropeParameters: llama.ropeParameters })).toThrow(/positive integer for config\.headDim/);
  });
});
