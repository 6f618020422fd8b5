// generate(): transformers' decoding loop for decoder-only models (generation/utils.py `_sample`, transformers 5.17;
// spec-hf-stack.md B8) — greedy or multinomial sampling, logits processors in transformers' order, EOS lists,
// stop strings, max length / max new tokens / max time, left-padded batches with an attention mask, a static KV
// cache, streamers. It returns every row's full sequence (prompt + new tokens), finished rows padded with the pad id.
//
// Decode-step design (so that one step can later be captured as one CUDA graph):
// - Everything sized by the length limit is allocated once, before the first step: the model's KV cache
//   (`createCache({ batchSize, maxLength })`), the (B, maxLength) attention mask (the positions generated later are
//   all 1, so it is known up front) and a (maxLength − T0, B) table of decode positions. A step reads views of
//   them (`narrow` / `reshape`: metadata only, no copy and no allocation).
// - Greedy decoding without logits processors picks the token on the device (`argmax` of the last position's
//   logits) and feeds that (B, 1) int32 result straight back as the next step's input ids: the only host
//   synchronisation of a step is downloading those B token ids. With processors or sampling, the (B, vocab)
//   float32 scores of the last position are downloaded instead (one transfer), processed and sampled on the host,
//   and the chosen ids are uploaded as the next (B, 1) input.
// - What still allocates per step, because @lowbit/tensor ops return new tensors and have no `out=` form: every
//   intermediate of the model's forward pass (freed by `tidy` when the step ends), the argmax result / the uploaded
//   ids (B, 1), and, for a padded batch with B > 1, the attention kernel's dense copy of the mask view (a
//   (B, length) prefix of a (B, maxLength) buffer is not contiguous).
// - In the device-argmax path a finished row is fed its own argmax instead of the pad id (transformers feeds pad);
//   rows never see each other, so only that finished row's (discarded) cache entries differ.
//
// Sampling uses a seedable xoshiro128** `Generator` from @lowbit/tensor: a seed gives the same tokens on every run
// and device, but not the tokens torch.multinomial would draw for the same seed (a different generator).

import { Generator as RandomGenerator, argmax, defaultGenerator, fromTypedArray, narrow, noGrad, tidy, type Tensor } from "@lowbit/tensor";
import { ArgumentError, ShapeError, describe } from "@lowbit/dtypes";
import { GenerationConfig, type GenerationParams, type ResolvedGenerationConfig } from "../generation-config.js";
import type { PreTrainedTokenizer } from "../tokenizer.js";
import { buildLogitsProcessors, softmaxRow, type LogitsProcessor, type LogitsProcessorList } from "./logits-process.js";
import { EosTokenCriteria, MaxLengthCriteria, MaxTimeCriteria, StopStringCriteria, type StoppingCriterion } from "./stopping-criteria.js";
import type { BaseStreamer } from "./streamers.js";
import type { CausalLM, GenerationCache } from "./types.js";

/** generate()'s options: any generation parameter (overriding the model's generation config) plus these. */
export interface GenerateOptions extends Partial<GenerationParams> {
  /** (B, T0) 1 = token, 0 = padding (left padding for decoder-only models). Default: inferred as transformers does. */
  attentionMask?: readonly (readonly number[])[] | null;
  /** The base config instead of `model.generationConfig`. */
  generationConfig?: GenerationConfig;
  /** Seeds a fresh generator for this call (ignored when `generator` is given). */
  seed?: number;
  /** The random generator to draw from; default a fresh one for `seed`, else @lowbit/tensor's default generator. */
  generator?: RandomGenerator;
  /** The model's tokenizer; required for `stopStrings`. */
  tokenizer?: PreTrainedTokenizer;
  /** Receives the prompt, every new token and the end, as transformers' streamers do. */
  streamer?: BaseStreamer;
  /** Extra logits processors, run after the built-in ones and before the sampling warpers. */
  logitsProcessors?: readonly LogitsProcessor[];
  /** Extra stopping criteria. */
  stoppingCriteria?: readonly StoppingCriterion[];
}

/** What the step iterator reports after each decoding step. */
export interface GenerationStep {
  /** 1 for the token that follows the prefill. */
  step: number;
  /** The token appended to each row, (B,) — the pad id for rows that had already finished. */
  tokens: readonly number[];
  /** Rows still generating after this step. */
  unfinished: readonly boolean[];
  /** Milliseconds since generation started, when this step's tokens reached the host. */
  elapsedMs: number;
}

