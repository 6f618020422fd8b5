// Module sizes (spec A1), the largest unsplittable layer (A3) and a module's size with its tied
// parameters (A4), as accelerate's compute_module_sizes / get_max_layer_size / get_module_size_with_ties.
//
// Sizes are bytes keyed by name: "" is the whole model, then every module prefix and every full tensor
// name. A name that is not a key has size 0 (accelerate's defaultdict(int)); the second name of a tied
// parameter is never a key.
import { ArgumentError, describe, expected } from "@lowbit/dtypes";

import { canonicalDTypeName, dtypeByteSize, isIntegerOrBoolDType, quantizedByteSize, type QuantSpec, type QuantizedSizes } from "./dtype-size.js";
import { buildModelTree, isModelTree, type ModelInput, type ModelTree, type ModuleNode, type TensorNode, type TreeNode } from "./model.js";

/** Bytes by name, in accelerate's insertion order (parameters first, then buffers). */
export type ModuleSizes = Map<string, number>;

export interface SizeOptions {
  /**
   * The dtype weights will be loaded in. Float tensors count min(size(dtype), size(own dtype)) — passing
   * a dtype can only shrink a tensor; integer and bool tensors keep their own size.
   */
  dtype?: string;
  /** Per full tensor name, a dtype that overrides everything else (accelerate's special_dtypes). */
  specialDtypes?: Readonly<Record<string, string>> | ReadonlyMap<string, string>;
  /** How weights with a `quant` spec are counted (default "storage"; see QuantizedSizes). */
  quantizedSizes?: QuantizedSizes;
}

/** One entry of the flat form of computeModuleSizes. */
export interface NamedTensorShape {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: string;
  readonly quant?: QuantSpec;
}

/** Resolved size options (validated once per call). */
export interface SizeContext {
  readonly dtypeSize: number | null;
  readonly special: ReadonlyMap<string, number>;
  readonly quantizedSizes: QuantizedSizes;
}

export function sizeContext(options: SizeOptions = {}, name = "options"): SizeContext {
  if (typeof options !== "object" || options === null) throw new ArgumentError(expected("an options object", name, options));
  const dtypeSize = options.dtype === undefined || options.dtype === null ? null : dtypeByteSize(options.dtype, `${name}.dtype`);
  const special = new Map<string, number>();
  const sd = options.specialDtypes;
  if (sd !== undefined) {
    if (typeof sd !== "object" || sd === null) throw new ArgumentError(expected("a Record or Map of tensor name → dtype", `${name}.specialDtypes`, sd));
    const entries = sd instanceof Map ? [...sd.entries()] : Object.entries(sd);
    for (const [k, v] of entries) special.set(k, dtypeByteSize(v, `${name}.specialDtypes[${JSON.stringify(k)}]`));
  }
  const quantizedSizes = options.quantizedSizes ?? "storage";
  if (quantizedSizes !== "storage" && quantizedSizes !== "transformers") {
    throw new ArgumentError(expected('"storage" or "transformers"', `${name}.quantizedSizes`, quantizedSizes));
  }
  return { dtypeSize, special, quantizedSizes };
}

/** Bytes of one tensor under accelerate's rules (special dtype, quantized, own, never-cast ints, min). */
export function tensorByteSize(name: string, shape: readonly number[], dtype: string, quant: QuantSpec | null | undefined, ctx: SizeContext): number {
  const numel = shape.reduce((a, b) => a * b, 1);
  const special = ctx.special.get(name);
  if (special !== undefined) return numel * special;
  if (quant !== null && quant !== undefined) return quantizedByteSize(quant, shape, ctx.quantizedSizes);
  const own = dtypeByteSize(dtype, `the dtype of "${name}"`);
  if (ctx.dtypeSize === null) return numel * own;
  if (isIntegerOrBoolDType(canonicalDTypeName(dtype, name))) return numel * own;
  return numel * Math.min(ctx.dtypeSize, own);
}

function add(sizes: ModuleSizes, key: string, size: number): void {
  sizes.set(key, (sizes.get(key) ?? 0) + size);
}

