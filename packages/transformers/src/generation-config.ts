// GenerationConfig: generation_config.json (or, when a folder has none, the generation keys of config.json, as
// transformers does with `_from_model_config`), the user's overrides, and transformers' global defaults applied at
// generate time (spec-hf-stack.md B8; transformers 5 `GenerationConfig._get_default_generation_params`).
// Like transformers 5, a field nobody set is null until `resolve()` fills in the global default.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { ArgumentError, describe } from "@lowbit/dtypes";
import { isJsonObject, tokenIdList, type JsonObject } from "./config-base.js";
import { CONFIG_NAME, readJsonObject } from "./config.js";
import { ConfigError } from "./errors.js";

export const GENERATION_CONFIG_NAME = "generation_config.json";

type Kind =
  | "posInt" // integer > 0
  | "nonNegInt" // integer ≥ 0
  | "number" // finite number
  | "bool"
  | "tokenId" // integer ≥ 0
  | "tokenIdOrList" // integer ≥ 0 or a list of them
  | "tokenIdList" // list of integers ≥ 0
  | "tokenIdLists" // list of lists of integers ≥ 0 (bad_words_ids)
  | "stringOrList"
  | "earlyStopping"; // boolean or "never"

/** The generation parameters lowbit types (camelCase); transformers' other keys are kept in `extra`. */
export interface GenerationParams {
  maxLength: number | null;
  /** Wins over maxLength: max_length = max_new_tokens + input length. */
  maxNewTokens: number | null;
  minLength: number | null;
  minNewTokens: number | null;
  doSample: boolean | null;
  numBeams: number | null;
  numReturnSequences: number | null;
  temperature: number | null;
  topK: number | null;
  topP: number | null;
  minP: number | null;
  typicalP: number | null;
  epsilonCutoff: number | null;
  etaCutoff: number | null;
  repetitionPenalty: number | null;
  noRepeatNgramSize: number | null;
  lengthPenalty: number | null;
  earlyStopping: boolean | "never" | null;
  useCache: boolean | null;
  bosTokenId: number | null;
  /** An id or a list of ids; any of them ends a sequence. */
  eosTokenId: number | readonly number[] | null;
  padTokenId: number | null;
  forcedBosTokenId: number | null;
  forcedEosTokenId: number | readonly number[] | null;
  suppressTokens: readonly number[] | null;
  beginSuppressTokens: readonly number[] | null;
  badWordsIds: readonly (readonly number[])[] | null;
  stopStrings: string | readonly string[] | null;
  maxTime: number | null;
  removeInvalidValues: boolean | null;
  renormalizeLogits: boolean | null;
}

type Spec = { readonly snake: string; readonly kind: Kind };

const SPECS = {
  maxLength: { snake: "max_length", kind: "posInt" },
  maxNewTokens: { snake: "max_new_tokens", kind: "posInt" },
  minLength: { snake: "min_length", kind: "nonNegInt" },
  minNewTokens: { snake: "min_new_tokens", kind: "nonNegInt" },
  doSample: { snake: "do_sample", kind: "bool" },
  numBeams: { snake: "num_beams", kind: "posInt" },
  numReturnSequences: { snake: "num_return_sequences", kind: "posInt" },
  temperature: { snake: "temperature", kind: "number" },
  topK: { snake: "top_k", kind: "nonNegInt" },
  topP: { snake: "top_p", kind: "number" },
  minP: { snake: "min_p", kind: "number" },
  typicalP: { snake: "typical_p", kind: "number" },
  epsilonCutoff: { snake: "epsilon_cutoff", kind: "number" },
  etaCutoff: { snake: "eta_cutoff", kind: "number" },
  repetitionPenalty: { snake: "repetition_penalty", kind: "number" },
  noRepeatNgramSize: { snake: "no_repeat_ngram_size", kind: "nonNegInt" },
  lengthPenalty: { snake: "length_penalty", kind: "number" },
  earlyStopping: { snake: "early_stopping", kind: "earlyStopping" },
  useCache: { snake: "use_cache", kind: "bool" },
  bosTokenId: { snake: "bos_token_id", kind: "tokenId" },
  eosTokenId: { snake: "eos_token_id", kind: "tokenIdOrList" },
  padTokenId: { snake: "pad_token_id", kind: "tokenId" },
  forcedBosTokenId: { snake: "forced_bos_token_id", kind: "tokenId" },
  forcedEosTokenId: { snake: "forced_eos_token_id", kind: "tokenIdOrList" },
  suppressTokens: { snake: "suppress_tokens", kind: "tokenIdList" },
  beginSuppressTokens: { snake: "begin_suppress_tokens", kind: "tokenIdList" },
  badWordsIds: { snake: "bad_words_ids", kind: "tokenIdLists" },
  stopStrings: { snake: "stop_strings", kind: "stringOrList" },
  maxTime: { snake: "max_time", kind: "number" },
  removeInvalidValues: { snake: "remove_invalid_values", kind: "bool" },
  renormalizeLogits: { snake: "renormalize_logits", kind: "bool" },
} as const satisfies { readonly [K in keyof GenerationParams]: Spec };