export interface GenerationStats {
  batchSize: number;
  /** Prompt length T0 (padded). */
  promptTokens: number;
  /** Decoding steps run = tokens appended to each row. */
  newTokens: number;
  /** Prefill + first token, ms. */
  timeToFirstTokenMs: number;
  totalMs: number;
  /** Steps after the first per second (per row): the decode speed without the prefill. NaN with one step. */
  decodeTokensPerSecond: number;
  /** Which path picked the tokens: "device-argmax" (greedy, no processors) or "host" (processors / sampling). */
  selection: "device-argmax" | "host";
}

export interface GenerateOutput {
  /** (B, T) every row's prompt + new tokens; rows that finished early are padded with the pad id. */
  sequences: number[][];
  stats: GenerationStats;
}

type Rows = number[][];

function argError(what: string, name: string, value: unknown): ArgumentError {
  return new ArgumentError(`Expected ${what} for ${name} but received ${describe(value)}`);
}

function checkModel(model: CausalLM<GenerationCache>): void {
  if (model === null || typeof model !== "object" || typeof model.forward !== "function" || typeof model.createCache !== "function") {
    throw argError("a causal LM (an object with forward() and createCache(), such as AutoModelForCausalLM.fromPretrained's)", "model", model);
  }
  if (model.config === null || typeof model.config !== "object" || !Number.isSafeInteger(model.config.vocabSize) || model.config.vocabSize <= 0) {
    throw argError("a model config with a positive integer vocabSize", "model.config", model.config);
  }
  if (model.generationConfig !== null && !(model.generationConfig instanceof GenerationConfig)) {
    throw argError("a GenerationConfig or null", "model.generationConfig", model.generationConfig);
  }
}

/** The model's generation config, or one built from its config's special-token ids (as transformers does). */
function modelGenerationConfig(model: CausalLM<GenerationCache>): GenerationConfig {
  if (model.generationConfig !== null) return model.generationConfig;
  const { bosTokenId, eosTokenIds, padTokenId } = model.config;
  return GenerationConfig.create({ bosTokenId, padTokenId, eosTokenId: eosTokenIds.length === 0 ? null : eosTokenIds.length === 1 ? eosTokenIds[0]! : [...eosTokenIds] });
}

/** Normalises one prompt (T,) or a batch (B, T) of token ids, checking every id against the vocabulary. */
function toRows(inputIds: readonly number[] | readonly (readonly number[])[], vocabSize: number): Rows {
  if (!Array.isArray(inputIds) || inputIds.length === 0) throw argError("a non-empty array of token ids (T,) or of rows (B, T)", "inputIds", inputIds);
  const rows: Rows = Array.isArray(inputIds[0]) ? (inputIds as readonly (readonly number[])[]).map((r) => (Array.isArray(r) ? [...r] : (r as unknown as number[]))) : [[...(inputIds as readonly number[])]];
  const T = rows[0]!.length;
  for (const [b, row] of rows.entries()) {
    if (!Array.isArray(row)) throw argError("rows of token ids", `inputIds[${b}]`, row);
    if (row.length !== T) {
      throw new ShapeError(`generate: every prompt row must have the same length (pad them, e.g. tokenizer.encode(texts, { padding: true })) but inputIds[0] has ${T} tokens and inputIds[${b}] has ${row.length}`);
    }
    for (const [t, id] of row.entries()) {
      if (!Number.isSafeInteger(id) || id < 0 || id >= vocabSize) throw argError(`a token id in [0, ${vocabSize})`, `inputIds[${b}][${t}]`, id);
    }
  }
  if (T === 0) throw argError("prompts of at least one token", "inputIds", inputIds);
  return rows;
}

function toMask(mask: readonly (readonly number[])[], B: number, T: number): Rows {
  if (!Array.isArray(mask) || mask.length !== B) throw argError(`${B} rows of 0/1 (one per prompt)`, "attentionMask", mask);
  return mask.map((row, b) => {
    if (!Array.isArray(row) || row.length !== T) throw argError(`a row of ${T} zeros and ones`, `attentionMask[${b}]`, row);
    return row.map((v, t) => {
      if (v !== 0 && v !== 1) throw argError("0 or 1", `attentionMask[${b}][${t}]`, v);
      return v as number;
    });
  });
}

/** transformers' `_prepare_attention_mask_for_generation`: mask out pad ids only when pad is set and is not an eos id. */
function inferMask(rows: Rows, pad: number | null, eos: readonly number[]): Rows {
  const canInfer = pad !== null && !eos.includes(pad) && rows.some((r) => r.includes(pad));
  return rows.map((r) => r.map((id) => (canInfer && id === pad ? 0 : 1)));
}

