// MistralConfig: config.json of `model_type: "mistral"`, with transformers' defaults and derivations
// (transformers/models/mistral/configuration_mistral.py; spec-hf-stack.md B7). Config only; the model comes later.
// Mistral has no projection biases; `sliding_window` (default 4096, null disables it) applies to every layer.

import { FieldReader, readDecoderBase, type DecoderConfigBase, type DecoderDefaults } from "../../config-base.js";

export interface MistralConfig extends DecoderConfigBase {
  readonly modelType: "mistral";
}

/** MistralConfig's class defaults (Mistral-7B shapes; max_position_embeddings = 4096 × 32). */
export const MISTRAL_DEFAULTS: DecoderDefaults = {
  vocabSize: 32000,
  hiddenSize: 4096,
  intermediateSize: 14336,
  numHiddenLayers: 32,
  numAttentionHeads: 32,
  numKeyValueHeads: 8,
  maxPositionEmbeddings: 4096 * 32,
  rmsNormEps: 1e-6,
  bosTokenId: 1,
  eosTokenId: 2,
};

export function parseMistralConfig(raw: Record<string, unknown>, file: string): MistralConfig {
  const r = new FieldReader(raw, file);
  // Mistral ignores `layer_types` (transformers only warns); the window, when set, is used by every layer.
  const slidingWindow = r.positiveIntOrNull("sliding_window", 4096);
  const base = readDecoderBase(r, MISTRAL_DEFAULTS, {
    projectionBias: { q: false, k: false, v: false, o: false, mlp: false },
    slidingWindow,
    layerTypes: null,
  });
  return { ...base, modelType: "mistral" };
}
