// RoPE inverse frequencies and attention scaling, computed exactly as transformers 5's `modeling_rope_utils.py`
// (and LlamaRotaryEmbedding.compute_default_rope_parameters) compute them on the CPU, in the same float32 / float64
// steps: tensor arithmetic is float32 (each op rounded with Math.fround, Python scalars cast to float32 first),
// Python scalar arithmetic is float64. `x / tensor` in torch is `tensor.reciprocal() * x`, which rounds twice;
// that is reproduced too. The one operation that is not pinned down is float32 pow: torch calls the C library's
// powf on its baseline CPU kernels and SLEEF's vectorized powf on AVX2 / AVX-512, and neither is correctly rounded
// everywhere, so torch itself disagrees with itself in the last bit of a few values. Here pow is float64 pow rounded
// to float32 (correctly rounded in practice); on the reference data every inv_freq element equals what one of
// torch's two paths gives (test/rope.test.ts).
// The RoPE convention ("rotate_half", dims i and i + d/2 share inv_freq[i]) is the model code's business; see
// spec-hf-stack.md B7.

import { ArgumentError, describe } from "@lowbit/dtypes";
import type { DecoderConfigBase, RopeParameters } from "./config-base.js";

const f = Math.fround;

/** What the RoPE computation reads from a config. */
export type RopeConfig = Pick<DecoderConfigBase, "headDim" | "maxPositionEmbeddings" | "ropeParameters">;

export interface RopeResult {
  /** (rotaryDim / 2) float32 inverse frequencies. */
  readonly invFreq: Float32Array;
  /** Multiplies cos and sin (yarn); 1 for the other types. */
  readonly attentionScaling: number;
  /** Number of rotated dims per head: 2 × invFreq.length (≤ headDim with partial_rotary_factor). */
  readonly rotaryDim: number;
}

/** `int(head_dim * partial_rotary_factor)` — the rotated dims for every type except "default". */
function rotaryDim(config: RopeConfig): number {
  return Math.trunc(config.headDim * (config.ropeParameters.partialRotaryFactor ?? 1.0));
}

/** torch: `1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))` in float32. */
function baseInvFreq(base: number, dim: number): Float32Array {
  const out = new Float32Array(Math.ceil(dim / 2));
  const b = f(base);
  const d = f(dim);
  for (let j = 0; j < out.length; j++) {
    const exponent = f(f(2 * j) / d);
    const pow = f(b ** exponent);
    out[j] = f(1 / pow);
  }
  return out;
}

function checkDim(dim: number, what: string): void {
  if (!Number.isSafeInteger(dim) || dim < 2) throw new ArgumentError(`Expected a rotary dimension ≥ 2 for ${what} but received ${describe(dim)}`);
}

function checkConfig(config: RopeConfig): RopeParameters {
  if (typeof config !== "object" || config === null) throw new ArgumentError(`Expected a config with headDim, maxPositionEmbeddings and ropeParameters but received ${describe(config)}`);
  if (!Number.isSafeInteger(config.headDim) || config.headDim <= 0) throw new ArgumentError(`Expected a positive integer for config.headDim but received ${describe(config.headDim)}`);
  if (!Number.isSafeInteger(config.maxPositionEmbeddings) || config.maxPositionEmbeddings <= 0) {
    throw new ArgumentError(`Expected a positive integer for config.maxPositionEmbeddings but received ${describe(config.maxPositionEmbeddings)}`);
  }
  const p = config.ropeParameters;
  if (typeof p !== "object" || p === null) throw new ArgumentError(`Expected ropeParameters for config.ropeParameters but received ${describe(p)}`);
  return p;
}

function requireNumber(v: number | null, name: string, ropeType: string): number {
  if (v === null || !Number.isFinite(v)) throw new ArgumentError(`Expected a number for ropeParameters.${name} (rope_type "${ropeType}") but received ${describe(v)}`);
  return v;
}

/** Python's `math.log`-based yarn helpers, in float64 like transformers. */
function yarnMscale(scale: number, mscale = 1): number {
  if (scale <= 1) return 1.0;
  return 0.1 * mscale * Math.log(scale) + 1.0;
}

function computeDefault(config: RopeConfig): RopeResult {
  // LlamaRotaryEmbedding.compute_default_rope_parameters: dim = head_dim (partial_rotary_factor is not applied).
  const dim = config.headDim;
  checkDim(dim, "config.headDim");
  const invFreq = baseInvFreq(config.ropeParameters.ropeTheta, dim);
  return { invFreq, attentionScaling: 1.0, rotaryDim: 2 * invFreq.length };
}

function computeLinear(config: RopeConfig): RopeResult {
  const p = config.ropeParameters;
  const dim = rotaryDim(config);
  checkDim(dim, "head_dim × partial_rotary_factor");
  const factor = f(requireNumber(p.factor, "factor", "linear"));
  const invFreq = baseInvFreq(p.ropeTheta, dim);
  for (let j = 0; j < invFreq.length; j++) invFreq[j] = f((invFreq[j] as number) / factor); // inv_freq /= factor
  return { invFreq, attentionScaling: 1.0, rotaryDim: 2 * invFreq.length };
}