export type GenerationParamName = keyof GenerationParams;
export const GENERATION_PARAM_NAMES = Object.keys(SPECS) as GenerationParamName[];
const BY_SNAKE = new Map<string, GenerationParamName>(GENERATION_PARAM_NAMES.map((k) => [SPECS[k].snake, k]));

/**
 * transformers' global defaults (`_get_default_generation_params`), applied at generate time to every field that
 * neither the user nor the checkpoint set. Fields absent here (maxNewTokens, minP, token ids, ...) default to null.
 */
export const GENERATION_DEFAULTS: Readonly<Partial<GenerationParams>> = {
  maxLength: 20,
  minLength: 0,
  doSample: false,
  useCache: true,
  earlyStopping: false,
  numBeams: 1,
  temperature: 1.0,
  topK: 50,
  topP: 1.0,
  typicalP: 1.0,
  repetitionPenalty: 1.0,
  lengthPenalty: 1.0,
  noRepeatNgramSize: 0,
  numReturnSequences: 1,
  removeInvalidValues: false,
  epsilonCutoff: 0.0,
  etaCutoff: 0.0,
};

/** Converts one value by kind, or returns an error text ("expected …"). */
function convert(kind: Kind, v: unknown): { ok: true; value: unknown } | { ok: false; expected: string } {
  const isInt = (x: unknown, min: number) => typeof x === "number" && Number.isSafeInteger(x) && x >= min;
  const idList = (x: unknown) => Array.isArray(x) && x.every((y) => isInt(y, 0));
  switch (kind) {
    case "posInt":
      return isInt(v, 1) ? { ok: true, value: v } : { ok: false, expected: "a positive integer" };
    case "nonNegInt":
    case "tokenId":
      return isInt(v, 0) ? { ok: true, value: v } : { ok: false, expected: kind === "tokenId" ? "a non-negative integer token id" : "a non-negative integer" };
    case "number":
      return typeof v === "number" && Number.isFinite(v) ? { ok: true, value: v } : { ok: false, expected: "a finite number" };
    case "bool":
      return typeof v === "boolean" ? { ok: true, value: v } : { ok: false, expected: "a boolean" };
    case "tokenIdOrList":
      if (isInt(v, 0)) return { ok: true, value: v };
      return idList(v) ? { ok: true, value: [...(v as number[])] } : { ok: false, expected: "a token id or a list of token ids" };
    case "tokenIdList":
      return idList(v) ? { ok: true, value: [...(v as number[])] } : { ok: false, expected: "a list of token ids" };
    case "tokenIdLists":
      return Array.isArray(v) && v.every(idList) ? { ok: true, value: (v as number[][]).map((x) => [...x]) } : { ok: false, expected: "a list of lists of token ids" };
    case "stringOrList":
      if (typeof v === "string") return { ok: true, value: v };
      return Array.isArray(v) && v.every((x) => typeof x === "string") ? { ok: true, value: [...(v as string[])] } : { ok: false, expected: "a string or a list of strings" };
    case "earlyStopping":
      return typeof v === "boolean" || v === "never" ? { ok: true, value: v } : { ok: false, expected: 'a boolean or "never"' };
  }
}

