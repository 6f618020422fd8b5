// Device maps for model loading (transformers' `device_map`, spec A5–A7): where each placement unit of a model
// (embed_tokens, each decoder layer, the final norm, lm_head) lives. Accepts "cpu", "cuda" / "cuda:N" or an integer N,
// a Record from module names to devices ("" covers everything), and accelerate's strategies "auto", "balanced",
// "balanced_low_0" and "sequential".
//
// Strategies go through @lowbit/accelerate exactly as transformers' `_get_device_map` does: the model is described by
// its Hugging Face module tree (names, shapes, dtypes, bitsandbytes quantization of each weight; nothing is allocated,
// the lowbit form of a meta model), `get_balanced_memory` (all but "sequential"), the quantizer's `adjust_max_memory`
// (bitsandbytes: every budget × 0.9), the GPUs' unused reserved bytes, then `infer_auto_device_map` with the
// architecture's `_no_split_modules` ("LlamaDecoderLayer", ...). Callers can also plug their own planner
// (`fromPretrained(dir, { deviceMapPlanner })`). Devices the loader cannot place yet ("disk", "meta") are refused with a
// DeviceMapError naming the module.

import {
  DEVICE_MAP_STRATEGIES,
  DeviceMapError,
  bnbAdjustMaxMemory,
  buildModelTree,
  checkTiedParametersOnSameDevice,
  detectDeviceInventory,
  resolveDeviceMap as accelerateResolveDeviceMap,
  type DeviceInventory,
  type DeviceMapStrategy,
  type Logger,
  type MaxMemoryInput,
  type ModelDescription,
  type ModelTree,
  type ModuleDescription,
  type QuantSpec,
  type QuantizedSizes,
  type TensorDescription,
} from "@lowbit/accelerate";
import { ArgumentError, describe } from "@lowbit/dtypes";
import { availableDevices, normalizeDevice, type Device } from "@lowbit/tensor";
import type { ModelDType } from "./config-base.js";
import type { PretrainedConfig } from "./config.js";
import type { ArchitectureSpec } from "./modeling-utils.js";
import { computeRopeParameters } from "./rope.js";

/** What `deviceMap` accepts: a strategy, a device ("cpu", "cuda", "cuda:N" or N), or a Record of module name → device. */
export type DeviceMapOption = DeviceMapStrategy | Device | number | Readonly<Record<string, string | number>>;

export { DEVICE_MAP_STRATEGIES, type DeviceMapStrategy };

/** A unit the loader places whole (a decoder layer, the embeddings, the final norm, lm_head), with its loaded bytes. */
export interface PlacementUnit {
  /** HF module name: "model.embed_tokens", "model.layers.0", ..., "model.norm", "lm_head". */
  readonly name: string;
  /** Bytes of the unit's parameters and buffers after quantization (what it occupies once loaded). */
  readonly bytes: number;
  /** Name of a unit whose weight this one shares (lm_head tied to embed_tokens), or null. */
  readonly tiedTo: string | null;
}

/** How accelerate plans a strategy: what `planAutoDeviceMap` (or a caller's planner) is given. */
export interface DevicePlanContext {
  /** Devices usable now, "cpu" first (@lowbit/tensor's availableDevices(), or the caller's list). */
  readonly devices: readonly Device[];
  readonly strategy: DeviceMapStrategy;
  /** The model's Hugging Face module tree, parameters in the dtype (and quantization) they are loaded in. */
  readonly model: ModelDescription;
  /** The architecture's `_no_split_modules` (["LlamaDecoderLayer"], ...). */
  readonly noSplitModuleClasses: readonly string[];
  /** The dtype weights are loaded in (accelerate's `dtype`: float tensors count at most this size). */
  readonly dtype: string | undefined;
  /** Whether a bitsandbytes quantizer is active: budgets are then multiplied by 0.9 (adjust_max_memory). */
  readonly quantized: boolean;
  /** The user's max_memory ({ 0: "20GiB", cpu: "60GB" }); undefined: free memory of each device now. */
  readonly maxMemory: MaxMemoryInput | undefined;
  /** The machine as the planner sees it; undefined: queried from the addon and node:os. */
  readonly inventory: DeviceInventory | (() => DeviceInventory) | undefined;
  /** How bitsandbytes weights are counted (see DeviceMapPlanOptions.quantizedSizes). */
  readonly quantizedSizes: QuantizedSizes;
  /** Receives accelerate's warnings and notes. */
  readonly logger: Logger | undefined;
}

