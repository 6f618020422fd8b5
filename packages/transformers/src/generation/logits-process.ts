// Logits processors and warpers of transformers' generate() (generation/logits_process.py, transformers 5.17),
// run on the host over float32 scores, in the order `_get_logits_processor` builds them (spec-hf-stack.md B8).
// Each processor edits one row of scores (vocab,) in place, given that row's token ids so far (prompt, padding
// included, plus generated). Scores are a Float32Array, so every stored value is rounded to float32 as torch's
// float32 tensors are; element-wise maths (temperature, repetition penalty) is bit-identical to torch. Softmax and
// cumulative sums inside the warpers are computed in float64 and rounded to float32, so a token that sits exactly
// on a top-p / min-p / typical threshold may be kept or dropped differently from torch, and ties between equal
// scores are broken by index (torch's sort order for ties is unspecified).

import { ArgumentError, describe } from "@lowbit/dtypes";
import type { ResolvedGenerationConfig } from "../generation-config.js";

/** A row of scores (vocab,) and the ids of that row so far (prompt + generated). */
export interface LogitsProcessor {
  /** transformers' class name, e.g. "TopPLogitsWarper" (used in errors and by tests of the order). */
  readonly name: string;
  /** Edits `scores` (vocab,) in place. `ids` is the row's sequence so far. */
  process(ids: readonly number[], scores: Float32Array): void;
}

const F32_MAX = 3.4028234663852886e38;

function bad(what: string, name: string, value: unknown): ArgumentError {
  return new ArgumentError(`Expected ${what} for ${name} but received ${describe(value)}`);
}

function checkIdList(ids: unknown, name: string): number[] {
  if (!Array.isArray(ids) || !ids.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) throw bad("a list of non-negative integer token ids", name, ids);
  return [...(ids as number[])];
}

function checkMinKeep(minTokensToKeep: number): number {
  if (!Number.isSafeInteger(minTokensToKeep) || minTokensToKeep < 1) throw bad("a positive integer", "minTokensToKeep", minTokensToKeep);
  return minTokensToKeep;
}

/** softmax of a row in float64 (max-shifted), each probability rounded to float32 as torch's float32 softmax returns. */
export function softmaxRow(scores: ArrayLike<number>): Float64Array {
  const n = scores.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if ((scores[i] as number) > max) max = scores[i] as number;
  const out = new Float64Array(n);
  if (max === -Infinity) return out.fill(Number.NaN); // every token removed: torch's softmax gives NaN too
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp((scores[i] as number) - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) out[i] = Math.fround((out[i] as number) / sum);
  return out;
}

/** The k-th largest value of a row (k ≥ 1, clamped to the row length), as `torch.topk(x, k)[0][..., -1]`. */
export function kthLargest(scores: Float32Array, k: number): number {
  const n = scores.length;
  const kk = Math.min(Math.max(k, 1), n);
  const a = Float32Array.from(scores);
  if (a.some((v) => v !== v)) return a.sort()[n - kk] as number; // ascending; NaN sorts last
  // Quickselect (Hoare partition, middle pivot) for the element at ascending position n − kk: O(n) on average
  // instead of sorting the whole vocabulary.
  const target = n - kk;
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1] as number;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while ((a[i] as number) < pivot) i++;
      while ((a[j] as number) > pivot) j--;
      if (i <= j) {
        const t = a[i] as number;
        a[i] = a[j] as number;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else break; // a[j + 1 .. i − 1] all equal the pivot
  }
  return a[target] as number;
}

/**
 * The last `k` indices of argsortAscending(values) (the k largest by value, ties broken toward the higher index),
 * in that order, without sorting the row when k is small.
 */
function largestIndices(values: ArrayLike<number>, k: number): number[] {
  const n = values.length;
  const kk = Math.min(k, n);
  let nan = false;
  for (let i = 0; i < n && !nan; i++) nan = (values[i] as number) !== (values[i] as number);
  if (kk > 16 || nan) return Array.from(argsortAscending(values).slice(n - kk));
  const best: number[] = []; // ascending by (value, index)
  let floor = -Infinity; // value of best[0] once best is full: smaller values cannot enter
  for (let i = 0; i < n; i++) {
    const v = values[i] as number;
    if (best.length === kk) {
      // i is later than every kept index, so it enters on a tie with the smallest kept value.
      if (v < floor) continue;
      best.shift();
    }
    let p = best.length;
    while (p > 0 && v < (values[best[p - 1]!] as number)) p--;
    best.splice(p, 0, i);
    floor = values[best[0]!] as number;
  }
  return best;
}