function emptyParams(): GenerationParams {
  return Object.fromEntries(GENERATION_PARAM_NAMES.map((k) => [k, null])) as unknown as GenerationParams;
}

/** Generation parameters with every global default applied (what generate() runs with). */
export interface ResolvedGenerationConfig extends GenerationParams {
  maxLength: number;
  minLength: number;
  doSample: boolean;
  numBeams: number;
  numReturnSequences: number;
  temperature: number;
  topK: number;
  topP: number;
  typicalP: number;
  repetitionPenalty: number;
  noRepeatNgramSize: number;
  useCache: boolean;
  /** eosTokenId as a list ([] when none). */
  eosTokenIds: readonly number[];
}

export class GenerationConfig {
  readonly params: Readonly<GenerationParams>;
  /** Keys of the source dict that lowbit does not type (kept for round trips), snake_case. */
  readonly extra: Readonly<JsonObject>;
  /** True when built from config.json because generation_config.json is missing. */
  readonly fromModelConfig: boolean;
  /** The file it was read from, if any. */
  readonly file: string | null;

  private constructor(params: GenerationParams, extra: JsonObject, fromModelConfig: boolean, file: string | null) {
    this.params = Object.freeze(params);
    this.extra = Object.freeze(extra);
    this.fromModelConfig = fromModelConfig;
    this.file = file;
  }

  /** From a generation_config.json-style dict (snake_case). Unknown keys go to `extra`. */
  static fromDict(dict: unknown, file = GENERATION_CONFIG_NAME): GenerationConfig {
    if (!isJsonObject(dict)) throw new ConfigError(file, `must hold a JSON object but holds ${describe(dict)}`);
    const params = emptyParams();
    const extra: JsonObject = {};
    for (const [key, value] of Object.entries(dict)) {
      const name = BY_SNAKE.get(key);
      if (name === undefined) {
        if (key !== "_from_model_config") extra[key] = value;
        continue;
      }
      if (value === null) continue;
      const r = convert(SPECS[name].kind, value);
      if (!r.ok) throw new ConfigError(file, `expected ${r.expected} but received ${describe(value)}`, { key });
      (params as unknown as Record<string, unknown>)[name] = r.value;
    }
    return new GenerationConfig(params, extra, dict["_from_model_config"] === true, file);
  }

  /**
   * From a model config.json dict, for folders without generation_config.json: transformers reads the same keys
   * from config.json (`GenerationConfig.from_pretrained(dir, config_file_name="config.json")`), so bos / eos / pad
   * ids, use_cache and any legacy generation keys carry over; everything else is ignored.
   */
  static fromModelConfig(configDict: unknown, file = CONFIG_NAME): GenerationConfig {
    if (!isJsonObject(configDict)) throw new ConfigError(file, `must hold a JSON object but holds ${describe(configDict)}`);
    const known = Object.fromEntries(Object.entries(configDict).filter(([k]) => BY_SNAKE.has(k)));
    const g = GenerationConfig.fromDict(known, file);
    return new GenerationConfig({ ...g.params }, {}, true, file);
  }

  /** Reads `generation_config.json` from a model folder, falling back to its `config.json` like transformers. */
  static fromPretrained(dir: string): GenerationConfig {
    const gen = join(dir, GENERATION_CONFIG_NAME);
    if (existsSync(gen)) return GenerationConfig.fromDict(readJsonObject(gen), gen);
    const cfg = join(dir, CONFIG_NAME);
    return GenerationConfig.fromModelConfig(readJsonObject(cfg), cfg);
  }

  /** Builds a config from camelCase parameters (user code); unknown names and bad values throw ArgumentError. */
  static create(params: Partial<GenerationParams> = {}): GenerationConfig {
    return new GenerationConfig({ ...emptyParams(), ...checkOverrides(params) }, {}, false, null);
  }

  /** A copy with `overrides` applied (the user's generate() arguments win over the checkpoint's values). */
  update(overrides: Partial<GenerationParams>): GenerationConfig {
    return new GenerationConfig({ ...this.params, ...checkOverrides(overrides) }, { ...this.extra }, this.fromModelConfig, this.file);
  }