/** Every tensor of the tree with its owning module, params first then buffers (named_module_tensors order). */
function* ownedTensors(root: ModuleNode, buffersOnly: boolean): Generator<[ModuleNode, TensorNode]> {
  function* walk(m: ModuleNode, which: "params" | "buffers"): Generator<[ModuleNode, TensorNode]> {
    for (const t of m[which]) yield [m, t];
    for (const c of m.children) yield* walk(c, which);
  }
  if (!buffersOnly) yield* walk(root, "params");
  yield* walk(root, "buffers");
}

/** Sizes over a tree: each tensor adds to "", every prefix of its module's path, and its own full name. */
export function treeSizes(root: ModuleNode, ctx: SizeContext, buffersOnly = false): ModuleSizes {
  const sizes: ModuleSizes = new Map();
  for (const [owner, t] of ownedTensors(root, buffersOnly)) {
    if (t.duplicate) continue;
    const size = tensorByteSize(t.name, t.shape, t.dtype, t.quant, ctx);
    // Prefixes of the owner's path relative to the tree root ("" included), then the tensor itself.
    // Splitting the module path (not the tensor name) keeps a dotted buffer name such as
    // "weight.absmax" from inventing a "q_proj.weight" module; for plain names it is the same thing.
    const base = root.name;
    add(sizes, base, size);
    const rel = owner.name === base ? "" : base === "" ? owner.name : owner.name.slice(base.length + 1);
    if (rel !== "") {
      const parts = rel.split(".");
      for (let i = 1; i <= parts.length; i++) add(sizes, joinName(base, parts.slice(0, i).join(".")), size);
    }
    add(sizes, t.name, size);
  }
  return sizes;
}

function joinName(a: string, b: string): string {
  return a === "" ? b : b === "" ? a : `${a}.${b}`;
}

/**
 * accelerate's `compute_module_sizes`. Accepts either a flat list of named tensors (each size is added
 * to every dotted prefix of its name: "", "model", "model.layers", ..., the full name) or a model
 * (description, Module or tree; the second name of a tied parameter counts 0). Returns bytes by name.
 * @throws {DTypeError} for a dtype with no size; {ArgumentError} for malformed options.
 */
export function computeModuleSizes(input: ReadonlyArray<NamedTensorShape> | ModelInput, options: SizeOptions = {}): ModuleSizes {
  const ctx = sizeContext(options);
  if (!Array.isArray(input)) return treeSizes(buildModelTree(input as ModelInput).root, ctx);
  const sizes: ModuleSizes = new Map();
  for (const [i, entry] of (input as ReadonlyArray<NamedTensorShape>).entries()) {
    if (typeof entry !== "object" || entry === null || typeof entry.name !== "string") {
      throw new ArgumentError(expected("{ name, shape, dtype }", `computeModuleSizes' named[${i}]`, entry));
    }
    const shape = entry.shape;
    if (!Array.isArray(shape) || shape.some((d) => typeof d !== "number" || !Number.isSafeInteger(d) || d < 0)) {
      throw new ArgumentError(`Expected an array of non-negative integers for computeModuleSizes' named[${i}].shape ("${entry.name}") but received ${describe(shape)}`);
    }
    const size = tensorByteSize(entry.name, shape, entry.dtype, entry.quant ?? null, ctx);
    const parts = entry.name.split(".");
    for (let k = 0; k <= parts.length; k++) add(sizes, parts.slice(0, k).join("."), size);
  }
  return sizes;
}

/** Sum of all buffers of a module subtree (accelerate's compute_module_total_buffer_size). */
export function moduleBufferBytes(m: ModuleNode, ctx: SizeContext): number {
  return treeSizes(m, ctx, true).get(m.name) ?? 0;
}

/** The largest unsplittable unit and every name that reaches it. */
export interface MaxLayer {
  size: number;
  names: string[];
}

