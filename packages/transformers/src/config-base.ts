// Shared pieces of config.json parsing: typed field readers that throw ConfigError naming the file and key, the
// fields every decoder-only architecture has, dtype / token-id handling, and RoPE parameter standardization that
// reads both on-disk generations (TF4 `rope_theta` + `rope_scaling`, TF5 `rope_parameters`) into TF5's form.
// Architecture files (src/models/<arch>/config.ts) combine these with their own defaults.

import { describe as describeValue, type DType } from "@lowbit/dtypes";
import { ConfigError } from "./errors.js";

export type JsonObject = Record<string, unknown>;

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads typed fields from one JSON object, with errors that name the file and the (dotted) key. */
export class FieldReader {
  constructor(
    readonly raw: JsonObject,
    readonly file: string,
    /** Prefix for nested objects, e.g. "rope_parameters.". */
    readonly prefix = "",
  ) {}

  fail(key: string, what: string, value: unknown): never {
    throw new ConfigError(this.file, `expected ${what} but received ${describeValue(value)}`, { key: this.prefix + key });
  }

  has(key: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.raw, key) && this.raw[key] !== undefined;
  }

  /** The value, or undefined when the key is absent (null stays null). */
  get(key: string): unknown {
    return this.has(key) ? this.raw[key] : undefined;
  }

  /** A positive integer; `fallback` when absent or null. */
  positiveInt(key: string, fallback: number): number {
    const v = this.get(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) this.fail(key, "a positive integer", v);
    return v;
  }

  /** A positive integer, or null (absent → `fallback`). */
  positiveIntOrNull(key: string, fallback: number | null): number | null {
    const v = this.get(key);
    if (v === undefined) return fallback;
    if (v === null) return null;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) this.fail(key, "a positive integer or null", v);
    return v;
  }

  /** A finite number; `fallback` when absent or null. */
  number(key: string, fallback: number, check?: { min?: number; minExclusive?: number; max?: number }): number {
    const v = this.get(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(key, "a finite number", v);
    if (check?.min !== undefined && v < check.min) this.fail(key, `a number ≥ ${check.min}`, v);
    if (check?.minExclusive !== undefined && v <= check.minExclusive) this.fail(key, `a number > ${check.minExclusive}`, v);
    if (check?.max !== undefined && v > check.max) this.fail(key, `a number ≤ ${check.max}`, v);
    return v;
  }

  /** A finite number or null; `fallback` when absent. */
  numberOrNull(key: string, fallback: number | null): number | null {
    const v = this.get(key);
    if (v === undefined) return fallback;
    if (v === null) return null;
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(key, "a finite number or null", v);
    return v;
  }

  boolean(key: string, fallback: boolean): boolean {
    const v = this.get(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "boolean") this.fail(key, "a boolean", v);
    return v;
  }

  string(key: string, fallback: string): string {
    const v = this.get(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "string") this.fail(key, "a string", v);
    return v;
  }

  /** A token id: a non-negative integer or null (absent → `fallback`). */
  tokenId(key: string, fallback: number | null): number | null {
    const v = this.get(key);
    if (v === undefined) return fallback;
    if (v === null) return null;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) this.fail(key, "a non-negative integer token id or null", v);
    return v;
  }

  /** A token id or a list of them (`eos_token_id`), or null (absent → `fallback`). */
  tokenIdOrList(key: string, fallback: number | readonly number[] | null): number | readonly number[] | null {
    const v = this.get(key);
    if (v === undefined) return fallback;
    if (v === null) return null;
    const ok = (x: unknown) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
    if (ok(v)) return v as number;
    if (Array.isArray(v) && v.every(ok)) return [...(v as number[])];
    return this.fail(key, "a non-negative integer token id, a list of them, or null", v);
  }

  stringList(key: string): readonly string[] | null {
    const v = this.get(key);
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) this.fail(key, "a list of strings", v);
    return [...(v as string[])];
  }
}

/** `eos_token_id` as a list: [] for null, [id] for an int, the list as is. */
export function tokenIdList(v: number | readonly number[] | null): readonly number[] {
  if (v === null) return [];
  return typeof v === "number" ? [v] : v;
}

/** The float dtypes a checkpoint's `dtype` / `torch_dtype` may name. */
export type ModelDType = Extract<DType, "float32" | "float16" | "bfloat16">;

const TORCH_FLOAT_NAMES: Record<string, ModelDType> = {
  float32: "float32",
  float: "float32",
  float16: "float16",
  half: "float16",
  bfloat16: "bfloat16",
};

