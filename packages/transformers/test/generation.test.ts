// generate() on ToyCausalLM (a deterministic one-layer model): the KV cache against full recomputation, left-padded
// batches against one-by-one generation, seeds, EOS lists and padding of finished rows, stop strings, length limits,
// the repetition penalty covering the prompt, the host and device selection paths, streamers and argument errors.

import { describe, expect, test } from "vitest";
import { Generator } from "@lowbit/tensor";
import {
  AutoTokenizer,
  GenerationConfig,
  StopStringCriteria,
  ToyCausalLM,
  generate,
  generateSteps,
  generateWithStats,
  type BaseStreamer,
  type LogitsProcessor,
} from "../src/index.js";
import { repoFixture } from "./helpers.js";

const model = new ToyCausalLM({ vocabSize: 1000, seed: 3, eosTokenIds: [2] });
const prompts = [
  [1, 317, 525, 260, 859, 13, 899, 899],
  [1, 567, 662, 13],
  [1, 526, 533, 284, 499, 925],
];

/** Left-pads rows to one length with `pad`, returning ids and the attention mask. */
function leftPad(rows: number[][], pad: number): { ids: number[][]; mask: number[][] } {
  const T = Math.max(...rows.map((r) => r.length));
  return {
    ids: rows.map((r) => [...new Array<number>(T - r.length).fill(pad), ...r]),
    mask: rows.map((r) => [...new Array<number>(T - r.length).fill(0), ...r.map(() => 1)]),
  };
}

/** The prompts left-padded with 0. */
const padded = leftPad(prompts, 0);

/** A processor that changes nothing: forces the host selection path. */
const identity: LogitsProcessor = { name: "Identity", process: () => undefined };

describe("greedy decoding", () => {
  test("the static KV cache gives the same tokens as recomputing the whole sequence every step", () => {
    for (const p of prompts) {
      const cached = generate(model, p, { maxNewTokens: 12 });
      const full = generate(model, p, { maxNewTokens: 12, useCache: false });
      expect(cached).toEqual(full);
      expect(cached[0]!.slice(0, p.length)).toEqual(p);
      expect(cached[0]!.length).toBe(p.length + 12);
    }
  });

  test("a left-padded batch gives every row the tokens it gets alone", () => {
    const single = prompts.map((p) => generate(model, p, { maxNewTokens: 10 })[0]!);
    const { ids, mask } = leftPad(prompts, 0);
    const batch = generate(model, ids, { maxNewTokens: 10, attentionMask: mask });
    batch.forEach((row, b) => {
      const pad = ids[b]!.length - prompts[b]!.length;
      expect(row.slice(0, pad)).toEqual(new Array<number>(pad).fill(0));
      expect(row.slice(pad)).toEqual(single[b]);
    });
    // Without the cache too.
    expect(generate(model, ids, { maxNewTokens: 10, attentionMask: mask, useCache: false })).toEqual(batch);
  });

  test("the mask is inferred from a pad id that is not an eos id (transformers' rule)", () => {
    const padModel = new ToyCausalLM({ vocabSize: 1000, seed: 3, eosTokenIds: [2], padTokenId: 0 });
    const { ids, mask } = leftPad(prompts, 0);
    expect(generate(padModel, ids, { maxNewTokens: 6 })).toEqual(generate(padModel, ids, { maxNewTokens: 6, attentionMask: mask }));
    padModel.dispose();
  });

  test("host selection (with a processor) picks the same tokens as the device argmax", () => {
    const a = generateWithStats(model, prompts[0]!, { maxNewTokens: 10 });
    const b = generateWithStats(model, prompts[0]!, { maxNewTokens: 10, logitsProcessors: [identity] });
    expect(a.stats.selection).toBe("device-argmax");
    expect(b.stats.selection).toBe("host");
    expect(b.sequences).toEqual(a.sequences);
    expect(a.stats.newTokens).toBe(10);
    expect(a.stats.promptTokens).toBe(prompts[0]!.length);
  });

  test("a bfloat16 model and cache decode too, close to float32", () => {
    const bf = new ToyCausalLM({ vocabSize: 1000, seed: 3, eosTokenIds: [2], dtype: "bfloat16" });
    const out = generate(bf, prompts[0]!, { maxNewTokens: 8 })[0]!;
    expect(generate(bf, prompts[0]!, { maxNewTokens: 8, useCache: false })[0]).toEqual(out);
    const f32 = generate(model, prompts[0]!, { maxNewTokens: 8 })[0]!;
    expect(out.slice(0, prompts[0]!.length + 2)).toEqual(f32.slice(0, prompts[0]!.length + 2));
    bf.dispose();
  });
});

