// The model tree the planner works on. Callers give either a neutral ModelDescription (module names,
// class names, parameter / buffer shapes and dtypes, tied groups; nothing is allocated, the lowbit
// equivalent of a meta model, spec A9) or a live @lowbit/tensor Module, which is walked into the same
// tree. Order is torch's: a module's own parameters, in registration order, then its children; the
// planner's output order depends on it.
//
// Tied parameters (spec A4) are one tensor under several names. As in torch's de-duplicating
// `named_parameters()`, the first name in traversal order owns the bytes; the other names count 0.
import { describe } from "@lowbit/dtypes";
import { Module, type Tensor } from "@lowbit/tensor";

import { checkQuantSpec, dtypeByteSize, type QuantSpec } from "./dtype-size.js";
import { ModelDescriptionError } from "./errors.js";

/** A parameter or buffer: its logical shape and dtype (and, for a weight that will be quantized, how). */
export interface TensorDescription {
  readonly shape: readonly number[];
  /** A lowbit DType or a torch dtype name ("float16", "torch.bfloat16", "float64", ...). */
  readonly dtype: string;
  /** Set for a weight that bitsandbytes will store quantized (shape / dtype stay the float weight's). */
  readonly quant?: QuantSpec;
}

export interface BufferDescription extends TensorDescription {
  /** Non-persistent buffers (rotary inv_freq) are planned but are not state-dict keys. Default true. */
  readonly persistent?: boolean;
}

/**
 * Named entries in order. A Record keeps insertion order except that integer-like keys ("0", "1")
 * come first in ascending order (a JavaScript rule); use the array form when that matters.
 */
export type NamedEntries<T> = Readonly<Record<string, T>> | ReadonlyArray<readonly [string, T]>;

export interface ModuleDescription {
  /** The module's class name, matched against noSplitModuleClasses ("LlamaDecoderLayer"). */
  readonly className: string;
  readonly parameters?: NamedEntries<TensorDescription>;
  readonly buffers?: NamedEntries<BufferDescription>;
  readonly children?: NamedEntries<ModuleDescription>;
}

export interface ModelDescription extends ModuleDescription {
  /** Groups of parameter names that are one tensor, e.g. [["lm_head.weight", "model.embed_tokens.weight"]]. */
  readonly tiedParameters?: ReadonlyArray<ReadonlyArray<string>>;
}

/** What the planning functions accept. */
export type ModelInput = ModelDescription | Module | ModelTree;

/** A parameter or buffer of the tree, with its full dotted name. */
export interface TensorNode {
  readonly kind: "tensor";
  readonly name: string;
  readonly shape: readonly number[];
  readonly numel: number;
  readonly dtype: string;
  readonly quant: QuantSpec | null;
  readonly isBuffer: boolean;
  /** Buffers only: whether it is a state-dict key. Parameters are always persistent. */
  readonly persistent: boolean;
  /** A second (third, ...) name of a tied parameter: it owns no bytes. */
  readonly duplicate: boolean;
}

/** A module of the tree, with its full dotted name ("" for the root). */
export interface ModuleNode {
  readonly kind: "module";
  readonly name: string;
  readonly className: string;
  readonly params: readonly TensorNode[];
  readonly buffers: readonly TensorNode[];
  readonly children: readonly ModuleNode[];
}

export type TreeNode = ModuleNode | TensorNode;

/** A validated model: the root, the tied groups, every node by name and the state-dict keys in order. */
export interface ModelTree {
  readonly kind: "model-tree";
  readonly root: ModuleNode;
  /** Tied groups, each sorted (as accelerate's find_tied_parameters returns them). */
  readonly tiedParameters: readonly (readonly string[])[];
  readonly nodes: ReadonlyMap<string, TreeNode>;
  /** state_dict() keys in order: parameters (tied names included) and persistent buffers. */
  readonly stateKeys: readonly string[];
}

const join = (prefix: string, name: string): string => (prefix === "" ? name : `${prefix}.${name}`);