// Scratch for reading a float32's bits.
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/**
 * Indices of a row sorted by value, ascending (stable: ties keep index order; NaN last, as torch.sort). Rows of
 * float32 values (logits, and probabilities / entropies rounded to float32) are radix-sorted on order-preserving
 * float32 bits (four stable 8-bit passes: about 20× faster than a comparator sort of a 32000-entry vocabulary);
 * other rows use the comparator.
 */
function argsortAscending(values: ArrayLike<number>): Int32Array {
  const n = values.length;
  const idx = new Int32Array(n);
  let keys = new Uint32Array(n);
  let packed = true;
  for (let i = 0; i < n; i++) {
    const v = values[i] as number;
    if (v !== v) {
      keys[i] = 0xffffffff; // NaN: after every number
      continue;
    }
    F32[0] = v === 0 ? 0 : v; // -0 sorts as +0 (equal values keep index order)
    if (F32[0] !== v && v !== 0) {
      packed = false; // not a float32 value: its key would merge distinct values
      break;
    }
    const u = U32[0]!;
    keys[i] = u >= 0x80000000 ? ~u >>> 0 : u + 0x80000000; // order-preserving: negatives reversed, below positives
  }
  if (packed) {
    // LSD radix sort of (key, index) pairs: each pass is stable, so ties end in index order.
    let order = idx;
    for (let i = 0; i < n; i++) order[i] = i;
    let keys2 = new Uint32Array(n);
    let order2 = new Int32Array(n);
    const count = new Int32Array(256);
    for (let shift = 0; shift < 32; shift += 8) {
      count.fill(0);
      for (let i = 0; i < n; i++) count[(keys[i]! >>> shift) & 255]!++;
      let sum = 0;
      for (let d = 0; d < 256; d++) {
        const c = count[d]!;
        count[d] = sum;
        sum += c;
      }
      for (let i = 0; i < n; i++) {
        const k = keys[i]!;
        const at = count[(k >>> shift) & 255]!++;
        keys2[at] = k;
        order2[at] = order[i]!;
      }
      [keys, keys2] = [keys2, keys];
      [order, order2] = [order2, order];
    }
    return order; // four passes: the result is back in `idx`
  }
  for (let i = 0; i < n; i++) idx[i] = i;
  return idx.sort((a, b) => {
    const va = values[a] as number;
    const vb = values[b] as number;
    if (va !== va || vb !== vb) return (va !== va ? 1 : 0) - (vb !== vb ? 1 : 0) || a - b;
    return va - vb || a - b;
  });
}

/** `RepetitionPenaltyLogitsProcessor`: every id present in the row (once) gets s < 0 ? s·p : s/p. */
export class RepetitionPenaltyLogitsProcessor implements LogitsProcessor {
  readonly name = "RepetitionPenaltyLogitsProcessor";
  readonly penalty: number;
  constructor(penalty: number) {
    if (typeof penalty !== "number" || !(penalty > 0) || !Number.isFinite(penalty)) throw bad("a finite number > 0", "repetitionPenalty", penalty);
    this.penalty = penalty;
  }
  process(ids: readonly number[], scores: Float32Array): void {
    const p = Math.fround(this.penalty);
    // gather → penalise → scatter: an id seen several times is penalised once.
    for (const id of new Set(ids)) {
      if (id < 0 || id >= scores.length) continue;
      const s = scores[id] as number;
      scores[id] = s < 0 ? s * p : s / p;
    }
  }
}

