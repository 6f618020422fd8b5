// nn.Module: a tree of named parameters, buffers and submodules with torch's naming ("layers.0.mlp.
// up_proj.weight"), state dicts, train/eval mode and explicit disposal. Registered tensors are exempt
// from tidy scopes (keep) and belong to the module: dispose() frees them.

import { ArgumentError, ShapeError, expected } from "@lowbit/dtypes";
import { noGrad } from "../autograd.js";
import { keep } from "../scope.js";
import { formatShape, sameShape } from "../shape.js";
import { Tensor } from "../tensor.js";
import { cast, copyInto, toDevice } from "../ops/views.js";

/** The keys a state dict lacked or had in excess; thrown by loadStateDict in strict mode. */
export class StateDictError extends ArgumentError {
  readonly missingKeys: readonly string[];
  readonly unexpectedKeys: readonly string[];
  constructor(message: string, missingKeys: readonly string[], unexpectedKeys: readonly string[]) {
    super(message);
    this.missingKeys = missingKeys;
    this.unexpectedKeys = unexpectedKeys;
  }
}

export interface LoadStateDictOptions {
  /** Missing or unexpected keys throw (default true); otherwise they are only reported. */
  strict?: boolean;
  /**
   * Adopt the given tensors instead of copying into the existing ones (zero-copy, e.g. for mapped
   * files). The module takes a new view of each; the caller still owns (and disposes) its own.
   */
  assign?: boolean;
}

export interface LoadStateDictResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

export type StateDict = Record<string, Tensor>;

const NAME_RE = /^[^.]+$/;

function checkName(name: unknown, what: string): string {
  if (typeof name !== "string" || !NAME_RE.test(name)) throw new ArgumentError(expected("a non-empty name without dots", `${what} name`, name));
  return name;
}

export class Module {
  /** Training mode (dropout active); set by train() / eval(). */
  training = true;
  readonly #params = new Map<string, Tensor | null>();
  readonly #buffers = new Map<string, Tensor | null>();
  readonly #persistent = new Set<string>();
  readonly #modules = new Map<string, Module>();

