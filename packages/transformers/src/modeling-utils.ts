// Shared pieces of the decoder-only causal LMs (transformers' modeling_utils.py for lowbit): the weight table a model
// file declares (what the loader validates and fills), layer classes built from loaded tensors, the per-layer KV
// cache, the forward input / output types and their validation, and PreTrainedCausalLM, the base class with
// forward(), createCache(), getMemoryFootprint(), savePretrained() and dispose(). The architecture math lives in
// src/models/<arch>/modeling.ts.
//
// Conventions: B batch, T new positions in this call, P positions already cached ("past"), Tk = P + T keys, C hidden
// size, V vocabulary. Every loaded weight is frozen (requiresGrad false); adapters (PEFT) add trainable tensors.

import {
  ArgumentError,
  DTypeError,
  ShapeError,
  expected,
  type DType,
} from "@lowbit/dtypes";
import {
  Embedding,
  Generator,
  KVCache,
  Linear,
  Linear4bit,
  Linear8bitLt,
  Module,
  RMSNorm,
  Tensor,
  fromTypedArray,
  keep,
  mul,
  ones,
  rmsNorm,
  tidy,
  type Device,
} from "@lowbit/tensor";
import type { ModelDType } from "./config-base.js";
import type { PretrainedConfig } from "./config.js";
import type { GenerationConfig } from "./generation-config.js";
import type { BitsAndBytesConfig } from "./quantization-config.js";
import { savePretrained, type SavePretrainedOptions } from "./save.js";

// ---------------------------------------------------------------------------------------------- weight table

/** One module of an architecture's weight table, with the HF key prefix (`name`) and its placement unit. */
export type ModuleSpec =
  | {
      readonly kind: "embedding";
      /** e.g. "model.embed_tokens"; the weight is `${name}.weight` (numEmbeddings, embeddingDim). */
      readonly name: string;
      readonly unit: string;
      readonly numEmbeddings: number;
      readonly embeddingDim: number;
    }
  | {
      readonly kind: "norm";
      /** e.g. "model.layers.0.input_layernorm"; the weight is `${name}.weight` (dim,). */
      readonly name: string;
      readonly unit: string;
      readonly dim: number;
    }
  | {
      readonly kind: "linear";
      /** e.g. "model.layers.0.self_attn.q_proj"; `${name}.weight` (outFeatures, inFeatures) and maybe `${name}.bias`. */
      readonly name: string;
      readonly unit: string;
      readonly inFeatures: number;
      readonly outFeatures: number;
      readonly bias: boolean;
      /** The embedding module whose weight this layer shares (tie_word_embeddings); its own weight is not stored. */
      readonly tiedTo: string | null;
    };

/** What an architecture file declares: the modules in HF's parameter order and the placement units in forward order. */
export interface ArchitectureSpec {
  /** The class name transformers uses (`config.architectures[0]`), e.g. "LlamaForCausalLM". */
  readonly architecture: string;
  readonly modules: readonly ModuleSpec[];
  /**
   * Placement units in forward order: the granularity of a device map (accelerate's no-split unit is the decoder
   * layer). Every module belongs to one unit; a unit's modules live on one device.
   */
  readonly units: readonly string[];
  /** Checkpoint keys transformers ignores on load (`_keys_to_ignore_on_load_unexpected`), e.g. old rotary buffers. */
  readonly ignoredKeys: readonly RegExp[];
}

/** A layer computing y (..., out) = f(x (..., in)): Linear, Linear4bit, Linear8bitLt, or an adapter wrapping one. */
export type LinearLike = Module & { forward(x: Tensor): Tensor };

/** What the loader hands a model file while it builds itself: finished modules, already on their unit's device. */
export interface WeightSource {
  embedding(name: string): PretrainedEmbedding;
  norm(name: string): PretrainedRMSNorm;
  linear(name: string): LinearLike;
}

// ---------------------------------------------------------------------------------------------- layers

/** Makes a placeholder for the base constructors, which draw random weights that are replaced at once. */
function placeholderGenerator(): Generator {
  // A private generator, so that building a model never advances the global one users seed.
  return new Generator(0);
}

/** Writes a readonly size field the base constructor set for its 1×1 placeholder. */
function setSize<T extends object>(target: T, fields: Partial<Record<keyof T, number>>): void {
  Object.assign(target, fields);
}

/**
 * torch.nn.Linear over loaded tensors: an instance of @lowbit/tensor's Linear (adapters recognise it), built without
 * Linear's random initialisation. Linear's constructor always draws a weight; it is given a 1×1 placeholder (free
 * even for multi-gigabyte layers) which the loaded tensors replace.
 */