/** `NoRepeatNGramLogitsProcessor`: bans every token that would repeat an n-gram already in the row. */
export class NoRepeatNGramLogitsProcessor implements LogitsProcessor {
  readonly name = "NoRepeatNGramLogitsProcessor";
  readonly ngramSize: number;
  constructor(ngramSize: number) {
    if (!Number.isSafeInteger(ngramSize) || ngramSize <= 0) throw bad("a positive integer", "noRepeatNgramSize", ngramSize);
    this.ngramSize = ngramSize;
  }
  process(ids: readonly number[], scores: Float32Array): void {
    const n = this.ngramSize;
    const len = ids.length;
    if (len < n) return;
    const prefixStart = len + 1 - n; // the last n - 1 ids
    for (let w = 0; w + n <= len; w++) {
      let match = true;
      for (let j = 0; j < n - 1 && match; j++) match = ids[w + j] === ids[prefixStart + j];
      const banned = ids[w + n - 1] as number;
      if (match && banned < scores.length) scores[banned] = -Infinity;
    }
  }
}

/**
 * `NoBadWordsLogitsProcessor` (a SequenceBias of -inf): a one-token bad word is always banned; a longer one bans
 * its last token when the row ends with the rest. Single-token bad words equal to an eos id are dropped.
 */
export class NoBadWordsLogitsProcessor implements LogitsProcessor {
  readonly name = "NoBadWordsLogitsProcessor";
  readonly badWordsIds: readonly (readonly number[])[];
  constructor(badWordsIds: readonly (readonly number[])[], eosTokenIds: readonly number[] = []) {
    if (!Array.isArray(badWordsIds) || badWordsIds.length === 0) throw bad("a non-empty list of token id lists", "badWordsIds", badWordsIds);
    const lists = badWordsIds.map((w, i) => checkIdList(w, `badWordsIds[${i}]`));
    if (lists.some((w) => w.length === 0)) throw bad("non-empty token id lists", "badWordsIds", badWordsIds);
    this.badWordsIds = lists.filter((w) => !(w.length === 1 && eosTokenIds.includes(w[0] as number)));
  }
  process(ids: readonly number[], scores: Float32Array): void {
    for (const word of this.badWordsIds) {
      const last = word[word.length - 1] as number;
      if (last >= scores.length) throw bad(`token ids below the vocabulary size ${scores.length}`, "badWordsIds", word);
      if (word.length === 1) {
        scores[last] = -Infinity;
        continue;
      }
      if (word.length > ids.length) continue; // longer than the context: transformers skips it
      const prefix = word.length - 1;
      let match = true;
      for (let j = 0; j < prefix && match; j++) match = ids[ids.length - prefix + j] === word[j];
      if (match) scores[last] = -Infinity;
    }
  }
}

function maskIds(scores: Float32Array, ids: readonly number[], value: number): void {
  for (const id of ids) if (id < scores.length) scores[id] = value;
}

/** `MinLengthLogitsProcessor`: eos ids are -inf while the whole sequence is shorter than minLength. */
export class MinLengthLogitsProcessor implements LogitsProcessor {
  readonly name = "MinLengthLogitsProcessor";
  constructor(
    readonly minLength: number,
    readonly eosTokenIds: readonly number[],
  ) {
    if (!Number.isSafeInteger(minLength) || minLength < 0) throw bad("a non-negative integer", "minLength", minLength);
  }
  process(ids: readonly number[], scores: Float32Array): void {
    if (ids.length < this.minLength) maskIds(scores, this.eosTokenIds, -Infinity);
  }
}

/** `MinNewTokensLengthLogitsProcessor`: eos ids are -inf until minNewTokens tokens follow the prompt. */
export class MinNewTokensLengthLogitsProcessor implements LogitsProcessor {
  readonly name = "MinNewTokensLengthLogitsProcessor";
  constructor(
    readonly promptLength: number,
    readonly minNewTokens: number,
    readonly eosTokenIds: readonly number[],
  ) {
    if (!Number.isSafeInteger(minNewTokens) || minNewTokens < 0) throw bad("a non-negative integer", "minNewTokens", minNewTokens);
  }
  process(ids: readonly number[], scores: Float32Array): void {
    if (ids.length - this.promptLength < this.minNewTokens) maskIds(scores, this.eosTokenIds, -Infinity);
  }
}

