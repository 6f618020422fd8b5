// Logits processors: hand-computed expectations for each one, bit-level parity with transformers 5.17's classes on
// fixed float32 scores (test/fixtures/logits-process-reference.json, from tooling/scripts/gen-generation-fixtures.py),
// and the order generate() builds them in.

import { describe, expect, test } from "vitest";
import {
  EpsilonLogitsWarper,
  EtaLogitsWarper,
  ForcedBOSTokenLogitsProcessor,
  ForcedEOSTokenLogitsProcessor,
  GenerationConfig,
  InfNanRemoveLogitsProcessor,
  LogitNormalization,
  LogitsProcessorList,
  MinLengthLogitsProcessor,
  MinNewTokensLengthLogitsProcessor,
  MinPLogitsWarper,
  NoBadWordsLogitsProcessor,
  NoRepeatNGramLogitsProcessor,
  RepetitionPenaltyLogitsProcessor,
  SuppressTokensAtBeginLogitsProcessor,
  SuppressTokensLogitsProcessor,
  TemperatureLogitsWarper,
  TopKLogitsWarper,
  TopPLogitsWarper,
  TypicalLogitsWarper,
  buildLogitsProcessors,
  type GenerationParams,
  type LogitsProcessor,
} from "../src/index.js";
import { localFixture, readJson } from "./helpers.js";

const NEG = -Infinity;

function run(p: LogitsProcessor, ids: number[], scores: number[]): number[] {
  const row = Float32Array.from(scores);
  p.process(ids, row);
  return Array.from(row);
}