function hostArgmax(row: Float32Array): number {
  let best = 0;
  let bestV = row[0] as number;
  for (let i = 1; i < row.length; i++) {
    const v = row[i] as number;
    if (v > bestV || (Number.isNaN(v) && !Number.isNaN(bestV))) {
      best = i;
      bestV = v;
    }
  }
  return best;
}

/** torch.multinomial(softmax(scores), 1) for one row, with our generator. */
function sampleRow(row: Float32Array, gen: RandomGenerator, b: number): number {
  const probs = softmaxRow(row);
  let total = 0;
  for (const p of probs) total += p;
  if (!(total > 0) || !Number.isFinite(total)) {
    throw new ArgumentError(`generate: cannot sample row ${b}: every token has probability 0 or the scores hold NaN / inf after the logits processors (transformers raises "probability tensor contains either inf, nan or element < 0")`);
  }
  const u = gen.nextDouble() * total;
  let acc = 0;
  let lastPositive = 0;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i] as number;
    if (p <= 0) continue;
    acc += p;
    lastPositive = i;
    if (u < acc) return i;
  }
  return lastPositive; // u within rounding of the total
}

interface Setup {
  rows: Rows;
  mask: Rows;
  hasPadding: boolean;
  config: ResolvedGenerationConfig;
  maxLength: number;
  padId: number | null;
  processors: LogitsProcessorList;
  criteria: StoppingCriterion[];
  hasEosCriteria: boolean;
  generator: RandomGenerator;
  streamer: BaseStreamer | null;
}

function prepare<C extends GenerationCache>(model: CausalLM<C>, inputIds: readonly number[] | readonly (readonly number[])[], options: GenerateOptions): Setup {
  checkModel(model);
  if (options === null || typeof options !== "object") throw argError("an options object", "options", options);
  const { attentionMask, generationConfig, seed, generator, tokenizer, streamer, logitsProcessors, stoppingCriteria, ...params } = options;
  const base = generationConfig ?? modelGenerationConfig(model);
  if (!(base instanceof GenerationConfig)) throw argError("a GenerationConfig", "generationConfig", base);
  const cfg = base.update(params); // throws ArgumentError naming unknown or ill-typed parameters
  let rows = toRows(inputIds, model.config.vocabSize);
  const T0 = rows[0]!.length;
  const resolved = cfg.resolve();
  if (resolved.numBeams !== 1) {
    throw argError("numBeams = 1 (lowbit decodes greedily or by sampling; beam search is not implemented)", "numBeams", resolved.numBeams);
  }
  const eos = resolved.eosTokenIds;
  const { id: padId } = cfg.resolvePadTokenId();
  let mask = attentionMask === undefined || attentionMask === null ? inferMask(rows, padId, eos) : toMask(attentionMask, rows.length, T0);
  if (mask.some((m) => m[m.length - 1] === 0)) {
    process.emitWarning(
      "A decoder-only architecture is being used, but right-padding was detected! For correct generation results, set paddingSide = \"left\" on the tokenizer.",
      { code: "LOWBIT_RIGHT_PADDING" },
    );
  }
  const n = resolved.numReturnSequences;
  if (n !== 1) {
    if (!resolved.doSample) throw argError("numReturnSequences = 1 with greedy decoding (set doSample: true to draw several sequences per prompt)", "numReturnSequences", n);
    // transformers expands the batch with repeat_interleave.
    rows = rows.flatMap((r) => Array.from({ length: n }, () => [...r]));
    mask = mask.flatMap((m) => Array.from({ length: n }, () => [...m]));
  }
  const maxLength = cfg.maxLengthFor(T0);
  if (T0 >= maxLength) {
    throw new ArgumentError(
      `Input length of input_ids is ${T0}, but maxLength is set to ${maxLength}. This can lead to unexpected behavior. You should consider increasing maxLength or, better yet, setting maxNewTokens.`,
    );
  }
  const config: ResolvedGenerationConfig = { ...resolved, maxLength };
  const processors = buildLogitsProcessors(config, { inputLength: T0, extra: logitsProcessors ?? [] });
  const criteria: StoppingCriterion[] = [new MaxLengthCriteria(maxLength)];
  if (config.maxTime !== null) criteria.push(new MaxTimeCriteria(config.maxTime));
  if (config.stopStrings !== null) {
    if (tokenizer === undefined) {
      throw new ArgumentError(
        "There are one or more stop strings, either in the arguments to generate or in the model's generation config, but no tokenizer was given. When generating with stop strings, pass the model's tokenizer as options.tokenizer.",
      );
    }
    criteria.push(new StopStringCriteria(tokenizer, config.stopStrings));
  }
  const hasEosCriteria = eos.length > 0;
  if (hasEosCriteria) criteria.push(new EosTokenCriteria(eos));
  for (const c of stoppingCriteria ?? []) {
    if (c === null || typeof c !== "object" || typeof c.isDone !== "function") throw argError("StoppingCriterion objects (with isDone(sequences))", "stoppingCriteria", c);
    criteria.push(c);
  }
  if (generator !== undefined && !(generator instanceof RandomGenerator)) throw argError("a Generator from @lowbit/tensor", "generator", generator);
  const gen = generator ?? (seed !== undefined ? new RandomGenerator(seed) : defaultGenerator);
  if (streamer !== undefined && (streamer === null || typeof streamer.put !== "function" || typeof streamer.end !== "function")) {
    throw argError("a streamer with put() and end()", "streamer", streamer);
  }
  return {
    rows,
    mask,
    hasPadding: mask.some((m) => m.includes(0)),
    config,
    maxLength,
    padId,
    processors,
    criteria,
    hasEosCriteria,
    generator: gen,
    streamer: streamer ?? null,
  };
}