/**
 * Dynamic NTK: at init (`seq_len` None → max_position_embeddings) the base is computed with Python floats;
 * in the forward pass `seq_len` is a tensor, so the same formula runs in float32 tensor ops.
 */
function dynamicBase(config: RopeConfig, seqLen: number | null): number {
  const p = config.ropeParameters;
  const factor = requireNumber(p.factor, "factor", "dynamic");
  const dim = rotaryDim(config);
  const maxPos = config.maxPositionEmbeddings;
  const exponent = dim / (dim - 2);
  if (seqLen === null) {
    // Python: base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2)), seq_len = max_pos.
    return p.ropeTheta * ((factor * maxPos) / maxPos - (factor - 1)) ** exponent;
  }
  // torch: seq_len = maximum(seq_len, max_pos) (int64); factor * seq_len → float32; / max_pos; - (factor - 1);
  // ** exponent (std::pow(float, double) → float); base * (...) (float32).
  const L = Math.max(seqLen, maxPos);
  const a = f(f(factor) * f(L));
  const b = f(a / f(maxPos));
  const c = f(b - f(factor - 1));
  const d = f(c ** exponent);
  return f(f(p.ropeTheta) * d);
}

function computeDynamic(config: RopeConfig, seqLen: number | null): RopeResult {
  const dim = rotaryDim(config);
  checkDim(dim, "head_dim × partial_rotary_factor");
  if (dim === 2) throw new ArgumentError(`Expected a rotary dimension > 2 for dynamic RoPE (the exponent is dim / (dim - 2)) but received 2`);
  const invFreq = baseInvFreq(dynamicBase(config, seqLen), dim);
  return { invFreq, attentionScaling: 1.0, rotaryDim: 2 * invFreq.length };
}

