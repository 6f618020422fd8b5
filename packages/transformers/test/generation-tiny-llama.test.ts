// generate() / generateStream() on the real tiny-llama checkpoint (fixtures/tiny-llama, loaded by
// AutoModelForCausalLM): greedy ids and text from the fixture's float64 reference for every prompt (24 new tokens,
// with the KV cache), the same through a left-padded batch, transformers 5.17's float32 generate() with logits
// processors and stop strings (test/fixtures/tiny-llama-generate-reference.json), and TextStreamer pieces.

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  AutoModelForCausalLM,
  AutoTokenizer,
  generate,
  generateStream,
  type CausalLM,
  type DecoderKVCache,
  type PreTrainedCausalLM,
  type PreTrainedTokenizer,
} from "../src/index.js";
import { localFixture, readJson, repoFixture } from "./helpers.js";

interface Expected {
  prompts: string[];
  input_ids: number[][];
  greedy_ids: number[][];
  greedy_text: string[];
  batch_input_ids: number[][];
  batch_attention_mask: number[][];
}

interface GenerateReference {
  cases: { params: Record<string, unknown>; prompt: number; sequence: number[] }[];
  batch: { input_ids: number[][]; attention_mask: number[][]; max_new_tokens: number; sequences: number[][] };
  streams: { prompt: number; calls: [string, boolean][] }[];
}

const dir = repoFixture("tiny-llama");
const expected = readJson<Expected>(`${dir}/expected.json`);
const reference = readJson<GenerateReference>(localFixture("tiny-llama-generate-reference.json"));
let model: PreTrainedCausalLM;
let tok: PreTrainedTokenizer;

beforeAll(async () => {
  model = await AutoModelForCausalLM.fromPretrained(dir, { dtype: "float32" });
  tok = AutoTokenizer.fromPretrained(dir);
});
afterAll(() => model.dispose());

describe("tiny-llama greedy decoding", () => {
  test("the loader's model is a CausalLM for generate()", () => {
    const m: CausalLM<DecoderKVCache> = model;
    expect(m.config.vocabSize).toBe(1000);
    expect(m.generationConfig?.eosTokenIds).toEqual([2]);
  });

  test.each(expected.prompts.map((p, i) => [JSON.stringify(p), i] as const))("%s: greedy_ids and greedy_text (24 new tokens, KV cache)", (_p, i) => {
    const ids = expected.input_ids[i]!;
    expect(tok.encode(expected.prompts[i]!).inputIds[0]).toEqual(ids);
    const [out] = generate(model, ids, { maxNewTokens: 24 });
    expect(out!.slice(ids.length)).toEqual(expected.greedy_ids[i]);
    expect(tok.decode(out!, { skipSpecialTokens: true })).toBe(expected.greedy_text[i]);
  });

  test("without the cache the tokens are the same", () => {
    const ids = expected.input_ids[0]!;
    expect(generate(model, ids, { maxNewTokens: 8, useCache: false })[0]!.slice(ids.length)).toEqual(expected.greedy_ids[0]!.slice(0, 8));
  });

  test("a left-padded batch reproduces transformers' batch and the one-by-one ids", () => {
    const { input_ids, attention_mask, sequences } = reference.batch;
    const out = generate(model, input_ids, { attentionMask: attention_mask, maxNewTokens: 24 });
    expect(out).toEqual(sequences);
    out.forEach((row, b) => expect(row.slice(input_ids[0]!.length)).toEqual(expected.greedy_ids[b]));
    // The tokenizer pads on the left with pad = eos for this tokenizer family, giving the same batch.
    const enc = tok.encode(expected.prompts.slice(0, 3), { padding: true });
    expect(enc.inputIds).toEqual(expected.batch_input_ids);
    expect(enc.attentionMask).toEqual(expected.batch_attention_mask);
  });
});

describe("tiny-llama against transformers' generate() (float32)", () => {
  test.each(reference.cases.map((c) => [JSON.stringify(c.params), c.prompt, c] as const))("%s, prompt %i", (_p, i, c) => {
    const ids = expected.input_ids[i]!;
    const out = generate(model, ids, { ...c.params, tokenizer: tok });
    expect(out[0]).toEqual(c.sequence);
  });

  test.each(reference.streams.map((s) => [s.prompt, s] as const))("TextStreamer pieces of prompt %i", async (i, s) => {
    const stream = generateStream(model, expected.input_ids[i]!, { tokenizer: tok, skipPrompt: true, skipSpecialTokens: true, maxNewTokens: 24 });
    const pieces: string[] = [];
    for await (const p of stream) pieces.push(p);
    expect(pieces).toEqual(s.calls.map(([t]) => t).filter((t) => t.length > 0));
    expect(stream.stats.newTokens).toBe(24);
  });
});
