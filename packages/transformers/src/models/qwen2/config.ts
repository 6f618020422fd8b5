// Qwen2Config: config.json of `model_type: "qwen2"`, with transformers' defaults and derivations
// (transformers/models/qwen2/configuration_qwen2.py; spec-hf-stack.md B7). Config only; the model comes later.
// Qwen2 has biases on q/k/v_proj only. Its sliding window is used only when `use_sliding_window`, and then only by
// layers ≥ `max_window_layers` unless `layer_types` says otherwise.

import { FieldReader, readDecoderBase, type DecoderConfigBase, type DecoderDefaults, type LayerType } from "../../config-base.js";

export interface Qwen2Config extends DecoderConfigBase {
  readonly modelType: "qwen2";
  readonly useSlidingWindow: boolean;
  readonly maxWindowLayers: number;
}

/** Qwen2Config's class defaults. Qwen2 has no default bos / eos ids. */
export const QWEN2_DEFAULTS: DecoderDefaults = {
  vocabSize: 151936,
  hiddenSize: 4096,
  intermediateSize: 22016,
  numHiddenLayers: 32,
  numAttentionHeads: 32,
  numKeyValueHeads: 32,
  maxPositionEmbeddings: 32768,
  rmsNormEps: 1e-6,
  bosTokenId: null,
  eosTokenId: null,
};

const LAYER_TYPES: readonly LayerType[] = ["full_attention", "sliding_attention"];

export function parseQwen2Config(raw: Record<string, unknown>, file: string): Qwen2Config {
  const r = new FieldReader(raw, file);
  const useSlidingWindow = r.boolean("use_sliding_window", false);
  // `self.sliding_window = self.sliding_window if self.use_sliding_window else None`
  const window = r.positiveIntOrNull("sliding_window", 4096);
  const slidingWindow = useSlidingWindow ? window : null;
  const maxWindowLayers = r.number("max_window_layers", 28, { min: 0 });
  if (!Number.isSafeInteger(maxWindowLayers)) r.fail("max_window_layers", "a non-negative integer", maxWindowLayers);
  const numHiddenLayers = r.positiveInt("num_hidden_layers", QWEN2_DEFAULTS.numHiddenLayers);
  let layerTypes: LayerType[];
  const given = r.get("layer_types");
  if (given === undefined || given === null) {
    layerTypes = Array.from({ length: numHiddenLayers }, (_, i) => (slidingWindow !== null && i >= maxWindowLayers ? "sliding_attention" : "full_attention"));
  } else {
    if (!Array.isArray(given) || given.length !== numHiddenLayers || !given.every((t) => (LAYER_TYPES as readonly unknown[]).includes(t))) {
      r.fail("layer_types", `a list of ${numHiddenLayers} entries, each "full_attention" or "sliding_attention"`, given);
    }
    layerTypes = [...(given as LayerType[])];
    if (slidingWindow === null && layerTypes.includes("sliding_attention")) {
      r.fail("layer_types", 'no "sliding_attention" entries while use_sliding_window is false or sliding_window is null', given);
    }
  }
  const base = readDecoderBase(r, QWEN2_DEFAULTS, {
    projectionBias: { q: true, k: true, v: true, o: false, mlp: false },
    slidingWindow,
    layerTypes,
  });
  return { ...base, modelType: "qwen2", useSlidingWindow, maxWindowLayers };
}
