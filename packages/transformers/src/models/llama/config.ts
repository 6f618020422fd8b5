// LlamaConfig: config.json of `model_type: "llama"`, with transformers' defaults and derivations
// (transformers/models/llama/configuration_llama.py; spec-hf-stack.md B7). Config only; the model comes later.

import { FieldReader, readDecoderBase, type DecoderConfigBase, type DecoderDefaults } from "../../config-base.js";

export interface LlamaConfig extends DecoderConfigBase {
  readonly modelType: "llama";
  /** One flag for q/k/v/o_proj biases. */
  readonly attentionBias: boolean;
  /** One flag for gate/up/down_proj biases. */
  readonly mlpBias: boolean;
  /** Tensor-parallel slicing used at pretraining (informational; transformers 5 ignores it). */
  readonly pretrainingTp: number;
}

/** LlamaConfig's class defaults (Llama-2-7B shapes). */
export const LLAMA_DEFAULTS: DecoderDefaults = {
  vocabSize: 32000,
  hiddenSize: 4096,
  intermediateSize: 11008,
  numHiddenLayers: 32,
  numAttentionHeads: 32,
  numKeyValueHeads: null,
  maxPositionEmbeddings: 2048,
  rmsNormEps: 1e-6,
  bosTokenId: 1,
  eosTokenId: 2,
};

export function parseLlamaConfig(raw: Record<string, unknown>, file: string): LlamaConfig {
  const r = new FieldReader(raw, file);
  const attentionBias = r.boolean("attention_bias", false);
  const mlpBias = r.boolean("mlp_bias", false);
  const base = readDecoderBase(r, LLAMA_DEFAULTS, {
    projectionBias: { q: attentionBias, k: attentionBias, v: attentionBias, o: attentionBias, mlp: mlpBias },
    slidingWindow: null,
    layerTypes: null,
  });
  return { ...base, modelType: "llama", attentionBias, mlpBias, pretrainingTp: r.positiveInt("pretraining_tp", 1) };
}
