// Scaled dot-product attention (GQA, causal, padding mask) on the fused kernel, and KVCache: static
// (B, Hkv, S, D) key/value buffers per layer that decoding appends to in place with copyStrided, so a
// generation step never reallocates. Attention reads a cache view (B, Hkv, Tk, D) directly: the kernel
// takes the buffer's capacity S as the row pitch and only looks at the first Tk positions.

import { ArgumentError, DTypeError, ShapeError, expected, type DType } from "@lowbit/dtypes";
import { needsGrad, record } from "../autograd.js";
import { checkFloat, checkInt, checkSameDType, checkSameDevice, checkTensor } from "../check.js";
import { dtypeId, native, normalizeDevice, type Device } from "../native.js";
import { keep } from "../scope.js";
import { formatShape } from "../shape.js";
import { Tensor, empty, zeros } from "../tensor.js";
import { cast, copyInto, materialize, narrow } from "./views.js";

export interface AttentionOptions {
  /** Query i (at absolute position qStart + i) sees keys j <= qStart + i. */
  causal?: boolean;
  /** (B, Tk) padding mask, uint8 or bool: 1 = attend, 0 = skip. */
  mask?: Tensor | null;
  /** Softmax scale; default 1 / sqrt(D). */
  scale?: number;
  /** Absolute position of the first query; default Tk - Tq (queries are the newest positions). */
  qStart?: number;
}

/**
 * The kernel's view of k / v (B, Hkv, Tk, D): a dense tensor (S = Tk) or a prefix of a dense
 * (B, Hkv, S, D) buffer such as a KVCache view. Anything else is copied (`t !== x`).
 */
function kvOperand(x: Tensor): { t: Tensor; S: number } {
  const [B, Hkv, Tk, D] = x.shape as [number, number, number, number];
  const [s0, s1, s2, s3] = x.strides as [number, number, number, number];
  if (D > 0 && Tk > 0 && (s3 === 1 || D === 1) && (s2 === D || Tk === 1)) {
    // The pitch S comes from the first dim with more than one entry (size-1 dims carry no stride).
    const S = Hkv > 1 ? s1 / D : B > 1 ? s0 / D : Tk;
    if (Number.isInteger(S) && S >= Tk && (Hkv === 1 || s1 === S * D) && (B === 1 || s0 === Hkv * S * D)) return { t: x, S };
  }
  return { t: x.isContiguous ? x : materialize(x), S: Tk };
}