  /**
   * Adds (or replaces) a parameter. By default it becomes a leaf with requiresGrad; pass
   * { requiresGrad: false } for frozen weights (quantized layers). The module owns it.
   */
  registerParameter(name: string, t: Tensor | null, options: { requiresGrad?: boolean } = {}): Tensor | null {
    checkName(name, "parameter");
    if (this.#buffers.has(name) || this.#modules.has(name)) throw new ArgumentError(`registerParameter: "${name}" is already a buffer or submodule`);
    if (t !== null) {
      if (!(t instanceof Tensor)) throw new ArgumentError(expected("a Tensor or null", `parameter "${name}"`, t));
      t._assertLive(`registerParameter("${name}")`);
      if (!t.isLeaf) throw new ArgumentError(`registerParameter: "${name}" must be a leaf tensor (detach() it)`);
      if (options.requiresGrad ?? true) t.requiresGrad = true;
      keep(t);
    }
    const old = this.#params.get(name);
    if (old && old !== t) old.dispose();
    this.#params.set(name, t);
    return t;
  }

  /** Adds (or replaces) a buffer: state that is not trained (rope frequencies, quant states). */
  registerBuffer(name: string, t: Tensor | null, options: { persistent?: boolean } = {}): Tensor | null {
    if (typeof name !== "string" || name === "") throw new ArgumentError(expected("a non-empty name", "buffer name", name));
    if (this.#params.has(name) || this.#modules.has(name)) throw new ArgumentError(`registerBuffer: "${name}" is already a parameter or submodule`);
    if (t !== null) {
      if (!(t instanceof Tensor)) throw new ArgumentError(expected("a Tensor or null", `buffer "${name}"`, t));
      t._assertLive(`registerBuffer("${name}")`);
      keep(t);
    }
    const old = this.#buffers.get(name);
    if (old && old !== t) old.dispose();
    this.#buffers.set(name, t);
    if (options.persistent ?? true) this.#persistent.add(name);
    else this.#persistent.delete(name);
    return t;
  }

  registerModule<M extends Module>(name: string, m: M): M {
    checkName(name, "submodule");
    if (!(m instanceof Module)) throw new ArgumentError(expected("a Module", `submodule "${name}"`, m));
    if (this.#params.has(name) || this.#buffers.has(name)) throw new ArgumentError(`registerModule: "${name}" is already a parameter or buffer`);
    this.#modules.set(name, m);
    return m;
  }

  /** A registered parameter (throws if absent). */
  param(name: string): Tensor {
    const t = this.#params.get(name);
    if (t === undefined || t === null) throw new ArgumentError(`${this.constructor.name}: no parameter "${name}"`);
    return t;
  }

  /** A registered parameter, or null when it is registered as null or absent (optional bias). */
  paramOrNull(name: string): Tensor | null {
    return this.#params.get(name) ?? null;
  }

  /** A registered buffer (throws if absent). */
  buffer(name: string): Tensor {
    const t = this.#buffers.get(name);
    if (t === undefined || t === null) throw new ArgumentError(`${this.constructor.name}: no buffer "${name}"`);
    return t;
  }

  /** A registered submodule (throws if absent). */
  child<M extends Module = Module>(name: string): M {
    const m = this.#modules.get(name);
    if (m === undefined) throw new ArgumentError(`${this.constructor.name}: no submodule "${name}"`);
    return m as M;
  }

  *namedChildren(): Generator<[string, Module]> {
    yield* this.#modules.entries();
  }

  *children(): Generator<Module> {
    yield* this.#modules.values();
  }

  /** Every module of the tree with its dotted name (this one as ""). */
  *namedModules(prefix = ""): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [name, m] of this.#modules) yield* m.namedModules(prefix === "" ? name : `${prefix}.${name}`);
  }

  /** Parameters with dotted names, each tensor once (shared ones under their first name). */
  namedParameters(prefix = "", recurse = true): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    const seen = new Set<Tensor>();
    const mods = recurse ? [...this.namedModules(prefix)] : [[prefix, this] as [string, Module]];
    for (const [p, m] of mods) {
      for (const [name, t] of m.#params) {
        if (t === null || seen.has(t)) continue;
        seen.add(t);
        out.push([p === "" ? name : `${p}.${name}`, t]);
      }
    }
    return out;
  }

  parameters(recurse = true): Tensor[] {
    return this.namedParameters("", recurse).map(([, t]) => t);
  }

  /** The parameters that train (requiresGrad): what an optimizer takes. */
  trainableParameters(): Tensor[] {
    return this.parameters().filter((t) => t.requiresGrad);
  }

  namedBuffers(prefix = "", recurse = true): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    const mods = recurse ? [...this.namedModules(prefix)] : [[prefix, this] as [string, Module]];
    for (const [p, m] of mods) {
      for (const [name, t] of m.#buffers) if (t !== null) out.push([p === "" ? name : `${p}.${name}`, t]);
    }
    return out;
  }

  /**
   * The module's own tensors by key: parameters and persistent buffers (not copies; do not dispose
   * them). Subclasses with extra serialized state override saveToStateDict / stateKeys.
   */
  stateDict(prefix = ""): StateDict {
    const out: StateDict = {};
    for (const [p, m] of this.namedModules(prefix)) m.saveToStateDict(out, p === "" ? "" : `${p}.`);
    return out;
  }

  /** Adds this module's own entries (not its children's) under `prefix` (ends with "." or is ""). */
  protected saveToStateDict(out: StateDict, prefix: string): void {
    for (const [name, t] of this.#params) if (t !== null) out[prefix + name] = t;
    for (const [name, t] of this.#buffers) if (t !== null && this.#persistent.has(name)) out[prefix + name] = t;
  }

  /** Keys (without prefix) this module's own entries use, and the tensor each one loads into. */
  protected stateEntries(): Array<[string, Tensor, "param" | "buffer"]> {
    const out: Array<[string, Tensor, "param" | "buffer"]> = [];
    for (const [name, t] of this.#params) if (t !== null) out.push([name, t, "param"]);
    for (const [name, t] of this.#buffers) if (t !== null && this.#persistent.has(name)) out.push([name, t, "buffer"]);
    return out;
  }

  /** Checks a loaded value for one of this module's keys beyond shape (e.g. a quant-state JSON). */
  protected validateStateEntry(_key: string, _target: Tensor, _value: Tensor): void {}

  /**
   * Loads tensors by key. Every provided key is checked first (shape, then dtype convertibility),
   * so a failing load changes nothing. Values are copied into the existing tensors (cast to their
   * dtype, moved to their device); with { assign: true } they are adopted instead.
   */
  loadStateDict(dict: StateDict | Map<string, Tensor>, options: LoadStateDictOptions = {}): LoadStateDictResult {
    if (typeof dict !== "object" || dict === null) throw new ArgumentError(expected("a Record or Map of Tensors", "loadStateDict's dict", dict));
    const strict = options.strict ?? true;
    const assign = options.assign ?? false;
    const given = new Map<string, Tensor>(dict instanceof Map ? dict : Object.entries(dict));
    const targets = new Map<string, { module: Module; name: string; t: Tensor; kind: "param" | "buffer" }>();
    for (const [p, m] of this.namedModules()) {
      for (const [name, t, kind] of m.stateEntries()) targets.set(p === "" ? name : `${p}.${name}`, { module: m, name, t, kind });
    }
    const missingKeys = [...targets.keys()].filter((k) => !given.has(k));
    const unexpectedKeys = [...given.keys()].filter((k) => !targets.has(k));
    if (strict && (missingKeys.length > 0 || unexpectedKeys.length > 0)) {
      const parts: string[] = [];
      if (missingKeys.length > 0) parts.push(`missing keys: ${missingKeys.map((k) => `"${k}"`).join(", ")}`);
      if (unexpectedKeys.length > 0) parts.push(`unexpected keys: ${unexpectedKeys.map((k) => `"${k}"`).join(", ")}`);
      throw new StateDictError(`loadStateDict: ${parts.join("; ")}`, missingKeys, unexpectedKeys);
    }
    for (const [key, target] of targets) {
      const value = given.get(key);
      if (value === undefined) continue;
      if (!(value instanceof Tensor)) throw new ArgumentError(expected("a Tensor", `loadStateDict's "${key}"`, value));
      value._assertLive(`loadStateDict("${key}")`);
      if (!sameShape(value.shape, target.t.shape)) {
        throw new ShapeError(`loadStateDict: "${key}" has shape ${formatShape(value.shape)} in the state dict but ${formatShape(target.t.shape)} in the module`);
      }
      if (value.dtype !== target.t.dtype && !(isFloat(value.dtype) && isFloat(target.t.dtype))) {
        throw new ArgumentError(`loadStateDict: "${key}" is ${value.dtype} in the state dict but ${target.t.dtype} in the module (only float dtypes convert)`);
      }
      target.module.validateStateEntry(target.name, target.t, value);
    }
    noGrad(() => {
      for (const [key, target] of targets) {
        const value = given.get(key);
        if (value === undefined) continue;
        if (assign) {
          const adopted = value.detach();
          if (target.kind === "param") target.module.registerParameter(target.name, adopted, { requiresGrad: target.t.requiresGrad });
          else target.module.registerBuffer(target.name, adopted, { persistent: true });
          continue;
        }
        let src = value;
        if (src.dtype !== target.t.dtype) src = cast(src, target.t.dtype);
        if (src.device !== target.t.device) {
          const moved = toDevice(src, target.t.device);
          if (src !== value) src.dispose();
          src = moved;
        }
        copyInto(target.t, src);
        if (src !== value) src.dispose();
      }
    });
    return { missingKeys, unexpectedKeys };
  }

  train(mode = true): this {
    if (typeof mode !== "boolean") throw new ArgumentError(expected("a boolean", "train's mode", mode));
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Calls fn on every submodule (children first, as torch) and then on this module. */
  apply(fn: (m: Module) => void): this {
    if (typeof fn !== "function") throw new ArgumentError(expected("a function", "apply's fn", fn));
    for (const m of this.#modules.values()) m.apply(fn);
    fn(this);
    return this;
  }

  /** Disposes every parameter's gradient (set to null). */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Frees every parameter and buffer of the tree (and their gradients). */
  dispose(): void {
    for (const m of this.#modules.values()) m.dispose();
    for (const t of this.#params.values()) t?.dispose();
    for (const t of this.#buffers.values()) t?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function isFloat(d: string): boolean {
  return d === "float32" || d === "float16" || d === "bfloat16";
}