/** `ForcedBOSTokenLogitsProcessor`: when the sequence has one token, only the BOS id may follow. */
export class ForcedBOSTokenLogitsProcessor implements LogitsProcessor {
  readonly name = "ForcedBOSTokenLogitsProcessor";
  constructor(readonly bosTokenId: number) {}
  process(ids: readonly number[], scores: Float32Array): void {
    if (ids.length !== 1) return;
    scores.fill(-Infinity);
    if (this.bosTokenId < scores.length) scores[this.bosTokenId] = 0;
  }
}

/** `ForcedEOSTokenLogitsProcessor`: at length maxLength - 1, only eos ids may follow. */
export class ForcedEOSTokenLogitsProcessor implements LogitsProcessor {
  readonly name = "ForcedEOSTokenLogitsProcessor";
  constructor(
    readonly maxLength: number,
    readonly eosTokenIds: readonly number[],
  ) {}
  process(ids: readonly number[], scores: Float32Array): void {
    if (ids.length !== this.maxLength - 1) return;
    scores.fill(-Infinity);
    maskIds(scores, this.eosTokenIds, 0);
  }
}

/** `InfNanRemoveLogitsProcessor`: NaN → 0, ±inf → ±float32 max. */
export class InfNanRemoveLogitsProcessor implements LogitsProcessor {
  readonly name = "InfNanRemoveLogitsProcessor";
  process(_ids: readonly number[], scores: Float32Array): void {
    for (let i = 0; i < scores.length; i++) {
      const s = scores[i] as number;
      if (Number.isNaN(s)) scores[i] = 0;
      else if (s === Infinity) scores[i] = F32_MAX;
      else if (s === -Infinity) scores[i] = -F32_MAX;
    }
  }
}

/** `SuppressTokensLogitsProcessor`: the listed ids are always -inf. */
export class SuppressTokensLogitsProcessor implements LogitsProcessor {
  readonly name = "SuppressTokensLogitsProcessor";
  readonly suppressTokens: readonly number[];
  constructor(suppressTokens: readonly number[]) {
    this.suppressTokens = checkIdList(suppressTokens, "suppressTokens");
  }
  process(_ids: readonly number[], scores: Float32Array): void {
    maskIds(scores, this.suppressTokens, -Infinity);
  }
}

/** `SuppressTokensAtBeginLogitsProcessor`: the listed ids are -inf when the sequence length equals beginIndex. */
export class SuppressTokensAtBeginLogitsProcessor implements LogitsProcessor {
  readonly name = "SuppressTokensAtBeginLogitsProcessor";
  readonly beginSuppressTokens: readonly number[];
  constructor(
    beginSuppressTokens: readonly number[],
    readonly beginIndex: number,
  ) {
    this.beginSuppressTokens = checkIdList(beginSuppressTokens, "beginSuppressTokens");
  }
  process(ids: readonly number[], scores: Float32Array): void {
    if (ids.length === this.beginIndex) maskIds(scores, this.beginSuppressTokens, -Infinity);
  }
}

/** `TemperatureLogitsWarper`: scores / T (float32 division, as torch). */
export class TemperatureLogitsWarper implements LogitsProcessor {
  readonly name = "TemperatureLogitsWarper";
  readonly temperature: number;
  constructor(temperature: number) {
    if (typeof temperature !== "number" || !(temperature > 0) || !Number.isFinite(temperature)) {
      throw bad("a finite number > 0 (use doSample: false for greedy decoding)", "temperature", temperature);
    }
    this.temperature = temperature;
  }
  process(_ids: readonly number[], scores: Float32Array): void {
    const t = Math.fround(this.temperature);
    for (let i = 0; i < scores.length; i++) scores[i] = (scores[i] as number) / t;
  }
}

/** `TopKLogitsWarper`: -inf below the k-th largest score (ties with it are kept); k = max(topK, minTokensToKeep). */
export class TopKLogitsWarper implements LogitsProcessor {
  readonly name = "TopKLogitsWarper";
  readonly topK: number;
  constructor(topK: number, minTokensToKeep = 1) {
    if (!Number.isSafeInteger(topK) || topK <= 0) throw bad("a positive integer", "topK", topK);
    this.topK = Math.max(topK, checkMinKeep(minTokensToKeep));
  }
  process(_ids: readonly number[], scores: Float32Array): void {
    if (this.topK >= scores.length) return;
    const kth = kthLargest(scores, this.topK);
    for (let i = 0; i < scores.length; i++) if ((scores[i] as number) < kth) scores[i] = -Infinity;
  }
}