/**
 * softmax(q k^T * scale [+ causal / padding mask]) v with grouped-query heads.
 * q (B, Hq, Tq, D); k, v (B, Hkv, Tk, D) with Hq a multiple of Hkv; returns (B, Hq, Tq, D).
 * Differentiable in q, k and v (k and v must then be plain tensors, not KV-cache views).
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const op = "scaledDotProductAttention";
  checkFloat(q, "q", op);
  checkFloat(k, "k", op);
  checkFloat(v, "v", op);
  const mask = options.mask ?? null;
  if (mask !== null) checkTensor(mask, "mask", op);
  checkSameDevice(op, ["q", q], ["k", k], ["v", v], ["mask", mask]);
  checkSameDType(op, ["q", q], ["k", k]);
  checkSameDType(op, ["q", q], ["v", v]);
  for (const [name, t] of [["q", q], ["k", k], ["v", v]] as const) {
    if (t.ndim !== 4) throw new ShapeError(`${op}: expected ${name} to be 4-D (B, H, T, D) but received shape ${formatShape(t.shape)}`);
  }
  const [B, Hq, Tq, D] = q.shape as [number, number, number, number];
  const [Bk, Hkv, Tk, Dk] = k.shape as [number, number, number, number];
  if (Bk !== B || Dk !== D) throw new ShapeError(`${op}: k ${formatShape(k.shape)} does not match q ${formatShape(q.shape)} in batch or head dim`);
  if (v.shape.some((s, i) => s !== k.shape[i])) throw new ShapeError(`${op}: expected v of k's shape ${formatShape(k.shape)} but received ${formatShape(v.shape)}`);
  if (Hkv === 0 || Hq % Hkv !== 0) throw new ShapeError(`${op}: query heads (${Hq}) must be a multiple of key/value heads (${Hkv})`);
  const causal = options.causal ?? false;
  if (typeof causal !== "boolean") throw new ArgumentError(expected("a boolean", `${op}'s causal`, causal));
  const scale = options.scale ?? 1 / Math.sqrt(D);
  if (typeof scale !== "number" || !Number.isFinite(scale)) throw new ArgumentError(expected("a finite number", `${op}'s scale`, scale));
  const qStart = checkInt(options.qStart ?? Tk - Tq, "qStart", op, 0);
  let maskT: Tensor | null = null;
  if (mask !== null) {
    if (mask.ndim !== 2 || mask.shape[0] !== B || mask.shape[1] !== Tk) {
      throw new ShapeError(`${op}: expected mask of shape [${B}, ${Tk}] (batch, keys) but received ${formatShape(mask.shape)}`);
    }
    if (mask.dtype === "uint8" || mask.dtype === "bool") maskT = mask.isContiguous ? mask._alias() : materialize(mask);
    else if (mask.dtype === "int32" || mask.dtype === "int64") maskT = cast(mask, "uint8");
    else throw new DTypeError(expected("a uint8, bool, int32 or int64 tensor", `${op}'s mask`, mask.dtype));
  }
  const qs = q.isContiguous ? q : materialize(q);
  let ko = kvOperand(k);
  let vo = kvOperand(v);
  if (ko.S !== vo.S) {
    // k and v must share the row pitch the kernel assumes.
    if (ko.t === k) ko = { t: materialize(k), S: Tk };
    if (vo.t === v) vo = { t: materialize(v), S: Tk };
  }
  const S = ko.S;
  const grad = needsGrad(q, k, v);
  const out = empty([B, Hq, Tq, D], q.dtype, q.device);
  const lse = grad ? empty([B, Hq, Tq], "float32", q.device) : null;
  if (out.numel > 0) {
    native().attention(
      out.storage, 0, qs.storage, qs.byteOffset, ko.t.storage, ko.t.byteOffset, vo.t.storage, vo.t.byteOffset,
      dtypeId(q.dtype), B, Hq, Hkv, Tq, Tk, S, D, scale, causal, qStart,
      maskT?.storage ?? null, maskT?.byteOffset ?? 0, lse?.storage ?? null, lse?.byteOffset ?? 0,
    );
  }
  const saved = grad ? [qs, ko.t, vo.t, out, lse!, ...(maskT ? [maskT] : [])] : [];
  const res = record(
    op,
    out,
    [q, k, v],
    (g, [qv, kv, vv, ov, lv, mv], needs) => {
      const gd = g.isContiguous ? g : materialize(g);
      const dq = empty([B, Hq, Tq, D], qv!.dtype, qv!.device);
      const dk = empty([B, Hkv, S, D], qv!.dtype, qv!.device);
      const dv = empty([B, Hkv, S, D], qv!.dtype, qv!.device);
      if (dq.numel > 0) {
        native().attentionBackward(
          dq.storage, 0, dk.storage, 0, dv.storage, 0, gd.storage, gd.byteOffset,
          qv!.storage, qv!.byteOffset, kv!.storage, kv!.byteOffset, vv!.storage, vv!.byteOffset,
          ov!.storage, ov!.byteOffset, lv!.storage, lv!.byteOffset,
          dtypeId(qv!.dtype), B, Hq, Hkv, Tq, Tk, S, D, scale, causal, qStart,
          mv?.storage ?? null, mv?.byteOffset ?? 0,
        );
      }
      const trim = (t: Tensor): Tensor => (S === Tk ? t : materialize(narrow(t, 2, 0, Tk)));
      return [needs[0] ? dq : null, needs[1] ? trim(dk) : null, needs[2] ? trim(dv) : null];
    },
    saved,
  );
  if (qs !== q) qs.dispose();
  if (ko.t !== k) ko.t.dispose();
  if (vo.t !== v) vo.t.dispose();
  lse?.dispose();
  maskT?.dispose();
  return res;
}

export interface KVCacheOptions {
  layers: number;
  batch: number;
  kvHeads: number;
  /** Capacity S in positions. */
  maxSeq: number;
  headDim: number;
  dtype?: DType;
  device?: Device;
}

/**
 * Static key/value buffers for incremental decoding: per layer, k and v of shape (B, Hkv, S, D)
 * allocated once. append() copies new (B, Hkv, T, D) keys/values in at the layer's current length and
 * returns views of the filled prefix; nothing is reallocated per step.
 */
export class KVCache {
  readonly layers: number;
  readonly batch: number;
  readonly kvHeads: number;
  readonly maxSeq: number;
  readonly headDim: number;
  readonly dtype: DType;
  readonly device: Device;
  readonly #keys: Tensor[] = [];
  readonly #values: Tensor[] = [];
  readonly #lengths: number[];
  #disposed = false;