export class PretrainedLinear extends Linear {
  /**
   * @param weight (outFeatures, inFeatures), frozen; the module owns it
   * @param bias (outFeatures,) or null
   */
  constructor(weight: Tensor, bias: Tensor | null) {
    super(1, 1, { bias: false, generator: placeholderGenerator() });
    if (!(weight instanceof Tensor) || weight.ndim !== 2) throw new ShapeError(`PretrainedLinear: expected a 2-D weight (out, in) but received ${String(weight)}`);
    const [N, K] = weight.shape as [number, number];
    if (bias !== null && (bias.ndim !== 1 || bias.shape[0] !== N)) throw new ShapeError(`PretrainedLinear: expected a bias of shape [${N}] but received ${String(bias)}`);
    setSize<Linear>(this, { inFeatures: K, outFeatures: N });
    this.registerParameter("weight", weight, { requiresGrad: false });
    this.registerParameter("bias", bias, { requiresGrad: false });
  }
}

/** torch.nn.Embedding over a loaded (numEmbeddings, embeddingDim) weight, without random initialisation. */
export class PretrainedEmbedding extends Embedding {
  constructor(weight: Tensor) {
    super(1, 1, { generator: placeholderGenerator() });
    if (!(weight instanceof Tensor) || weight.ndim !== 2) throw new ShapeError(`PretrainedEmbedding: expected a 2-D weight (vocab, dim) but received ${String(weight)}`);
    setSize<Embedding>(this, { numEmbeddings: weight.shape[0]!, embeddingDim: weight.shape[1]! });
    this.registerParameter("weight", weight, { requiresGrad: false });
  }
}

/**
 * HF LlamaRMSNorm over a loaded (dim,) weight: `weight * (x.float() * rsqrt(mean(x²) + eps)).to(x.dtype)`. In float16 /
 * bfloat16 the normalised value is rounded to the input dtype before the weight multiply, as transformers does (two
 * roundings), so half-precision models match it: one kernel when the weight has x's dtype; otherwise the weight is
 * first rounded to x's dtype (two launches).
 */
export class PretrainedRMSNorm extends RMSNorm {
  /** (dim,) float32 ones on the weight's device: the fused kernel with it gives the rounded normalised value. */
  #unit: Tensor | null = null;

  constructor(weight: Tensor, eps: number) {
    super(1, { eps });
    if (!(weight instanceof Tensor) || weight.ndim !== 1) throw new ShapeError(`PretrainedRMSNorm: expected a 1-D weight (dim,) but received ${String(weight)}`);
    this.registerParameter("weight", weight, { requiresGrad: false });
  }

  /** x (..., dim) → (..., dim) in x's dtype */
  override forward(x: Tensor): Tensor {
    const w = this.weight;
    // The kernel computes T(w · T(x · rsqrt(mean(x²) + eps))) with w in its own dtype: transformers' two roundings
    // when the weight has x's dtype (the usual case), in one launch.
    if (w.dtype === x.dtype) return rmsNorm(x, w, this.eps);
    if (this.#unit === null) {
      this.#unit = ones([w.shape[0]!], { dtype: "float32", device: w.device });
      this.#unit.kept = true;
    }
    const n = rmsNorm(x, this.#unit, this.eps); // (..., dim) rounded to x.dtype
    const y = mul(w.dtype === n.dtype ? w : w.to(n.dtype), n);
    n.dispose();
    return y;
  }

  override dispose(): void {
    super.dispose();
    this.#unit?.dispose();
    this.#unit = null;
  }
}

// ---------------------------------------------------------------------------------------------- KV cache

/** How a model's cache is laid out: one (B, Hkv, S, D) buffer pair per layer, on that layer's device. */
export interface CacheLayout {
  readonly kvHeads: number;
  readonly headDim: number;
  readonly dtype: ModelDType;
  /** One device per decoder layer. */
  readonly layerDevices: readonly Device[];
}

/**
 * The static KV cache of a decoder (transformers' StaticCache): per layer, key and value buffers of capacity
 * `maxLength` positions, allocated once on the layer's device. `forward({ cache })` appends the new positions of
 * every layer and reads everything cached so far; `length` is the number of positions cached.
 */
export class DecoderKVCache {
  readonly batchSize: number;
  readonly maxLength: number;
  readonly layout: CacheLayout;
  readonly #layers: KVCache[] = [];
  #disposed = false;