function entriesOf<T>(entries: NamedEntries<T> | undefined, path: string): Array<readonly [string, T]> {
  if (entries === undefined) return [];
  if (Array.isArray(entries)) {
    return entries.map((e, i) => {
      if (!Array.isArray(e) || e.length !== 2) throw new ModelDescriptionError(`Expected a [name, value] pair for ${path}[${i}] but received ${describe(e)}`, `${path}[${i}]`);
      return e as unknown as readonly [string, T];
    });
  }
  if (typeof entries !== "object" || entries === null) throw new ModelDescriptionError(`Expected an object or an array of [name, value] pairs for ${path} but received ${describe(entries)}`, path);
  return Object.entries(entries as Record<string, T>);
}

function checkLocalName(name: unknown, path: string, allowDots: boolean): string {
  const ok = typeof name === "string" && name !== "" && (allowDots ? name.split(".").every((s) => s !== "") : !name.includes("."));
  if (!ok) {
    const what = allowDots ? "a non-empty name (dots only between non-empty parts)" : "a non-empty name without dots";
    throw new ModelDescriptionError(`Expected ${what} for the name at ${path} but received ${describe(name)}`, path);
  }
  return name as string;
}

function checkShape(shape: unknown, path: string): number[] {
  if (!Array.isArray(shape)) throw new ModelDescriptionError(`Expected an array of non-negative integers for ${path} but received ${describe(shape)}`, path);
  let numel = 1;
  for (const [i, d] of shape.entries()) {
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new ModelDescriptionError(`Expected a non-negative integer for ${path}[${i}] but received ${describe(d)}`, `${path}[${i}]`);
    }
    numel *= d;
  }
  if (!Number.isSafeInteger(numel)) throw new ModelDescriptionError(`Expected a shape with at most 2^53 - 1 elements for ${path} but received [${shape.join(", ")}]`, path);
  return [...(shape as number[])];
}

function checkDType(dtype: unknown, path: string): string {
  try {
    dtypeByteSize(dtype as string, path);
  } catch (err) {
    throw new ModelDescriptionError((err as Error).message, path, { cause: err });
  }
  return dtype as string;
}

interface RawTensor {
  name: string;
  shape: number[];
  dtype: string;
  quant: QuantSpec | null;
  isBuffer: boolean;
  persistent: boolean;
  /** Identity for tie detection (a Tensor object), or null for descriptions. */
  identity: object | null;
}

interface RawModule {
  name: string;
  className: string;
  params: RawTensor[];
  buffers: RawTensor[];
  children: RawModule[];
}

function rawFromDescription(desc: ModuleDescription, name: string, path: string): RawModule {
  if (typeof desc !== "object" || desc === null) throw new ModelDescriptionError(`Expected a module description object for ${path} but received ${describe(desc)}`, path);
  if (typeof desc.className !== "string" || desc.className === "") {
    throw new ModelDescriptionError(`Expected a non-empty class name for ${path}.className but received ${describe(desc.className)}`, `${path}.className`);
  }
  const seen = new Set<string>();
  const local = (n: unknown, p: string, allowDots: boolean): string => {
    const ok = checkLocalName(n, p, allowDots);
    if (seen.has(ok)) throw new ModelDescriptionError(`Module "${name}" declares "${ok}" twice (parameters, buffers and children share one namespace) at ${p}`, p);
    seen.add(ok);
    return ok;
  };
  const tensorOf = (n: string, t: TensorDescription | BufferDescription, p: string, isBuffer: boolean): RawTensor => {
    if (typeof t !== "object" || t === null) throw new ModelDescriptionError(`Expected { shape, dtype } for ${p} but received ${describe(t)}`, p);
    const persistent = isBuffer ? ((t as BufferDescription).persistent ?? true) : true;
    if (typeof persistent !== "boolean") throw new ModelDescriptionError(`Expected a boolean for ${p}.persistent but received ${describe(persistent)}`, `${p}.persistent`);
    let quant: QuantSpec | null = null;
    if (t.quant !== undefined) {
      try {
        quant = checkQuantSpec(t.quant, `${p}.quant`);
      } catch (err) {
        throw new ModelDescriptionError((err as Error).message, `${p}.quant`, { cause: err });
      }
    }
    return { name: join(name, n), shape: checkShape(t.shape, `${p}.shape`), dtype: checkDType(t.dtype, `${p}.dtype`), quant, isBuffer, persistent, identity: null };
  };
  const params = entriesOf(desc.parameters, `${path}.parameters`).map(([n, t]) => {
    const p = `${path}.parameters[${JSON.stringify(n)}]`;
    return tensorOf(local(n, p, false), t, p, false);
  });
  const buffers = entriesOf(desc.buffers, `${path}.buffers`).map(([n, t]) => {
    const p = `${path}.buffers[${JSON.stringify(n)}]`;
    return tensorOf(local(n, p, true), t, p, true);
  });
  const children = entriesOf(desc.children, `${path}.children`).map(([n, c]) => {
    const p = `${path}.children[${JSON.stringify(n)}]`;
    return rawFromDescription(c, join(name, local(n, p, false)), p);
  });
  return { name, className: desc.className, params, buffers, children };
}