/**
 * get_max_layer_size over queue entries: depth-first (children pushed to the front); a tensor, a module
 * without children, or a module whose class is no-split is a layer. Ties are all reported.
 */
export function maxLayerOf(entries: readonly TreeNode[], sizes: ModuleSizes, noSplit: ReadonlySet<string>): MaxLayer {
  let size = 0;
  let names: string[] = [];
  const todo: TreeNode[] = [...entries];
  while (todo.length > 0) {
    const node = todo.shift()!;
    if (node.kind === "tensor" || node.children.length === 0 || noSplit.has(node.className)) {
      const s = sizes.get(node.name) ?? 0;
      if (s > size) {
        size = s;
        names = [node.name];
      } else if (s === size) {
        names.push(node.name);
      }
    } else {
      todo.unshift(...node.children);
    }
  }
  return { size, names };
}

export function checkNoSplit(value: unknown, name: string): Set<string> {
  if (value === undefined || value === null) return new Set();
  if (typeof value === "string") return new Set([value]);
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) throw new ArgumentError(expected("a class name or an array of class names", name, value));
  return new Set(value as string[]);
}

export interface MaxLayerOptions extends SizeOptions {
  noSplitModuleClasses?: string | readonly string[];
  /** Names of the entries to scan (default: the root's parameters, children and buffers). */
  modules?: readonly string[];
}

/**
 * accelerate's get_max_layer_size (as calculate_maximum_sizes calls it by default): the size of the
 * largest unsplittable layer and every layer name with that size.
 * @throws {ArgumentError} when `modules` names something that is not in the model.
 */
export function getMaxLayerSize(model: ModelInput, options: MaxLayerOptions = {}): MaxLayer {
  const tree: ModelTree = isModelTree(model) ? model : buildModelTree(model);
  const sizes = treeSizes(tree.root, sizeContext(options));
  const noSplit = checkNoSplit(options.noSplitModuleClasses, "options.noSplitModuleClasses");
  let entries: TreeNode[];
  if (options.modules === undefined) {
    entries = [...tree.root.params, ...tree.root.children, ...tree.root.buffers];
  } else {
    entries = options.modules.map((n, i) => {
      const node = tree.nodes.get(n);
      if (node === undefined) throw new ArgumentError(expected("names of modules or tensors of the model", `options.modules[${i}]`, n));
      return node;
    });
  }
  return maxLayerOf(entries, sizes, noSplit);
}

/** A module's size together with the queue entries holding its outside-tied parameters. */
export interface SizeWithTies {
  size: number;
  /** The queue entry holding each tied parameter, in tied-parameter order (repeats kept, as upstream). */
  tiedModuleNames: string[];
}

/**
 * accelerate's get_module_size_with_ties: for each tied parameter, the first queue entry whose name is
 * a dotted prefix of it contributes size(entry) − size(parameter). A tied parameter that no queue entry
 * holds (already placed) adds nothing (upstream raises IndexError there).
 */
export function getModuleSizeWithTies(tiedParams: readonly string[], moduleSize: number, sizes: ModuleSizes, queueNames: readonly string[]): SizeWithTies {
  let size = moduleSize;
  const tiedModuleNames: string[] = [];
  for (const p of tiedParams) {
    const entry = queueNames.find((n) => p.startsWith(`${n}.`));
    if (entry === undefined) continue;
    tiedModuleNames.push(entry);
    size += (sizes.get(entry) ?? 0) - (sizes.get(p) ?? 0);
  }
  return { size, tiedModuleNames };
}

/** The module (or tensor) names of get_module_leaves: keys with no child key (dotted-name based). */
export function moduleLeaves(sizes: ReadonlyMap<string, number>): string[] {
  const childCount = new Map<string, number>();
  for (const k of sizes.keys()) {
    if (k === "" || !k.includes(".")) continue;
    const parent = k.slice(0, k.lastIndexOf("."));
    childCount.set(parent, (childCount.get(parent) ?? 0) + 1);
  }
  return [...sizes.keys()].filter((k) => k !== "" && (childCount.get(k) ?? 0) === 0);
}
