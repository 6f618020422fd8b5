// BitsAndBytesConfig: transformers' `quantization_config` for bitsandbytes (LLM.int8 and 4-bit NF4 / FP4), with
// transformers' fields and defaults in camelCase, validation with typed errors, `fromDict` for the snake_case block
// of a pre-quantized config.json, and `toDict` / `toJsonString` producing exactly what transformers writes
// (spec-hf-stack.md B3, spec-bitsandbytes.md §14). How the fields map to bitsandbytes' layers:
//   bnb4bitUseDoubleQuant → compress_statistics, bnb4bitQuantType → quant_type, bnb4bitQuantStorage → quant_storage,
//   bnb4bitComputeDtype → compute_dtype, llmInt8Threshold → threshold, llmInt8HasFp16Weight → has_fp16_weights.
// Which modules stay unquantized (llmInt8SkipModules replaces the default list) is the loader's job (B4).

import { ArgumentError, describe } from "@lowbit/dtypes";
import { isJsonObject, type JsonObject, type ModelDType } from "./config-base.js";
import { ConfigError } from "./errors.js";
import { PyFloat, pyJsonDumps, type PyJsonValue } from "@lowbit/dtypes";

export type Bnb4bitQuantType = "fp4" | "nf4";
/** Storage dtypes transformers accepts for the packed 4-bit tensor. */
export type BnbQuantStorage = "uint8" | "int8" | "float16" | "bfloat16" | "float32" | "float64";
export const BNB_QUANT_STORAGES: readonly BnbQuantStorage[] = ["float16", "float32", "int8", "uint8", "float64", "bfloat16"];

export interface BitsAndBytesConfigInit {
  loadIn8bit?: boolean;
  loadIn4bit?: boolean;
  /** Outlier threshold of LLM.int8 (default 6.0). */
  llmInt8Threshold?: number;
  /** When set, replaces (does not extend) the default list of modules kept unquantized. */
  llmInt8SkipModules?: readonly string[] | null;
  llmInt8EnableFp32CpuOffload?: boolean;
  llmInt8HasFp16Weight?: boolean;
  /** Matmul dtype of the 4-bit layers; null → float32. torch names ("bfloat16", "half", "torch.float16") accepted. */
  bnb4bitComputeDtype?: string | null;
  bnb4bitQuantType?: Bnb4bitQuantType;
  bnb4bitUseDoubleQuant?: boolean;
  /** dtype of the packed 4-bit storage tensor; null → uint8. */
  bnb4bitQuantStorage?: BnbQuantStorage | null;
}

/** camelCase field → the snake_case key transformers uses. */
const SNAKE = {
  loadIn8bit: "load_in_8bit",
  loadIn4bit: "load_in_4bit",
  llmInt8Threshold: "llm_int8_threshold",
  llmInt8SkipModules: "llm_int8_skip_modules",
  llmInt8EnableFp32CpuOffload: "llm_int8_enable_fp32_cpu_offload",
  llmInt8HasFp16Weight: "llm_int8_has_fp16_weight",
  bnb4bitComputeDtype: "bnb_4bit_compute_dtype",
  bnb4bitQuantType: "bnb_4bit_quant_type",
  bnb4bitUseDoubleQuant: "bnb_4bit_use_double_quant",
  bnb4bitQuantStorage: "bnb_4bit_quant_storage",
} as const satisfies { readonly [K in keyof Required<BitsAndBytesConfigInit>]: string };

type Field = keyof typeof SNAKE;
const BY_SNAKE = new Map<string, Field>((Object.keys(SNAKE) as Field[]).map((k) => [SNAKE[k], k]));
/** Keys transformers writes that carry no information of their own. */
const IGNORED_KEYS = new Set(["quant_method", "_load_in_4bit", "_load_in_8bit"]);

const COMPUTE_DTYPES: Record<string, ModelDType> = { float32: "float32", float: "float32", float16: "float16", half: "float16", bfloat16: "bfloat16" };

/** How validation errors are raised: by the constructor (ArgumentError, camelCase) or fromDict (ConfigError, file + key). */
type Fail = (field: Field, what: string, value: unknown) => never;

const argumentFail: Fail = (field, what, value) => {
  throw new ArgumentError(`Expected ${what} for ${field} but received ${describe(value)}`);
};

function fileFail(file: string): Fail {
  return (field, what, value) => {
    throw new ConfigError(file, `expected ${what} but received ${describe(value)}`, { key: `quantization_config.${SNAKE[field]}` });
  };
}

export class BitsAndBytesConfig {
  readonly quantMethod = "bitsandbytes" as const;
  readonly loadIn8bit: boolean;
  readonly loadIn4bit: boolean;
  readonly llmInt8Threshold: number;
  readonly llmInt8SkipModules: readonly string[] | null;
  readonly llmInt8EnableFp32CpuOffload: boolean;
  readonly llmInt8HasFp16Weight: boolean;
  readonly bnb4bitComputeDtype: ModelDType;
  readonly bnb4bitQuantType: Bnb4bitQuantType;
  readonly bnb4bitUseDoubleQuant: boolean;
  readonly bnb4bitQuantStorage: BnbQuantStorage;
  /** Keys of the dict given to fromDict that transformers does not use (it logs them as unused). */
  readonly unusedKeys: readonly string[];