describe("length limits and stopping", () => {
  test("maxNewTokens wins over maxLength; maxLength counts the prompt", () => {
    const p = prompts[1]!;
    expect(generate(model, p, { maxLength: 10 })[0]!.length).toBe(10);
    expect(generate(model, p, { maxLength: 10, maxNewTokens: 3 })[0]!.length).toBe(p.length + 3);
    expect(generate(model, p)[0]!.length).toBe(20); // transformers' default max_length
  });

  test("any id of an eos list ends a row; finished rows are padded with the pad id", () => {
    const { ids, mask } = padded;
    const T = ids[0]!.length;
    const free = generate(model, ids, { maxNewTokens: 12, attentionMask: mask });
    // Row 0's 4th new token and row 2's 7th become eos ids.
    const eos = [free[0]![T + 3]!, free[2]![T + 6]!];
    const rows = generate(model, ids, { maxNewTokens: 12, attentionMask: mask, eosTokenId: eos, padTokenId: 7 });
    // Expected from the free run: each row keeps its tokens up to its first eos id, then pad; generation stops
    // when every row has finished.
    const ends = free.map((r) => {
      const i = r.findIndex((t, j) => j >= T && eos.includes(t));
      return i < 0 ? T + 12 : i + 1;
    });
    const length = Math.max(...ends);
    expect(ends[0]).toBeLessThanOrEqual(T + 4);
    expect(rows.map((r) => r.length)).toEqual([length, length, length]);
    rows.forEach((r, b) => {
      expect(r.slice(0, ends[b])).toEqual(free[b]!.slice(0, ends[b]));
      expect(r.slice(ends[b])).toEqual(new Array<number>(length - ends[b]!).fill(7));
    });
  });

  test("without a pad id, finished rows are padded with the first eos id", () => {
    const free = generate(model, prompts[1]!, { maxNewTokens: 8 })[0]!;
    const eos = free[prompts[1]!.length + 1]!;
    const out = generate(model, [prompts[1]!, prompts[1]!], { maxNewTokens: 8, eosTokenId: [eos, 999] });
    expect(out[0]!.length).toBe(prompts[1]!.length + 2); // every row finished: generation stops
  });

  test("stop strings end a row when the text ends with one (needs the tokenizer)", () => {
    const tok = AutoTokenizer.fromPretrained(repoFixture("tiny-llama"));
    const p = prompts[0]!;
    const free = generate(model, p, { maxNewTokens: 16 })[0]!;
    const newText = tok.decode(free.slice(p.length));
    const promptText = tok.decode(p);
    // A stop string taken from the middle of the generated text, absent from the prompt.
    const candidates = [...new Set(newText.slice(2).match(/\S{2,4}/g) ?? [])].filter((w) => !promptText.includes(w));
    expect(candidates.length).toBeGreaterThan(0);
    const stop = candidates[0]!;
    const out = generate(model, p, { maxNewTokens: 16, stopStrings: [stop], tokenizer: tok })[0]!;
    expect(out).toEqual(free.slice(0, out.length));
    expect(tok.decode(out)).toContain(stop);
    expect(tok.decode(out.slice(0, -1))).not.toContain(stop);
    // The same end as the criterion itself reports.
    const crit = new StopStringCriteria(tok, [stop]);
    const firstDone = free.findIndex((_, n) => n >= p.length && crit.isDone([free.slice(0, n + 1)])[0]);
    expect(out.length).toBe(firstDone + 1);
    expect(() => generate(model, p, { maxNewTokens: 4, stopStrings: ["x"] })).toThrowError(/tokenizer/);
  });

  test("custom stopping criteria and maxTime", () => {
    const out = generate(model, prompts[0]!, { maxNewTokens: 10, stoppingCriteria: [{ name: "Three", isDone: (s) => s.map((r) => r.length >= prompts[0]!.length + 3) }] });
    expect(out[0]!.length).toBe(prompts[0]!.length + 3);
    expect(generate(model, prompts[0]!, { maxNewTokens: 10, maxTime: 0 })[0]!.length).toBe(prompts[0]!.length + 1);
  });
});

describe("logits processing", () => {
  test("the repetition penalty covers the prompt as well as the new tokens", () => {
    const seen: number[][] = [];
    const spy: LogitsProcessor = { name: "Spy", process: (ids) => void seen.push([...ids]) };
    const p = prompts[0]!;
    const out = generate(model, p, { maxNewTokens: 6, repetitionPenalty: 1000, logitsProcessors: [spy] })[0]!;
    expect(seen[0]).toEqual(p); // processors see the prompt
    const fresh = out.slice(p.length);
    expect(new Set(fresh).size).toBe(fresh.length);
    expect(fresh.some((t) => p.includes(t))).toBe(false);
  });

  test("noRepeatNgramSize and suppressTokens shape greedy output", () => {
    const out = generate(model, prompts[1]!, { maxNewTokens: 20, noRepeatNgramSize: 2 })[0]!;
    const bigrams = out.slice(0, -1).map((t, i) => `${t},${out[i + 1]}`);
    expect(new Set(bigrams).size).toBe(bigrams.length);
    const free = generate(model, prompts[1]!, { maxNewTokens: 6 })[0]!.slice(prompts[1]!.length);
    const suppressed = generate(model, prompts[1]!, { maxNewTokens: 6, suppressTokens: free })[0]!.slice(prompts[1]!.length);
    expect(suppressed.some((t) => free.includes(t))).toBe(false);
  });
});

