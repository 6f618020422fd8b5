// The model loader behind AutoModelForCausalLM.fromPretrained (transformers' from_pretrained for causal LMs, spec B1–B4):
// reads config.json and the safetensors checkpoint (single file or sharded index), checks every tensor name, shape and
// dtype against the architecture's weight table before anything is allocated, then builds the model tensor by tensor:
// each tensor is read from a read-only file mapping (zero-copy), copied or cast to the model dtype on its unit's device,
// and — when a BitsAndBytesConfig asks for it — quantized at once (Linear4bit through the quantize4bit kernel,
// Linear8bitLt through int8 vectorwise quantization of W.to(float16)), so peak host memory stays near the largest
// tensor plus the finished model. Pre-quantized bitsandbytes checkpoints (config.json `quantization_config`) load
// their packed weights and quantization states as they are. Units are placed by deviceMap through @lowbit/accelerate
// (src/device-map.ts). AutoModelForCausalLM.fromConfig builds the same models from a config with seeded random weights
// (buildCausalLMFromConfig, at the end of this file).
//
// Errors: broken files are SafetensorsError (truncated, bad header, overlapping offsets, missing shard, a weight_map
// escaping the folder), a bad config.json is ConfigError (unknown model_type or quant_method), a checkpoint that does
// not fit the architecture is ModelLoadError naming the file and tensor, a bad option is ArgumentError. A failed load
// frees everything it allocated.

import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  ArgumentError,
  DTYPES,
  QuantState,
  QuantStateError,
  describe,
  type DType,
  type StateTensor,
} from "@lowbit/dtypes";
import { getBinding, type NativeStorage } from "@lowbit/kernels";
import type { MaxMemoryInput, QuantSpec } from "@lowbit/accelerate";
import { Generator, Linear4bit, Linear8bitLt, Tensor, fromTypedArray, ones, randn, zeros, type Device } from "@lowbit/tensor";
import { isJsonObject, type ModelDType } from "./config-base.js";
import { CONFIG_NAME, loadConfig, parseConfig, type PretrainedConfig } from "./config.js";
import {
  describeModel,
  noSplitModules,
  resolveDeviceMap,
  type AutoDeviceMapPlanner,
  type DeviceMapOption,
  type DeviceMapPlanOptions,
  type PlacementUnit,
} from "./device-map.js";
import { ConfigError, SafetensorsError } from "./errors.js";
import { GENERATION_CONFIG_NAME, GenerationConfig } from "./generation-config.js";
import { ModelLoadError } from "./model-errors.js";
import {
  PretrainedEmbedding,
  PretrainedLinear,
  PretrainedRMSNorm,
  type ArchitectureSpec,
  type LinearLike,
  type LoadedModelInfo,
  type ModuleSpec,
  type PreTrainedCausalLM,
  type WeightSource,
} from "./modeling-utils.js";
import { BitsAndBytesConfig } from "./quantization-config.js";
import { findCheckpointFiles, readSafetensorsHeader, type SafetensorsTensorInfo } from "./safetensors.js";

/** How an architecture plugs into the loader (see src/auto.ts for the registry). */
export interface ArchitectureDefinition {
  readonly modelType: string;
  spec(config: PretrainedConfig): ArchitectureSpec;
  build(config: PretrainedConfig, spec: ArchitectureSpec, info: LoadedModelInfo, src: WeightSource): PreTrainedCausalLM;
}

/** Progress of a load: checkpoint tensors read so far. */
export interface LoadProgress {
  readonly loaded: number;
  readonly total: number;
  /** The tensor just read. */
  readonly tensor: string;
}

export interface FromPretrainedOptions {
  /** Quantize while loading (ignored for a pre-quantized checkpoint, whose own quantization_config wins). */
  quantizationConfig?: BitsAndBytesConfig | null;
  /**
   * Where the units go (default "cpu"): "auto" / "balanced" / "balanced_low_0" / "sequential" (planned by
   * @lowbit/accelerate), "cpu", "cuda:N", N, or a Record of module → device; see device-map.ts.
   */
  deviceMap?: DeviceMapOption;
  /** Plans the deviceMap strategies instead of @lowbit/accelerate. */
  deviceMapPlanner?: AutoDeviceMapPlanner;
  /** transformers' max_memory for the strategies: { 0: "20GiB", cpu: "60GB" }; default: what each device has free. */
  maxMemory?: MaxMemoryInput | null;
  /** Planning knobs: an injected device inventory, how quantized weights are counted. */
  deviceMapOptions?: DeviceMapPlanOptions;
  /** Dtype of the unquantized weights and activations; "auto" / omitted: config.json's dtype, else the checkpoint's. */
  dtype?: ModelDType | "auto";
  /** `model.<variant>.safetensors` (transformers' variant). */
  variant?: string;
  /** Called after each checkpoint tensor is read; throwing aborts the load. */
  onProgress?: (progress: LoadProgress) => void;
  /** Non-fatal notices (a user quantization config overridden by the checkpoint's, an unusual quant_map); default console.warn. */
  onWarning?: (message: string) => void;
}

const OPTION_KEYS = ["quantizationConfig", "deviceMap", "deviceMapPlanner", "maxMemory", "deviceMapOptions", "dtype", "variant", "onProgress", "onWarning"];
const MODEL_DTYPES: readonly ModelDType[] = ["float32", "float16", "bfloat16"];
const FLOAT_DTYPES: readonly DType[] = ["float32", "float16", "bfloat16"];

/** One checkpoint tensor and the file holding it. */
interface Entry {
  readonly file: string;
  readonly info: SafetensorsTensorInfo;
}

/** How one linear layer is stored / built. */
type LinearMode = "float" | "quantize4bit" | "quantize8bit" | "prequantized4bit" | "prequantized8bit" | "tied";