function rawFromModule(module: Module, name: string, persistentKeys: ReadonlySet<string>): RawModule {
  const tensorOf = (n: string, t: Tensor, isBuffer: boolean): RawTensor => {
    const full = join(name, n);
    return { name: full, shape: [...t.shape], dtype: t.dtype, quant: null, isBuffer, persistent: !isBuffer || persistentKeys.has(full), identity: t };
  };
  return {
    name,
    className: module.constructor.name,
    params: module.namedParameters("", false).map(([n, t]) => tensorOf(n, t, false)),
    buffers: module.namedBuffers("", false).map(([n, t]) => tensorOf(n, t, true)),
    children: [...module.namedChildren()].map(([n, c]) => rawFromModule(c, join(name, n), persistentKeys)),
  };
}

function* walkParams(m: RawModule): Generator<RawTensor> {
  yield* m.params;
  for (const c of m.children) yield* walkParams(c);
}

/**
 * Builds the validated tree. `tiedParameters` (explicit groups) wins over the description's own
 * groups; for a Module, groups are also found by tensor identity (one Tensor registered twice).
 * @throws {ModelDescriptionError} naming the path of the first malformed entry.
 */
export function buildModelTree(model: ModelInput, options: { tiedParameters?: ReadonlyArray<ReadonlyArray<string>> } = {}): ModelTree {
  if (isModelTree(model)) return model;
  let raw: RawModule;
  let stateKeys: string[] | null = null;
  let groups: string[][] = [];
  if (model instanceof Module) {
    stateKeys = Object.keys(model.stateDict());
    raw = rawFromModule(model, "", new Set(stateKeys));
    // find_tied_parameters: names that share one Tensor object.
    const byTensor = new Map<object, string[]>();
    for (const p of walkParams(raw)) {
      const list = byTensor.get(p.identity!);
      if (list === undefined) byTensor.set(p.identity!, [p.name]);
      else list.push(p.name);
    }
    groups = [...byTensor.values()].filter((g) => g.length > 1);
  } else {
    if (typeof model !== "object" || model === null) throw new ModelDescriptionError(`Expected a ModelDescription or a Module for model but received ${describe(model)}`, "model");
    raw = rawFromDescription(model, "", "model");
    if (model.tiedParameters !== undefined) groups = checkGroups(model.tiedParameters, "tiedParameters");
  }
  if (options.tiedParameters !== undefined) groups = checkGroups(options.tiedParameters, "options.tiedParameters");

  // Index parameters in traversal order to validate the groups and pick each group's owner.
  const order = new Map<string, RawTensor>();
  let idx = 0;
  const position = new Map<string, number>();
  for (const p of walkParams(raw)) {
    order.set(p.name, p);
    position.set(p.name, idx++);
  }
  const duplicates = new Set<string>();
  const grouped = new Set<string>();
  for (const [gi, group] of groups.entries()) {
    const members = group.map((n, i) => {
      const p = order.get(n);
      if (p === undefined) throw new ModelDescriptionError(`tiedParameters[${gi}][${i}] names "${n}", which is not a parameter of the model`, `tiedParameters[${gi}][${i}]`);
      if (grouped.has(n)) throw new ModelDescriptionError(`"${n}" appears in two tied groups (merge them into one) at tiedParameters[${gi}][${i}]`, `tiedParameters[${gi}][${i}]`);
      grouped.add(n);
      return p;
    });
    const first = members[0]!;
    for (const m of members) {
      if (m.dtype !== first.dtype || m.shape.length !== first.shape.length || m.shape.some((d, i) => d !== first.shape[i])) {
        throw new ModelDescriptionError(
          `Tied parameters must have one shape and dtype, but "${first.name}" is [${first.shape.join(", ")}] ${first.dtype} and "${m.name}" is [${m.shape.join(", ")}] ${m.dtype}`,
          `tiedParameters[${gi}]`,
        );
      }
    }
    const owner = members.reduce((a, b) => (position.get(a.name)! <= position.get(b.name)! ? a : b));
    for (const m of members) if (m !== owner) duplicates.add(m.name);
  }

  const nodes = new Map<string, TreeNode>();
  const keys: string[] = [];
  const freeze = (m: RawModule): ModuleNode => {
    const toNode = (t: RawTensor): TensorNode => {
      const node: TensorNode = {
        kind: "tensor",
        name: t.name,
        shape: Object.freeze([...t.shape]),
        numel: t.shape.reduce((a, b) => a * b, 1),
        dtype: t.dtype,
        quant: t.quant,
        isBuffer: t.isBuffer,
        persistent: t.persistent,
        duplicate: duplicates.has(t.name),
      };
      if (nodes.has(t.name)) throw new ModelDescriptionError(`Two tensors are both named "${t.name}"`, t.name);
      nodes.set(t.name, node);
      if (stateKeys === null && node.persistent) keys.push(node.name);
      return node;
    };
    const params = m.params.map(toNode);
    const buffers = m.buffers.map(toNode);
    const node: ModuleNode = { kind: "module", name: m.name, className: m.className, params, buffers, children: [] };
    if (nodes.has(m.name)) throw new ModelDescriptionError(`A module and a tensor are both named "${m.name}"`, m.name);
    nodes.set(m.name, node);
    (node as unknown as { children: ModuleNode[] }).children = m.children.map(freeze);
    return Object.freeze(node);
  };
  const root = freeze(raw);
  return {
    kind: "model-tree",
    root,
    tiedParameters: groups.map((g) => [...g].sort()),
    nodes,
    stateKeys: stateKeys ?? keys,
  };
}

