// PretrainedConfig: reads a model folder's config.json and dispatches on `model_type` to the architecture's config
// parser (src/models/<arch>/config.ts). Unknown architectures are a ConfigError naming the file.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe } from "@lowbit/dtypes";
import { isJsonObject, type JsonObject } from "./config-base.js";
import { ConfigError } from "./errors.js";
import { parseLlamaConfig, type LlamaConfig } from "./models/llama/config.js";
import { parseMistralConfig, type MistralConfig } from "./models/mistral/config.js";
import { parseQwen2Config, type Qwen2Config } from "./models/qwen2/config.js";

export type PretrainedConfig = LlamaConfig | MistralConfig | Qwen2Config;
export type ModelType = PretrainedConfig["modelType"];

export const CONFIG_NAME = "config.json";

const PARSERS: { readonly [K in ModelType]: (raw: JsonObject, file: string) => Extract<PretrainedConfig, { modelType: K }> } = {
  llama: parseLlamaConfig,
  mistral: parseMistralConfig,
  qwen2: parseQwen2Config,
};

export const SUPPORTED_MODEL_TYPES = Object.keys(PARSERS) as ModelType[];

/** Reads a JSON file that must hold an object; errors name the file. */
export function readJsonObject(path: string): JsonObject {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (cause) {
    throw new ConfigError(path, `cannot be read (${(cause as Error).message})`, { cause });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError(path, `is not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (!isJsonObject(value)) throw new ConfigError(path, `must hold a JSON object but holds ${describe(value)}`);
  return value;
}

/** Parses a config.json object; `file` names it in errors. */
export function parseConfig(raw: unknown, file = CONFIG_NAME): PretrainedConfig {
  if (!isJsonObject(raw)) throw new ConfigError(file, `must hold a JSON object but holds ${describe(raw)}`);
  const modelType = raw["model_type"];
  if (typeof modelType !== "string") {
    throw new ConfigError(file, `expected model_type to be one of ${SUPPORTED_MODEL_TYPES.join(", ")} but received ${describe(modelType)}`, { key: "model_type" });
  }
  if (!Object.prototype.hasOwnProperty.call(PARSERS, modelType)) {
    throw new ConfigError(file, `model_type ${JSON.stringify(modelType)} is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(", ")})`, { key: "model_type" });
  }
  return PARSERS[modelType as ModelType](raw, file);
}

/** Reads `config.json` from a model folder (or a path to a .json file). */
export function loadConfig(dirOrFile: string): PretrainedConfig {
  const file = dirOrFile.endsWith(".json") ? dirOrFile : join(dirOrFile, CONFIG_NAME);
  return parseConfig(readJsonObject(file), file);
}

/** transformers-style entry point: `AutoConfig.fromPretrained(dir)`. */
export const AutoConfig = {
  fromPretrained: loadConfig,
  fromDict: parseConfig,
} as const;