  /**
   * @param internal set by fromDict only: the block's keys transformers would not use
   * @throws ArgumentError naming the field for a wrong type or value, or when both 4-bit and 8-bit are requested.
   */
  constructor(init: BitsAndBytesConfigInit = {}, internal?: { readonly unusedKeys: readonly string[] }) {
    if (typeof init !== "object" || init === null) throw new ArgumentError(`Expected an object of BitsAndBytesConfig fields but received ${describe(init)}`);
    for (const k of Object.keys(init)) {
      if (!Object.prototype.hasOwnProperty.call(SNAKE, k)) {
        throw new ArgumentError(`Expected a BitsAndBytesConfig field (${Object.keys(SNAKE).join(", ")}) but received the name ${JSON.stringify(k)}`);
      }
    }
    const v = BitsAndBytesConfig.validate(init, argumentFail);
    this.loadIn8bit = v.loadIn8bit;
    this.loadIn4bit = v.loadIn4bit;
    this.llmInt8Threshold = v.llmInt8Threshold;
    this.llmInt8SkipModules = v.llmInt8SkipModules;
    this.llmInt8EnableFp32CpuOffload = v.llmInt8EnableFp32CpuOffload;
    this.llmInt8HasFp16Weight = v.llmInt8HasFp16Weight;
    this.bnb4bitComputeDtype = v.bnb4bitComputeDtype;
    this.bnb4bitQuantType = v.bnb4bitQuantType;
    this.bnb4bitUseDoubleQuant = v.bnb4bitUseDoubleQuant;
    this.bnb4bitQuantStorage = v.bnb4bitQuantStorage;
    this.unusedKeys = Object.freeze([...(internal?.unusedKeys ?? [])]);
    Object.freeze(this.llmInt8SkipModules);
  }

  /** Applies transformers' defaults and checks every field (`__init__` + `post_init`, stricter where bnb would fail later). */
  private static validate(init: BitsAndBytesConfigInit, fail: Fail) {
    const bool = (k: Field, d: boolean): boolean => {
      const x = init[k];
      if (x === undefined) return d;
      if (typeof x !== "boolean") fail(k, "a boolean", x);
      return x as boolean;
    };
    const loadIn8bit = bool("loadIn8bit", false);
    const loadIn4bit = bool("loadIn4bit", false);
    if (loadIn4bit && loadIn8bit) fail("loadIn4bit", "loadIn4bit and loadIn8bit not both true (only one can be used at the same time)", true);
    const threshold = init.llmInt8Threshold ?? 6.0;
    if (typeof threshold !== "number" || !Number.isFinite(threshold) || threshold < 0) fail("llmInt8Threshold", "a finite number ≥ 0", threshold);
    const skip = init.llmInt8SkipModules ?? null;
    if (skip !== null && (!Array.isArray(skip) || !skip.every((s) => typeof s === "string"))) fail("llmInt8SkipModules", "a list of module names or null", skip);
    const rawCompute = init.bnb4bitComputeDtype ?? null;
    let compute: ModelDType = "float32";
    if (rawCompute !== null) {
      const name = typeof rawCompute === "string" && rawCompute.startsWith("torch.") ? rawCompute.slice(6) : rawCompute;
      const d = typeof name === "string" ? COMPUTE_DTYPES[name] : undefined;
      if (d === undefined) fail("bnb4bitComputeDtype", "one of float32, float16, bfloat16 (or null for float32)", rawCompute);
      compute = d as ModelDType;
    }
    const quantType = init.bnb4bitQuantType ?? "fp4";
    if (quantType !== "fp4" && quantType !== "nf4") fail("bnb4bitQuantType", '"fp4" or "nf4"', quantType);
    const rawStorage = init.bnb4bitQuantStorage ?? null;
    const storage: BnbQuantStorage = rawStorage ?? "uint8";
    if (!BNB_QUANT_STORAGES.includes(storage)) fail("bnb4bitQuantStorage", `one of ${BNB_QUANT_STORAGES.join(", ")} (or null for uint8)`, rawStorage);
    return {
      loadIn8bit,
      loadIn4bit,
      llmInt8Threshold: threshold,
      llmInt8SkipModules: skip === null ? null : [...skip],
      llmInt8EnableFp32CpuOffload: bool("llmInt8EnableFp32CpuOffload", false),
      llmInt8HasFp16Weight: bool("llmInt8HasFp16Weight", false),
      bnb4bitComputeDtype: compute,
      bnb4bitQuantType: quantType as Bnb4bitQuantType,
      bnb4bitUseDoubleQuant: bool("bnb4bitUseDoubleQuant", false),
      bnb4bitQuantStorage: storage,
    };
  }

