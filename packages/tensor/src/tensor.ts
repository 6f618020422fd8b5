// The Tensor: a strided view (shape, strides and offset in elements, dtype) of a ref-counted native
// storage on one device ("cpu" or "cuda:N"), plus its autograd links. Views share the storage; the
// storage is freed when the last tensor viewing it is disposed. This file holds the class, creation
// functions and host transfers; the ops live in ./ops and are exposed here as methods.

import {
  ArgumentError,
  DTYPES,
  DTypeError,
  STORAGE_ARRAY,
  ShapeError,
  byteSize,
  dtypeInfo,
  expected,
  fromFloat32,
  toFloat32,
  type DType,
} from "@lowbit/dtypes";
import { DisposedError, type NativeStorage } from "@lowbit/kernels";
import { type Node, runBackward } from "./autograd.js";
import { native, dtypeId, normalizeDevice, type Device } from "./native.js";
import { defaultGenerator, type Generator } from "./random.js";
import { SCOPED, track, type Scoped } from "./scope.js";
import { checkShapeArg, contiguousStrides, formatShape, isContiguousLayout, numelOf, type Shape } from "./shape.js";
import { StorageRef, adoptStorage } from "./storage.js";
import * as E from "./ops/elementwise.js";
import * as M from "./ops/matmul.js";
import * as NN from "./ops/nn.js";
import * as R from "./ops/reduce.js";
import * as V from "./ops/views.js";

export interface TensorOptions {
  /** Default "float32". */
  dtype?: DType;
  /** Default "cpu". */
  device?: Device;
  /** Makes the new tensor a leaf that collects gradients. */
  requiresGrad?: boolean;
}

export interface RandomOptions extends TensorOptions {
  generator?: Generator;
}

/** What toTypedArray() returns: float16 / bfloat16 / float8 decode to Float32Array. */
export type HostArray = Float32Array | Int8Array | Uint8Array | Int16Array | Int32Array | BigInt64Array;

/** Nested JS arrays of numbers, as toArray() returns and tensor() accepts. */
export type NestedArray = number | boolean | bigint | NestedArray[];

let nextId = 1;

export class Tensor implements Scoped {
  readonly [SCOPED] = true as const;
  /** Set by keep(): no tidy scope disposes this tensor. */
  kept = false;
  /** Unique per Tensor object, for debugging. */
  readonly id: number;
  /** Size of each dimension. */
  readonly shape: readonly number[];
  /** Elements between consecutive indices of each dimension (0 on broadcast dimensions). */
  readonly strides: readonly number[];
  /** Position of element [0, ..., 0] in the storage, in elements. */
  readonly offset: number;
  readonly dtype: DType;
  #ref: StorageRef | null;
  #leafRequiresGrad = false;
  #grad: Tensor | null = null;
  /** @internal The autograd node that produced this tensor (null for leaves and untracked results). */
  _node: Node | null = null;

  /** @internal Tensors are made by the creation functions (zeros, fromTypedArray, ...) and ops. */
  constructor(ref: StorageRef, shape: readonly number[], strides: readonly number[], offset: number, dtype: DType) {
    this.id = nextId++;
    this.#ref = ref;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze([...strides]);
    this.offset = offset;
    this.dtype = dtype;
    track(this);
  }

  // ---- metadata ------------------------------------------------------------------------------

  get device(): Device {
    return this.#live("device").device;
  }

  /** The native storage (throws DisposedError after dispose). */
  get storage(): NativeStorage {
    return this.#live("storage").storage;
  }

  /** Byte position of element [0, ..., 0] in the storage, as kernels take it. */
  get byteOffset(): number {
    return this.offset * DTYPES[this.dtype].bytes;
  }