function computeYarn(config: RopeConfig): RopeResult {
  const p = config.ropeParameters;
  const base = p.ropeTheta;
  const dim = rotaryDim(config);
  checkDim(dim, "head_dim × partial_rotary_factor");
  const omp = requireNumber(p.originalMaxPositionEmbeddings, "originalMaxPositionEmbeddings", "yarn");
  // DeepSeek-V3 style: factor derived from the context ratio when absent.
  const factor = p.factor ?? config.maxPositionEmbeddings / omp;
  let attentionFactor = p.attentionFactor;
  if (attentionFactor === null) {
    attentionFactor = p.mscale && p.mscaleAllDim ? yarnMscale(factor, p.mscale) / yarnMscale(factor, p.mscaleAllDim) : yarnMscale(factor);
  }
  const betaFast = p.betaFast || 32; // Python `or`: 0 and None both fall back
  const betaSlow = p.betaSlow || 1;
  const truncate = p.truncate ?? true;

  // find_correction_dim / find_correction_range, float64.
  const correctionDim = (numRotations: number) => (dim * Math.log(omp / (numRotations * 2 * Math.PI))) / (2 * Math.log(base));
  let low = correctionDim(betaFast);
  let high = correctionDim(betaSlow);
  if (truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001; // linear_ramp_factor: prevent a singularity

  const half = Math.floor(dim / 2);
  const posFreqs = new Float32Array(half);
  const b = f(base);
  for (let j = 0; j < half; j++) posFreqs[j] = f(b ** f(f(2 * j) / f(dim)));
  const fFactor = f(factor);
  const fLow = f(low);
  const span = f(high - low);
  const invFreq = new Float32Array(half);
  for (let j = 0; j < half; j++) {
    const pos = posFreqs[j] as number;
    const extrapolation = f(1 / pos);
    const interpolation = f(1 / f(fFactor * pos));
    const ramp = Math.min(Math.max(f(f(j - fLow) / span), 0), 1);
    const extraFactor = f(1 - ramp);
    invFreq[j] = f(f(interpolation * f(1 - extraFactor)) + f(extrapolation * extraFactor));
  }
  return { invFreq, attentionScaling: attentionFactor, rotaryDim: 2 * half };
}

function computeLlama3(config: RopeConfig): RopeResult {
  const p = config.ropeParameters;
  const dim = rotaryDim(config);
  checkDim(dim, "head_dim × partial_rotary_factor");
  const factor = requireNumber(p.factor, "factor", "llama3");
  const lowFreqFactor = requireNumber(p.lowFreqFactor, "lowFreqFactor", "llama3");
  const highFreqFactor = requireNumber(p.highFreqFactor, "highFreqFactor", "llama3");
  const oldContextLen = requireNumber(p.originalMaxPositionEmbeddings, "originalMaxPositionEmbeddings", "llama3");
  const inv = baseInvFreq(p.ropeTheta, dim);
  // Python floats, then cast to float32 where they meet tensors.
  const lowFreqWavelen = f(oldContextLen / lowFreqFactor);
  const highFreqWavelen = f(oldContextLen / highFreqFactor);
  const fFactor = f(factor);
  const fTwoPi = f(2 * Math.PI);
  const fOld = f(oldContextLen);
  const fLowFactor = f(lowFreqFactor);
  const fSpan = f(highFreqFactor - lowFreqFactor);
  const out = new Float32Array(inv.length);
  for (let j = 0; j < inv.length; j++) {
    const x = inv[j] as number;
    const wavelen = f(f(1 / x) * fTwoPi); // 2π / inv_freq == inv_freq.reciprocal() * 2π
    const llama = wavelen > lowFreqWavelen ? f(x / fFactor) : x;
    const smooth = f(f(f(f(1 / wavelen) * fOld) - fLowFactor) / fSpan);
    const smoothed = f(f(f(f(1 - smooth) * llama) / fFactor) + f(smooth * llama));
    const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
    out[j] = isMedium ? smoothed : llama;
  }
  return { invFreq: out, attentionScaling: 1.0, rotaryDim: 2 * out.length };
}

/**
 * The inverse frequencies and cos/sin scaling a rotary embedding module starts with (its `inv_freq` buffer and
 * `attention_scaling`). For "dynamic", this is the init-time value; use `dynamicInvFreq` / DynamicRope for longer
 * sequences.
 */
export function computeRopeParameters(config: RopeConfig): RopeResult {
  const p = checkConfig(config);
  switch (p.ropeType) {
    case "default":
      return computeDefault(config);
    case "linear":
      return computeLinear(config);
    case "dynamic":
      return computeDynamic(config, null);
    case "yarn":
      return computeYarn(config);
    case "llama3":
      return computeLlama3(config);
    default:
      throw new ArgumentError(`Expected ropeParameters.ropeType to be default, linear, dynamic, yarn or llama3 but received ${describe((p as { ropeType: unknown }).ropeType)}`);
  }
}

/**
 * Dynamic-NTK inverse frequencies as transformers recomputes them in the forward pass when the sequence grows to
 * `seqLen` (> max_position_embeddings): the float32 tensor-path formula with L = max(seqLen, max_position_embeddings).
 */
export function dynamicInvFreq(config: RopeConfig, seqLen: number): Float32Array {
  const p = checkConfig(config);
  if (p.ropeType !== "dynamic") throw new ArgumentError(`Expected a config with rope_type "dynamic" for dynamicInvFreq but received ${describe(p.ropeType)}`);
  if (!Number.isSafeInteger(seqLen) || seqLen <= 0) throw new ArgumentError(`Expected a positive integer for seqLen but received ${describe(seqLen)}`);
  return computeDynamic(config, seqLen).invFreq;
}

/**
 * The state a dynamic-NTK rotary module keeps between forward calls (`dynamic_rope_update`): it recomputes when a
 * sequence is longer than any seen so far, and goes back to the original frequencies when a sequence fits in
 * max_position_embeddings again after having grown past it. Calling `update` with each forward's sequence length
 * (max position id + 1) gives the inv_freq transformers uses for that call.
 */
export class DynamicRope {
  readonly originalInvFreq: Float32Array;
  private invFreq: Float32Array;
  private maxSeqLenCached: number;
  private readonly originalMaxSeqLen: number;

  constructor(private readonly config: RopeConfig) {
    const p = checkConfig(config);
    if (p.ropeType !== "dynamic") throw new ArgumentError(`Expected a config with rope_type "dynamic" for DynamicRope but received ${describe(p.ropeType)}`);
    this.originalInvFreq = computeDynamic(config, null).invFreq;
    this.invFreq = this.originalInvFreq;
    this.maxSeqLenCached = config.maxPositionEmbeddings;
    this.originalMaxSeqLen = config.maxPositionEmbeddings;
  }

  /** Updates for a forward call over `seqLen` positions and returns the inv_freq to use (do not mutate it). */
  update(seqLen: number): Float32Array {
    if (!Number.isSafeInteger(seqLen) || seqLen <= 0) throw new ArgumentError(`Expected a positive integer for seqLen but received ${describe(seqLen)}`);
    if (seqLen > this.maxSeqLenCached) {
      this.invFreq = computeDynamic(this.config, seqLen).invFreq;
      this.maxSeqLenCached = seqLen;
    }
    if (seqLen < this.originalMaxSeqLen && this.maxSeqLenCached > this.originalMaxSeqLen) {
      this.invFreq = this.originalInvFreq;
      this.maxSeqLenCached = this.originalMaxSeqLen;
    }
    return this.invFreq;
  }

  /** The inv_freq of the last update (the initial one before any). */
  get current(): Float32Array {
    return this.invFreq;
  }
}