function checkGroups(groups: unknown, path: string): string[][] {
  if (!Array.isArray(groups)) throw new ModelDescriptionError(`Expected an array of arrays of parameter names for ${path} but received ${describe(groups)}`, path);
  return groups.map((g, i) => {
    if (!Array.isArray(g) || g.length < 2 || g.some((n) => typeof n !== "string")) {
      throw new ModelDescriptionError(`Expected at least two parameter names for ${path}[${i}] but received ${describe(g)}`, `${path}[${i}]`);
    }
    if (new Set(g).size !== g.length) throw new ModelDescriptionError(`Expected distinct names in ${path}[${i}] but received ${JSON.stringify(g)}`, `${path}[${i}]`);
    return [...(g as string[])];
  });
}

export function isModelTree(value: unknown): value is ModelTree {
  return typeof value === "object" && value !== null && (value as { kind?: unknown }).kind === "model-tree";
}

/**
 * accelerate's `find_tied_parameters`: groups of parameter names that are one tensor, each sorted.
 */
export function findTiedParameters(model: ModelInput): string[][] {
  return buildModelTree(model).tiedParameters.map((g) => [...g]);
}

/** The module's direct parameters, then its children, then its direct buffers (the planner's queue order). */
export function directEntries(m: ModuleNode): TreeNode[] {
  return [...m.params, ...m.children, ...m.buffers];
}