  get numel(): number {
    return numelOf(this.shape);
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** Size of one dimension (negative counts from the end). */
  size(dim: number): number {
    const d = dim < 0 ? dim + this.shape.length : dim;
    const s = this.shape[d];
    if (s === undefined || !Number.isInteger(dim)) throw new ArgumentError(expected(`an integer in [${-this.ndim}, ${this.ndim - 1}]`, "size's dim", dim));
    return s;
  }

  /** Whether the elements are dense and row-major from `offset`. */
  get isContiguous(): boolean {
    return isContiguousLayout(this.shape, this.strides);
  }

  get disposed(): boolean {
    return this.#ref === null;
  }

  #live(what: string): StorageRef {
    if (this.#ref === null) throw new DisposedError(`Cannot read ${what} of a disposed tensor (shape ${formatShape(this.shape)}, ${this.dtype})`);
    return this.#ref;
  }

  /** @internal Throws DisposedError naming `op` when disposed. */
  _assertLive(op: string): void {
    if (this.#ref === null) throw new DisposedError(`${op}: the tensor (shape ${formatShape(this.shape)}, ${this.dtype}) was disposed`);
  }

  // ---- autograd --------------------------------------------------------------------------------

  /** True for tensors made by ops that recorded a node, and for leaves marked with requiresGrad. */
  get requiresGrad(): boolean {
    return this.#leafRequiresGrad || this._node !== null;
  }

  /** Marks a leaf (a tensor not produced by a recorded op) as collecting gradients. */
  set requiresGrad(value: boolean) {
    if (typeof value !== "boolean") throw new ArgumentError(expected("a boolean", "requiresGrad", value));
    if (this._node !== null) {
      throw new ArgumentError("requiresGrad can only be set on leaf tensors; this tensor was produced by an op (use detach() for a new leaf)");
    }
    if (value && !(this.dtype === "float32" || this.dtype === "float16" || this.dtype === "bfloat16")) {
      throw new DTypeError(expected("a float32, float16 or bfloat16 tensor", "requiresGrad's tensor", this.dtype));
    }
    this.#leafRequiresGrad = value;
  }

  /** A leaf has no recorded producer. */
  get isLeaf(): boolean {
    return this._node === null;
  }

  /** Name of the op that produced this tensor, or null for a leaf. */
  get gradFn(): string | null {
    return this._node?.op ?? null;
  }

  /** The accumulated gradient of a leaf (same shape, dtype and device), or null. */
  get grad(): Tensor | null {
    return this.#grad;
  }

  set grad(g: Tensor | null) {
    if (g !== null) {
      if (!(g instanceof Tensor)) throw new ArgumentError(expected("a Tensor or null", "grad", g));
      if (g.shape.length !== this.shape.length || g.shape.some((d, i) => d !== this.shape[i])) {
        throw new ShapeError(`grad: expected shape ${formatShape(this.shape)} but received ${formatShape(g.shape)}`);
      }
      g.kept = true;
    }
    this.#grad = g;
  }

  /**
   * Backpropagates from this tensor: adds d(this)/d(leaf) · grad to every leaf's `.grad`. `grad`
   * defaults to 1 for a one-element tensor. The graph's saved tensors are freed unless retainGraph.
   */
  backward(grad?: Tensor, options: { retainGraph?: boolean } = {}): void {
    this._assertLive("backward");
    runBackward(this, grad, options.retainGraph ?? false);
  }

  /** A new leaf sharing this tensor's storage, outside the graph. */
  detach(): Tensor {
    this._assertLive("detach");
    return this._alias();
  }

  /** @internal A new Tensor object on the same storage and layout, no autograd links. */
  _alias(shape: Shape = this.shape, strides: Shape = this.strides, offset = this.offset): Tensor {
    const ref = this.#live("alias").retain();
    return new Tensor(ref, shape, strides, offset, this.dtype);
  }

  // ---- lifetime --------------------------------------------------------------------------------

  /** Releases this tensor's reference to its storage (freed with the last view); idempotent. */
  dispose(): void {
    const ref = this.#ref;
    if (ref === null) return;
    this.#ref = null;
    ref.release();
    const node = this._node;
    this._node = null;
    node?.unref();
    if (this.#grad !== null) {
      this.#grad.dispose();
      this.#grad = null;
    }
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- host transfers ------------------------------------------------------------------------

  /**
   * The elements in row-major order, copied to the host. float16 / bfloat16 / float8 decode to a
   * Float32Array; integers keep their typed array (int64 as BigInt64Array); bool as Uint8Array.
   */
  toTypedArray(): HostArray {
    this._assertLive("toTypedArray");
    const c = this.isContiguous ? this : V.contiguous(this);
    try {
      const raw = new STORAGE_ARRAY[this.dtype](this.numel);
      if (raw.length > 0) native().download(c.storage, c.byteOffset, raw);
      switch (this.dtype) {
        case "float16":
        case "bfloat16":
        case "float8_e4m3fn":
        case "float8_e5m2":
          return toFloat32(raw as Uint16Array | Uint8Array, this.dtype) as Float32Array;
        case "nf4":
        case "fp4":
          throw new DTypeError(`toTypedArray: ${this.dtype} tensors hold packed codes; read them through a uint8 tensor`);
        default:
          return raw as HostArray;
      }
    } finally {
      if (c !== this) c.dispose();
    }
  }

  /** Nested JS arrays (numbers; int64 converted with Number()). */
  toArray(): NestedArray {
    const flat = this.toTypedArray();
    const get = (i: number): number => Number(flat[i]!);
    if (this.ndim === 0) return get(0);
    let pos = 0;
    const build = (d: number): NestedArray[] => {
      const out: NestedArray[] = [];
      for (let i = 0; i < this.shape[d]!; i++) out.push(d === this.ndim - 1 ? get(pos++) : build(d + 1));
      return out;
    };
    return build(0);
  }

  /** The value of a one-element tensor. */
  item(): number {
    this._assertLive("item");
    if (this.numel !== 1) throw new ShapeError(`item: expected a tensor with one element but received shape ${formatShape(this.shape)}`);
    return Number(this.toTypedArray()[0]!);
  }

  toString(): string {
    const state = this.disposed ? "disposed" : this.device;
    return `Tensor(shape=${formatShape(this.shape)}, dtype=${this.dtype}, ${state}${this.requiresGrad ? ", requiresGrad" : ""})`;
  }

  // ---- conversion ------------------------------------------------------------------------------

  /** A copy in another dtype or on another device (a new view when nothing changes). */
  to(target: DType | Device): Tensor {
    if (typeof target === "string" && Object.prototype.hasOwnProperty.call(DTYPES, target)) return V.cast(this, target as DType);
    if (typeof target !== "string" || !(target === "cpu" || /^cuda(:\d+)?$/.test(target))) {
      throw new ArgumentError(expected(`a dtype name or a device ("cpu", "cuda:N")`, "to's target", target));
    }
    return V.toDevice(this, target);
  }

  cast(dtype: DType): Tensor {
    return V.cast(this, dtype);
  }

  // ---- views (share storage) ---------------------------------------------------------------------

  reshape(...shape: number[] | [number[]]): Tensor {
    return V.reshape(this, flatArgs(shape));
  }
  view(...shape: number[] | [number[]]): Tensor {
    return V.view(this, flatArgs(shape));
  }
  flatten(startDim = 0, endDim = -1): Tensor {
    return V.flatten(this, startDim, endDim);
  }
  transpose(dim0 = -2, dim1 = -1): Tensor {
    return V.transpose(this, dim0, dim1);
  }
  /** Transpose of the last two dims. */
  get T(): Tensor {
    return V.transpose(this, -2, -1);
  }
  permute(...dims: number[] | [number[]]): Tensor {
    return V.permute(this, flatArgs(dims));
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return V.narrow(this, dim, start, length);
  }
  /** Python-style slice of one dim: start/end may be negative and are clamped; step > 0. */
  slice(dim: number, start?: number, end?: number, step = 1): Tensor {
    return V.slice(this, dim, start, end, step);
  }
  squeeze(dim?: number): Tensor {
    return V.squeeze(this, dim);
  }
  unsqueeze(dim: number): Tensor {
    return V.unsqueeze(this, dim);
  }
  expand(...shape: number[] | [number[]]): Tensor {
    return V.expand(this, flatArgs(shape));
  }
  /** A dense row-major tensor: a new view when already contiguous, else a copy. */
  contiguous(): Tensor {
    return V.contiguous(this);
  }

  // ---- elementwise -------------------------------------------------------------------------------

  add(other: Tensor | number): Tensor {
    return E.add(this, other);
  }
  sub(other: Tensor | number): Tensor {
    return E.sub(this, other);
  }
  mul(other: Tensor | number): Tensor {
    return E.mul(this, other);
  }
  div(other: Tensor | number): Tensor {
    return E.div(this, other);
  }
  maximum(other: Tensor | number): Tensor {
    return E.maximum(this, other);
  }
  minimum(other: Tensor | number): Tensor {
    return E.minimum(this, other);
  }
  pow(exponent: number): Tensor {
    return E.pow(this, exponent);
  }
  neg(): Tensor {
    return E.neg(this);
  }
  exp(): Tensor {
    return E.exp(this);
  }
  log(): Tensor {
    return E.log(this);
  }
  sqrt(): Tensor {
    return E.sqrt(this);
  }
  rsqrt(): Tensor {
    return E.rsqrt(this);
  }
  abs(): Tensor {
    return E.abs(this);
  }
  silu(): Tensor {
    return E.silu(this);
  }
  gelu(approximate: "none" | "tanh" = "none"): Tensor {
    return E.gelu(this, approximate);
  }
  relu(): Tensor {
    return E.relu(this);
  }
  sigmoid(): Tensor {
    return E.sigmoid(this);
  }
  tanh(): Tensor {
    return E.tanh(this);
  }
  square(): Tensor {
    return E.square(this);
  }

  // ---- reductions, matmul, nn ----------------------------------------------------------------------

  sum(dims?: number | number[], keepdim = false): Tensor {
    return R.sum(this, dims, keepdim);
  }
  mean(dims?: number | number[], keepdim = false): Tensor {
    return R.mean(this, dims, keepdim);
  }
  max(dims?: number | number[], keepdim = false): Tensor {
    return R.max(this, dims, keepdim);
  }
  argmax(dim = -1, keepdim = false): Tensor {
    return R.argmax(this, dim, keepdim);
  }
  matmul(other: Tensor): Tensor {
    return M.matmul(this, other);
  }
  softmax(dim = -1): Tensor {
    return NN.softmax(this, dim);
  }
  logSoftmax(dim = -1): Tensor {
    return NN.logSoftmax(this, dim);
  }

  // ---- creation ------------------------------------------------------------------------------------

  /**
   * A tensor viewing an existing native storage (e.g. a mapped file) at `byteOffset`, zero-copy.
   * Every tensor made from one storage shares one reference count: the storage is freed when the last
   * of them is disposed, unless `external` (then the caller frees it).
   */
  static fromStorage(storage: NativeStorage, byteOffset: number, shape: number[], dtype: DType, options: { external?: boolean } = {}): Tensor {
    const info = dtypeInfo(dtype, "fromStorage's dtype");
    if (info.isQuantized) throw new DTypeError(`fromStorage: ${dtype} is a packed 4-bit format; view the bytes as uint8`);
    if (typeof storage !== "object" || storage === null || typeof (storage as NativeStorage).byteLength !== "number" || typeof (storage as NativeStorage).dispose !== "function") {
      throw new ArgumentError(expected("a NativeStorage", "fromStorage's storage", storage));
    }
    if (storage.disposed) throw new DisposedError("fromStorage: the storage was disposed");
    const dims = checkShapeArg(shape, "fromStorage's shape");
    if (typeof byteOffset !== "number" || !Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset % info.bytes !== 0) {
      throw new ArgumentError(expected(`a non-negative multiple of ${info.bytes} (the ${dtype} element size)`, "fromStorage's byteOffset", byteOffset));
    }
    const bytes = byteSize(dtype, numelOf(dims));
    if (byteOffset + bytes > storage.byteLength) {
      throw new ShapeError(`fromStorage: ${formatShape(dims)} ${dtype} at byte ${byteOffset} needs ${byteOffset + bytes} bytes but the storage holds ${storage.byteLength}`);
    }
    const ref = adoptStorage(storage, options.external ?? false);
    return new Tensor(ref, dims, contiguousStrides(dims), byteOffset / info.bytes, dtype);
  }
}

function flatArgs(args: number[] | [number[]]): number[] {
  return (args.length === 1 && Array.isArray(args[0]) ? args[0] : args) as number[];
}

/** Options objects must be objects (undefined means defaults). */
function checkOptions<T extends object>(options: T | undefined, op: string): T {
  if (options === undefined) return {} as T;
  if (typeof options !== "object" || options === null) throw new ArgumentError(expected("an options object", `${op}'s options`, options));
  return options;
}

function checkCreateDType(dtype: unknown, op: string): DType {
  const info = dtypeInfo(dtype ?? "float32", `${op}'s dtype`);
  if (info.isQuantized) throw new DTypeError(`${op}: ${info.name} is a packed 4-bit format; store packed codes as uint8`);
  return info.name;
}

function applyRequiresGrad(t: Tensor, options: TensorOptions | undefined): Tensor {
  if (options?.requiresGrad) t.requiresGrad = true;
  return t;
}

/**
 * @internal A new contiguous tensor with undefined contents (torch.empty): what ops write their outputs into, every
 * element of it. Not zero-filling saves a fill launch per op output on CUDA; use emptyZeroed where a kernel
 * accumulates into its output.
 */
export function empty(shape: Shape, dtype: DType, device: Device): Tensor {
  return allocateTensor(shape, dtype, device, false);
}

/** @internal A new zero-filled contiguous tensor (outputs a kernel accumulates into). */
export function emptyZeroed(shape: Shape, dtype: DType, device: Device): Tensor {
  return allocateTensor(shape, dtype, device, true);
}

function allocateTensor(shape: Shape, dtype: DType, device: Device, zero: boolean): Tensor {
  const bytes = byteSize(dtype, numelOf(shape));
  // Zero-byte allocations are avoided so that every storage is a real block.
  const storage = native().allocate(device, Math.max(bytes, 1), zero);
  return new Tensor(new StorageRef(storage), shape, contiguousStrides(shape), 0, dtype);
}

/** A tensor filled with zeros. */
export function zeros(shape: number[], options: TensorOptions = {}): Tensor {
  options = checkOptions(options, "zeros");
  const dims = checkShapeArg(shape);
  const t = emptyZeroed(dims, checkCreateDType(options.dtype, "zeros"), normalizeDevice(options.device ?? "cpu"));
  return applyRequiresGrad(t, options);
}

/** A tensor with every element `value` (converted to the dtype). */
export function full(shape: number[], value: number, options: TensorOptions = {}): Tensor {
  options = checkOptions(options, "full");
  const dims = checkShapeArg(shape);
  if (typeof value !== "number") throw new ArgumentError(expected("a number", "full's value", value));
  const dtype = checkCreateDType(options.dtype, "full");
  const t = value === 0 ? emptyZeroed(dims, dtype, normalizeDevice(options.device ?? "cpu")) : empty(dims, dtype, normalizeDevice(options.device ?? "cpu"));
  if (value !== 0 && t.numel > 0) native().fill(t.storage, 0, dtypeId(dtype), t.numel, value);
  return applyRequiresGrad(t, options);
}

export function ones(shape: number[], options: TensorOptions = {}): Tensor {
  return full(shape, 1, options);
}

export function zerosLike(t: Tensor, options: TensorOptions = {}): Tensor {
  return zeros([...t.shape], { dtype: t.dtype, device: t.device, ...options });
}

export function onesLike(t: Tensor, options: TensorOptions = {}): Tensor {
  return ones([...t.shape], { dtype: t.dtype, device: t.device, ...options });
}

export function fullLike(t: Tensor, value: number, options: TensorOptions = {}): Tensor {
  return full([...t.shape], value, { dtype: t.dtype, device: t.device, ...options });
}

/**
 * [start, end) in steps of `step`. `arange(n)` counts 0..n-1. The dtype defaults to int32 when every
 * argument is an integer, else float32.
 */
export function arange(start: number, end?: number, step = 1, options: TensorOptions = {}): Tensor {
  options = checkOptions(options, "arange");
  let lo = start;
  let hi = end;
  if (hi === undefined) {
    hi = start;
    lo = 0;
  }
  for (const [name, v] of [["start", lo], ["end", hi], ["step", step]] as const) {
    if (typeof v !== "number" || !Number.isFinite(v)) throw new ArgumentError(expected("a finite number", `arange's ${name}`, v));
  }
  if (step === 0) throw new ArgumentError(expected("a non-zero number", "arange's step", step));
  const n = Math.max(0, Math.ceil((hi - lo) / step));
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = lo + i * step;
  const dtype = options.dtype ?? (Number.isInteger(lo) && Number.isInteger(hi) && Number.isInteger(step) ? "int32" : "float32");
  return fromTypedArray(values, [n], { ...options, dtype });
}

/** Standard-normal values (or N(mean, std)) from the given or the default generator. */
export function randn(shape: number[], options: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  options = checkOptions(options, "randn");
  const dims = checkShapeArg(shape);
  const dtype = checkCreateDType(options.dtype, "randn");
  if (!(dtype === "float32" || dtype === "float16" || dtype === "bfloat16")) throw new DTypeError(expected("a float dtype", "randn's dtype", dtype));
  const values = new Float32Array(numelOf(dims));
  (options.generator ?? defaultGenerator).fillNormal(values, options.mean ?? 0, options.std ?? 1);
  return fromTypedArray(values, dims, { ...options, dtype });
}

/** Uniform values in [low, high) (default [0, 1)). */
export function rand(shape: number[], options: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  options = checkOptions(options, "rand");
  const dims = checkShapeArg(shape);
  const dtype = checkCreateDType(options.dtype, "rand");
  if (!(dtype === "float32" || dtype === "float16" || dtype === "bfloat16")) throw new DTypeError(expected("a float dtype", "rand's dtype", dtype));
  const values = new Float32Array(numelOf(dims));
  (options.generator ?? defaultGenerator).fillUniform(values, options.low ?? 0, options.high ?? 1);
  return fromTypedArray(values, dims, { ...options, dtype });
}

type InputArray = ArrayBufferView | readonly number[];

function inferDType(data: InputArray): DType {
  if (data instanceof Float32Array || data instanceof Float64Array || Array.isArray(data)) return "float32";
  if (data instanceof Int32Array) return "int32";
  if (data instanceof BigInt64Array) return "int64";
  if (data instanceof Int8Array) return "int8";
  if (data instanceof Uint8Array) return "uint8";
  if (data instanceof Int16Array) return "int16";
  if (data instanceof Uint16Array) throw new DTypeError("fromTypedArray: a Uint16Array holds float16 or bfloat16 bits; pass { dtype } to say which");
  throw new ArgumentError(expected("a typed array or an array of numbers", "fromTypedArray's data", data));
}

/** Converts host values to the exact typed array `dtype` stores. */
function encodeHost(data: InputArray, dtype: DType): ArrayBufferView {
  const Ctor = STORAGE_ARRAY[dtype];
  if (data instanceof Ctor && !(Array.isArray(data))) {
    // Raw storage array: Uint16Array is taken as float16/bfloat16 bits, Uint8Array as float8/bool/uint8 bytes.
    return data as ArrayBufferView;
  }
  if (data instanceof Uint16Array || data instanceof BigInt64Array) {
    if (data instanceof BigInt64Array && (dtype === "int32" || dtype === "int16" || dtype === "int8" || dtype === "uint8")) {
      return (Ctor as Int32ArrayConstructor).from(data, (v) => Number(v));
    }
    throw new DTypeError(`fromTypedArray: cannot store a ${data.constructor.name} as ${dtype}`);
  }
  const values = data as ArrayLike<number>;
  for (let i = 0; i < values.length; i++) {
    if (typeof values[i] !== "number") throw new ArgumentError(expected("numbers", `fromTypedArray's data[${i}]`, values[i]));
  }
  switch (dtype) {
    case "float32":
      return Float32Array.from(values);
    case "float16":
    case "bfloat16":
    case "float8_e4m3fn":
    case "float8_e5m2":
      return fromFloat32(values instanceof Float32Array ? values : Float32Array.from(values), dtype);
    case "bool":
      return Uint8Array.from(values, (v) => (v !== 0 ? 1 : 0));
    case "int64":
    case "int32":
    case "int16":
    case "int8":
    case "uint8": {
      const bits = DTYPES[dtype].bits;
      const lo = dtype === "uint8" ? 0 : -(2 ** (bits - 1));
      const hi = dtype === "uint8" ? 255 : 2 ** (bits - 1) - 1;
      for (let i = 0; i < values.length; i++) {
        const v = values[i]!;
        if (!Number.isInteger(v) || v < lo || v > hi) throw new ArgumentError(expected(`an integer in the ${dtype} range`, `fromTypedArray's data[${i}]`, v));
      }
      if (dtype === "int64") return BigInt64Array.from(Array.from(values, (v) => BigInt(v)));
      return (Ctor as Int32ArrayConstructor).from(values);
    }
    default:
      throw new DTypeError(`fromTypedArray: cannot create a ${dtype} tensor`);
  }
}

/**
 * A new tensor holding a copy of host data. A typed array of the dtype's storage type is copied
 * as is (float16 / bfloat16 as Uint16Array bits); numbers (Float32Array, Float64Array, number[]) are
 * converted to the dtype.
 */
export function fromTypedArray(data: InputArray, shape?: number[], options: TensorOptions = {}): Tensor {
  options = checkOptions(options, "fromTypedArray");
  if (!(ArrayBuffer.isView(data) || Array.isArray(data)) || data instanceof DataView) {
    throw new ArgumentError(expected("a typed array or an array of numbers", "fromTypedArray's data", data));
  }
  const length = (data as ArrayLike<unknown>).length;
  const dims = shape === undefined ? [length] : checkShapeArg(shape, "fromTypedArray's shape");
  if (numelOf(dims) !== length) {
    throw new ShapeError(`fromTypedArray: shape ${formatShape(dims)} holds ${numelOf(dims)} elements but data has ${length}`);
  }
  const dtype = checkCreateDType(options.dtype ?? inferDType(data), "fromTypedArray");
  const host = encodeHost(data, dtype);
  const device = normalizeDevice(options.device ?? "cpu");
  const t = empty(dims, dtype, device);
  if (host.byteLength > 0) native().upload(t.storage, 0, host);
  return applyRequiresGrad(t, options);
}

/** A tensor from nested arrays of numbers (or booleans / bigints); default dtype float32. */
export function tensor(data: NestedArray, options: TensorOptions = {}): Tensor {
  options = checkOptions(options, "tensor");
  const shape: number[] = [];
  let probe: NestedArray = data;
  while (Array.isArray(probe)) {
    shape.push(probe.length);
    probe = probe[0] as NestedArray;
    if (probe === undefined) break;
  }
  const flat: number[] = [];
  const walk = (v: NestedArray, d: number, path: string): void => {
    if (d === shape.length) {
      if (typeof v === "number") flat.push(v);
      else if (typeof v === "boolean") flat.push(v ? 1 : 0);
      else if (typeof v === "bigint") flat.push(Number(v));
      else throw new ArgumentError(expected("a number", `tensor's data${path}`, v));
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[d]) {
      throw new ShapeError(`tensor: ragged nested array: expected an array of length ${shape[d]} at data${path} but received ${Array.isArray(v) ? `length ${v.length}` : typeof v}`);
    }
    v.forEach((x, i) => walk(x, d + 1, `${path}[${i}]`));
  };
  walk(data, 0, "");
  return fromTypedArray(flat, shape, options);
}

/** Whether `value` is a Tensor (live or disposed). */
export function isTensor(value: unknown): value is Tensor {
  return value instanceof Tensor;
}