/**
 * `TopPLogitsWarper` (nucleus): sort ascending, cumulative softmax, remove tokens whose cumulative probability is
 * ≤ 1 − topP, always keeping the last (largest) minTokensToKeep.
 */
export class TopPLogitsWarper implements LogitsProcessor {
  readonly name = "TopPLogitsWarper";
  readonly topP: number;
  readonly minTokensToKeep: number;
  constructor(topP: number, minTokensToKeep = 1) {
    if (typeof topP !== "number" || !(topP >= 0 && topP <= 1)) throw bad("a number in [0, 1]", "topP", topP);
    this.topP = topP;
    this.minTokensToKeep = checkMinKeep(minTokensToKeep);
  }
  process(_ids: readonly number[], scores: Float32Array): void {
    const order = argsortAscending(scores);
    const sorted = new Float64Array(order.length);
    for (let i = 0; i < order.length; i++) sorted[i] = scores[order[i] as number] as number;
    const probs = softmaxRow(sorted);
    const threshold = Math.fround(1 - this.topP);
    const keepFrom = order.length - this.minTokensToKeep;
    let cum = 0; // torch's CPU cumsum accumulates float32 in double and rounds each output
    for (let i = 0; i < order.length; i++) {
      cum += probs[i] as number;
      if (i < keepFrom && Math.fround(cum) <= threshold) scores[order[i] as number] = -Infinity;
    }
  }
}

/** `MinPLogitsWarper`: remove tokens with p < minP · max(p), keeping the minTokensToKeep most probable. */
export class MinPLogitsWarper implements LogitsProcessor {
  readonly name = "MinPLogitsWarper";
  readonly minP: number;
  readonly minTokensToKeep: number;
  constructor(minP: number, minTokensToKeep = 1) {
    if (typeof minP !== "number" || !(minP >= 0 && minP <= 1)) throw bad("a number in [0, 1]", "minP", minP);
    this.minP = minP;
    this.minTokensToKeep = checkMinKeep(minTokensToKeep);
  }
  process(_ids: readonly number[], scores: Float32Array): void {
    const probs = softmaxRow(scores);
    let top = 0;
    for (const p of probs) if (p > top) top = p;
    const cut = Math.fround(Math.fround(this.minP) * top);
    const keep = new Set(largestIndices(probs, this.minTokensToKeep));
    for (let i = 0; i < scores.length; i++) if ((probs[i] as number) < cut && !keep.has(i)) scores[i] = -Infinity;
  }
}

/** `TypicalLogitsWarper` (locally typical sampling, mass = typicalP). */
export class TypicalLogitsWarper implements LogitsProcessor {
  readonly name = "TypicalLogitsWarper";
  readonly mass: number;
  readonly minTokensToKeep: number;
  constructor(mass: number, minTokensToKeep = 1) {
    if (typeof mass !== "number" || !(mass > 0 && mass < 1)) throw bad("a number in (0, 1)", "typicalP", mass);
    this.mass = mass;
    this.minTokensToKeep = checkMinKeep(minTokensToKeep);
  }
  process(_ids: readonly number[], scores: Float32Array): void {
    const n = scores.length;
    const probs = softmaxRow(scores);
    let ent = 0;
    for (let i = 0; i < n; i++) {
      const p = probs[i] as number;
      if (p > 0) ent -= Math.log(p) * p; // nansum: p = 0 contributes nothing
    }
    const shifted = new Float64Array(n);
    for (let i = 0; i < n; i++) shifted[i] = Math.fround(Math.abs(-Math.log(probs[i] as number) - ent));
    const order = argsortAscending(shifted);
    const sortedLogits = new Float64Array(n);
    for (let i = 0; i < n; i++) sortedLogits[i] = scores[order[i] as number] as number;
    const sortedProbs = softmaxRow(sortedLogits);
    let cum = 0;
    let lastInd = 0;
    const mass = Math.fround(this.mass);
    for (let i = 0; i < n; i++) {
      cum += sortedProbs[i] as number;
      if (Math.fround(cum) < mass) lastInd++;
    }
    lastInd = Math.min(lastInd, n - 1);
    const limit = shifted[order[lastInd] as number] as number;
    for (let i = this.minTokensToKeep; i < n; i++) {
      const idx = order[i] as number;
      if ((shifted[idx] as number) > limit) scores[idx] = -Infinity;
    }
  }
}

