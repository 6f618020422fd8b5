// @lowbit/transformers: the model-independent parts of Hugging Face transformers for Node.js — safetensors,
// configs, RoPE parameters, generation config, BitsAndBytesConfig and tokenizers with chat templates.

export * from "./errors.js";
export * from "./safetensors.js";
export {
  FieldReader,
  isJsonObject,
  parseRopeParameters,
  readModelDType,
  standardizeRopeDict,
  tokenIdList,
  type DecoderConfigBase,
  type DecoderDefaults,
  type JsonObject,
  type LayerType,
  type ModelDType,
  type ProjectionBias,
  type RopeParameters,
  type RopeType,
} from "./config-base.js";
export * from "./config.js";
export { LLAMA_DEFAULTS, parseLlamaConfig, type LlamaConfig } from "./models/llama/config.js";
export { MISTRAL_DEFAULTS, parseMistralConfig, type MistralConfig } from "./models/mistral/config.js";
export { QWEN2_DEFAULTS, parseQwen2Config, type Qwen2Config } from "./models/qwen2/config.js";
export * from "./rope.js";
export * from "./generation-config.js";
export * from "./quantization-config.js";
export { PyFloat, pyJsonDumps, type PyJsonValue } from "@lowbit/dtypes";
export * from "./tokenizer.js";
export * from "./generation/index.js";
export * from "./perplexity.js";

// Models: loading (quantized or not), the forward pass with a KV cache, saving, memory footprint.
export * from "./model-errors.js";
export {
  DecoderKVCache,
  PreTrainedCausalLM,
  PretrainedEmbedding,
  PretrainedLinear,
  PretrainedRMSNorm,
  memoryFootprint,
  type ArchitectureSpec,
  type CacheLayout,
  type CausalLMInput,
  type CausalLMOutput,
  type IdMatrix,
  type LinearLike,
  type LoadedModelInfo,
  type MemoryFootprintOptions,
  type ModuleSpec,
  type WeightSource,
} from "./modeling-utils.js";
export {
  LlamaAttention,
  LlamaDecoderLayer,
  LlamaForCausalLM,
  LlamaMLP,
  LlamaModel,
  LlamaRotaryEmbedding,
  layerWindows,
  llamaArchitecture,
} from "./models/llama/modeling.js";
export { MistralForCausalLM, mistralArchitecture } from "./models/mistral/modeling.js";
export { Qwen2ForCausalLM, qwen2Architecture } from "./models/qwen2/modeling.js";
export {
  DEVICE_MAP_STRATEGIES,
  describeModel,
  noSplitModules,
  planAutoDeviceMap,
  resolveDeviceMap,
  type AutoDeviceMapPlanner,
  type DescribeModelOptions,
  type DeviceMapOption,
  type DeviceMapPlanOptions,
  type DeviceMapStrategy,
  type DevicePlanContext,
  type PlacementUnit,
  type ResolveDeviceMapOptions,
} from "./device-map.js";
export {
  RANDOM_POOL_SIZE,
  buildCausalLMFromConfig,
  defaultSkipModules,
  isSkippedModule,
  loadCausalLM,
  type ArchitectureDefinition,
  type FromConfigOptions,
  type FromPretrainedOptions,
  type LoadProgress,
} from "./loader.js";
export { AutoModelForCausalLM, CAUSAL_LM_ARCHITECTURES } from "./auto.js";
export { DEFAULT_MAX_SHARD_SIZE, configJson, generationConfigJson, parseShardSize, safetensorsLayout, savePretrained, type SavePretrainedOptions } from "./save.js";