/** transformers' `should_convert_module`: a pattern skips a module when it matches at the start (regex, so also as a dotted prefix) or is a suffix of the name. */
export function isSkippedModule(name: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => {
    let re: RegExp;
    try {
      re = new RegExp(`^(?:${p})`);
    } catch (cause) {
      throw new ArgumentError(`Expected a regular expression or module name in llmInt8SkipModules but received ${describe(p)} (${(cause as Error).message})`, { cause });
    }
    return re.test(name) || name.endsWith(p);
  });
}

/**
 * transformers' default modules to keep unquantized (`get_keys_to_not_convert`, spec B4): both sides of every tied
 * weight, the module of the last parameter, and the output embedding (lm_head).
 */
export function defaultSkipModules(spec: ArchitectureSpec): string[] {
  const keys = new Set<string>();
  for (const m of spec.modules) {
    if (m.kind === "linear" && m.tiedTo !== null) {
      keys.add(m.name);
      keys.add(m.tiedTo);
    }
  }
  const owning = spec.modules.filter((m) => !(m.kind === "linear" && m.tiedTo !== null));
  const last = owning[owning.length - 1];
  if (last !== undefined) keys.add(last.name);
  const head = spec.modules.find((m) => m.name === "lm_head");
  if (head !== undefined) keys.add(head.name);
  return [...keys];
}