/** `EpsilonLogitsWarper`: remove tokens with p < epsilon, keeping the minTokensToKeep highest scores. */
export class EpsilonLogitsWarper implements LogitsProcessor {
  readonly name = "EpsilonLogitsWarper";
  readonly epsilon: number;
  readonly minTokensToKeep: number;
  constructor(epsilon: number, minTokensToKeep = 1) {
    if (typeof epsilon !== "number" || !(epsilon > 0 && epsilon < 1)) throw bad("a number in (0, 1)", "epsilonCutoff", epsilon);
    this.epsilon = epsilon;
    this.minTokensToKeep = checkMinKeep(minTokensToKeep);
  }
  process(_ids: readonly number[], scores: Float32Array): void {
    const probs = softmaxRow(scores);
    const eps = Math.fround(this.epsilon);
    const kth = kthLargest(scores, this.minTokensToKeep);
    for (let i = 0; i < scores.length; i++) if ((probs[i] as number) < eps && (scores[i] as number) < kth) scores[i] = -Infinity;
  }
}

/** `EtaLogitsWarper`: remove tokens with p < min(eta, sqrt(eta)·exp(−entropy)), keeping the top minTokensToKeep. */
export class EtaLogitsWarper implements LogitsProcessor {
  readonly name = "EtaLogitsWarper";
  readonly epsilon: number;
  readonly minTokensToKeep: number;
  constructor(epsilon: number, minTokensToKeep = 1) {
    if (typeof epsilon !== "number" || !(epsilon > 0 && epsilon < 1)) throw bad("a number in (0, 1)", "etaCutoff", epsilon);
    this.epsilon = epsilon;
    this.minTokensToKeep = checkMinKeep(minTokensToKeep);
  }
  process(_ids: readonly number[], scores: Float32Array): void {
    const probs = softmaxRow(scores);
    let entropy = 0;
    for (const p of probs) if (p > 0) entropy -= p * Math.log(p);
    const eps = Math.fround(this.epsilon);
    const eta = Math.fround(Math.min(eps, Math.sqrt(eps) * Math.exp(-entropy)));
    const kth = kthLargest(scores, this.minTokensToKeep);
    for (let i = 0; i < scores.length; i++) if ((probs[i] as number) < eta && (scores[i] as number) < kth) scores[i] = -Infinity;
  }
}

/** `LogitNormalization`: scores become log_softmax(scores). */
export class LogitNormalization implements LogitsProcessor {
  readonly name = "LogitNormalization";
  process(_ids: readonly number[], scores: Float32Array): void {
    let max = -Infinity;
    for (const s of scores) if (s > max) max = s;
    let sum = 0;
    for (const s of scores) sum += Math.exp(s - max);
    const lse = max + Math.log(sum);
    for (let i = 0; i < scores.length; i++) scores[i] = (scores[i] as number) - lse;
  }
}

/** Processors applied in order; `process` runs every one over every row of a (B, vocab) block. */
export class LogitsProcessorList {
  readonly processors: readonly LogitsProcessor[];
  constructor(processors: readonly LogitsProcessor[]) {
    this.processors = [...processors];
  }
  get length(): number {
    return this.processors.length;
  }
  /** `scores` is (B, vocab) row-major; `ids[b]` is row b's sequence so far. */
  process(ids: readonly (readonly number[])[], scores: Float32Array, vocabSize: number): void {
    if (scores.length !== ids.length * vocabSize) {
      throw new ArgumentError(`Expected ${ids.length} × ${vocabSize} scores (batch × vocab) but received ${scores.length}`);
    }
    for (let b = 0; b < ids.length; b++) {
      const row = scores.subarray(b * vocabSize, (b + 1) * vocabSize);
      for (const p of this.processors) p.process(ids[b] as readonly number[], row);
    }
  }
}