describe("each processor against hand-computed values", () => {
  test("temperature divides in float32", () => {
    expect(run(new TemperatureLogitsWarper(2), [], [2, -4, 1])).toEqual([1, -2, 0.5]);
    expect(run(new TemperatureLogitsWarper(0.5), [], [1.5, -3])).toEqual([3, -6]);
  });

  test("repetition penalty divides positive and multiplies negative scores of seen ids, once per id", () => {
    expect(run(new RepetitionPenaltyLogitsProcessor(2), [0, 1, 1, 1], [1, -1, 3, 4])).toEqual([0.5, -2, 3, 4]);
    expect(run(new RepetitionPenaltyLogitsProcessor(0.5), [2], [1, -1, 3, -4])).toEqual([1, -1, 6, -4]);
  });

  test("top-k keeps the k largest, ties with the k-th included", () => {
    expect(run(new TopKLogitsWarper(2), [], [1, 3, 2, 3])).toEqual([NEG, 3, NEG, 3]);
    expect(run(new TopKLogitsWarper(3), [], [1, 3, 2, 0])).toEqual([1, 3, 2, NEG]);
    expect(run(new TopKLogitsWarper(1, 2), [], [1, 3, 2, 0])).toEqual([NEG, 3, 2, NEG]); // min_tokens_to_keep wins
    expect(run(new TopKLogitsWarper(10), [], [1, 2])).toEqual([1, 2]);
  });

  test("top-p removes the low tail whose cumulative probability is ≤ 1 − p", () => {
    const logp = [0.5, 0.3, 0.15, 0.05].map(Math.log);
    const f = Float32Array.from(logp);
    // ascending probabilities 0.05, 0.15, 0.3, 0.5 → cumulative 0.05, 0.2, 0.5, 1: ≤ 0.25 removed.
    expect(run(new TopPLogitsWarper(0.75), [], logp)).toEqual([f[0], f[1], NEG, NEG]);
    // top_p 0 would remove everything; the last min_tokens_to_keep survive.
    expect(run(new TopPLogitsWarper(0, 2), [], logp)).toEqual([f[0], f[1], NEG, NEG]);
    expect(run(new TopPLogitsWarper(1), [], logp)).toEqual(Array.from(f));
  });

  test("min-p removes tokens below min_p × the top probability", () => {
    const logp = [0.5, 0.3, 0.15, 0.05].map(Math.log);
    const f = Float32Array.from(logp);
    expect(run(new MinPLogitsWarper(0.5), [], logp)).toEqual([f[0], f[1], NEG, NEG]); // cut at 0.25
    expect(run(new MinPLogitsWarper(1, 3), [], logp)).toEqual([f[0], f[1], f[2], NEG]); // keeps the 3 most probable
  });

  test("typical, epsilon and eta keep the tokens their definitions keep", () => {
    const logp = [0.5, 0.3, 0.15, 0.05].map(Math.log);
    const f = Float32Array.from(logp);
    expect(run(new EpsilonLogitsWarper(0.1), [], logp)).toEqual([f[0], f[1], f[2], NEG]);
    // entropy H = 1.1437 nats; eta = min(0.2, sqrt(0.2)·e^−H = 0.1426) → 0.05 goes, 0.15 stays.
    expect(run(new EtaLogitsWarper(0.2), [], logp)).toEqual([f[0], f[1], f[2], NEG]);
    // |−log p − H|: 0.45, 0.06, 0.75, 1.85 → sorted 0.3, 0.5, 0.15, 0.05 with cumulative 0.3, 0.8, …: mass 0.7
    // needs the first two; everything less typical than 0.5 goes.
    expect(run(new TypicalLogitsWarper(0.7), [], logp)).toEqual([f[0], f[1], NEG, NEG]);
  });

  test("masks: bad words, n-grams, min length, forced tokens, suppression", () => {
    const s = [0, 1, 2, 3, 4, 5];
    expect(run(new NoBadWordsLogitsProcessor([[1], [2, 3], [9, 4], [5]], [5]), [7, 2], s)).toEqual([0, NEG, 2, NEG, 4, 5]);
    expect(run(new NoRepeatNGramLogitsProcessor(2), [1, 2, 3, 1], s)).toEqual([0, 1, NEG, 3, 4, 5]);
    expect(run(new NoRepeatNGramLogitsProcessor(3), [1, 2, 3, 1, 2], s)).toEqual([0, 1, 2, NEG, 4, 5]);
    expect(run(new MinLengthLogitsProcessor(4, [5, 0]), [1, 2, 3], s)).toEqual([NEG, 1, 2, 3, 4, NEG]);
    expect(run(new MinLengthLogitsProcessor(3, [5]), [1, 2, 3], s)).toEqual(s);
    expect(run(new MinNewTokensLengthLogitsProcessor(2, 2, [5]), [1, 2, 3], s)).toEqual([0, 1, 2, 3, 4, NEG]);
    expect(run(new ForcedBOSTokenLogitsProcessor(2), [9], s)).toEqual([NEG, NEG, 0, NEG, NEG, NEG]);
    expect(run(new ForcedBOSTokenLogitsProcessor(2), [9, 9], s)).toEqual(s);
    expect(run(new ForcedEOSTokenLogitsProcessor(4, [1, 3]), [7, 7, 7], s)).toEqual([NEG, 0, NEG, 0, NEG, NEG]);
    expect(run(new SuppressTokensLogitsProcessor([0, 4, 99]), [], s)).toEqual([NEG, 1, 2, 3, NEG, 5]);
    expect(run(new SuppressTokensAtBeginLogitsProcessor([1], 2), [7, 7], s)).toEqual([0, NEG, 2, 3, 4, 5]);
    expect(run(new SuppressTokensAtBeginLogitsProcessor([1], 2), [7, 7, 7], s)).toEqual(s);
    expect(run(new InfNanRemoveLogitsProcessor(), [], [Number.NaN, Infinity, NEG, 1])).toEqual([0, 3.4028234663852886e38, -3.4028234663852886e38, 1]);
    const norm = run(new LogitNormalization(), [], [1, 2, 3]);
    expect(norm.reduce((a, b) => a + Math.exp(b), 0)).toBeCloseTo(1, 6);
  });

  test("bad arguments throw ArgumentError naming the parameter", () => {
    expect(() => new TemperatureLogitsWarper(0)).toThrowError(/temperature/);
    expect(() => new TopKLogitsWarper(0)).toThrowError(/topK/);
    expect(() => new TopPLogitsWarper(1.5)).toThrowError(/topP/);
    expect(() => new MinPLogitsWarper(-0.1)).toThrowError(/minP/);
    expect(() => new RepetitionPenaltyLogitsProcessor(-1)).toThrowError(/repetitionPenalty/);
    expect(() => new NoBadWordsLogitsProcessor([])).toThrowError(/badWordsIds/);
    expect(() => new LogitsProcessorList([]).process([[1]], new Float32Array(3), 4)).toThrowError(/batch × vocab/);
  });
});

interface ProcessorCase {
  name: string;
  args: Record<string, unknown>;
  input_ids: number[][];
  scores_bits: number[];
  out_bits: number[];
}