function bytesOf(dtype: DType, numel: number): number {
  return DTYPES[dtype].isQuantized ? Math.ceil(numel / 2) : numel * DTYPES[dtype].bytes;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function fmt(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

function listKeys(keys: readonly string[], max = 8): string {
  const shown = keys.slice(0, max).map((k) => JSON.stringify(k)).join(", ");
  return keys.length > max ? `${shown} and ${keys.length - max} more` : shown;
}

/** Resolves the quantization to apply: the checkpoint's (pre-quantized) or the user's (quantize while loading). */
function resolveQuantization(config: PretrainedConfig, requested: BitsAndBytesConfig | null | undefined, warn: (m: string) => void): { q: BitsAndBytesConfig | null; prequantized: boolean } {
  if (requested !== undefined && requested !== null && !(requested instanceof BitsAndBytesConfig)) {
    throw new ArgumentError(`Expected a BitsAndBytesConfig or null for quantizationConfig but received ${describe(requested)}`);
  }
  if (config.quantizationConfig !== null) {
    const q = BitsAndBytesConfig.fromDict(config.quantizationConfig, config.file);
    if (!q.isQuantizable()) {
      throw new ConfigError(config.file, "quantization_config sets neither load_in_4bit nor load_in_8bit", { key: "quantization_config" });
    }
    if (requested !== undefined && requested !== null) {
      warn(`${config.file} already has a quantization_config; it is used and the quantizationConfig passed to fromPretrained is ignored`);
    }
    return { q, prequantized: true };
  }
  return { q: requested !== undefined && requested !== null && requested.isQuantizable() ? requested : null, prequantized: false };
}

/** Reads every header, checks the shard index against the shards, and maps tensor name → entry. */
function readCheckpoint(dir: string, variant: string | undefined): { entries: Map<string, Entry>; label: string } {
  const found = findCheckpointFiles(dir, variant === undefined ? {} : { variant });
  const entries = new Map<string, Entry>();
  for (const file of found.files) {
    const header = readSafetensorsHeader(file);
    for (const [name, info] of header.tensors) {
      const prev = entries.get(name);
      if (prev !== undefined) throw new ModelLoadError(file, `is also stored in ${prev.file} (a tensor may live in one shard only)`, { tensor: name });
      entries.set(name, { file, info });
    }
  }
  if (found.kind === "sharded") {
    for (const [name, shard] of found.index.weightMap) {
      const e = entries.get(name);
      if (e === undefined || resolve(e.file) !== resolve(dir, shard)) {
        throw new ModelLoadError(found.index.path, `weight_map puts the tensor in ${JSON.stringify(shard)} but ${e === undefined ? "no shard holds it" : `it is in ${e.file}`}`, { tensor: name });
      }
    }
  }
  return { entries, label: found.kind === "single" ? found.files[0]! : found.index.path };
}

/** The checkpoint keys one module needs, with the rule each must satisfy. */
interface KeyRule {
  readonly key: string;
  /** Exact shape, or null when checked elsewhere (packed 4-bit weights, quantization state). */
  readonly shape: readonly number[] | null;
  /** Allowed dtypes, or null for any (4-bit storage may be any dtype). */
  readonly dtypes: readonly DType[] | null;
  readonly optional?: boolean;
}

function keyRules(m: ModuleSpec, mode: LinearMode | null, entries: Map<string, Entry>): KeyRule[] {
  switch (m.kind) {
    case "embedding":
      return [{ key: `${m.name}.weight`, shape: [m.numEmbeddings, m.embeddingDim], dtypes: FLOAT_DTYPES }];
    case "norm":
      return [{ key: `${m.name}.weight`, shape: [m.dim], dtypes: FLOAT_DTYPES }];
    case "linear": {
      const bias: KeyRule[] = m.bias ? [{ key: `${m.name}.bias`, shape: [m.outFeatures], dtypes: FLOAT_DTYPES }] : [];
      const w = `${m.name}.weight`;
      switch (mode) {
        case "tied":
          // Some checkpoints store the tied copy anyway; transformers ignores it.
          return [{ key: w, shape: [m.outFeatures, m.inFeatures], dtypes: FLOAT_DTYPES, optional: true }];
        case "prequantized4bit": {
          const nested = entries.has(`${w}.nested_absmax`);
          const json = [...entries.keys()].filter((k) => k.startsWith(`${w}.quant_state.`));
          return [
            { key: w, shape: null, dtypes: null },
            { key: `${w}.absmax`, shape: null, dtypes: [nested ? "uint8" : "float32"] },
            { key: `${w}.quant_map`, shape: [16], dtypes: ["float32"] },
            ...(nested
              ? [
                  { key: `${w}.nested_absmax`, shape: null, dtypes: ["float32"] as DType[] },
                  { key: `${w}.nested_quant_map`, shape: [256], dtypes: ["float32"] as DType[] },
                ]
              : []),
            ...json.map((key) => ({ key, shape: null, dtypes: ["uint8"] as DType[] })),
            ...bias,
          ];
        }
        case "prequantized8bit":
          return [
            { key: w, shape: [m.outFeatures, m.inFeatures], dtypes: ["int8"] },
            { key: `${m.name}.SCB`, shape: [m.outFeatures], dtypes: ["float32"] },
            { key: `${m.name}.weight_format`, shape: [], dtypes: ["uint8"], optional: true },
            ...bias,
          ];
        default:
          return [{ key: w, shape: [m.outFeatures, m.inFeatures], dtypes: FLOAT_DTYPES }, ...bias];
      }
    }
  }
}

/** Bytes a module will occupy once loaded (for device planning). */
function moduleBytes(m: ModuleSpec, mode: LinearMode | null, dtype: ModelDType): number {
  const f = DTYPES[dtype].bytes;
  switch (m.kind) {
    case "embedding":
      return m.numEmbeddings * m.embeddingDim * f;
    case "norm":
      return m.dim * f;
    case "linear": {
      const n = m.outFeatures * m.inFeatures;
      const bias = m.bias ? m.outFeatures * f : 0;
      if (mode === "tied") return 0;
      if (mode === "quantize4bit" || mode === "prequantized4bit") return Math.ceil(n / 2) + Math.ceil(n / 64) * 4 + bias;
      if (mode === "quantize8bit" || mode === "prequantized8bit") return n + m.outFeatures * 4 + bias;
      return n * f + bias;
    }
  }
}

/** The bitsandbytes storage of a linear layer for device planning, or null for a float (or tied) weight. */
function quantSpecOf(mode: LinearMode | undefined, q: BitsAndBytesConfig | null): QuantSpec | null {
  if (q === null) return null;
  if (mode === "quantize4bit" || mode === "prequantized4bit") return { type: q.bnb4bitQuantType, blocksize: 64, doubleQuant: q.bnb4bitUseDoubleQuant };
  if (mode === "quantize8bit" || mode === "prequantized8bit") return { type: "int8" };
  return null;
}

/** What placement reads from fromPretrained / fromConfig options. */
type PlacementOptions = Pick<FromPretrainedOptions, "deviceMap" | "deviceMapPlanner" | "maxMemory" | "deviceMapOptions">;

const PLAN_OPTION_KEYS = ["inventory", "quantizedSizes"];

/**
 * Places the units (spec B-part, `_get_device_map`): describes the model to accelerate (parameters in `dtype`, the
 * weights `modes` quantizes marked with their bitsandbytes spec, `_no_split_modules`), resolves `deviceMap`, then
 * applies llm_int8_enable_fp32_cpu_offload: with a mixed map, linear layers placed on the CPU stay unquantized (B3).
 * Mutates `modes` for that last rule.
 */
function placeUnits(
  config: PretrainedConfig,
  spec: ArchitectureSpec,
  modes: Map<string, LinearMode>,
  dtype: ModelDType,
  q: BitsAndBytesConfig | null,
  quantizesOnLoad: boolean,
  options: PlacementOptions,
  warn: (m: string) => void,
): Record<string, Device> {
  const plan = options.deviceMapOptions ?? {};
  if (typeof plan !== "object" || plan === null) throw new ArgumentError(`Expected an object { inventory?, quantizedSizes? } for deviceMapOptions but received ${describe(plan)}`);
  for (const k of Object.keys(plan)) {
    if (!PLAN_OPTION_KEYS.includes(k)) throw new ArgumentError(`Expected a deviceMapOptions key (${PLAN_OPTION_KEYS.join(", ")}) but received the name ${JSON.stringify(k)}`);
  }
  const units: PlacementUnit[] = spec.units.map((name) => {
    const mods = spec.modules.filter((m) => m.unit === name);
    const tied = mods.find((m) => m.kind === "linear" && m.tiedTo !== null);
    return {
      name,
      bytes: mods.reduce((s, m) => s + moduleBytes(m, modes.get(m.name) ?? null, dtype), 0),
      tiedTo: tied !== undefined && tied.kind === "linear" ? tied.tiedTo : null,
    };
  });
  const model = describeModel(config, spec, { dtype, quant: (name) => quantSpecOf(modes.get(name), q) });
  const deviceMap = resolveDeviceMap(options.deviceMap, units, {
    ...(options.deviceMapPlanner === undefined ? {} : { planner: options.deviceMapPlanner }),
    ...(options.maxMemory === undefined || options.maxMemory === null ? {} : { maxMemory: options.maxMemory }),
    ...(plan.inventory === undefined ? {} : { inventory: plan.inventory }),
    ...(plan.quantizedSizes === undefined ? {} : { quantizedSizes: plan.quantizedSizes }),
    model,
    noSplitModuleClasses: noSplitModules(spec),
    dtype,
    quantized: q !== null,
    logger: { warn },
  });
  if (q !== null && quantizesOnLoad && q.llmInt8EnableFp32CpuOffload && Object.values(deviceMap).some((d) => d !== "cpu")) {
    for (const m of spec.modules) if (m.kind === "linear" && deviceMap[m.unit] === "cpu" && modes.get(m.name)?.startsWith("quantize")) modes.set(m.name, "float");
  }
  return deviceMap;
}

/** Quantizes a float linear weight (out, in) as bitsandbytes does on load; `w` and `bias` stay the caller's to free. */
function quantizeLinear(mode: "quantize4bit" | "quantize8bit", w: Tensor, bias: Tensor | null, q: BitsAndBytesConfig): Linear4bit | Linear8bitLt {
  if (mode === "quantize4bit") {
    return frozenBias(Linear4bit.fromFloat(w, { quantType: q.bnb4bitQuantType, blocksize: 64, compressStatistics: q.bnb4bitUseDoubleQuant, computeDtype: q.bnb4bitComputeDtype, bias }));
  }
  // Linear8bitLt.fromFloat quantizes int8_vectorwise_quant(W.to(float16)).
  return frozenBias(Linear8bitLt.fromFloat(w, { threshold: q.llmInt8Threshold, bias }));
}

/** Opens checkpoint files as read-only mappings, each once, and closes them all at the end. */
class Mappings {
  readonly #maps = new Map<string, NativeStorage>();
  readonly #sizes: ReadonlyMap<string, number>;

  constructor(sizes: ReadonlyMap<string, number>) {
    this.#sizes = sizes;
  }

  get(file: string): NativeStorage {
    let m = this.#maps.get(file);
    if (m === undefined) {
      try {
        m = getBinding().mapFile(file);
      } catch (cause) {
        throw new SafetensorsError(file, `cannot be mapped (${(cause as Error).message})`, { cause });
      }
      const want = this.#sizes.get(file);
      if (want !== undefined && m.byteLength !== want) {
        m.dispose();
        throw new SafetensorsError(file, `changed size while loading (${want} → ${m.byteLength} bytes)`);
      }
      this.#maps.set(file, m);
    }
    return m;
  }

  dispose(): void {
    for (const m of this.#maps.values()) m.dispose();
    this.#maps.clear();
  }
}

/**
 * Loads a causal LM from a model folder (see FromPretrainedOptions). `arch` comes from the registry in auto.ts.
 */
export function loadCausalLM(dir: string, options: FromPretrainedOptions, arch: (config: PretrainedConfig) => ArchitectureDefinition): PreTrainedCausalLM {
  if (typeof dir !== "string" || dir.length === 0) throw new ArgumentError(`Expected a model folder path for fromPretrained's dir but received ${describe(dir)}`);
  if (typeof options !== "object" || options === null) throw new ArgumentError(`Expected an options object for fromPretrained's options but received ${describe(options)}`);
  for (const k of Object.keys(options)) {
    if (!OPTION_KEYS.includes(k)) throw new ArgumentError(`Expected a fromPretrained option (${OPTION_KEYS.join(", ")}) but received the name ${JSON.stringify(k)}`);
  }
  for (const k of ["onProgress", "onWarning", "deviceMapPlanner"] as const) {
    const f = options[k];
    if (f !== undefined && typeof f !== "function") throw new ArgumentError(`Expected a function for fromPretrained's ${k} but received ${describe(f)}`);
  }
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ConfigError(dir, "is not a folder (expected a model folder with config.json and safetensors weights)");
  const warn = options.onWarning ?? ((m: string) => console.warn(m));

  const config = loadConfig(dir);
  const definition = arch(config);
  const spec = definition.spec(config);
  const { q, prequantized } = resolveQuantization(config, options.quantizationConfig, warn);
  if (q?.loadIn8bit && q.llmInt8HasFp16Weight) {
    throw new ArgumentError("BitsAndBytesConfig llmInt8HasFp16Weight (16-bit master weights for 8-bit training) is not supported; lowbit's Linear8bitLt keeps int8 weights only");
  }
  const { entries, label } = readCheckpoint(dir, options.variant);

  // ---- how each linear is stored / built
  const skip = q !== null && !prequantized ? q.llmInt8SkipModules ?? defaultSkipModules(spec) : [];
  const modes = new Map<string, LinearMode>();
  for (const m of spec.modules) {
    if (m.kind !== "linear") continue;
    let mode: LinearMode;
    if (m.tiedTo !== null) mode = "tied";
    else if (prequantized) {
      const has4 = [...entries.keys()].some((k) => k.startsWith(`${m.name}.weight.quant_state.`));
      const has8 = entries.has(`${m.name}.SCB`);
      if (has4 && has8) throw new ModelLoadError(label, "holds both 4-bit and 8-bit quantization state", { tensor: `${m.name}.weight` });
      if (has4 && !q!.loadIn4bit) throw new ModelLoadError(label, "holds 4-bit quantization state but quantization_config does not set load_in_4bit", { tensor: `${m.name}.weight` });
      if (has8 && !q!.loadIn8bit) throw new ModelLoadError(label, "holds 8-bit quantization state (SCB) but quantization_config does not set load_in_8bit", { tensor: `${m.name}.SCB` });
      mode = has4 ? "prequantized4bit" : has8 ? "prequantized8bit" : "float";
    } else if (q !== null && !isSkippedModule(m.name, skip)) mode = q.loadIn4bit ? "quantize4bit" : "quantize8bit";
    else mode = "float";
    modes.set(m.name, mode);
  }

  // ---- key set, shapes and dtypes, before anything is allocated
  const rules = new Map<string, KeyRule>();
  for (const m of spec.modules) for (const r of keyRules(m, modes.get(m.name) ?? null, entries)) rules.set(r.key, r);
  const missing = [...rules.values()].filter((r) => !r.optional && !entries.has(r.key)).map((r) => r.key);
  const unexpected = [...entries.keys()].filter((k) => !rules.has(k) && !spec.ignoredKeys.some((re) => re.test(k)));
  if (missing.length > 0 || unexpected.length > 0) {
    const parts: string[] = [];
    if (missing.length > 0) parts.push(`missing ${missing.length} key(s): ${listKeys(missing)}`);
    if (unexpected.length > 0) parts.push(`unexpected ${unexpected.length} key(s): ${listKeys(unexpected)}`);
    throw new ModelLoadError(label, `does not match ${spec.architecture} (${config.file}): ${parts.join("; ")}`, {
      tensor: missing[0] ?? unexpected[0],
      missingKeys: missing,
      unexpectedKeys: unexpected,
    });
  }
  for (const r of rules.values()) {
    const e = entries.get(r.key);
    if (e === undefined) continue;
    if (r.dtypes !== null && !r.dtypes.includes(e.info.dtype)) {
      throw new ModelLoadError(e.file, `has dtype ${e.info.safetensorsDtype} but ${spec.architecture} needs ${r.dtypes.join(" or ")} here`, { tensor: r.key });
    }
    if (r.shape !== null && !sameShape(e.info.shape, r.shape)) {
      throw new ModelLoadError(e.file, `has shape ${fmt(e.info.shape)} but ${config.file} implies ${fmt(r.shape)}`, { tensor: r.key });
    }
  }
  for (const m of spec.modules) {
    if (m.kind === "linear" && modes.get(m.name) === "prequantized4bit") {
      const w = entries.get(`${m.name}.weight`)!;
      const need = Math.ceil((m.outFeatures * m.inFeatures) / 2);
      if (w.info.byteLength !== need) {
        throw new ModelLoadError(w.file, `holds ${w.info.byteLength} bytes of packed 4-bit codes but [${m.outFeatures}, ${m.inFeatures}] needs ${need}`, { tensor: `${m.name}.weight` });
      }
    }
  }

  // ---- dtype and placement
  let dtype: ModelDType;
  const requested = options.dtype ?? "auto";
  if (requested === "auto") {
    const firstFloat = [...entries.values()].find((e) => FLOAT_DTYPES.includes(e.info.dtype) && rules.has(e.info.name));
    dtype = config.dtype ?? ((firstFloat?.info.dtype as ModelDType | undefined) ?? "float32");
  } else if (MODEL_DTYPES.includes(requested)) dtype = requested;
  else throw new ArgumentError(`Expected "float32", "float16", "bfloat16" or "auto" for dtype but received ${describe(requested)}`);
  const deviceMap = placeUnits(config, spec, modes, dtype, q, !prequantized, options, warn);

  const generationConfigPath = join(dir, GENERATION_CONFIG_NAME);
  const info: LoadedModelInfo = {
    source: dir,
    dtype,
    deviceMap,
    quantizationConfig: q,
    generationConfig: GenerationConfig.fromPretrained(dir),
    generationConfigText: existsSync(generationConfigPath) ? readFileSync(generationConfigPath, "utf8") : null,
    configText: readFileSync(join(dir, CONFIG_NAME), "utf8"),
  };

  // ---- build, tensor by tensor
  const sizes = new Map<string, number>();
  for (const e of entries.values()) sizes.set(e.file, statSync(e.file).size);
  const maps = new Mappings(sizes);
  const toRead = [...rules.keys()].filter((k) => entries.has(k) && modes.get(k.replace(/\.weight$/, "")) !== "tied");
  let loaded = 0;
  const made: Array<{ dispose(): void }> = [];
  const built = new Map<string, PretrainedEmbedding>();
  const specOf = new Map(spec.modules.map((m) => [m.name, m]));

  /** An error thrown by the caller's onProgress: it aborts the load and reaches the caller unchanged. */
  let callbackError: unknown = null;
  const progress = (tensor: string): void => {
    loaded++;
    try {
      options.onProgress?.({ loaded, total: toRead.length, tensor });
    } catch (err) {
      callbackError = err;
      throw err;
    }
  };
  const entry = (key: string): Entry => {
    const e = entries.get(key);
    if (e === undefined) throw new ModelLoadError(label, "is missing", { tensor: key });
    return e;
  };
  /** A fresh tensor with the entry's data on `device`, cast to `dtype` (null keeps the stored dtype). */
  const read = (key: string, dtype: DType | null, device: Device): Tensor => {
    const e = entry(key);
    const t = materialize(maps.get(e.file), e, dtype, device);
    try {
      progress(key);
    } catch (err) {
      t.dispose();
      throw err;
    }
    return t;
  };
  /** The stored bytes of a tensor, as a host typed array of its dtype (quantization state, small). */
  const readHost = (key: string): StateTensor => {
    const e = entry(key);
    const data = e.info.dtype === "float32" ? new Float32Array(e.info.shape.reduce((a, b) => a * b, 1)) : new Uint8Array(e.info.byteLength);
    if (data.byteLength !== e.info.byteLength) throw new ModelLoadError(e.file, `holds ${e.info.byteLength} bytes for ${data.length} ${e.info.dtype} values`, { tensor: key });
    if (data.byteLength > 0) getBinding().download(maps.get(e.file), e.info.byteOffset, data);
    progress(key);
    return { dtype: e.info.dtype, shape: [...e.info.shape], data };
  };
  const deviceOf = (m: ModuleSpec): Device => deviceMap[m.unit]!;
  const track = <T extends { dispose(): void }>(x: T): T => {
    made.push(x);
    return x;
  };
  const moduleSpec = (name: string, kind: ModuleSpec["kind"]): ModuleSpec => {
    const m = specOf.get(name);
    if (m === undefined || m.kind !== kind) throw new ArgumentError(`${spec.architecture}: the weight table has no ${kind} named ${JSON.stringify(name)}`);
    return m;
  };
  const wrap = <T>(key: string, fn: () => T): T => {
    try {
      return fn();
    } catch (cause) {
      if (cause instanceof ModelLoadError || cause instanceof SafetensorsError || cause === callbackError) throw cause;
      const file = entries.get(key)?.file ?? label;
      throw new ModelLoadError(file, `could not be loaded (${(cause as Error).message})`, { tensor: key, cause });
    }
  };

  const src: WeightSource = {
    embedding(name) {
      const m = moduleSpec(name, "embedding");
      const w = read(`${name}.weight`, dtype, deviceOf(m));
      const e = track(new PretrainedEmbedding(w));
      built.set(name, e);
      return e;
    },
    norm(name) {
      const m = moduleSpec(name, "norm");
      return track(new PretrainedRMSNorm(read(`${name}.weight`, dtype, deviceOf(m)), config.rmsNormEps));
    },
    linear(name): LinearLike {
      const m = moduleSpec(name, "linear");
      if (m.kind !== "linear") throw new ArgumentError(`${name} is not a linear layer`);
      const device = deviceOf(m);
      const mode = modes.get(name)!;
      const key = `${name}.weight`;
      return wrap(key, () => {
        if (mode === "tied") {
          const emb = built.get(m.tiedTo!);
          if (emb === undefined) throw new ArgumentError(`${name} is tied to ${m.tiedTo}, which must be built first`);
          const w = emb.weight.device === device ? emb.weight : emb.weight.to(device);
          return track(new PretrainedLinear(w, null));
        }
        const bias = m.bias ? read(`${name}.bias`, dtype, device) : null;
        let biasOwned = false; // true once a PretrainedLinear has taken the bias handle itself
        try {
          switch (mode) {
            case "float": {
              const w = read(key, dtype, device);
              try {
                const layer = track(new PretrainedLinear(w, bias));
                biasOwned = true;
                return layer;
              } catch (err) {
                w.dispose();
                throw err;
              }
            }
            case "quantize4bit":
            case "quantize8bit": {
              const w = read(key, dtype, device); // (out, in) in the model dtype, as transformers holds it before bnb quantizes
              try {
                return track(quantizeLinear(mode, w, bias, q!));
              } finally {
                w.dispose();
              }
            }
            case "prequantized4bit": {
              const host = new Map<string, StateTensor>();
              for (const k of rules.keys()) if (k.startsWith(`${key}.`)) host.set(k, readHost(k));
              let state: QuantState;
              try {
                state = QuantState.fromStateDict(key, host, { onWarning: warn });
              } catch (cause) {
                if (cause instanceof QuantStateError) throw new ModelLoadError(entry(key).file, `has a bad quantization state (${cause.message})`, { tensor: key, cause });
                throw cause;
              }
              if (!sameShape(state.shape, [m.outFeatures, m.inFeatures])) {
                throw new ModelLoadError(entry(key).file, `has quant_state shape ${fmt(state.shape)} but ${config.file} implies ${fmt([m.outFeatures, m.inFeatures])}`, { tensor: key });
              }
              const packed = read(key, "uint8", device); // the packed codes, whatever the storage dtype
              try {
                return track(frozenBias(Linear4bit.fromQuantized(packed, state, { device, computeDtype: q!.bnb4bitComputeDtype, bias })));
              } finally {
                packed.dispose();
              }
            }
            case "prequantized8bit": {
              const fmtKey = `${name}.weight_format`;
              if (entries.has(fmtKey)) {
                const f = readHost(fmtKey).data[0];
                if (f !== 0) throw new ModelLoadError(entry(fmtKey).file, `is ${f}; only weight_format 0 (row-major) can be loaded`, { tensor: fmtKey });
              }
              const CB = read(key, null, device); // int8 (out, in)
              const SCB = read(`${name}.SCB`, null, device); // float32 (out,)
              try {
                return track(frozenBias(Linear8bitLt.fromQuantized(CB, SCB, { threshold: q!.llmInt8Threshold, bias })));
              } finally {
                CB.dispose();
                SCB.dispose();
              }
            }
          }
        } finally {
          // Quantized layers keep their own reference (detach); this handle is ours unless a PretrainedLinear took it.
          if (bias !== null && !biasOwned) bias.dispose();
        }
      });
    },
  };

  try {
    const model = definition.build(config, spec, info, src);
    if (loaded !== toRead.length) {
      // Every rule-checked tensor must have been consumed; a mismatch is a bug in the architecture file.
      model.dispose();
      throw new ModelLoadError(label, `${spec.architecture} read ${loaded} of ${toRead.length} checkpoint tensors`);
    }
    return model;
  } catch (err) {
    for (const x of made) x.dispose();
    throw err;
  } finally {
    maps.dispose();
  }
}

// ---------------------------------------------------------------------------------------------- fromConfig

/** Options of AutoModelForCausalLM.fromConfig: a model built from its config with seeded random weights, no files. */
export interface FromConfigOptions extends PlacementOptions {
  /** How the weights are made; "random" (the default and only one) is transformers' `_init_weights`. */
  init?: "random";
  /** Seed of the initializer (default 0): the same config, seed and options give the same weights on every device. */
  seed?: number;
  /** Standard deviation of the normal weights; default the config's initializer_range, else 0.02. */
  initializerRange?: number;
  /**
   * Size of the pool of seeded normal values (default 2^22) that large tensors are tiled from: a tensor of more than
   * randomPoolSize / 16 elements is filled with windows of the pool, at seeded offsets, copied on the device; smaller
   * tensors are drawn value by value from the seeded generator. Drawing billions of normals in JavaScript would take
   * minutes (a 7B model) and dominate any load-time measurement; a tiled weight has the same per-element distribution,
   * which is what a benchmark needs.
   */
  randomPoolSize?: number;
  /** Dtype of the unquantized weights and activations; default the config's dtype, else float32. */
  dtype?: ModelDType;
  /** Quantize the random weights as fromPretrained would quantize loaded ones. */
  quantizationConfig?: BitsAndBytesConfig | null;
  /** Non-fatal notices; default console.warn. */
  onWarning?: (message: string) => void;
}

const FROM_CONFIG_KEYS = ["init", "seed", "initializerRange", "randomPoolSize", "dtype", "quantizationConfig", "deviceMap", "deviceMapPlanner", "maxMemory", "deviceMapOptions", "onWarning"];

/** Default FromConfigOptions.randomPoolSize. */
export const RANDOM_POOL_SIZE = 1 << 22;

/** Seeded normal weights for fromConfig (see FromConfigOptions.randomPoolSize). */
class RandomWeights {
  readonly #gen: Generator;
  readonly #poolSeed: number;
  readonly #std: number;
  readonly #poolSize: number;
  /** `${device}|${dtype}` → (poolSize,) normal values, made on first use. */
  readonly #pools = new Map<string, Tensor>();

  constructor(seed: number, std: number, poolSize: number) {
    this.#gen = new Generator(seed);
    this.#poolSeed = this.#gen.nextUint32(); // the pool does not depend on when it is first needed
    this.#std = std;
    this.#poolSize = poolSize;
  }

  #pool(dtype: ModelDType, device: Device): Tensor {
    const key = `${device}|${dtype}`;
    let pool = this.#pools.get(key);
    if (pool === undefined) {
      const values = new Float32Array(this.#poolSize);
      new Generator(this.#poolSeed).fillNormal(values, 0, this.#std);
      pool = fromTypedArray(values, [this.#poolSize], { dtype, device });
      this.#pools.set(key, pool);
    }
    return pool;
  }

  /** N(0, std) values of `shape` in `dtype` on `device`. */
  normal(shape: number[], dtype: ModelDType, device: Device): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n <= this.#poolSize / 16) return randn(shape, { dtype, device, generator: this.#gen, std: this.#std });
    const pool = this.#pool(dtype, device);
    const elem = DTYPES[dtype].bytes;
    const binding = getBinding();
    const storage = binding.allocate(device, n * elem);
    try {
      for (let done = 0; done < n; ) {
        const start = Math.floor(this.#gen.nextDouble() * this.#poolSize);
        const len = Math.min(n - done, this.#poolSize - start);
        binding.copyBytes(storage, done * elem, pool.storage, pool.byteOffset + start * elem, len * elem);
        done += len;
      }
    } catch (err) {
      storage.dispose();
      throw err;
    }
    return Tensor.fromStorage(storage, 0, shape, dtype);
  }

  dispose(): void {
    for (const t of this.#pools.values()) t.dispose();
    this.#pools.clear();
  }
}

/**
 * Builds a causal LM from a config alone (transformers' `from_config` followed by `_init_weights`): linear and
 * embedding weights N(0, initializer_range) (the embedding's pad_token_id row zero), biases zero, RMSNorm weights one,
 * lm_head tied to embed_tokens when the config says so. Weights are made on their unit's device in `dtype` and, with a
 * BitsAndBytesConfig, quantized at once exactly as fromPretrained quantizes loaded weights (same skip list, same
 * Linear4bit / Linear8bitLt construction), so a model saved with savePretrained and loaded back quantized is the same.
 * `config` is a parsed config or a config.json object. A config's own quantization_config block is not applied.
 * @throws ArgumentError for a bad option, ConfigError for a bad config, DeviceMapError for a bad device map
 */
export function buildCausalLMFromConfig(
  config: PretrainedConfig | Readonly<Record<string, unknown>>,
  options: FromConfigOptions,
  arch: (config: PretrainedConfig) => ArchitectureDefinition,
): PreTrainedCausalLM {
  if (typeof options !== "object" || options === null) throw new ArgumentError(`Expected an options object for fromConfig's options but received ${describe(options)}`);
  for (const k of Object.keys(options)) {
    if (!FROM_CONFIG_KEYS.includes(k)) throw new ArgumentError(`Expected a fromConfig option (${FROM_CONFIG_KEYS.join(", ")}) but received the name ${JSON.stringify(k)}`);
  }
  for (const k of ["onWarning", "deviceMapPlanner"] as const) {
    const f = options[k];
    if (f !== undefined && typeof f !== "function") throw new ArgumentError(`Expected a function for fromConfig's ${k} but received ${describe(f)}`);
  }
  const parsed: PretrainedConfig =
    isJsonObject(config) && typeof config["modelType"] === "string" && isJsonObject(config["raw"]) ? (config as unknown as PretrainedConfig) : parseConfig(config, "fromConfig's config");
  const warn = options.onWarning ?? ((m: string) => console.warn(m));
  if ((options.init ?? "random") !== "random") throw new ArgumentError(`Expected "random" for fromConfig's init but received ${describe(options.init)}`);
  const seed = options.seed ?? 0;
  if (typeof seed !== "number" || !Number.isSafeInteger(seed)) throw new ArgumentError(`Expected a safe integer for fromConfig's seed but received ${describe(seed)}`);
  const rawRange = parsed.raw["initializer_range"];
  const std = options.initializerRange ?? (typeof rawRange === "number" ? rawRange : 0.02);
  if (typeof std !== "number" || !Number.isFinite(std) || std < 0) throw new ArgumentError(`Expected a finite non-negative number for fromConfig's initializerRange but received ${describe(std)}`);
  const poolSize = options.randomPoolSize ?? RANDOM_POOL_SIZE;
  if (typeof poolSize !== "number" || !Number.isSafeInteger(poolSize) || poolSize < 1 || poolSize > 2 ** 30) {
    throw new ArgumentError(`Expected an integer in [1, 2^30] for fromConfig's randomPoolSize but received ${describe(poolSize)}`);
  }
  const dtype = options.dtype ?? parsed.dtype ?? "float32";
  if (!MODEL_DTYPES.includes(dtype)) throw new ArgumentError(`Expected "float32", "float16" or "bfloat16" for fromConfig's dtype but received ${describe(dtype)}`);
  const requested = options.quantizationConfig;
  if (requested !== undefined && requested !== null && !(requested instanceof BitsAndBytesConfig)) {
    throw new ArgumentError(`Expected a BitsAndBytesConfig or null for fromConfig's quantizationConfig but received ${describe(requested)}`);
  }
  const q = requested !== undefined && requested !== null && requested.isQuantizable() ? requested : null;
  if (q?.loadIn8bit && q.llmInt8HasFp16Weight) {
    throw new ArgumentError("BitsAndBytesConfig llmInt8HasFp16Weight (16-bit master weights for 8-bit training) is not supported; lowbit's Linear8bitLt keeps int8 weights only");
  }
  if (parsed.quantizationConfig !== null) warn(`${parsed.file} has a quantization_config block; fromConfig does not apply it (pass quantizationConfig)`);

  const definition = arch(parsed);
  const spec = definition.spec(parsed);
  const skip = q !== null ? q.llmInt8SkipModules ?? defaultSkipModules(spec) : [];
  const modes = new Map<string, LinearMode>();
  for (const m of spec.modules) {
    if (m.kind !== "linear") continue;
    modes.set(m.name, m.tiedTo !== null ? "tied" : q !== null && !isSkippedModule(m.name, skip) ? (q.loadIn4bit ? "quantize4bit" : "quantize8bit") : "float");
  }
  const deviceMap = placeUnits(parsed, spec, modes, dtype, q, true, options, warn);
  const info: LoadedModelInfo = {
    source: null,
    dtype,
    deviceMap,
    quantizationConfig: q,
    generationConfig: GenerationConfig.fromModelConfig(parsed.raw, parsed.file),
    generationConfigText: null,
    configText: JSON.stringify(parsed.raw),
  };

  const random = new RandomWeights(seed, std, poolSize);
  const made: Array<{ dispose(): void }> = [];
  const track = <T extends { dispose(): void }>(x: T): T => {
    made.push(x);
    return x;
  };
  const built = new Map<string, PretrainedEmbedding>();
  const specOf = new Map(spec.modules.map((m) => [m.name, m]));
  const moduleSpec = (name: string, kind: ModuleSpec["kind"]): ModuleSpec => {
    const m = specOf.get(name);
    if (m === undefined || m.kind !== kind) throw new ArgumentError(`${spec.architecture}: the weight table has no ${kind} named ${JSON.stringify(name)}`);
    return m;
  };
  const src: WeightSource = {
    embedding(name) {
      const m = moduleSpec(name, "embedding");
      if (m.kind !== "embedding") throw new ArgumentError(`${name} is not an embedding`);
      const w = random.normal([m.numEmbeddings, m.embeddingDim], dtype, deviceMap[m.unit]!); // (V, C)
      const pad = parsed.padTokenId;
      if (pad !== null && pad < m.numEmbeddings) {
        // nn.Embedding(padding_idx=pad_token_id): _init_weights zeroes that row.
        const elem = DTYPES[dtype].bytes;
        getBinding().fill(w.storage, w.byteOffset + pad * m.embeddingDim * elem, DTYPES[dtype].id, m.embeddingDim, 0);
      }
      const e = track(new PretrainedEmbedding(w));
      built.set(name, e);
      return e;
    },
    norm(name) {
      const m = moduleSpec(name, "norm");
      if (m.kind !== "norm") throw new ArgumentError(`${name} is not a norm`);
      return track(new PretrainedRMSNorm(ones([m.dim], { dtype, device: deviceMap[m.unit]! }), parsed.rmsNormEps));
    },
    linear(name): LinearLike {
      const m = moduleSpec(name, "linear");
      if (m.kind !== "linear") throw new ArgumentError(`${name} is not a linear layer`);
      const device = deviceMap[m.unit]!;
      const mode = modes.get(name)!;
      if (mode === "tied") {
        const emb = built.get(m.tiedTo!);
        if (emb === undefined) throw new ArgumentError(`${name} is tied to ${m.tiedTo}, which must be built first`);
        return track(new PretrainedLinear(emb.weight.device === device ? emb.weight : emb.weight.to(device), null));
      }
      const w = random.normal([m.outFeatures, m.inFeatures], dtype, device); // (out, in)
      const bias = m.bias ? zeros([m.outFeatures], { dtype, device }) : null; // (out,)
      if (mode === "float") {
        try {
          return track(new PretrainedLinear(w, bias));
        } catch (err) {
          w.dispose();
          bias?.dispose();
          throw err;
        }
      }
      try {
        return track(quantizeLinear(mode === "quantize4bit" ? "quantize4bit" : "quantize8bit", w, bias, q!));
      } finally {
        w.dispose();
        bias?.dispose();
      }
    },
  };
  try {
    return definition.build(parsed, spec, info, src);
  } catch (err) {
    for (const x of made) x.dispose();
    throw err;
  } finally {
    random.dispose();
  }
}

/** Loaded weights are frozen: a quantized layer's bias is registered as trainable by default, so turn that off. */
function frozenBias<T extends Linear4bit | Linear8bitLt>(layer: T): T {
  const b = layer.bias;
  if (b !== null) b.requiresGrad = false;
  return layer;
}

/**
 * Copies one checkpoint tensor out of its file mapping onto `device`, cast to `dtype` (null: the stored dtype; "uint8"
 * for a non-uint8 tensor reinterprets its bytes, as packed 4-bit storage is read). The result owns fresh memory, never
 * the mapping, so the mapping can be closed after loading.
 */
function materialize(map: NativeStorage, e: Entry, dtype: DType | null, device: Device): Tensor {
  const { info } = e;
  const binding = getBinding();
  if (dtype === "uint8" && info.dtype !== "uint8") {
    const raw = binding.allocate(device, Math.max(info.byteLength, 1));
    if (info.byteLength > 0) binding.copyBytes(raw, 0, map, info.byteOffset, info.byteLength);
    return Tensor.fromStorage(raw, 0, [info.byteLength], "uint8");
  }
  const target = dtype ?? info.dtype;
  const shape = [...info.shape];
  const elem = DTYPES[info.dtype].bytes;
  if (device === "cpu" && target !== info.dtype && info.byteOffset % elem === 0) {
    // Cast straight from the mapped bytes: one pass, no intermediate copy.
    const view = Tensor.fromStorage(map, info.byteOffset, shape, info.dtype, { external: true });
    try {
      return view.to(target);
    } finally {
      view.dispose();
    }
  }
  // Copy the stored bytes to the device (aligned there whatever the file's alignment), then cast in place of use.
  const storage = binding.allocate(device, Math.max(bytesOf(info.dtype, shape.reduce((a, b) => a * b, 1)), 1));
  if (info.byteLength > 0) binding.copyBytes(storage, 0, map, info.byteOffset, info.byteLength);
  const raw = Tensor.fromStorage(storage, 0, shape, info.dtype);
  if (target === info.dtype) return raw;
  try {
    return raw.to(target);
  } finally {
    raw.dispose();
  }
}
