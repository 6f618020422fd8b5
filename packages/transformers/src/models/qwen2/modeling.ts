// Qwen2ForCausalLM: transformers/models/qwen2/modeling_qwen2.py. Qwen2 is the Llama decoder (../llama/modeling.ts)
// with biases on q_proj / k_proj / v_proj (not o_proj, not the MLP) and per-layer attention types: layers listed as
// "sliding_attention" in `layer_types` (derived from use_sliding_window / max_window_layers when absent) use the
// sliding window, the others full causal attention. Qwen2Config carries both; LlamaAttention applies the window.

import type { ArchitectureSpec, LoadedModelInfo, WeightSource } from "../../modeling-utils.js";
import { LlamaForCausalLM, layerWindows, llamaArchitecture } from "../llama/modeling.js";
import type { Qwen2Config } from "./config.js";

/** Qwen2's weight table: Llama's names and shapes plus `self_attn.{q,k,v}_proj.bias` (Qwen2Config sets the flags). */
export function qwen2Architecture(config: Qwen2Config): ArchitectureSpec {
  return llamaArchitecture(config, "Qwen2ForCausalLM");
}

export class Qwen2ForCausalLM extends LlamaForCausalLM {
  constructor(config: Qwen2Config, spec: ArchitectureSpec, info: LoadedModelInfo, src: WeightSource) {
    super(config, spec, info, src);
  }

  /** Each layer's sliding window, or null for its full-attention layers. */
  get layerWindows(): (number | null)[] {
    return layerWindows(this.config);
  }
}
