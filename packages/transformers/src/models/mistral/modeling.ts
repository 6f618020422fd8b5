// MistralForCausalLM: transformers/models/mistral/modeling_mistral.py. Mistral is the Llama decoder
// (../llama/modeling.ts) without projection biases and with a sliding window on every layer when `sliding_window`
// is set: a query sees itself and the previous sliding_window - 1 positions. The window comes from the config
// (MistralConfig.layerTypes / slidingWindow) and is applied by LlamaAttention, which folds it into the key mask for
// single-position steps and uses an explicit additive mask when several new positions reach past it.

import type { ArchitectureSpec, LoadedModelInfo, WeightSource } from "../../modeling-utils.js";
import { LlamaForCausalLM, llamaArchitecture } from "../llama/modeling.js";
import type { MistralConfig } from "./config.js";

/** Mistral's weight table: Llama's names and shapes, no biases (MistralConfig fixes them off). */
export function mistralArchitecture(config: MistralConfig): ArchitectureSpec {
  return llamaArchitecture(config, "MistralForCausalLM");
}

export class MistralForCausalLM extends LlamaForCausalLM {
  constructor(config: MistralConfig, spec: ArchitectureSpec, info: LoadedModelInfo, src: WeightSource) {
    super(config, spec, info, src);
  }

  /** The window of every layer (null when sliding_window is null). */
  get slidingWindow(): number | null {
    return this.config.slidingWindow;
  }
}