  constructor(layout: CacheLayout, options: { batchSize: number; maxLength: number }) {
    if (typeof options !== "object" || options === null) throw new ArgumentError(expected("an object { batchSize, maxLength }", "createCache's options", options));
    const { batchSize, maxLength } = options;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new ArgumentError(expected("a positive integer", "createCache's batchSize", batchSize));
    if (!Number.isSafeInteger(maxLength) || maxLength < 1) throw new ArgumentError(expected("a positive integer", "createCache's maxLength", maxLength));
    this.batchSize = batchSize;
    this.maxLength = maxLength;
    this.layout = layout;
    try {
      for (const device of layout.layerDevices) {
        this.#layers.push(new KVCache({ layers: 1, batch: batchSize, kvHeads: layout.kvHeads, maxSeq: maxLength, headDim: layout.headDim, dtype: layout.dtype, device }));
      }
    } catch (err) {
      for (const c of this.#layers) c.dispose();
      throw err;
    }
  }

  #live(op: string): void {
    if (this.#disposed) throw new ArgumentError(`${op}: the cache was disposed`);
  }

  /** Positions cached (the same in every layer between forward calls). */
  get length(): number {
    this.#live("DecoderKVCache.length");
    return this.#layers[0]?.length(0) ?? 0;
  }

  get numLayers(): number {
    return this.#layers.length;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * @internal Appends k, v (B, Hkv, T, D) to layer `layer` and returns views (B, Hkv, P + T, D) of everything cached
   * there (the caller disposes them, or a tidy scope does).
   */
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    this.#live("DecoderKVCache.append");
    const c = this.#layers[layer];
    if (c === undefined) throw new ArgumentError(expected(`a layer index in [0, ${this.#layers.length - 1}]`, "DecoderKVCache.append's layer", layer));
    return c.append(0, k, v);
  }

  /** Forgets everything cached (the buffers are kept for reuse). */
  reset(): void {
    this.#live("DecoderKVCache.reset");
    for (const c of this.#layers) c.reset();
  }

  /** Keeps the first `length` positions of every layer (transformers' `crop`). */
  crop(length: number): void {
    this.#live("DecoderKVCache.crop");
    if (!Number.isSafeInteger(length) || length < 0) throw new ArgumentError(expected("a non-negative integer", "DecoderKVCache.crop's length", length));
    for (const c of this.#layers) c.crop(Math.min(length, this.maxLength));
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const c of this.#layers) c.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

// ---------------------------------------------------------------------------------------------- forward input

/** A (B, n) integer matrix: nested arrays or an int tensor. */
export type IdMatrix = readonly (readonly number[])[] | Tensor;

export interface CausalLMInput {
  /** (B, T) token ids: nested arrays or an int32 / int64 tensor. */
  inputIds: IdMatrix;
  /**
   * (B, P + T) with 1 = attend, 0 = padding, covering the cached positions too (as transformers' generate passes it).
   * Omitted or null: every position is attended.
   */
  attentionMask?: IdMatrix | null;
  /** (B, T) rotary positions; default P, P + 1, ..., P + T - 1 for every row (transformers' default). */
  positionIds?: IdMatrix | null;
  /**
   * A cache from createCache(): the new keys / values are appended and attention reads all cached positions. Typed as
   * any disposable so that the model satisfies generate()'s CausalLM contract for every cache type; anything but this
   * model's DecoderKVCache is rejected at run time with an ArgumentError.
   */
  cache?: DecoderKVCache | { dispose(): void } | null;
  /** Compute logits only for the last `logitsToKeep` positions (transformers' logits_to_keep); 0 or omitted: all. */
  logitsToKeep?: number;
}

export interface CausalLMOutput {
  /** (B, T, V) in the model dtype, or (B, logitsToKeep, V); the caller disposes it. */
  logits: Tensor;
}

/**
 * The validated form of one forward call's inputs. Nested arrays and CPU tensors are read and checked on the host;
 * tensors on a CUDA device stay there (shape and dtype are checked, values are not read back), so a decode step
 * whose inputs already live on the GPU never waits for it: ids are range-checked by the embedding kernel and an
 * out-of-range id is reported by the next device→host copy (see `embedding`'s deferIdCheck).
 */
export interface PreparedInput {
  readonly batch: number;
  /** New positions T. */
  readonly length: number;
  /** Cached positions P before this call. */
  readonly past: number;
  /** (B, T) ids, row-major and checked against the vocabulary, or null when `idsTensor` holds them. */
  readonly ids: Int32Array | null;
  /** (B, T) int32 / int64 ids on a CUDA device (values checked on the device), or null. */
  readonly idsTensor: Tensor | null;
  /** (B, T) rotary positions, row-major; null for the default P..P+T-1 or when `positionsTensor` holds them. */
  readonly positions: Int32Array | null;
  /** (B, T) int32 / int64 rotary positions on a CUDA device, or null. */
  readonly positionsTensor: Tensor | null;
  /** (B, P + T) padding mask, row-major, or null when every key is attended or `maskTensor` holds it. */
  readonly mask: Uint8Array | null;
  /** (B, P + T) uint8 / bool / int32 / int64 padding mask on a CUDA device (non-zero = attend), or null. */
  readonly maskTensor: Tensor | null;
  /** Largest position id + 1 (what dynamic RoPE sizes itself by); null when only `positionsTensor` knows it. */
  readonly seqLen: number | null;
  readonly cache: DecoderKVCache | null;
  readonly logitsToKeep: number;
}

/** Checks a (rows, cols) tensor argument's rank and shape; cols = -1 accepts any width. */
function checkMatrixShape(value: Tensor, name: string, rows: number, cols: number): [number, number] {
  if (value.disposed) throw new ArgumentError(`forward: ${name} was disposed`);
  if (value.ndim !== 2) throw new ShapeError(`forward: expected ${name} to be 2-D (batch, positions) but received shape [${value.shape.join(", ")}]`);
  const [r, c] = value.shape as [number, number];
  if ((rows >= 0 && r !== rows) || (cols >= 0 && c !== cols)) {
    throw new ShapeError(`forward: expected ${name} of shape [${rows >= 0 ? rows : "B"}, ${cols >= 0 ? cols : "T"}] but received [${r}, ${c}]`);
  }
  return [r, c];
}

/** A tensor argument that stays on its CUDA device: shape and dtype checked, values left where they are. */
function deviceMatrix(value: Tensor, name: string, rows: number, cols: number, dtypes: readonly DType[]): { t: Tensor; rows: number; cols: number } {
  const [r, c] = checkMatrixShape(value, name, rows, cols);
  if (!dtypes.includes(value.dtype)) throw new DTypeError(expected(`a ${dtypes.join(" / ")} tensor`, `forward's ${name} on ${value.device}`, value.dtype));
  return { t: value, rows: r, cols: c };
}

/** Reads a (rows, cols) integer matrix from nested arrays or a CPU tensor; cols = -1 accepts any equal width. */
function readMatrix(value: IdMatrix, name: string, rows: number, cols: number): { data: Int32Array; rows: number; cols: number } {
  if (value instanceof Tensor) {
    const [r, c] = checkMatrixShape(value, name, rows, cols);
    const host = value.toTypedArray();
    if (!(host instanceof Int32Array || host instanceof BigInt64Array || host instanceof Uint8Array || host instanceof Int8Array || host instanceof Int16Array)) {
      throw new DTypeError(expected("an integer or bool tensor", `forward's ${name}`, value.dtype));
    }
    const data = new Int32Array(r * c);
    for (let i = 0; i < data.length; i++) {
      const v = Number(host[i]!);
      if (!Number.isSafeInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) throw new ArgumentError(expected("int32 values", `forward's ${name}[${Math.floor(i / c)}][${i % c}]`, v));
      data[i] = v;
    }
    return { data, rows: r, cols: c };
  }
  if (!Array.isArray(value) || value.length === 0) throw new ArgumentError(expected("a non-empty array of rows or a 2-D tensor", `forward's ${name}`, value));
  const r = value.length;
  const first = value[0];
  if (!Array.isArray(first)) throw new ArgumentError(expected("an array of number arrays", `forward's ${name}`, first));
  const c = first.length;
  if (rows >= 0 && r !== rows) throw new ShapeError(`forward: expected ${name} with ${rows} rows but received ${r}`);
  if (cols >= 0 && c !== cols) throw new ShapeError(`forward: expected ${name} rows of length ${cols} but received ${c}`);
  const data = new Int32Array(r * c);
  for (let i = 0; i < r; i++) {
    const row = value[i];
    if (!Array.isArray(row) || row.length !== c) throw new ShapeError(`forward: ${name} is ragged: row 0 has ${c} entries but row ${i} has ${Array.isArray(row) ? row.length : "none"}`);
    for (let j = 0; j < c; j++) {
      const v = row[j];
      if (typeof v !== "number" || !Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) throw new ArgumentError(expected("an int32 integer", `forward's ${name}[${i}][${j}]`, v));
      data[i * c + j] = v;
    }
  }
  return { data, rows: r, cols: c };
}

/** Whether an input stays on its device (a tensor on a CUDA device) instead of being read on the host. */
function onDevice(value: unknown): value is Tensor {
  return value instanceof Tensor && !value.disposed && value.device !== "cpu";
}

const ID_DTYPES: readonly DType[] = ["int32", "int64"];
const MASK_DTYPES: readonly DType[] = ["uint8", "bool", "int32", "int64"];

/** Validates a forward call's inputs against the model and its cache (nothing is allocated on a device). */
export function prepareInput(input: CausalLMInput, vocabSize: number, layerCount: number): PreparedInput {
  if (typeof input !== "object" || input === null) throw new ArgumentError(expected("an object { inputIds, attentionMask?, positionIds?, cache? }", "forward's input", input));
  let ids: Int32Array | null = null;
  let idsTensor: Tensor | null = null;
  let B: number;
  let T: number;
  if (onDevice(input.inputIds)) {
    const m = deviceMatrix(input.inputIds, "inputIds", -1, -1, ID_DTYPES);
    idsTensor = m.t;
    B = m.rows;
    T = m.cols;
  } else {
    const m = readMatrix(input.inputIds, "inputIds", -1, -1);
    B = m.rows;
    T = m.cols;
    ids = m.data;
    for (let i = 0; i < ids.length; i++) {
      const v = ids[i]!;
      if (v < 0 || v >= vocabSize) throw new ArgumentError(expected(`a token id in [0, ${vocabSize - 1}]`, `forward's inputIds[${Math.floor(i / T)}][${i % T}]`, v));
    }
  }
  if (T === 0) throw new ShapeError("forward: inputIds has no positions (T = 0)");
  const given = input.cache ?? null;
  if (given !== null && !(given instanceof DecoderKVCache)) throw new ArgumentError(expected("a DecoderKVCache from model.createCache()", "forward's cache", given));
  const cache = given;
  let past = 0;
  if (cache !== null) {
    if (cache.disposed) throw new ArgumentError("forward: the cache was disposed");
    if (cache.numLayers !== layerCount) throw new ArgumentError(`forward: the cache has ${cache.numLayers} layers but the model has ${layerCount}; create it with this model's createCache()`);
    if (cache.batchSize !== B) throw new ShapeError(`forward: the cache holds a batch of ${cache.batchSize} but inputIds has ${B} rows`);
    past = cache.length;
    if (past + T > cache.maxLength) throw new ShapeError(`forward: ${past} cached + ${T} new positions exceed the cache capacity of ${cache.maxLength}`);
  }
  const Tk = past + T;
  let mask: Uint8Array | null = null;
  let maskTensor: Tensor | null = null;
  const am = input.attentionMask;
  if (am !== undefined && am !== null && onDevice(am)) {
    const m = deviceMatrix(am, "attentionMask", B, -1, MASK_DTYPES);
    if (m.cols !== Tk) throw new ShapeError(`forward: expected attentionMask of shape [${B}, ${Tk}] (${past} cached + ${T} new positions) but received [${m.rows}, ${m.cols}]`);
    maskTensor = m.t;
  } else if (am !== undefined && am !== null) {
    const m = readMatrix(am, "attentionMask", B, -1);
    if (m.cols !== Tk) {
      throw new ShapeError(`forward: expected attentionMask of shape [${B}, ${Tk}] (${past} cached + ${T} new positions) but received [${m.rows}, ${m.cols}]`);
    }
    let all = true;
    mask = new Uint8Array(m.data.length);
    for (let i = 0; i < m.data.length; i++) {
      const v = m.data[i]!;
      if (v !== 0 && v !== 1) throw new ArgumentError(expected("0 or 1", `forward's attentionMask[${Math.floor(i / Tk)}][${i % Tk}]`, v));
      mask[i] = v;
      all &&= v === 1;
    }
    if (all) mask = null; // nothing is padded: the plain causal path
  }
  let positions: Int32Array | null = null;
  let positionsTensor: Tensor | null = null;
  let seqLen: number | null = Tk;
  const pi = input.positionIds;
  if (pi !== undefined && pi !== null && onDevice(pi)) {
    positionsTensor = deviceMatrix(pi, "positionIds", B, T, ID_DTYPES).t;
    seqLen = null; // only read back if dynamic RoPE asks (ForwardContext.seqLen)
  } else if (pi !== undefined && pi !== null) {
    positions = readMatrix(pi, "positionIds", B, T).data;
    let maxPos = 0;
    for (let i = 0; i < positions.length; i++) {
      const v = positions[i]!;
      if (v < 0) throw new ArgumentError(expected("a non-negative position", `forward's positionIds[${Math.floor(i / T)}][${i % T}]`, v));
      maxPos = Math.max(maxPos, v);
    }
    seqLen = maxPos + 1;
  }
  const keep = input.logitsToKeep ?? 0;
  if (!Number.isSafeInteger(keep) || keep < 0) throw new ArgumentError(expected("a non-negative integer", "forward's logitsToKeep", keep));
  return { batch: B, length: T, past, ids, idsTensor, positions, positionsTensor, mask, maskTensor, seqLen, cache, logitsToKeep: keep === 0 ? T : Math.min(keep, T) };
}

/**
 * Device copies of one forward call's small tensors (ids, positions, masks), made on first use per device and freed
 * when the call ends. Inputs that already live on a device are used in place (or copied device to device), so a
 * step over device inputs does no host round trip.
 */
export class ForwardContext {
  readonly input: PreparedInput;
  readonly #positions = new Map<Device, Tensor>();
  readonly #masks = new Map<Device, Tensor | null>();
  /** Tensors this context made (and frees); inputs the caller passed are never among them. */
  readonly #owned: Tensor[] = [];
  #seqLen: number | null;
  #hostMask: Uint8Array | null | undefined;

  constructor(input: PreparedInput) {
    this.input = input;
    this.#seqLen = input.seqLen;
  }

  /** Registers a tensor made here: kept out of every tidy scope (layers run in their own), freed by dispose(). */
  #own(t: Tensor): Tensor {
    this.#owned.push(keep(t));
    return t;
  }

  /** (B, T) int32 / int64 token ids on `device`. */
  ids(device: Device): Tensor {
    const { ids, idsTensor, batch, length } = this.input;
    if (idsTensor !== null) return idsTensor.device === device ? idsTensor : this.#own(idsTensor.to(device));
    return this.#own(fromTypedArray(ids!, [batch, length], { dtype: "int32", device }));
  }

  /** (B, T) int32 / int64 rotary positions (the default P..P+T-1 in every row when none were given). */
  positions(device: Device): Tensor {
    let t = this.#positions.get(device);
    if (t === undefined) {
      const { positions, positionsTensor, past, length, batch } = this.input;
      if (positionsTensor !== null) t = positionsTensor.device === device ? positionsTensor : this.#own(positionsTensor.to(device));
      else if (positions !== null) t = this.#own(fromTypedArray(positions, [batch, length], { dtype: "int32", device }));
      else t = this.#own(fromTypedArray(Int32Array.from({ length: batch * length }, (_, i) => past + (i % length)), [batch, length], { dtype: "int32", device }));
      this.#positions.set(device, t);
    }
    return t;
  }

  /**
   * Largest position id + 1, what dynamic RoPE sizes its frequencies by. With positions on a device this reads them
   * back (a synchronisation), so only dynamic RoPE asks.
   */
  get seqLen(): number {
    if (this.#seqLen === null) {
      const host = this.input.positionsTensor!.toTypedArray() as Int32Array | BigInt64Array;
      let maxPos = 0;
      for (const v of host) maxPos = Math.max(maxPos, Number(v));
      this.#seqLen = maxPos + 1;
    }
    return this.#seqLen;
  }

  /** (B, P + T) contiguous uint8 key mask for the fused attention kernel, or null when nothing is masked. */
  keyMask(device: Device): Tensor | null {
    if (this.#masks.has(device)) return this.#masks.get(device)!;
    const { mask, maskTensor, batch, past, length } = this.input;
    let t: Tensor | null = null;
    if (maskTensor !== null) {
      // One contiguous uint8 copy per device and call (the caller's mask may be a view of a longer buffer).
      const moved = maskTensor.device === device ? null : maskTensor.to(device);
      const src = moved ?? maskTensor;
      const bytes = src.dtype === "uint8" ? null : src.to("uint8");
      t = this.#own((bytes ?? src).contiguous()); // a view when already dense, else a copy
      bytes?.dispose();
      moved?.dispose();
    } else if (mask !== null) {
      t = this.#own(fromTypedArray(mask, [batch, past + length], { dtype: "uint8", device }));
    }
    this.#masks.set(device, t);
    return t;
  }

  /** The (B, P + T) padding mask on the host (read back when it was given on a device), or null when none. */
  hostMask(): Uint8Array | null {
    if (this.#hostMask === undefined) {
      const { mask, maskTensor } = this.input;
      if (maskTensor === null) this.#hostMask = mask;
      else {
        const host = maskTensor.toTypedArray();
        this.#hostMask = Uint8Array.from(host as ArrayLike<number | bigint>, (v) => (Number(v) !== 0 ? 1 : 0));
      }
    }
    return this.#hostMask;
  }

  /** Frees the tensors this context made. */
  dispose(): void {
    for (const t of this.#owned) t.dispose();
    this.#owned.length = 0;
    this.#positions.clear();
    this.#masks.clear();
  }
}

// ---------------------------------------------------------------------------------------------- the base class

/** How a model was loaded: what forward, the cache, the footprint and savePretrained need to know. */
export interface LoadedModelInfo {
  /** The model folder it was read from (null when built otherwise). */
  readonly source: string | null;
  /** Dtype of the unquantized parameters and of the activations. */
  readonly dtype: ModelDType;
  /** Device of every placement unit ("model.embed_tokens", "model.layers.0", ..., "lm_head"). */
  readonly deviceMap: Readonly<Record<string, Device>>;
  /** The bitsandbytes config the model was quantized with (loaded or requested), or null. */
  readonly quantizationConfig: BitsAndBytesConfig | null;
  /** The generation config read next to the weights (or derived from config.json). */
  readonly generationConfig: GenerationConfig | null;
  /** generation_config.json as read (strict JSON text), re-written verbatim by savePretrained; null when absent. */
  readonly generationConfigText: string | null;
  /** config.json as read (strict JSON text), the base of the config savePretrained writes. */
  readonly configText: string | null;
}

export interface MemoryFootprintOptions {
  /** Count buffers too (transformers' return_buffers, default true). */
  returnBuffers?: boolean;
  /**
   * Also count what transformers leaves out for quantized layers: 4-bit absmax / quant maps / nested state / packed
   * JSON and 8-bit SCB / weight_format (default false, transformers' definition).
   */
  includeQuantizationState?: boolean;
}

/**
 * Base class of the causal LMs: a Module tree with HF's parameter names, built by the loader from a checkpoint.
 * Subclasses implement `decode` (the architecture's forward over validated inputs) and `cacheLayout`.
 */
export abstract class PreTrainedCausalLM extends Module {
  readonly config: PretrainedConfig;
  readonly spec: ArchitectureSpec;
  readonly info: LoadedModelInfo;
  #disposed = false;

  protected constructor(config: PretrainedConfig, spec: ArchitectureSpec, info: LoadedModelInfo) {
    super();
    this.config = config;
    this.spec = spec;
    this.info = info;
    this.eval();
  }

  /** Dtype of the unquantized parameters and of the activations (and logits). */
  get dtype(): ModelDType {
    return this.info.dtype;
  }

  /** Device of the input embedding (where inputs go first). */
  get device(): Device {
    return this.deviceOf(this.spec.units[0]!);
  }

  /** transformers' `hf_device_map`: placement unit → device. */
  get deviceMap(): Readonly<Record<string, Device>> {
    return this.info.deviceMap;
  }

  get quantizationConfig(): BitsAndBytesConfig | null {
    return this.info.quantizationConfig;
  }

  get generationConfig(): GenerationConfig | null {
    return this.info.generationConfig;
  }

  get isLoadedIn4bit(): boolean {
    return this.info.quantizationConfig?.loadIn4bit ?? false;
  }

  get isLoadedIn8bit(): boolean {
    return this.info.quantizationConfig?.loadIn8bit ?? false;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** The device of a placement unit. */
  deviceOf(unit: string): Device {
    const d = this.info.deviceMap[unit];
    if (d === undefined) throw new ArgumentError(expected(`a placement unit (${this.spec.units.join(", ")})`, "deviceOf's unit", unit));
    return d;
  }

  /** Number of decoder layers (one KV-cache entry each). */
  abstract get numLayers(): number;

  /** The cache layout: one (B, Hkv, S, D) pair per layer on the layer's device, in the model dtype. */
  abstract cacheLayout(): CacheLayout;

  /** The architecture's forward pass over validated inputs; returns logits (B, logitsToKeep, V). */
  protected abstract decode(ctx: ForwardContext): Tensor;

  protected assertLive(op: string): void {
    if (this.#disposed) throw new ArgumentError(`${op}: the model was disposed`);
  }

  /**
   * A static KV cache for incremental decoding: `maxLength` positions (prompt + new tokens) for `batchSize` rows, one
   * buffer pair per layer on the layer's device. Dispose it when done.
   */
  createCache(options: { batchSize: number; maxLength: number }): DecoderKVCache {
    this.assertLive("createCache");
    return new DecoderKVCache(this.cacheLayout(), options);
  }

  /**
   * Runs the model: `{ logits (B, T, V) }` in the model dtype (the caller disposes it). With a cache, the T new
   * positions are appended after the P cached ones (positions default to P..P+T-1, the mask covers P + T keys). On
   * error the cache is cropped back to P, so a failed call leaves it as it was.
   */
  forward(input: CausalLMInput): CausalLMOutput {
    this.assertLive("forward");
    const prepared = prepareInput(input, this.config.vocabSize, this.numLayers);
    const cache = prepared.cache;
    const ctx = new ForwardContext(prepared);
    try {
      const logits = tidy(() => this.decode(ctx));
      return { logits };
    } catch (err) {
      if (cache !== null && !cache.disposed) cache.crop(prepared.past);
      throw err;
    } finally {
      ctx.dispose();
    }
  }

  /** transformers' `get_memory_footprint` (spec B6): parameter bytes plus buffer bytes, tied weights counted once. */
  getMemoryFootprint(options: MemoryFootprintOptions = {}): number {
    this.assertLive("getMemoryFootprint");
    return memoryFootprint(this, options);
  }

  /**
   * Writes config.json, generation_config.json and the weights (bitsandbytes format for quantized layers) to `dir`,
   * atomically, as transformers' save_pretrained does (src/save.ts).
   */
  savePretrained(dir: string, options: SavePretrainedOptions = {}): void {
    this.assertLive("savePretrained");
    savePretrained(this, dir, options);
  }

  /**
   * Frees every tensor the model holds. The model (and caches it created) must not be used afterwards; caches are
   * separate objects with their own dispose().
   */
  override dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    super.dispose();
  }
}

/** Bytes of a tensor's elements (packed 4-bit weights are stored as uint8, so this is their real size). */
function tensorBytes(t: Tensor): number {
  return t.numel * dtypeBytes(t.dtype);
}

function dtypeBytes(dtype: DType): number {
  switch (dtype) {
    case "float32":
    case "int32":
      return 4;
    case "float16":
    case "bfloat16":
    case "int16":
      return 2;
    case "int64":
      return 8;
    default:
      return 1;
  }
}

/** Whether a module is a bitsandbytes layer, whose quantization state is not a parameter or buffer in torch. */
function isQuantizedLayer(m: Module): boolean {
  return m instanceof Linear4bit || m instanceof Linear8bitLt;
}

/**
 * The footprint as transformers defines it: Σ numel × element size over the de-duplicated parameters, plus the
 * buffers. bitsandbytes keeps a 4-bit layer's absmax / quant map / nested state in a QuantState attribute and an
 * 8-bit layer's SCB on the weight object, so torch sees neither as a parameter or buffer; the same entries are
 * buffers of lowbit's layers and are left out unless `includeQuantizationState`.
 */
export function memoryFootprint(model: Module, options: MemoryFootprintOptions = {}): number {
  if (typeof options !== "object" || options === null) throw new ArgumentError(expected("an options object", "getMemoryFootprint's options", options));
  const returnBuffers = options.returnBuffers ?? true;
  const withState = options.includeQuantizationState ?? false;
  let total = 0;
  for (const t of model.parameters()) total += tensorBytes(t);
  if (returnBuffers) {
    const seen = new Set<Tensor>();
    for (const [, m] of model.namedModules()) {
      if (isQuantizedLayer(m)) continue;
      for (const [, t] of m.namedBuffers("", false)) {
        if (!seen.has(t)) {
          seen.add(t);
          total += tensorBytes(t);
        }
      }
    }
  }
  if (withState) {
    for (const [, m] of model.namedModules()) {
      if (!isQuantizedLayer(m)) continue;
      const params = new Set(m.parameters(false));
      // The layer's own state-dict entries that are not parameters: absmax, quant maps, nested state, the packed
      // quant-state JSON (Linear4bit) or SCB and weight_format (Linear8bitLt).
      for (const t of Object.values(m.stateDict())) if (!params.has(t)) total += tensorBytes(t);
    }
  }
  return total;
}