  constructor(options: KVCacheOptions) {
    const op = "KVCache";
    if (typeof options !== "object" || options === null) throw new ArgumentError(expected("an options object", `${op}'s options`, options));
    this.layers = checkInt(options.layers, "layers", op, 1);
    this.batch = checkInt(options.batch, "batch", op, 1);
    this.kvHeads = checkInt(options.kvHeads, "kvHeads", op, 1);
    this.maxSeq = checkInt(options.maxSeq, "maxSeq", op, 1);
    this.headDim = checkInt(options.headDim, "headDim", op, 1);
    this.dtype = options.dtype ?? "float32";
    if (!(this.dtype === "float32" || this.dtype === "float16" || this.dtype === "bfloat16")) {
      throw new DTypeError(expected("float32, float16 or bfloat16", `${op}'s dtype`, this.dtype));
    }
    this.device = normalizeDevice(options.device ?? "cpu");
    const shape = [this.batch, this.kvHeads, this.maxSeq, this.headDim];
    for (let l = 0; l < this.layers; l++) {
      this.#keys.push(keep(zeros(shape, { dtype: this.dtype, device: this.device })));
      this.#values.push(keep(zeros(shape, { dtype: this.dtype, device: this.device })));
    }
    this.#lengths = new Array<number>(this.layers).fill(0);
  }

  #layer(layer: number, op: string): number {
    if (this.#disposed) throw new ArgumentError(`${op}: the KVCache was disposed`);
    return checkInt(layer, "layer", op, 0, this.layers - 1);
  }

  /** Positions filled in `layer`. */
  length(layer = 0): number {
    return this.#lengths[this.#layer(layer, "KVCache.length")]!;
  }

  /**
   * Appends k, v (B, Hkv, T, D) to `layer` and returns views (B, Hkv, length, D) of everything cached
   * so far (dispose them, or let tidy). Throws ShapeError past capacity.
   */
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    const op = "KVCache.append";
    const l = this.#layer(layer, op);
    checkFloat(k, "k", op);
    checkFloat(v, "v", op);
    const kb = this.#keys[l]!;
    const vb = this.#values[l]!;
    checkSameDevice(op, ["cache", kb], ["k", k], ["v", v]);
    if (k.dtype !== this.dtype || v.dtype !== this.dtype) {
      throw new DTypeError(`${op}: the cache holds ${this.dtype} but received k ${k.dtype} and v ${v.dtype}`);
    }
    const want = [this.batch, this.kvHeads, -1, this.headDim];
    for (const [name, t] of [["k", k], ["v", v]] as const) {
      if (t.ndim !== 4 || t.shape.some((s, i) => want[i] !== -1 && s !== want[i])) {
        throw new ShapeError(`${op}: expected ${name} of shape [${this.batch}, ${this.kvHeads}, T, ${this.headDim}] but received ${formatShape(t.shape)}`);
      }
    }
    const T = k.shape[2]!;
    if (v.shape[2] !== T) throw new ShapeError(`${op}: k has ${T} positions but v has ${v.shape[2]}`);
    const start = this.#lengths[l]!;
    if (start + T > this.maxSeq) {
      throw new ShapeError(`${op}: appending ${T} positions at ${start} exceeds the cache capacity of ${this.maxSeq}`);
    }
    for (const [buf, src] of [[kb, k], [vb, v]] as const) {
      const region = narrow(buf, 2, start, T);
      copyInto(region, src);
      region.dispose();
    }
    this.#lengths[l] = start + T;
    return this.get(l);
  }

  /** append() under the name HF's Cache uses. */
  update(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    return this.append(layer, k, v);
  }

  /** Views (B, Hkv, length, D) of the cached keys and values of `layer`. */
  get(layer: number): { k: Tensor; v: Tensor } {
    const l = this.#layer(layer, "KVCache.get");
    const len = this.#lengths[l]!;
    return { k: narrow(this.#keys[l]!, 2, 0, len), v: narrow(this.#values[l]!, 2, 0, len) };
  }

  /** Forgets everything cached (the buffers are reused). */
  reset(): void {
    this.#layer(0, "KVCache.reset");
    this.#lengths.fill(0);
  }

  /** Keeps only the first `length` positions of every layer. */
  crop(length: number): void {
    this.#layer(0, "KVCache.crop");
    checkInt(length, "length", "KVCache.crop", 0, this.maxSeq);
    for (let l = 0; l < this.layers; l++) this.#lengths[l] = Math.min(this.#lengths[l]!, length);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const t of [...this.#keys, ...this.#values]) t.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
