// ToyCausalLM: a tiny, deterministic one-layer transformer (embedding → grouped-query attention with RoPE and a
// static KV cache → residual → LM head) built from @lowbit/tensor ops, implementing the CausalLM contract of
// ./types.ts. It exists so that generation, streaming and perplexity can be tested — and the contract shown —
// without a checkpoint: its weights come from a seeded generator, so the same seed gives the same logits everywhere.
// It is not a trained model; its continuations are arbitrary but fixed.

import {
  Generator,
  KVCache,
  arange,
  embedding,
  linear,
  randn,
  rope,
  ropeInvFreq,
  scaledDotProductAttention,
  type Device,
  type FloatDType,
  type Tensor,
} from "@lowbit/tensor";
import { ArgumentError, ShapeError, describe } from "@lowbit/dtypes";
import { GenerationConfig } from "../generation-config.js";
import type { CausalLM, CausalLMCacheOptions, CausalLMConfig, CausalLMForwardInputs, CausalLMForwardOutput } from "./types.js";

/** ToyCausalLM's forward inputs: the cache is the KVCache its createCache() makes. */
export type ToyForwardInputs = CausalLMForwardInputs<KVCache>;

export interface ToyCausalLMOptions {
  vocabSize?: number;
  /** Model width C (heads × head dim). Default 32. */
  hiddenSize?: number;
  /** Query heads (default 4) and key/value heads (default 2, grouped-query attention). */
  numHeads?: number;
  numKeyValueHeads?: number;
  /** Seed of the weights. Default 0. */
  seed?: number;
  /** Multiplies the logits; larger values make the distributions sharper. Default 4. */
  logitScale?: number;
  dtype?: FloatDType;
  device?: Device;
  bosTokenId?: number | null;
  eosTokenIds?: readonly number[];
  padTokenId?: number | null;
  maxPositionEmbeddings?: number;
}

function positiveInt(v: unknown, name: string): number {
  if (!Number.isSafeInteger(v) || (v as number) <= 0) throw new ArgumentError(`Expected a positive integer for ${name} but received ${describe(v)}`);
  return v as number;
}

export class ToyCausalLM implements CausalLM<KVCache> {
  readonly config: CausalLMConfig;
  readonly device: Device;
  readonly dtype: FloatDType;
  readonly generationConfig: GenerationConfig;
  readonly numHeads: number;
  readonly numKeyValueHeads: number;
  readonly headDim: number;
  readonly logitScale: number;
  /** (V, C) */ readonly wte: Tensor;
  /** (C, C), (Hkv·D, C), (Hkv·D, C), (C, C) */ readonly wq: Tensor;
  readonly wk: Tensor;
  readonly wv: Tensor;
  readonly wo: Tensor;
  /** (V, C) */ readonly lmHead: Tensor;
  /** (D/2,) float32 */ readonly invFreq: Tensor;

