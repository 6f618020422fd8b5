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
export { PyFloat, pyJsonDumps, type PyJsonValue } from "./pyjson.js";
export * from "./tokenizer.js";