/**
 * Plans a strategy ("auto", "balanced", "balanced_low_0", "sequential") from the units (forward order) and the
 * context, returning module name → device (a GPU id N, "cuda:N", "cpu"; any module prefix may be a key, as in
 * transformers' `device_map` dict).
 */
export type AutoDeviceMapPlanner = (units: readonly PlacementUnit[], context: DevicePlanContext) => Readonly<Record<string, string | number>>;

/** Planning knobs of fromPretrained / fromConfig (`deviceMapOptions`). */
export interface DeviceMapPlanOptions {
  /** Use this machine description instead of querying the addon and node:os (tests, planning for another machine). */
  inventory?: DeviceInventory | (() => DeviceInventory);
  /**
   * How bitsandbytes weights count: "storage" (default) what lowbit holds (packed codes + absmax + maps; int8 codes +
   * SCB), or "transformers" (0.5 / 1 byte per element, the quantization state not at all) to reproduce transformers'
   * maps byte for byte.
   */
  quantizedSizes?: QuantizedSizes;
}

/** The transformers class-name prefix of an architecture ("LlamaForCausalLM" → "Llama"). */
function classPrefix(spec: ArchitectureSpec): string {
  return spec.architecture.replace(/ForCausalLM$/, "");
}

/** transformers' `_no_split_modules` of the decoder-only architectures: the decoder layer ("LlamaDecoderLayer", ...). */
export function noSplitModules(spec: ArchitectureSpec): string[] {
  return [`${classPrefix(spec)}DecoderLayer`];
}

/** transformers' activation modules (ACT2CLS) by hidden_act, for the `act_fn` child of the MLP. */
const ACTIVATION_CLASSES: Readonly<Record<string, string>> = {
  silu: "SiLUActivation",
  swish: "SiLUActivation",
  gelu: "GELUActivation",
  gelu_pytorch_tanh: "PytorchGELUTanh",
  gelu_new: "NewGELUActivation",
  relu: "ReLU",
};

export interface DescribeModelOptions {
  /** Dtype of the unquantized parameters (the model dtype). */
  readonly dtype: ModelDType;
  /** How a linear layer's weight is stored: its bitsandbytes quantization, or null for a float weight. */
  readonly quant?: (linearName: string) => QuantSpec | null;
}

/** A module of the description being built: children in registration order. */
interface Node {
  className: string;
  parameters: Array<[string, TensorDescription]>;
  children: Array<[string, Node]>;
  buffers?: Array<[string, TensorDescription & { persistent: boolean }]>;
}

function toDescription(n: Node): ModuleDescription {
  return {
    className: n.className,
    parameters: n.parameters,
    ...(n.buffers === undefined ? {} : { buffers: n.buffers }),
    children: n.children.map(([k, c]) => [k, toDescription(c)] as const),
  };
}

/**
 * The model as accelerate sees it, from the config alone (transformers' meta model, spec A9): the Hugging Face module
 * tree in registration order (`model.embed_tokens`, `model.layers.N.self_attn.{q,k,v,o}_proj`, `.mlp.{gate,up,down}_proj`
 * and `act_fn`, the two norms, `model.norm`, `model.rotary_emb` with its float32 non-persistent `inv_freq` /
 * `original_inv_freq`, `lm_head`), every parameter in `dtype`, quantized weights marked with their bitsandbytes spec
 * (class Linear4bit / Linear8bitLt, as after transformers' replace_with_bnb_linear), and the tied group
 * lm_head.weight = model.embed_tokens.weight when tie_word_embeddings.
 */