/** Reads `dtype` (transformers ≥ 4.56) or, failing that, the older `torch_dtype`. */
export function readModelDType(r: FieldReader): ModelDType | null {
  const key = r.has("dtype") && r.get("dtype") !== null ? "dtype" : "torch_dtype";
  const v = r.get(key);
  if (v === undefined || v === null) return null;
  if (typeof v === "string") {
    const d = TORCH_FLOAT_NAMES[v.startsWith("torch.") ? v.slice(6) : v];
    if (d !== undefined) return d;
  }
  return r.fail(key, "one of float32, float16, bfloat16", v);
}

// ---------------------------------------------------------------- RoPE parameters

export type RopeType = "default" | "linear" | "dynamic" | "yarn" | "llama3";
const ROPE_TYPES: readonly RopeType[] = ["default", "linear", "dynamic", "yarn", "llama3"];

/** Standardized RoPE parameters (transformers 5's `rope_parameters`), camelCase; null where not given. */
export interface RopeParameters {
  readonly ropeType: RopeType;
  readonly ropeTheta: number;
  /** Fraction of head_dim that is rotated (linear / dynamic / yarn / llama3 honour it; "default" does not). */
  readonly partialRotaryFactor: number | null;
  /** linear, dynamic, yarn (null → max_position_embeddings / original), llama3. */
  readonly factor: number | null;
  /** yarn, llama3 (filled from max_position_embeddings when absent, as transformers 5 does). */
  readonly originalMaxPositionEmbeddings: number | null;
  /** yarn: the cos/sin scale; derived from factor / mscale when null. */
  readonly attentionFactor: number | null;
  readonly betaFast: number | null;
  readonly betaSlow: number | null;
  readonly mscale: number | null;
  readonly mscaleAllDim: number | null;
  /** yarn: floor/ceil the correction range; null when absent (= true). */
  readonly truncate: boolean | null;
  readonly lowFreqFactor: number | null;
  readonly highFreqFactor: number | null;
}

/**
 * Builds transformers 5's standardized `rope_parameters` dict from a config.json, exactly as
 * `RotaryEmbeddingConfigMixin.convert_rope_params_to_dict` + `standardize_rope_params` do: a legacy
 * `rope_scaling` replaces `rope_parameters`; `rope_theta` defaults to the top-level value (or 10000);
 * `partial_rotary_factor` is copied in; `rope_type` defaults to the legacy `type` key (or "default"); llama3 / yarn
 * get `original_max_position_embeddings` (top-level value first, else max_position_embeddings).
 */
export function standardizeRopeDict(r: FieldReader, maxPositionEmbeddings: number): JsonObject {
  const scaling = r.get("rope_scaling");
  const params = r.get("rope_parameters");
  // Python's `rope_scaling or self.rope_parameters`: an empty dict counts as absent.
  const pickObject = (key: string, v: unknown): JsonObject | null => {
    if (v === undefined || v === null) return null;
    if (!isJsonObject(v)) r.fail(key, "an object", v);
    return Object.keys(v).length > 0 ? v : null;
  };
  const source = pickObject("rope_scaling", scaling) ?? pickObject("rope_parameters", params) ?? {};
  const d: JsonObject = { ...source };
  const setDefault = (k: string, v: unknown) => {
    if (!Object.prototype.hasOwnProperty.call(d, k)) d[k] = v;
  };
  setDefault("rope_theta", r.get("rope_theta") ?? 10000.0);
  const prf = r.get("partial_rotary_factor");
  if (prf !== undefined && prf !== null) setDefault("partial_rotary_factor", prf);
  setDefault("rope_type", d["type"] ?? "default");
  const ropeType = d["rope_type"];
  if (ropeType === "llama3" || ropeType === "yarn" || ropeType === "longrope") {
    if (r.has("original_max_position_embeddings")) d["original_max_position_embeddings"] = r.get("original_max_position_embeddings");
    else setDefault("original_max_position_embeddings", maxPositionEmbeddings);
  }
  return d;
}