  constructor(options: ToyCausalLMOptions = {}) {
    const V = positiveInt(options.vocabSize ?? 64, "vocabSize");
    const C = positiveInt(options.hiddenSize ?? 32, "hiddenSize");
    this.numHeads = positiveInt(options.numHeads ?? 4, "numHeads");
    this.numKeyValueHeads = positiveInt(options.numKeyValueHeads ?? 2, "numKeyValueHeads");
    if (C % this.numHeads !== 0 || this.numHeads % this.numKeyValueHeads !== 0 || (C / this.numHeads) % 2 !== 0) {
      throw new ArgumentError(`Expected hiddenSize divisible by numHeads into an even head dim, and numHeads a multiple of numKeyValueHeads, but received ${C}, ${this.numHeads}, ${this.numKeyValueHeads}`);
    }
    this.headDim = C / this.numHeads;
    this.logitScale = options.logitScale ?? 4;
    if (typeof this.logitScale !== "number" || !Number.isFinite(this.logitScale)) throw new ArgumentError(`Expected a finite number for logitScale but received ${describe(this.logitScale)}`);
    this.dtype = options.dtype ?? "float32";
    this.device = options.device ?? "cpu";
    const eos = options.eosTokenIds ?? [V - 1];
    this.config = {
      vocabSize: V,
      bosTokenId: options.bosTokenId === undefined ? 0 : options.bosTokenId,
      eosTokenIds: [...eos],
      padTokenId: options.padTokenId ?? null,
      maxPositionEmbeddings: positiveInt(options.maxPositionEmbeddings ?? 256, "maxPositionEmbeddings"),
    };
    this.generationConfig = GenerationConfig.create({
      bosTokenId: this.config.bosTokenId,
      eosTokenId: eos.length === 1 ? (eos[0] as number) : [...eos],
      padTokenId: this.config.padTokenId,
    });
    const gen = new Generator(options.seed ?? 0);
    const kvDim = this.numKeyValueHeads * this.headDim;
    const w = (shape: number[], std: number) => randn(shape, { generator: gen, std, dtype: this.dtype, device: this.device });
    this.wte = w([V, C], 1);
    this.wq = w([C, C], 1 / Math.sqrt(C));
    this.wk = w([kvDim, C], 1 / Math.sqrt(C));
    this.wv = w([kvDim, C], 1 / Math.sqrt(C));
    this.wo = w([C, C], 1 / Math.sqrt(C));
    this.lmHead = w([V, C], this.logitScale / Math.sqrt(C));
    this.invFreq = ropeInvFreq(this.headDim, 10000, { device: this.device });
  }

  /** One layer: logits (B, T, V) for inputIds (B, T); see CausalLMForwardInputs for masks, positions and the cache. */
  forward(inputs: ToyForwardInputs): CausalLMForwardOutput {
    if (inputs.cache !== undefined && inputs.cache !== null && !(inputs.cache instanceof KVCache)) {
      throw new ArgumentError(`Expected a KVCache from createCache() for cache but received ${describe(inputs.cache)}`);
    }
    const { inputIds, attentionMask = null, positionIds = null, cache = null } = inputs;
    if (inputIds.ndim !== 2) throw new ShapeError(`ToyCausalLM.forward: expected inputIds of shape (B, T) but received [${inputIds.shape.join(", ")}]`);
    const [B, T] = inputIds.shape as [number, number];
    const H = this.numHeads;
    const Hkv = this.numKeyValueHeads;
    const D = this.headDim;
    const past = cache === null ? 0 : cache.length(0);
    const pos = positionIds ?? arange(past, past + T, 1, { dtype: "int32", device: this.device });
    const x = embedding(this.wte, inputIds); // (B, T, C)
    const heads = (t: Tensor, n: number) => t.reshape([B, T, n, D]).transpose(1, 2); // (B, n, T, D)
    const q = rope(heads(linear(x, this.wq), H), pos, this.invFreq);
    let k = rope(heads(linear(x, this.wk), Hkv), pos, this.invFreq);
    let v = heads(linear(x, this.wv), Hkv).contiguous();
    if (cache !== null) ({ k, v } = cache.append(0, k, v)); // (B, Hkv, past + T, D) views of the cache
    const att = scaledDotProductAttention(q, k, v, { causal: true, mask: attentionMask }); // (B, H, T, D)
    const h = x.add(linear(att.transpose(1, 2).reshape([B, T, H * D]), this.wo)); // residual, (B, T, C)
    return { logits: linear(h, this.lmHead) }; // (B, T, V)
  }

  createCache(options: CausalLMCacheOptions): KVCache {
    return new KVCache({
      layers: 1,
      batch: positiveInt(options.batchSize, "batchSize"),
      kvHeads: this.numKeyValueHeads,
      maxSeq: positiveInt(options.maxLength, "maxLength"),
      headDim: this.headDim,
      dtype: this.dtype,
      device: this.device,
    });
  }

  dispose(): void {
    for (const t of [this.wte, this.wq, this.wk, this.wv, this.wo, this.lmHead, this.invFreq]) t.dispose();
  }
}