export function describeModel(config: PretrainedConfig, spec: ArchitectureSpec, options: DescribeModelOptions): ModelDescription {
  const P = classPrefix(spec);
  const root: Node = { className: spec.architecture, parameters: [], children: [] };
  const byName = new Map<string, Node>([["", root]]);
  const classOf = (path: string): string => {
    if (path === "model") return `${P}Model`;
    if (path === "model.layers") return "ModuleList";
    if (/^model\.layers\.\d+$/.test(path)) return `${P}DecoderLayer`;
    if (path.endsWith(".self_attn")) return `${P}Attention`;
    if (path.endsWith(".mlp")) return `${P}MLP`;
    return "Module";
  };
  /** The node at `path`, creating it (and its ancestors) on first use, so children keep first-appearance order. */
  const nodeAt = (path: string, className?: string): Node => {
    const have = byName.get(path);
    if (have !== undefined) return have;
    const dot = path.lastIndexOf(".");
    const parent = nodeAt(dot < 0 ? "" : path.slice(0, dot));
    const node: Node = { className: className ?? classOf(path), parameters: [], children: [] };
    parent.children.push([path.slice(dot + 1), node]);
    byName.set(path, node);
    return node;
  };
  const dtype = options.dtype;
  const tied: string[][] = [];
  for (const m of spec.modules) {
    switch (m.kind) {
      case "embedding":
        nodeAt(m.name, "Embedding").parameters.push(["weight", { shape: [m.numEmbeddings, m.embeddingDim], dtype }]);
        break;
      case "norm":
        nodeAt(m.name, `${P}RMSNorm`).parameters.push(["weight", { shape: [m.dim], dtype }]);
        break;
      case "linear": {
        const quant = m.tiedTo === null ? (options.quant?.(m.name) ?? null) : null;
        const cls = quant === null ? "Linear" : quant.type === "int8" ? "Linear8bitLt" : "Linear4bit";
        const node = nodeAt(m.name, cls);
        node.parameters.push(["weight", { shape: [m.outFeatures, m.inFeatures], dtype, ...(quant === null ? {} : { quant }) }]);
        if (m.bias) node.parameters.push(["bias", { shape: [m.outFeatures], dtype }]);
        if (m.tiedTo !== null) tied.push([`${m.name}.weight`, `${m.tiedTo}.weight`].sort());
        if (m.name.endsWith(".mlp.down_proj")) {
          // LlamaMLP registers act_fn after its three projections (a module without tensors).
          nodeAt(`${m.name.slice(0, -".down_proj".length)}.act_fn`, ACTIVATION_CLASSES[config.hiddenAct] ?? "Module");
        }
        break;
      }
    }
  }
  // LlamaModel registers rotary_emb after norm; its frequencies are float32 whatever the model dtype.
  if (byName.has("model")) {
    const half = computeRopeParameters(config).invFreq.length;
    const rotary = nodeAt("model.rotary_emb", `${P}RotaryEmbedding`);
    rotary.buffers = [
      ["inv_freq", { shape: [half], dtype: "float32", persistent: false }],
      ["original_inv_freq", { shape: [half], dtype: "float32", persistent: false }],
    ];
  }
  return { ...toDescription(root), ...(tied.length > 0 ? { tiedParameters: tied } : {}) };
}

/** A coarse description from the units alone (each unit one uint8 blob of its bytes), for callers without a config. */
function describeUnits(units: readonly PlacementUnit[]): ModelDescription {
  const root: Node = { className: "Model", parameters: [], children: [] };
  const byName = new Map<string, Node>([["", root]]);
  const nodeAt = (path: string): Node => {
    const have = byName.get(path);
    if (have !== undefined) return have;
    const dot = path.lastIndexOf(".");
    const node: Node = { className: "Module", parameters: [], children: [] };
    nodeAt(dot < 0 ? "" : path.slice(0, dot)).children.push([path.slice(dot + 1), node]);
    byName.set(path, node);
    return node;
  };
  for (const u of units) {
    if (!Number.isFinite(u.bytes) || u.bytes < 0) throw new ArgumentError(`Expected a non-negative byte count for unit ${JSON.stringify(u.name)} but received ${describe(u.bytes)}`);
    nodeAt(u.name).parameters.push(["weight", { shape: [Math.ceil(u.bytes)], dtype: "uint8" }]);
  }
  return toDescription(root);
}

/**
 * The built-in planner: accelerate's resolveDeviceMap for the strategy, as transformers' `_get_device_map` calls it
 * (balanced memory unless "sequential", bitsandbytes' × 0.9, unused reserved GPU bytes, no-split decoder layers).
 * Returns accelerate's cleaned map in its order: keys are module names ("" = everything), values GPU ids, "cpu" or
 * "disk".
 */
export function planAutoDeviceMap(_units: readonly PlacementUnit[], context: DevicePlanContext): Record<string, string | number> {
  const map = accelerateResolveDeviceMap(context.model, context.strategy, {
    ...(context.maxMemory === undefined ? {} : { maxMemory: context.maxMemory }),
    noSplitModuleClasses: context.noSplitModuleClasses,
    ...(context.dtype === undefined ? {} : { dtype: context.dtype }),
    ...(context.quantized ? { adjustMaxMemory: bnbAdjustMaxMemory } : {}),
    ...(context.inventory === undefined ? {} : { inventory: context.inventory }),
    ...(context.logger === undefined ? {} : { logger: context.logger }),
    quantizedSizes: context.quantizedSizes,
    buffer: "transformers",
    addUnusedReserved: true,
  });
  const out: Record<string, string | number> = {};
  for (const [k, v] of map) out[k] = v;
  return out;
}