/** Validates a standardized rope dict (keys as transformers' `_validate_*_rope_parameters` require) and converts it. */
export function parseRopeParameters(dict: JsonObject, file: string, layerTypes: readonly string[] | null): RopeParameters {
  if (layerTypes !== null && Object.keys(dict).some((k) => layerTypes.includes(k))) {
    throw new ConfigError(file, "per-layer-type rope_parameters are not supported for this architecture", { key: "rope_parameters" });
  }
  const rr = new FieldReader(dict, file, "rope_parameters.");
  const ropeType = dict["rope_type"];
  if (ropeType === "longrope" || ropeType === "proportional") {
    throw new ConfigError(file, `rope_type "${ropeType}" is not supported yet (supported: ${ROPE_TYPES.join(", ")})`, { key: "rope_parameters.rope_type" });
  }
  if (typeof ropeType !== "string" || !(ROPE_TYPES as readonly string[]).includes(ropeType)) {
    rr.fail("rope_type", `one of ${ROPE_TYPES.join(", ")}`, ropeType);
  }
  const type = ropeType as RopeType;
  const required: Record<RopeType, string[]> = {
    default: [],
    linear: ["factor"],
    dynamic: ["factor"],
    yarn: ["factor", "original_max_position_embeddings"],
    llama3: ["factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"],
  };
  for (const k of required[type]) {
    if (!Object.prototype.hasOwnProperty.call(dict, k)) {
      throw new ConfigError(file, `rope_type "${type}" requires ${k}`, { key: `rope_parameters.${k}` });
    }
  }
  const positive = (k: string) => rr.numberOrNull(k, null) ?? null;
  const factor = positive("factor");
  if (type !== "default" && type !== "yarn" && factor === null) rr.fail("factor", "a number ≥ 1", dict["factor"]);
  if (factor !== null && factor <= 0) rr.fail("factor", "a positive number", factor);
  const omp = rr.positiveIntOrNull("original_max_position_embeddings", null);
  const theta = rr.number("rope_theta", 10000.0, { minExclusive: 0 });
  const prf = rr.numberOrNull("partial_rotary_factor", null);
  if (prf !== null && !(prf > 0 && prf <= 1)) rr.fail("partial_rotary_factor", "a number in (0, 1]", prf);
  const truncate = rr.get("truncate");
  if (truncate !== undefined && truncate !== null && typeof truncate !== "boolean") rr.fail("truncate", "a boolean", truncate);
  const low = rr.numberOrNull("low_freq_factor", null);
  const high = rr.numberOrNull("high_freq_factor", null);
  if (type === "llama3") {
    if (low === null) rr.fail("low_freq_factor", "a number", dict["low_freq_factor"]);
    if (high === null) rr.fail("high_freq_factor", "a number", dict["high_freq_factor"]);
    if ((high as number) <= (low as number)) rr.fail("high_freq_factor", `a number greater than low_freq_factor (${low})`, high);
  }
  if (type === "yarn" && factor === null && omp === null) rr.fail("factor", "a number (or original_max_position_embeddings to derive it)", null);
  return {
    ropeType: type,
    ropeTheta: theta,
    partialRotaryFactor: prf,
    factor,
    originalMaxPositionEmbeddings: omp,
    attentionFactor: rr.numberOrNull("attention_factor", null),
    betaFast: rr.numberOrNull("beta_fast", null),
    betaSlow: rr.numberOrNull("beta_slow", null),
    mscale: rr.numberOrNull("mscale", null),
    mscaleAllDim: rr.numberOrNull("mscale_all_dim", null),
    // transformers reads `rope_parameters.get("truncate", True)`: an explicit null is falsy (no truncation).
    truncate: truncate === undefined ? null : truncate === null ? false : (truncate as boolean),
    lowFreqFactor: low,
    highFreqFactor: high,
  };
}

// ---------------------------------------------------------------- common decoder fields

export type LayerType = "full_attention" | "sliding_attention";

/** Biases of the attention and MLP projections, as each architecture's modeling code creates them. */
export interface ProjectionBias {
  readonly q: boolean;
  readonly k: boolean;
  readonly v: boolean;
  readonly o: boolean;
  /** gate_proj / up_proj / down_proj. */
  readonly mlp: boolean;
}

/** Fields every supported decoder-only config has, camelCase, with transformers' derivations applied. */
export interface DecoderConfigBase {
  /** The config.json path (or the name given to parseConfig). */
  readonly file: string;
  readonly architectures: readonly string[] | null;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numHiddenLayers: number;
  readonly numAttentionHeads: number;
  /** num_key_value_heads (GQA); num_attention_heads when null. */
  readonly numKeyValueHeads: number;
  /** head_dim; hidden_size / num_attention_heads when absent or null. */
  readonly headDim: number;
  readonly hiddenAct: string;
  readonly maxPositionEmbeddings: number;
  readonly rmsNormEps: number;
  readonly tieWordEmbeddings: boolean;
  readonly bosTokenId: number | null;
  /** As written: an int, a list, or null. */
  readonly eosTokenId: number | readonly number[] | null;
  /** `eosTokenId` as a list (any member ends a sequence). */
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number | null;
  readonly useCache: boolean;
  readonly attentionDropout: number;
  /** The checkpoint dtype (`dtype`, or the older `torch_dtype`), or null when the config does not say. */
  readonly dtype: ModelDType | null;
  readonly ropeParameters: RopeParameters;
  /** transformers 5's standardized `rope_parameters` dict (what it would write back). */
  readonly ropeParametersDict: Readonly<JsonObject>;
  readonly projectionBias: ProjectionBias;
  /** Window size for sliding-attention layers, or null when no layer uses one. */
  readonly slidingWindow: number | null;
  /** One entry per layer. */
  readonly layerTypes: readonly LayerType[];
  /** The raw `quantization_config` block, or null; parse it with BitsAndBytesConfig.fromDict. */
  readonly quantizationConfig: Readonly<JsonObject> | null;
  /** The whole config.json object as read. */
  readonly raw: Readonly<JsonObject>;
}