const reference = readJson<{ cases: ProcessorCase[]; order: Record<string, { params: Partial<GenerationParams>; names: string[] }> }>(
  localFixture("logits-process-reference.json"),
);

function make(c: ProcessorCase): LogitsProcessor {
  // The fixture's argument values, read with the type each constructor takes.
  const a = c.args as Record<string, number & number[] & number[][]>;
  switch (c.name) {
    case "RepetitionPenaltyLogitsProcessor": return new RepetitionPenaltyLogitsProcessor(a["penalty"]!);
    case "NoRepeatNGramLogitsProcessor": return new NoRepeatNGramLogitsProcessor(a["ngramSize"]!);
    case "NoBadWordsLogitsProcessor": return new NoBadWordsLogitsProcessor(a["badWordsIds"]!, a["eosTokenIds"]!);
    case "MinLengthLogitsProcessor": return new MinLengthLogitsProcessor(a["minLength"]!, a["eosTokenIds"]!);
    case "MinNewTokensLengthLogitsProcessor": return new MinNewTokensLengthLogitsProcessor(a["promptLength"]!, a["minNewTokens"]!, a["eosTokenIds"]!);
    case "ForcedBOSTokenLogitsProcessor": return new ForcedBOSTokenLogitsProcessor(a["bosTokenId"]!);
    case "ForcedEOSTokenLogitsProcessor": return new ForcedEOSTokenLogitsProcessor(a["maxLength"]!, a["eosTokenIds"]!);
    case "InfNanRemoveLogitsProcessor": return new InfNanRemoveLogitsProcessor();
    case "SuppressTokensLogitsProcessor": return new SuppressTokensLogitsProcessor(a["suppressTokens"]!);
    case "SuppressTokensAtBeginLogitsProcessor": return new SuppressTokensAtBeginLogitsProcessor(a["beginSuppressTokens"]!, a["beginIndex"]!);
    case "TemperatureLogitsWarper": return new TemperatureLogitsWarper(a["temperature"]!);
    case "TopKLogitsWarper": return new TopKLogitsWarper(a["topK"]!);
    case "TopPLogitsWarper": return new TopPLogitsWarper(a["topP"]!, a["minTokensToKeep"] ?? 1);
    case "MinPLogitsWarper": return new MinPLogitsWarper(a["minP"]!, a["minTokensToKeep"] ?? 1);
    case "TypicalLogitsWarper": return new TypicalLogitsWarper(a["mass"]!);
    case "EpsilonLogitsWarper": return new EpsilonLogitsWarper(a["epsilon"]!);
    case "EtaLogitsWarper": return new EtaLogitsWarper(a["epsilon"]!);
    case "LogitNormalization": return new LogitNormalization();
    default: throw new Error(`no such processor in the fixture: ${c.name}`);
  }
}

const f32 = (bits: number[]) => new Float32Array(Uint32Array.from(bits).buffer);

describe("parity with transformers 5.17 (float32 scores, 2 rows × 40)", () => {
  test.each(reference.cases.map((c) => [`${c.name} ${JSON.stringify(c.args)}`, c] as const))("%s", (_label, c) => {
    const p = make(c);
    const scores = f32(c.scores_bits);
    new LogitsProcessorList([p]).process(c.input_ids, scores, 40);
    const want = f32(c.out_bits);
    if (c.name === "LogitNormalization") {
      // log_softmax: float64 here, float32 in torch.
      for (let i = 0; i < want.length; i++) expect(Math.abs(scores[i]! - want[i]!)).toBeLessThan(2e-6);
    } else {
      // Every other processor either keeps a score, masks it, or applies torch's float32 arithmetic: bit-exact.
      expect(Array.from(new Uint32Array(scores.buffer))).toEqual(Array.from(new Uint32Array(want.buffer)));
    }
  });
});

