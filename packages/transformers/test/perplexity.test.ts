// perplexity() on ToyCausalLM: the HF guide's sliding-window arithmetic recomputed by hand from per-window
// log-probabilities, bfloat16 ≈ float32, the tokenizer path and the option checks.

import { describe, expect, test } from "vitest";
import { fromTypedArray, noGrad, tidy } from "@lowbit/tensor";
import { AutoTokenizer, ToyCausalLM, perplexity, perplexityOfIds } from "../src/index.js";
import { localFixture, readJson, repoFixture } from "./helpers.js";

const model = new ToyCausalLM({ vocabSize: 1000, seed: 11, maxPositionEmbeddings: 64 });
const ref = readJson<{ text: string; input_ids: number[] }>(localFixture("perplexity-reference.json"));
const ids = ref.input_ids.slice(0, 90);

/** log p(window[i + 1] | window[..i]) for every i, from one forward pass, softmax in float64 on the host. */
function windowLogProbs(window: number[]): number[] {
  const logits = tidy(() =>
    noGrad(() => {
      const x = fromTypedArray(Int32Array.from(window), [1, window.length], { dtype: "int32" });
      return Array.from(model.forward({ inputIds: x }).logits.toTypedArray() as Float32Array);
    }),
  );
  const V = 1000;
  const out: number[] = [];
  for (let i = 0; i + 1 < window.length; i++) {
    const row = logits.slice(i * V, (i + 1) * V);
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
    out.push(row[window[i + 1]!]! - lse);
  }
  return out;
}

/** The guide's loop, written out: window mean loss over its scored labels, weighted by (valid labels − 1). */
function guide(seq: number[], maxLength: number, stride: number): { ppl: number; n: number; windows: number } {
  let nll = 0;
  let n = 0;
  let prevEnd = 0;
  let windows = 0;
  for (let begin = 0; begin < seq.length; begin += stride) {
    const end = Math.min(begin + maxLength, seq.length);
    const trg = end - prevEnd;
    const window = seq.slice(begin, end);
    const lp = windowLogProbs(window);
    // Labels at positions ≥ L − trg are scored; prediction i scores label i + 1.
    const scored = lp.filter((_, i) => i + 1 >= window.length - trg);
    const loss = -scored.reduce((a, b) => a + b, 0) / scored.length;
    const valid = Math.min(trg, window.length);
    nll += loss * (valid - 1);
    n += valid - 1;
    windows++;
    prevEnd = end;
    if (end === seq.length) break;
  }
  return { ppl: Math.exp(nll / n), n, windows };
}

describe("perplexity", () => {
  test.each([
    [64, 64],
    [32, 16],
    [40, 7],
    [90, 90],
    [20, 20],
  ])("maxLength %i, stride %i: the guide's sliding-window value", (maxLength, stride) => {
    const got = perplexityOfIds(model, ids, { maxLength, stride });
    const want = guide(ids, maxLength, stride);
    expect(got.scoredTokens).toBe(want.n);
    expect(got.windows).toBe(want.windows);
    expect(Math.abs(got.perplexity - want.ppl) / want.ppl).toBeLessThan(1e-5);
    expect(got.meanNll).toBeCloseTo(Math.log(got.perplexity), 12);
  });

  test("one window over the whole text is exp(mean token NLL)", () => {
    const lp = windowLogProbs(ids);
    const want = Math.exp(-lp.reduce((a, b) => a + b, 0) / lp.length);
    const got = perplexityOfIds(model, ids, { maxLength: ids.length });
    expect(got.scoredTokens).toBe(ids.length - 1);
    expect(Math.abs(got.perplexity - want) / want).toBeLessThan(1e-5);
  });

  test("bfloat16 weights give nearly the float32 perplexity", () => {
    const bf = new ToyCausalLM({ vocabSize: 1000, seed: 11, maxPositionEmbeddings: 64, dtype: "bfloat16" });
    const a = perplexityOfIds(model, ids, { maxLength: 32, stride: 16 }).perplexity;
    const b = perplexityOfIds(bf, ids, { maxLength: 32, stride: 16 }).perplexity;
    expect(Number.isFinite(b)).toBe(true);
    expect(Math.abs(a - b) / a).toBeLessThan(0.02);
    bf.dispose();
  });

  test("text goes through the tokenizer with its special tokens; progress is reported", () => {
    const tok = AutoTokenizer.fromPretrained(repoFixture("tiny-llama"));
    const progress: number[] = [];
    const r = perplexity(model, tok, ref.text, { maxLength: 64, stride: 32, onProgress: (done) => progress.push(done) });
    expect(r.textTokens).toBe(ref.input_ids.length);
    expect(r).toEqual({ ...perplexityOfIds(model, ref.input_ids, { maxLength: 64, stride: 32 }), textTokens: ref.input_ids.length });
    expect(progress[progress.length - 1]).toBe(ref.input_ids.length);
    // Defaults: maxLength = maxPositionEmbeddings (64), stride = maxLength.
    expect(perplexity(model, tok, ref.text).windows).toBe(Math.ceil((ref.input_ids.length - 64) / 64) + 1);
  });

  test("bad options and texts", () => {
    expect(() => perplexityOfIds(model, ids, { stride: 0 })).toThrowError(/stride/);
    expect(() => perplexityOfIds(model, ids, { maxLength: 8, stride: 9 })).toThrowError(/stride ≤ maxLength/);
    expect(() => perplexityOfIds(model, ids, { maxLength: 1 })).toThrowError(/maxLength/);
    expect(() => perplexityOfIds(model, [5], {})).toThrowError(/at least 2 tokens/);
    expect(() => perplexityOfIds(model, [5, 1000], {})).toThrowError(/ids\[1\]/);
    expect(() => perplexity(model, null as never, "x")).toThrowError(/tokenizer/);
  });
});