  /**
   * From a config.json `quantization_config` block (snake_case), as transformers' AutoQuantizationConfig does:
   * `quant_method` must be "bitsandbytes" (a legacy block without it counts when it sets load_in_4bit or
   * load_in_8bit). The public `load_in_*` keys are read; the private `_load_in_*` copies only when the public
   * ones are absent, and they must agree. Other unknown keys are listed in `unusedKeys`.
   * @param file names the config file in errors
   * @throws ConfigError naming the file and key
   */
  static fromDict(block: unknown, file = "config.json"): BitsAndBytesConfig {
    if (!isJsonObject(block)) throw new ConfigError(file, `expected an object but received ${describe(block)}`, { key: "quantization_config" });
    const method = block["quant_method"];
    const pub4 = block["load_in_4bit"];
    const pub8 = block["load_in_8bit"];
    if (method === undefined || method === null) {
      if (pub4 !== true && pub8 !== true) {
        throw new ConfigError(file, "has no quant_method and neither load_in_4bit nor load_in_8bit is true, so it is not a bitsandbytes config", { key: "quantization_config.quant_method" });
      }
    } else if (method !== "bitsandbytes") {
      throw new ConfigError(file, `expected quant_method "bitsandbytes" but received ${describe(method)} (lowbit reads bitsandbytes checkpoints only)`, {
        key: "quantization_config.quant_method",
      });
    }
    const init: Record<string, unknown> = {};
    const unused: string[] = [];
    for (const [key, value] of Object.entries(block)) {
      const field = BY_SNAKE.get(key);
      if (field !== undefined) init[field] = value;
      else if (!IGNORED_KEYS.has(key)) unused.push(key);
    }
    for (const bits of ["4", "8"] as const) {
      const pub = block[`load_in_${bits}bit`];
      const priv = block[`_load_in_${bits}bit`];
      if (pub === undefined && priv !== undefined) init[`loadIn${bits}bit`] = priv;
      else if (pub !== undefined && priv !== undefined && pub !== priv) {
        throw new ConfigError(file, `_load_in_${bits}bit (${describe(priv)}) disagrees with load_in_${bits}bit (${describe(pub)})`, { key: `quantization_config._load_in_${bits}bit` });
      }
    }
    // JSON null means "use the default" for every field transformers treats that way.
    for (const k of Object.keys(init)) if (init[k] === null && k !== "llmInt8SkipModules") delete init[k];
    const v = BitsAndBytesConfig.validate(init as BitsAndBytesConfigInit, fileFail(file));
    return new BitsAndBytesConfig(v, { unusedKeys: unused });
  }

  /** "llm_int8", "nf4" or "fp4" (transformers' `quantization_method()`), or null when nothing is quantized. */
  quantizationMethod(): "llm_int8" | "nf4" | "fp4" | null {
    if (this.loadIn8bit) return "llm_int8";
    if (this.loadIn4bit) return this.bnb4bitQuantType;
    return null;
  }

  isQuantizable(): boolean {
    return this.loadIn8bit || this.loadIn4bit;
  }

  /**
   * transformers' `to_dict()`: the attributes in its insertion order (quant_method, the private `_load_in_*`,
   * the llm_int8 fields, the 4-bit fields, then the public `load_in_*`), dtypes as strings without `torch.`.
   */
  toDict(): JsonObject {
    return {
      quant_method: this.quantMethod,
      _load_in_8bit: this.loadIn8bit,
      _load_in_4bit: this.loadIn4bit,
      llm_int8_threshold: this.llmInt8Threshold,
      llm_int8_skip_modules: this.llmInt8SkipModules === null ? null : [...this.llmInt8SkipModules],
      llm_int8_enable_fp32_cpu_offload: this.llmInt8EnableFp32CpuOffload,
      llm_int8_has_fp16_weight: this.llmInt8HasFp16Weight,
      bnb_4bit_quant_type: this.bnb4bitQuantType,
      bnb_4bit_use_double_quant: this.bnb4bitUseDoubleQuant,
      bnb_4bit_compute_dtype: this.bnb4bitComputeDtype,
      bnb_4bit_quant_storage: this.bnb4bitQuantStorage,
      load_in_4bit: this.loadIn4bit,
      load_in_8bit: this.loadIn8bit,
    };
  }

  /** transformers' `to_diff_dict()`: only the entries that differ from `BitsAndBytesConfig()`'s. */
  toDiffDict(): JsonObject {
    const defaults = new BitsAndBytesConfig().toDict();
    const out: JsonObject = {};
    for (const [k, v] of Object.entries(this.toDict())) {
      if (JSON.stringify(v) !== JSON.stringify(defaults[k])) out[k] = v;
    }
    return out;
  }

  /**
   * transformers' `to_json_string(use_diff)`: `json.dumps(dict, indent=2, sort_keys=True) + "\n"`, with Python's
   * float formatting (`"llm_int8_threshold": 6.0`). The same text (re-indented) is what config.json holds.
   */
  toJsonString(options: { useDiff?: boolean } = {}): string {
    const d = options.useDiff ?? true ? this.toDiffDict() : this.toDict();
    const marked: Record<string, PyJsonValue> = {};
    for (const [k, v] of Object.entries(d)) marked[k] = k === "llm_int8_threshold" ? new PyFloat(v as number) : (v as PyJsonValue);
    return `${pyJsonDumps(marked, { indent: 2, sortKeys: true })}\n`;
  }
}