describe("sampling", () => {
  const opts = { maxNewTokens: 16, doSample: true, temperature: 1.5, topK: 0 } as const;

  test("the same seed gives the same tokens; other seeds give others", () => {
    const a = generate(model, padded.ids, { ...opts, attentionMask: padded.mask, seed: 42 });
    const b = generate(model, padded.ids, { ...opts, attentionMask: padded.mask, seed: 42 });
    const c = generate(model, padded.ids, { ...opts, attentionMask: padded.mask, seed: 43 });
    expect(a).toEqual(b);
    expect(c).not.toEqual(a);
  });

  test("a generator continues its stream across calls; resetting it replays", () => {
    const gen = new Generator(5);
    const first = generate(model, prompts[2]!, { ...opts, generator: gen });
    const second = generate(model, prompts[2]!, { ...opts, generator: gen });
    expect(second).not.toEqual(first);
    gen.manualSeed(5);
    expect(generate(model, prompts[2]!, { ...opts, generator: gen })).toEqual(first);
  });

  test("top-k 1 sampling is greedy; topP / minP only keep likely tokens", () => {
    const greedy = generate(model, prompts[0]!, { maxNewTokens: 8 });
    expect(generate(model, prompts[0]!, { maxNewTokens: 8, doSample: true, topK: 1, seed: 9 })).toEqual(greedy);
    expect(generate(model, prompts[0]!, { maxNewTokens: 8, doSample: true, topP: 1e-9, topK: 0, seed: 9 })).toEqual(greedy);
    expect(generate(model, prompts[0]!, { maxNewTokens: 8, doSample: true, minP: 1, topK: 0, seed: 9 })).toEqual(greedy);
  });

  test("numReturnSequences draws several sequences per prompt", () => {
    const out = generate(model, prompts[1]!, { ...opts, numReturnSequences: 3, seed: 1 });
    expect(out.length).toBe(3);
    expect(new Set(out.map((r) => r.join(","))).size).toBe(3);
    expect(() => generate(model, prompts[1]!, { maxNewTokens: 4, numReturnSequences: 2 })).toThrowError(/numReturnSequences/);
  });
});

describe("streamers, steps and the model's generation config", () => {
  test("a streamer receives the prompt, then each token, then the end", () => {
    const calls: string[] = [];
    const streamer: BaseStreamer = { put: (ids) => void calls.push(JSON.stringify(ids)), end: () => void calls.push("end") };
    const out = generate(model, prompts[1]!, { maxNewTokens: 3, streamer })[0]!;
    expect(calls).toEqual([JSON.stringify([prompts[1]]), ...out.slice(prompts[1]!.length).map((t) => JSON.stringify([[t]])), "end"]);
  });

  test("generateSteps yields one step per token and stops early when asked", () => {
    const it = generateSteps(model, padded.ids, { maxNewTokens: 5, attentionMask: padded.mask });
    const first = it.next();
    expect(first.done).toBe(false);
    if (!first.done) {
      expect(first.value.step).toBe(1);
      expect(first.value.tokens.length).toBe(3);
    }
    expect(it.return(undefined as never).done).toBe(true);
  });

  test("options override the model's generation config; a config can replace it", () => {
    const cfg = GenerationConfig.create({ maxNewTokens: 2, eosTokenId: 2 });
    expect(generate(model, prompts[1]!, { generationConfig: cfg })[0]!.length).toBe(prompts[1]!.length + 2);
    expect(generate(model, prompts[1]!, { generationConfig: cfg, maxNewTokens: 5 })[0]!.length).toBe(prompts[1]!.length + 5);
  });
});

describe("argument errors", () => {
  test("bad ids, masks and parameters name what is wrong", () => {
    expect(() => generate(model, [1, 1000])).toThrowError(/inputIds\[0\]\[1\]/);
    expect(() => generate(model, [[1, 2], [3]])).toThrowError(/same length/);
    expect(() => generate(model, [])).toThrowError(/inputIds/);
    expect(() => generate(model, [[1, 2]], { attentionMask: [[1, 2]] })).toThrowError(/attentionMask\[0\]\[1\]/);
    expect(() => generate(model, [1, 2, 3], { maxLength: 3 })).toThrowError(/maxLength is set to 3/);
    expect(() => generate(model, [1, 2], { numBeams: 2 })).toThrowError(/numBeams/);
    expect(() => generate(model, [1, 2], { topKK: 3 } as never)).toThrowError(/topKK/);
    expect(() => generate(model, [1, 2], { doSample: true, temperature: 0 })).toThrowError(/temperature/);
    expect(() => generate(model, [1, 2], { seed: 1.5 })).toThrowError(/seed/);
    expect(() => generate({} as never, [1, 2])).toThrowError(/model/);
  });
});

