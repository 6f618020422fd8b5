// The contract between generate() / perplexity() and a causal language model: what a model must offer
// (`CausalLM`: forward, createCache, config, device, generationConfig) so that the decoding loop can drive it.
// The loader's models (AutoModelForCausalLM) implement it; so does `ToyCausalLM` (./toy-model.ts), a tiny
// deterministic model made of @lowbit/tensor ops that the tests use and that shows the expected behaviour.

import type { Device, Tensor } from "@lowbit/tensor";
import type { DecoderConfigBase } from "../config-base.js";
import type { GenerationConfig } from "../generation-config.js";

/**
 * One forward call. Shapes: B = batch, T = new positions in this call, P = positions already in the cache.
 *
 * Conventions generate() relies on (they are transformers' for decoder-only models):
 * - `inputIds` (B, T) int32 (int64 accepted): the tokens of this call only; with a cache, P earlier positions
 *   are read from it and the call appends T more (its length becomes P + T).
 * - `attentionMask` (B, P + T), uint8 / bool / int32: 1 = a real token, 0 = padding, covering the cached
 *   positions and the new ones (what transformers passes with a cache). null / absent = attend everywhere.
 *   Queries are always causal on top of the mask.
 * - `positionIds` (B, T) int32: absolute RoPE positions. Left-padded rows start at 0 at their first real
 *   token (transformers: `cumsum(mask) - 1`, padding positions set to 1). Absent: P + arange(T) for every row.
 * - `cache`: a static cache made by `createCache`; the call appends this step's keys and values in place.
 *   Absent: no cache, every call sees only its own T positions.
 * - `logitsToKeep`: a hint that only the last n positions' logits are needed (transformers'
 *   `logits_to_keep`); a model may return all T, and generate() reads the last position either way.
 */
export interface CausalLMForwardInputs<C extends GenerationCache = GenerationCache> {
  inputIds: Tensor;
  attentionMask?: Tensor | null;
  positionIds?: Tensor | null;
  cache?: C | null;
  logitsToKeep?: number;
}

/**
 * What generate() needs of a model's cache: it only hands the cache back to `forward` and frees it. The loader's
 * models return a DecoderKVCache (one @lowbit/tensor KVCache per layer), ToyCausalLM a KVCache.
 */
export interface GenerationCache {
  dispose(): void;
}

export interface CausalLMForwardOutput {
  /** (B, T, vocab) — or (B, n, vocab) when the model honoured `logitsToKeep = n`. Any float dtype. */
  logits: Tensor;
}

/** The config fields generation and perplexity read (every DecoderConfigBase has them). */
export type CausalLMConfig = Pick<DecoderConfigBase, "vocabSize" | "bosTokenId" | "eosTokenIds" | "padTokenId" | "maxPositionEmbeddings">;

export interface CausalLMCacheOptions {
  batchSize: number;
  /** Capacity in positions: prompt + every token generate() may add (its max length). */
  maxLength: number;
}

/**
 * A causal LM as generate() drives it; `C` is the model's cache class (what createCache returns and forward takes). `forward` is synchronous (the tensor ops are) and must not record
 * autograd graphs that outlive the call when run under `noGrad` — generate() and perplexity() wrap every
 * call in `noGrad` and `tidy`, so intermediates are freed when the step ends.
 */
export interface CausalLM<C extends GenerationCache = GenerationCache> {
  readonly config: CausalLMConfig;
  /** Where the model's weights live ("cpu", "cuda:0"); generate() puts its input tensors there. */
  readonly device: Device;
  /**
   * The checkpoint's generation defaults (generation_config.json); generate()'s options override them. null: the
   * defaults come from the config's bos / eos / pad ids.
   */
  readonly generationConfig: GenerationConfig | null;
  forward(inputs: CausalLMForwardInputs<C>): CausalLMForwardOutput;
  /** A static KV cache for `batchSize` rows and `maxLength` positions, allocated once, empty. */
  createCache(options: CausalLMCacheOptions): C;
}