/** transformers' generation positions: cumsum(mask) − 1 with padding at 0, then +1 per generated token. (B, maxLength) */
function positionTable(mask: Rows, maxLength: number): Rows {
  return mask.map((m) => {
    const pos: number[] = [];
    let c = 0;
    for (const v of m) {
      c += v;
      pos.push(v === 0 ? 0 : c - 1);
    }
    let last = pos[pos.length - 1] as number;
    while (pos.length < maxLength) pos.push(++last);
    return pos;
  });
}

/**
 * The decoding loop as a step iterator: each `next()` runs one forward pass (the prefill first) and yields the
 * tokens it appended; the iterator's return value holds the sequences and timing. Stopping early (`return()`,
 * or `break` in a for-of) frees the cache and the step buffers. generate() and generateStream() drive it.
 */
export function generateSteps<C extends GenerationCache>(model: CausalLM<C>, inputIds: readonly number[] | readonly (readonly number[])[], options: GenerateOptions = {}): Generator<GenerationStep, GenerateOutput, void> {
  // Arguments are checked now; nothing is allocated until the first next().
  return decodeLoop(model, prepare(model, inputIds, options));
}

function* decodeLoop<C extends GenerationCache>(model: CausalLM<C>, s: Setup): Generator<GenerationStep, GenerateOutput, void> {
  const { rows, mask, config, maxLength, processors, criteria, generator, streamer } = s;
  const B = rows.length;
  const T0 = rows[0]!.length;
  const device = model.device;
  const useCache = config.useCache;
  const deviceArgmax = !config.doSample && processors.length === 0;
  const positions = positionTable(mask, maxLength);
  const started = performance.now();

  let cache: C | null = null;
  let maskBuf: Tensor | null = null; // (B, maxLength) uint8, only when some row is padded
  let decodePos: Tensor | null = null; // (maxLength − T0, B) int32: row j = positions of token T0 + j
  let nextIds: Tensor | null = null; // (B, 1) int32 input of the next step (device-argmax path)
  const unfinished = new Array<boolean>(B).fill(true);
  let steps = 0;
  let firstTokenAt = Number.NaN;
  try {
    if (s.hasPadding) {
      const full = new Uint8Array(B * maxLength).fill(1);
      mask.forEach((m, b) => full.set(m, b * maxLength));
      maskBuf = fromTypedArray(full, [B, maxLength], { dtype: "uint8", device });
    }
    if (useCache) {
      cache = model.createCache({ batchSize: B, maxLength });
      const dp = new Int32Array((maxLength - T0) * B);
      for (let j = 0; j < maxLength - T0; j++) for (let b = 0; b < B; b++) dp[j * B + b] = positions[b]![T0 + j]!;
      decodePos = fromTypedArray(dp, [maxLength - T0, B], { dtype: "int32", device });
    }
    streamer?.put(rows.map((r) => [...r]));

    for (;;) {
      const cur = rows[0]!.length; // positions known so far
      const prefill = steps === 0;
      // One forward pass and the token choice; everything the pass allocates is freed when tidy returns.
      const chosen = tidy(() =>
        noGrad(() => {
          let ids: Tensor;
          let pos: Tensor;
          if (!useCache || prefill) {
            // The whole sequence: the prefill, or every step without a cache.
            ids = fromTypedArray(Int32Array.from(rows.flat()), [B, cur], { dtype: "int32", device });
            pos = fromTypedArray(Int32Array.from(positions.flatMap((p) => p.slice(0, cur))), [B, cur], { dtype: "int32", device });
          } else {
            ids = nextIds ?? fromTypedArray(Int32Array.from(rows, (r) => r[cur - 1]!), [B, 1], { dtype: "int32", device });
            pos = narrow(decodePos!, 0, cur - 1 - T0, 1).reshape([B, 1]); // a view of the preallocated table
          }
          const attentionMask = maskBuf === null ? null : narrow(maskBuf, 1, 0, cur); // (B, cur) view
          const { logits } = model.forward({ inputIds: ids, attentionMask, positionIds: pos, cache, logitsToKeep: 1 });
          if (logits === undefined || logits === null || logits.ndim !== 3 || logits.shape[0] !== B || logits.shape[1]! < 1) {
            throw new ShapeError(`generate: expected the model's logits of shape [${B}, T, vocab] but received ${logits?.shape === undefined ? describe(logits) : `[${logits.shape.join(", ")}]`}`);
          }
          const last = narrow(logits, 1, logits.shape[1]! - 1, 1); // (B, 1, V)
          if (deviceArgmax) {
            const next = argmax(last, -1); // (B, 1) int32, on the device
            return { next, host: Array.from(next.toTypedArray() as Int32Array) };
          }
          const V = last.shape[2]!;
          const scores = last.toTypedArray() as Float32Array; // (B, V) float32 copy (bf16 / f16 decoded)
          processors.process(rows, scores, V);
          const host = rows.map((_, b) => {
            const row = scores.subarray(b * V, (b + 1) * V);
            if (!config.doSample) return hostArgmax(row);
            if (unfinished[b] || !s.hasEosCriteria) return sampleRow(row, generator, b);
            generator.nextDouble(); // a finished row still takes its draw, so other rows' draws do not shift
            return 0; // replaced by the pad id below
          });
          return { next: null, host };
        }),
      );
      nextIds?.dispose();
      nextIds = chosen.next; // fed back as the next input (only read with a cache; disposed next step either way)
      steps++;
      if (steps === 1) firstTokenAt = performance.now();
      // Finished rows receive the pad id (transformers: only when an EOS criterion exists).
      const tokens = chosen.host.map((t, b) => (s.hasEosCriteria && !unfinished[b] ? (s.padId as number) : t));
      rows.forEach((r, b) => r.push(tokens[b]!));
      const done = criteria.map((c) => c.isDone(rows));
      for (let b = 0; b < B; b++) if (done.some((d) => d[b])) unfinished[b] = false;
      streamer?.put(tokens.map((t) => [t]));
      yield { step: steps, tokens, unfinished: [...unfinished], elapsedMs: performance.now() - started };
      if (!unfinished.some((u) => u)) break;
    }
    streamer?.end();
    const end = performance.now();
    return {
      sequences: rows,
      stats: {
        batchSize: B,
        promptTokens: T0,
        newTokens: steps,
        timeToFirstTokenMs: firstTokenAt - started,
        totalMs: end - started,
        decodeTokensPerSecond: steps > 1 ? ((steps - 1) * 1000) / (end - firstTokenAt) : Number.NaN,
        selection: deviceArgmax ? "device-argmax" : "host",
      },
    };
  } finally {
    nextIds?.dispose();
    cache?.dispose();
    maskBuf?.dispose();
    decodePos?.dispose();
  }
}

/**
 * Generates continuations of one prompt (T,) or a batch (B, T) of token ids, left-padded with `attentionMask`
 * (or a pad id the mask can be inferred from). Returns every row's full sequence, as transformers' generate().
 *
 * @example
 * const ids = tokenizer.encode("def main():").inputIds;
 * const [out] = generate(model, ids, { maxNewTokens: 24 });
 * console.log(tokenizer.decode(out!, { skipSpecialTokens: true }));
 * @throws ArgumentError for bad ids, masks or parameters (naming them), or unsupported modes (beam search)
 */
export function generate<C extends GenerationCache>(model: CausalLM<C>, inputIds: readonly number[] | readonly (readonly number[])[], options: GenerateOptions = {}): number[][] {
  return generateWithStats(model, inputIds, options).sequences;
}

/** generate() that also returns timing: time to first token, decode tokens per second. */
export function generateWithStats<C extends GenerationCache>(model: CausalLM<C>, inputIds: readonly number[] | readonly (readonly number[])[], options: GenerateOptions = {}): GenerateOutput {
  const it = generateSteps(model, inputIds, options);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
  }
}