describe("vocabulary-sized rows (the fast sort / selection paths)", () => {
  // A 32000-entry float32 row with many exact ties, -inf entries and signed zeros.
  let seed = 11;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const row = Float32Array.from({ length: 32000 }, () => {
    const r = rnd();
    if (r < 0.05) return -Infinity;
    if (r < 0.08) return r < 0.065 ? 0 : -0;
    if (r < 0.4) return Math.round(rnd() * 8) - 4; // ties
    return (rnd() - 0.5) * 24;
  });
  // The reference order: by value ascending, ties by index (what transformers' stable torch.sort gives).
  const refOrder = (v: ArrayLike<number>): number[] =>
    Array.from({ length: v.length }, (_, i) => i).sort((a, b) => (v[a] as number) - (v[b] as number) || a - b);
  const softmax = (v: ArrayLike<number>): Float64Array => {
    let max = -Infinity;
    for (let i = 0; i < v.length; i++) max = Math.max(max, v[i] as number);
    const out = Float64Array.from(v as ArrayLike<number>, (x) => Math.exp(x - max));
    const sum = out.reduce((a, b) => a + b, 0);
    return out.map((x) => Math.fround(x / sum));
  };

  test("top-p keeps the smallest set past 1 − p, scanning the sorted row from the least probable token", () => {
    const got = Float32Array.from(row);
    new TopPLogitsWarper(0.9, 3).process([], got);
    const order = refOrder(row);
    const probs = softmax(order.map((i) => row[i]!));
    const want = Float32Array.from(row);
    let cum = 0;
    for (let i = 0; i < order.length; i++) {
      cum += probs[i]!;
      if (i < order.length - 3 && Math.fround(cum) <= Math.fround(1 - 0.9)) want[order[i]!] = -Infinity;
    }
    expect(Array.from(got)).toEqual(Array.from(want));
    expect(got.some((v) => v === -Infinity) && got.some((v) => v > -Infinity)).toBe(true);
  });

  test("top-k keeps every token scoring at least the k-th largest score (ties included)", () => {
    for (const k of [1, 50, 1000, 31999]) {
      const got = Float32Array.from(row);
      new TopKLogitsWarper(k).process([], got);
      const kth = Float32Array.from(row).sort()[row.length - k]!;
      expect(Array.from(got)).toEqual(Array.from(row, (v) => (v < kth ? -Infinity : v)));
    }
  });

  test("min-p keeps its minTokensToKeep most probable tokens, ties going to the higher index", () => {
    const flat = new Float32Array(32000).fill(1); // every token tied: min-p removes nothing by probability
    flat[7] = -Infinity;
    const got = Float32Array.from(flat);
    new MinPLogitsWarper(1, 3).process([], got); // cut = max probability: the tied tokens all pass
    expect(Array.from(got)).toEqual(Array.from(flat));
    const spread = Float32Array.from(row);
    new MinPLogitsWarper(0.5, 4).process([], spread);
    const probs = softmax(row);
    const top = probs.reduce((a, b) => Math.max(a, b), 0);
    const keep = new Set(refOrder(probs).slice(-4));
    expect(Array.from(spread)).toEqual(Array.from(row, (v, i) => (probs[i]! < Math.fround(0.5 * top) && !keep.has(i) ? -Infinity : v)));
  });
});

describe("processor order", () => {
  test.each(Object.entries(reference.order))("%s config builds transformers' list", (_name, { params, names }) => {
    const cfg = GenerationConfig.create(params).resolve();
    const list = buildLogitsProcessors(cfg, { inputLength: 7 });
    expect(list.processors.map((p) => p.name)).toEqual(names);
  });

  test("user processors come after the built-in ones and before the sampling warpers", () => {
    const custom: LogitsProcessor = { name: "Custom", process: () => undefined };
    const cfg = GenerationConfig.create({ doSample: true, temperature: 0.5, repetitionPenalty: 1.1 }).resolve();
    const names = buildLogitsProcessors(cfg, { inputLength: 3, extra: [custom] }).processors.map((p) => p.name);
    expect(names).toEqual(["RepetitionPenaltyLogitsProcessor", "Custom", "TemperatureLogitsWarper", "TopKLogitsWarper"]);
    expect(() => buildLogitsProcessors(cfg, { inputLength: 3, extra: [new RepetitionPenaltyLogitsProcessor(2)] })).toThrowError(/already builds one/);
  });

  test("greedy decoding with default parameters runs no processor (top-k 50 only applies when sampling)", () => {
    expect(buildLogitsProcessors(GenerationConfig.create({}).resolve(), { inputLength: 3 }).length).toBe(0);
    const sampling = buildLogitsProcessors(GenerationConfig.create({ doSample: true }).resolve(), { inputLength: 3 });
    expect(sampling.processors.map((p) => p.name)).toEqual(["TopKLogitsWarper"]);
  });
});