  /** `eosTokenId` as a list. */
  get eosTokenIds(): readonly number[] {
    return tokenIdList(this.params.eosTokenId);
  }

  /**
   * Applies the global defaults to every unset field and checks the values generate() will use: temperature > 0,
   * top_k ≥ 0, top_p and min_p in [0, 1] when sampling; repetition_penalty > 0. Throws ArgumentError naming the field.
   */
  resolve(): ResolvedGenerationConfig {
    const p = { ...this.params } as GenerationParams;
    for (const [k, v] of Object.entries(GENERATION_DEFAULTS) as [GenerationParamName, unknown][]) {
      if (p[k] === null) (p as unknown as Record<string, unknown>)[k] = v;
    }
    const r = { ...p, eosTokenIds: tokenIdList(p.eosTokenId) } as ResolvedGenerationConfig;
    const bad = (name: string, what: string, v: unknown) => new ArgumentError(`Expected ${what} for ${name} but received ${describe(v)}`);
    if (r.doSample) {
      if (!(r.temperature > 0)) throw bad("temperature", "a number > 0 when doSample is true (use doSample: false for greedy decoding)", r.temperature);
      if (r.topP < 0 || r.topP > 1) throw bad("topP", "a number in [0, 1]", r.topP);
      if (r.minP !== null && (r.minP < 0 || r.minP > 1)) throw bad("minP", "a number in [0, 1]", r.minP);
      if (r.typicalP <= 0 || r.typicalP > 1) throw bad("typicalP", "a number in (0, 1]", r.typicalP);
    }
    if (!(r.repetitionPenalty > 0)) throw bad("repetitionPenalty", "a number > 0", r.repetitionPenalty);
    return r;
  }

  /**
   * The length limit for a prompt of `inputLength` tokens: max_new_tokens + inputLength when max_new_tokens is set
   * (it wins), else max_length (default 20).
   */
  maxLengthFor(inputLength: number): number {
    if (!Number.isSafeInteger(inputLength) || inputLength < 0) throw new ArgumentError(`Expected a non-negative integer for inputLength but received ${describe(inputLength)}`);
    const { maxNewTokens, maxLength } = this.params;
    if (maxNewTokens !== null) return maxNewTokens + inputLength;
    return maxLength ?? (GENERATION_DEFAULTS.maxLength as number);
  }

  /**
   * The id finished rows are filled with: pad_token_id, else the first eos id (transformers then warns "Setting
   * `pad_token_id` to `eos_token_id`:X for open-end generation."), else null.
   */
  resolvePadTokenId(): { id: number | null; fromEos: boolean } {
    if (this.params.padTokenId !== null) return { id: this.params.padTokenId, fromEos: false };
    const eos = this.eosTokenIds[0];
    return eos === undefined ? { id: null, fromEos: false } : { id: eos, fromEos: true };
  }

  /** The set fields as a generation_config.json-style dict (snake_case, `extra` keys included). */
  toDict(): JsonObject {
    const out: JsonObject = {};
    for (const k of GENERATION_PARAM_NAMES) {
      const v = this.params[k];
      if (v !== null) out[SPECS[k].snake] = v;
    }
    if (this.fromModelConfig) out["_from_model_config"] = true;
    return { ...out, ...this.extra };
  }
}

function checkOverrides(overrides: Partial<GenerationParams>): Partial<GenerationParams> {
  if (typeof overrides !== "object" || overrides === null) throw new ArgumentError(`Expected an object of generation parameters but received ${describe(overrides)}`);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(overrides)) {
    if (!Object.prototype.hasOwnProperty.call(SPECS, k)) {
      throw new ArgumentError(`Expected a generation parameter (${GENERATION_PARAM_NAMES.join(", ")}) but received the name ${JSON.stringify(k)}`);
    }
    if (v === undefined) continue;
    if (v === null) {
      out[k] = null;
      continue;
    }
    const r = convert(SPECS[k as GenerationParamName].kind, v);
    if (!r.ok) throw new ArgumentError(`Expected ${r.expected} for ${k} but received ${describe(v)}`);
    out[k] = r.value;
  }
  return out as Partial<GenerationParams>;
}