/** Architecture defaults for the common fields (transformers' config class defaults). */
export interface DecoderDefaults {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numHiddenLayers: number;
  readonly numAttentionHeads: number;
  /** null → equal to num_attention_heads. */
  readonly numKeyValueHeads: number | null;
  readonly maxPositionEmbeddings: number;
  readonly rmsNormEps: number;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
}

/** Reads the fields shared by llama / mistral / qwen2 (everything except biases, sliding window and layer types). */
export function readDecoderBase(
  r: FieldReader,
  defaults: DecoderDefaults,
  extra: { projectionBias: ProjectionBias; slidingWindow: number | null; layerTypes: readonly LayerType[] | null },
): DecoderConfigBase {
  const hiddenSize = r.positiveInt("hidden_size", defaults.hiddenSize);
  const numAttentionHeads = r.positiveInt("num_attention_heads", defaults.numAttentionHeads);
  const numKeyValueHeads = r.positiveInt("num_key_value_heads", defaults.numKeyValueHeads ?? numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    r.fail("num_key_value_heads", `a divisor of num_attention_heads (${numAttentionHeads})`, numKeyValueHeads);
  }
  const explicitHeadDim = r.positiveIntOrNull("head_dim", null);
  if (explicitHeadDim === null && hiddenSize % numAttentionHeads !== 0) {
    r.fail("hidden_size", `a multiple of num_attention_heads (${numAttentionHeads}) when head_dim is not given`, hiddenSize);
  }
  const headDim = explicitHeadDim ?? hiddenSize / numAttentionHeads;
  const numHiddenLayers = r.positiveInt("num_hidden_layers", defaults.numHiddenLayers);
  const maxPositionEmbeddings = r.positiveInt("max_position_embeddings", defaults.maxPositionEmbeddings);
  const ropeParametersDict = standardizeRopeDict(r, maxPositionEmbeddings);
  const ropeParameters = parseRopeParameters(ropeParametersDict, r.file, extra.layerTypes);
  const eosTokenId = r.tokenIdOrList("eos_token_id", defaults.eosTokenId);
  const q = r.get("quantization_config");
  if (q !== undefined && q !== null && !isJsonObject(q)) r.fail("quantization_config", "an object", q);
  const layerTypes = extra.layerTypes ?? Array.from({ length: numHiddenLayers }, (): LayerType => (extra.slidingWindow === null ? "full_attention" : "sliding_attention"));
  return {
    file: r.file,
    architectures: r.stringList("architectures"),
    vocabSize: r.positiveInt("vocab_size", defaults.vocabSize),
    hiddenSize,
    intermediateSize: r.positiveInt("intermediate_size", defaults.intermediateSize),
    numHiddenLayers,
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    hiddenAct: r.string("hidden_act", "silu"),
    maxPositionEmbeddings,
    rmsNormEps: r.number("rms_norm_eps", defaults.rmsNormEps, { minExclusive: 0 }),
    tieWordEmbeddings: r.boolean("tie_word_embeddings", false),
    bosTokenId: r.tokenId("bos_token_id", defaults.bosTokenId),
    eosTokenId,
    eosTokenIds: tokenIdList(eosTokenId),
    padTokenId: r.tokenId("pad_token_id", null),
    useCache: r.boolean("use_cache", true),
    attentionDropout: r.number("attention_dropout", 0.0, { min: 0, max: 1 }),
    dtype: readModelDType(r),
    ropeParameters,
    ropeParametersDict,
    projectionBias: extra.projectionBias,
    slidingWindow: extra.slidingWindow,
    layerTypes,
    quantizationConfig: isJsonObject(q) ? q : null,
    raw: r.raw,
  };
}