export interface BuildProcessorsContext {
  /** Prompt length (padded), the `input_ids_seq_length` transformers passes. */
  inputLength: number;
  /** User processors, merged after the built-in ones and before the sampling warpers (transformers' merge point). */
  extra?: readonly LogitsProcessor[];
}

/**
 * The processors transformers' `_get_logits_processor` builds for a decoder-only model, in its order (B8):
 * repetition penalty, no-repeat n-gram, bad words, min length, min new tokens, forced BOS / EOS, inf/nan removal,
 * suppress tokens (always / at begin), user processors; then, only when sampling, temperature, top-k, top-p, min-p,
 * typical, epsilon and eta; last, renormalisation.
 */
export function buildLogitsProcessors(config: ResolvedGenerationConfig, context: BuildProcessorsContext): LogitsProcessorList {
  const out: LogitsProcessor[] = [];
  const eos = config.eosTokenIds;
  const hasEos = eos.length > 0;
  if (config.repetitionPenalty !== 1.0) out.push(new RepetitionPenaltyLogitsProcessor(config.repetitionPenalty));
  if (config.noRepeatNgramSize > 0) out.push(new NoRepeatNGramLogitsProcessor(config.noRepeatNgramSize));
  if (config.badWordsIds !== null) out.push(new NoBadWordsLogitsProcessor(config.badWordsIds, eos));
  if (hasEos && config.minLength > 0) out.push(new MinLengthLogitsProcessor(config.minLength, eos));
  if (hasEos && config.minNewTokens !== null && config.minNewTokens > 0) out.push(new MinNewTokensLengthLogitsProcessor(context.inputLength, config.minNewTokens, eos));
  if (config.forcedBosTokenId !== null) out.push(new ForcedBOSTokenLogitsProcessor(config.forcedBosTokenId));
  if (config.forcedEosTokenId !== null) {
    const forced = typeof config.forcedEosTokenId === "number" ? [config.forcedEosTokenId] : [...config.forcedEosTokenId];
    out.push(new ForcedEOSTokenLogitsProcessor(config.maxLength, forced));
  }
  if (config.removeInvalidValues === true) out.push(new InfNanRemoveLogitsProcessor());
  if (config.suppressTokens !== null) out.push(new SuppressTokensLogitsProcessor(config.suppressTokens));
  if (config.beginSuppressTokens !== null) {
    const begin = context.inputLength > 1 || config.forcedBosTokenId === null ? context.inputLength : context.inputLength + 1;
    out.push(new SuppressTokensAtBeginLogitsProcessor(config.beginSuppressTokens, begin));
  }
  for (const p of context.extra ?? []) {
    if (typeof p !== "object" || p === null || typeof p.process !== "function") throw bad("LogitsProcessor objects (with process(ids, scores))", "logitsProcessors", p);
    if (out.some((q) => q.name === p.name)) {
      throw new ArgumentError(`A custom logits processor ${p.name} was given, but generate() already builds one from the generation config; set it through the config instead`);
    }
    out.push(p);
  }
  if (config.doSample) {
    const minKeep = 1; // beam sampling would keep len(eos) + 1; lowbit decodes without beams
    if (config.temperature !== 1.0) out.push(new TemperatureLogitsWarper(config.temperature));
    if (config.topK !== 0) out.push(new TopKLogitsWarper(config.topK, minKeep));
    if (config.topP < 1.0) out.push(new TopPLogitsWarper(config.topP, minKeep));
    if (config.minP !== null) out.push(new MinPLogitsWarper(config.minP, minKeep));
    if (config.typicalP < 1.0) out.push(new TypicalLogitsWarper(config.typicalP, minKeep));
    if (config.epsilonCutoff !== null && config.epsilonCutoff > 0 && config.epsilonCutoff < 1) out.push(new EpsilonLogitsWarper(config.epsilonCutoff, minKeep));
    if (config.etaCutoff !== null && config.etaCutoff > 0 && config.etaCutoff < 1) out.push(new EtaLogitsWarper(config.etaCutoff, minKeep));
  }
  if (config.renormalizeLogits === true) out.push(new LogitNormalization());
  return new LogitsProcessorList(out);
}