/** Options of resolveDeviceMap. */
export interface ResolveDeviceMapOptions extends DeviceMapPlanOptions {
  /**
   * Devices usable now (default availableDevices()). When given without an `inventory`, the planner sees only the
   * machine's GPUs that are in this list.
   */
  devices?: readonly Device[];
  /** Plans the strategies instead of accelerate (the old `deviceMapPlanner` seam). */
  planner?: AutoDeviceMapPlanner;
  /** The model's module tree (describeModel); default: one blob per unit, named by the units. */
  model?: ModelDescription;
  /** The architecture's `_no_split_modules`; default none (units are never split anyway). */
  noSplitModuleClasses?: readonly string[];
  /** The dtype weights are loaded in. */
  dtype?: string;
  /** A bitsandbytes quantizer is active (budgets × 0.9). */
  quantized?: boolean;
  /** The user's max_memory. */
  maxMemory?: MaxMemoryInput | null;
  logger?: Logger;
}

/** A device-map value: "cpu", "cuda", "cuda:N" or an integer N (= "cuda:N"), available on this machine. */
function deviceValue(value: unknown, key: string, available: readonly Device[], source: string): Device {
  const label = `${source}[${JSON.stringify(key)}]`;
  if (value === "disk" || value === "meta") {
    throw new DeviceMapError(
      `${label} is ${JSON.stringify(value)}: offloading to ${value} is not supported by the loader yet (give the module a device: "cpu" or "cuda:N")`,
      { moduleName: key, keys: [key] },
    );
  }
  let device: Device;
  try {
    device = typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? `cuda:${value}` : normalizeDevice(value, label);
  } catch (cause) {
    throw new DeviceMapError(`Expected "cpu", "cuda:N" or a GPU index for ${label} but received ${describe(value)}`, { moduleName: key, keys: [key] }, { cause });
  }
  if (!available.includes(device)) {
    throw new DeviceMapError(`Expected an available device (${available.join(", ")}) for ${label} but received ${describe(value)}`, { moduleName: key, keys: [key] });
  }
  return device;
}

/** Whether `prefix` is `name` or a dotted ancestor of it ("" is everyone's ancestor). */
function covers(prefix: string, name: string): boolean {
  return prefix === "" || name === prefix || name.startsWith(`${prefix}.`);
}

function isStrategy(option: unknown): option is DeviceMapStrategy {
  return typeof option === "string" && (DEVICE_MAP_STRATEGIES as readonly string[]).includes(option);
}

/**
 * Resolves a device map to one device per unit. Strategies are planned (accelerate, or `options.planner`); a device
 * is `{ "": device }`; a Record is matched like transformers' `device_map`: each unit takes the device of the most
 * specific key that is the unit or one of its ancestors. A key inside a unit ("model.layers.0.mlp") may not move part
 * of it elsewhere; every key must name a module or tensor of the model ("model.rotary_emb" is accepted: lowbit keeps
 * the rotary frequencies on every device that needs them). A tied lm_head on another device than embed_tokens only
 * warns (it gets its own copy there).
 * @throws DeviceMapError (an ArgumentError) naming the module for a bad value, an unknown key, a split unit, a unit
 *   with no device, an unavailable device, or a "disk" / "meta" placement; ArgumentError for an unknown option
 */
