// AutoModelForCausalLM: picks the architecture from config.json's model_type (llama, mistral, qwen2) and loads it with
// src/loader.ts. The registry below is the one place a new architecture is added.

import type { PretrainedConfig, ModelType } from "./config.js";
import { ConfigError } from "./errors.js";
import { buildCausalLMFromConfig, loadCausalLM, type ArchitectureDefinition, type FromConfigOptions, type FromPretrainedOptions } from "./loader.js";
import type { PreTrainedCausalLM } from "./modeling-utils.js";
import type { LlamaConfig } from "./models/llama/config.js";
import { LlamaForCausalLM, llamaArchitecture } from "./models/llama/modeling.js";
import type { MistralConfig } from "./models/mistral/config.js";
import { MistralForCausalLM, mistralArchitecture } from "./models/mistral/modeling.js";
import type { Qwen2Config } from "./models/qwen2/config.js";
import { Qwen2ForCausalLM, qwen2Architecture } from "./models/qwen2/modeling.js";

/** model_type → how to build its causal LM (transformers' MODEL_FOR_CAUSAL_LM_MAPPING). */
export const CAUSAL_LM_ARCHITECTURES: { readonly [K in ModelType]: ArchitectureDefinition } = {
  llama: {
    modelType: "llama",
    spec: (c) => llamaArchitecture(c as LlamaConfig),
    build: (c, spec, info, src) => new LlamaForCausalLM(c as LlamaConfig, spec, info, src),
  },
  mistral: {
    modelType: "mistral",
    spec: (c) => mistralArchitecture(c as MistralConfig),
    build: (c, spec, info, src) => new MistralForCausalLM(c as MistralConfig, spec, info, src),
  },
  qwen2: {
    modelType: "qwen2",
    spec: (c) => qwen2Architecture(c as Qwen2Config),
    build: (c, spec, info, src) => new Qwen2ForCausalLM(c as Qwen2Config, spec, info, src),
  },
};

function architectureFor(config: PretrainedConfig): ArchitectureDefinition {
  const def = (CAUSAL_LM_ARCHITECTURES as Record<string, ArchitectureDefinition | undefined>)[config.modelType];
  if (def === undefined) throw new ConfigError(config.file, `model_type ${JSON.stringify(config.modelType)} has no causal LM`, { key: "model_type" });
  return def;
}

/** transformers-style entry point for causal language models. */
export const AutoModelForCausalLM = {
  /**
   * Loads the model in `dir` (config.json + model.safetensors or a sharded index), optionally quantizing it with a
   * BitsAndBytesConfig while loading; a pre-quantized bitsandbytes checkpoint loads as saved.
   * @example
   * const model = await AutoModelForCausalLM.fromPretrained("./TinyLlama", {
   *   quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "nf4" }),
   *   deviceMap: "auto",
   * });
   * const { logits } = model.forward({ inputIds: [[1, 317, 525]] }); // (1, 3, vocab)
   * @throws SafetensorsError / ConfigError / ModelLoadError / ArgumentError (see src/loader.ts)
   */
  async fromPretrained(dir: string, options: FromPretrainedOptions = {}): Promise<PreTrainedCausalLM> {
    return loadCausalLM(dir, options, architectureFor);
  },

  /**
   * Builds the model a config describes with seeded random weights and no files (transformers' from_config +
   * _init_weights), optionally quantized as fromPretrained would quantize it; see FromConfigOptions in src/loader.ts.
   * @example
   * const model = AutoModelForCausalLM.fromConfig({ model_type: "mistral", num_hidden_layers: 2 }, { seed: 1, dtype: "bfloat16" });
   * @throws ConfigError / ArgumentError / DeviceMapError
   */
  fromConfig(config: PretrainedConfig | Readonly<Record<string, unknown>>, options: FromConfigOptions = {}): PreTrainedCausalLM {
    return buildCausalLMFromConfig(config, options, architectureFor);
  },
} as const;