export function resolveDeviceMap(option: DeviceMapOption | undefined, units: readonly PlacementUnit[], options: ResolveDeviceMapOptions = {}): Record<string, Device> {
  if (typeof options !== "object" || options === null) throw new ArgumentError(`Expected an options object for resolveDeviceMap's options but received ${describe(options)}`);
  const available = options.devices ?? availableDevices();
  let tree: ModelTree | null = null;
  const treeOf = (model: ModelDescription): ModelTree => (tree ??= buildModelTree(model));
  let map: Readonly<Record<string, unknown>>;
  let source = "deviceMap";
  const o: unknown = option ?? "cpu";
  if (isStrategy(o)) {
    source = `deviceMap ${JSON.stringify(o)}`;
    const planner = options.planner ?? planAutoDeviceMap;
    if (typeof planner !== "function") throw new ArgumentError(`Expected a function for deviceMapPlanner but received ${describe(planner)}`);
    const quantizedSizes = options.quantizedSizes ?? "storage";
    let inventory = options.inventory;
    if (inventory === undefined && options.devices !== undefined) {
      // Plan for the devices the caller allows, not for every GPU the addon sees.
      inventory = () => {
        const inv = detectDeviceInventory(options.logger === undefined ? {} : { logger: options.logger });
        return { ...inv, gpus: inv.gpus.filter((g) => available.includes(`cuda:${g.index}`)) };
      };
    }
    const context: DevicePlanContext = {
      devices: available,
      strategy: o,
      model: options.model ?? describeUnits(units),
      noSplitModuleClasses: options.noSplitModuleClasses ?? [],
      dtype: options.dtype,
      quantized: options.quantized ?? false,
      maxMemory: options.maxMemory ?? undefined,
      inventory,
      quantizedSizes,
      logger: options.logger,
    };
    map = planner(units, context);
    if (typeof map !== "object" || map === null) throw new ArgumentError(`Expected the deviceMap planner to return a Record of module → device but it returned ${describe(map)}`);
    const offloaded = Object.entries(map).filter(([, d]) => d === "disk" || d === "meta");
    if (offloaded.length > 0) {
      const names = offloaded.map(([k]) => k);
      throw new DeviceMapError(
        `${source} puts ${names.map((n) => (n === "" ? "the whole model" : JSON.stringify(n))).join(", ")} on ${JSON.stringify(offloaded[0]![1])}: the model does not fit in the memory ` +
          `of ${available.join(" + ")}${options.maxMemory == null ? "" : " under maxMemory"}, and offloading to disk is not supported by the loader yet ` +
          "(raise maxMemory, quantize the model, or pass a Record map)",
        { moduleName: names[0]!, keys: names },
      );
    }
  } else if (typeof o === "string" || typeof o === "number") {
    if (o === "disk" || o === "meta") deviceValue(o, "", available, "deviceMap");
    if (typeof o === "string" && o !== "cpu" && !o.startsWith("cuda")) {
      throw new ArgumentError(`Expected ${DEVICE_MAP_STRATEGIES.map((s) => JSON.stringify(s)).join(", ")}, "cpu", "cuda:N", a GPU index or a Record of module → device for deviceMap but received ${describe(o)}`);
    }
    map = { "": o };
  } else if (typeof o === "object" && o !== null && !Array.isArray(o)) {
    map = o as Readonly<Record<string, unknown>>;
  } else {
    throw new ArgumentError(`Expected ${DEVICE_MAP_STRATEGIES.map((s) => JSON.stringify(s)).join(", ")}, "cpu", "cuda:N", a GPU index or a Record of module → device for deviceMap but received ${describe(o)}`);
  }

  const entries = Object.entries(map).map(([key, value]) => ({ key, device: deviceValue(value, key, available, source) }));
  const out: Record<string, Device> = {};
  for (const unit of units) {
    let best: { key: string; device: Device } | null = null;
    for (const e of entries) if (covers(e.key, unit.name) && (best === null || e.key.length > best.key.length)) best = e;
    if (best === null) {
      throw new DeviceMapError(`${source} gives no device for ${JSON.stringify(unit.name)} (add it, one of its parents, or "" for everything)`, {
        moduleName: unit.name,
        keys: [unit.name],
      });
    }
    out[unit.name] = best.device;
  }
  const names = (): string => `${units.map((u) => u.name).join(", ")}`;
  for (const e of entries) {
    const inside = units.find((u) => e.key.startsWith(`${u.name}.`));
    // Without a description, a key inside a unit cannot be checked further than its unit.
    const known = units.some((u) => covers(e.key, u.name)) || (options.model === undefined ? inside !== undefined : treeOf(options.model).nodes.has(e.key));
    if (!known) {
      throw new DeviceMapError(`${source} key ${JSON.stringify(e.key)} names no module of the model (units: ${names()})`, { moduleName: e.key, keys: [e.key] });
    }
    if (inside !== undefined && e.device !== out[inside.name]) {
      throw new DeviceMapError(
        `${source} puts ${JSON.stringify(e.key)} on ${e.device} but the rest of ${JSON.stringify(inside.name)} on ${out[inside.name]}; a unit (a decoder layer, the embeddings, the final norm, lm_head) lives on one device`,
        { moduleName: inside.name, keys: [e.key] },
      );
    }
  }
  if (options.model !== undefined) {
    const groups = treeOf(options.model).tiedParameters;
    if (groups.length > 0) checkTiedParametersOnSameDevice(groups, out, options.logger === undefined ? {} : { logger: options.logger });
  }
  return out;
}
