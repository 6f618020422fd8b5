// Layout ops: views that share storage (reshape, transpose, permute, narrow/slice, squeeze,
// unsqueeze, expand), copies that change layout, dtype or device (contiguous, cast, to(device)) and
// cat. All are differentiable; a view's backward maps the gradient back onto the input's shape.

import { ArgumentError, DTYPES, DTypeError, ShapeError, dtypeInfo, expected, type DType } from "@lowbit/dtypes";
import { record } from "../autograd.js";
import { checkInt, checkSameDevice, checkTensor, isFloatDType } from "../check.js";
import { dtypeId, native, normalizeDevice, type Device } from "../native.js";
import {
  contiguousStrides,
  formatShape,
  inferReshape,
  normalizeDim,
  numelOf,
  viewStrides,
  type Shape,
} from "../shape.js";
import { Tensor, empty, emptyZeroed } from "../tensor.js";
import { sumTo } from "./reduce.js";

/** Shape/strides as the copy kernel takes them (a 0-d tensor is one element). */
function kshape(shape: Shape, strides: Shape): [number[], number[]] {
  return shape.length === 0 ? [[1], [0]] : [[...shape], [...strides]];
}

/** @internal dst[...] = src[...] elementwise over dst's shape; both any strides, same dtype and device. */
export function copyInto(dst: Tensor, src: Tensor): void {
  const [shape, dstStrides] = kshape(dst.shape, dst.strides);
  const [, srcStrides] = kshape(src.shape, src.strides);
  if (numelOf(dst.shape) === 0) return;
  native().copyStrided(dst.storage, dst.byteOffset, dstStrides, src.storage, src.byteOffset, srcStrides, dtypeId(dst.dtype), shape);
}

/** @internal A dense copy of x, outside autograd. */
export function materialize(x: Tensor): Tensor {
  const out = empty(x.shape, x.dtype, x.device);
  copyInto(out, x);
  return out;
}

/** @internal x itself when dense, else a dense copy (the caller disposes it when it is not x). */
export function dense(x: Tensor): Tensor {
  return x.isContiguous ? x : materialize(x);
}

function viewOp(x: Tensor, op: string, shape: Shape, strides: Shape, offset: number, back: (g: Tensor) => Tensor): Tensor {
  const out = x._alias(shape, strides, offset);
  return record(op, out, [x], (g) => [back(g)]);
}

export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor(x, "x", "reshape");
  const target = inferReshape(shape, x.numel, "reshape");
  const xShape = x.shape;
  const strides = viewStrides(x.shape, x.strides, target);
  if (strides !== null) return viewOp(x, "reshape", target, strides, x.offset, (g) => reshape(g, xShape));
  const c = materialize(x);
  const out = c._alias(target, contiguousStrides(target), 0);
  c.dispose();
  return record("reshape", out, [x], (g) => [reshape(g, xShape)]);
}

/** Like reshape, but never copies: a ShapeError when the layout cannot be viewed so. */
export function view(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor(x, "x", "view");
  const target = inferReshape(shape, x.numel, "view");
  const strides = viewStrides(x.shape, x.strides, target);
  if (strides === null) {
    throw new ShapeError(`view: a tensor of shape ${formatShape(x.shape)} and strides ${formatShape(x.strides)} cannot be viewed as ${formatShape(target)}; use reshape (which copies)`);
  }
  const xShape = x.shape;
  return viewOp(x, "view", target, strides, x.offset, (g) => reshape(g, xShape));
}

export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  checkTensor(x, "x", "flatten");
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normalizeDim(startDim, x.ndim, "flatten", "startDim");
  const e = normalizeDim(endDim, x.ndim, "flatten", "endDim");
  if (s > e) throw new ArgumentError(`flatten: startDim (${startDim}) comes after endDim (${endDim})`);
  const shape = [...x.shape.slice(0, s), numelOf(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)];
  return reshape(x, shape);
}

export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  checkTensor(x, "x", "transpose");
  const a = normalizeDim(dim0, x.ndim, "transpose", "dim0");
  const b = normalizeDim(dim1, x.ndim, "transpose", "dim1");
  if (x.ndim === 0) return viewOp(x, "transpose", x.shape, x.strides, x.offset, (g) => g);
  const shape = [...x.shape];
  const strides = [...x.strides];
  [shape[a], shape[b]] = [shape[b]!, shape[a]!];
  [strides[a], strides[b]] = [strides[b]!, strides[a]!];
  return viewOp(x, "transpose", shape, strides, x.offset, (g) => transpose(g, a, b));
}

export function permute(x: Tensor, dims: readonly number[]): Tensor {
  checkTensor(x, "x", "permute");
  if (!Array.isArray(dims) || dims.length !== x.ndim) {
    throw new ArgumentError(expected(`${x.ndim} axes (a permutation of the dims of shape ${formatShape(x.shape)})`, "permute's dims", dims));
  }
  const perm = dims.map((d) => normalizeDim(d, x.ndim, "permute", "dims"));
  if (new Set(perm).size !== perm.length) throw new ArgumentError(`permute: dims [${dims.join(", ")}] repeat an axis`);
  const inverse = new Array<number>(perm.length);
  perm.forEach((p, i) => (inverse[p] = i));
  return viewOp(
    x,
    "permute",
    perm.map((p) => x.shape[p]!),
    perm.map((p) => x.strides[p]!),
    x.offset,
    (g) => permute(g, inverse),
  );
}

/** Zeros of `shape` with g written into the strided region (dim, start, step): narrow/slice backward. */
function embedSlice(g: Tensor, shape: Shape, dim: number, start: number, step: number): Tensor {
  const z = emptyZeroed(shape, g.dtype, g.device);
  const strides = contiguousStrides(shape);
  const regionStrides = [...strides];
  regionStrides[dim] = strides[dim]! * step;
  const region = z._alias(g.shape, regionStrides, start * strides[dim]!);
  copyInto(region, g);
  region.dispose();
  return z;
}

export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  checkTensor(x, "x", "narrow");
  if (x.ndim === 0) throw new ShapeError("narrow: cannot narrow a 0-d tensor");
  const d = normalizeDim(dim, x.ndim, "narrow");
  const size = x.shape[d]!;
  checkInt(start, "start", "narrow", -size, size);
  const s = start < 0 ? start + size : start;
  checkInt(length, "length", "narrow", 0, size - s);
  const shape = [...x.shape];
  shape[d] = length;
  const xShape = x.shape;
  return viewOp(x, "narrow", shape, x.strides, x.offset + s * x.strides[d]!, (g) => embedSlice(g, xShape, d, s, 1));
}

/** Python slicing of one dim: negative start/end count from the end; out-of-range values clamp. */
export function slice(x: Tensor, dim: number, start?: number, end?: number, step = 1): Tensor {
  checkTensor(x, "x", "slice");
  if (x.ndim === 0) throw new ShapeError("slice: cannot slice a 0-d tensor");
  const d = normalizeDim(dim, x.ndim, "slice");
  checkInt(step, "step", "slice", 1);
  const size = x.shape[d]!;
  const clamp = (v: number | undefined, dflt: number, name: string): number => {
    if (v === undefined) return dflt;
    checkInt(v, name, "slice");
    const w = v < 0 ? v + size : v;
    return Math.min(Math.max(w, 0), size);
  };
  const s = clamp(start, 0, "start");
  const e = Math.max(clamp(end, size, "end"), s);
  const shape = [...x.shape];
  shape[d] = Math.ceil((e - s) / step);
  const strides = [...x.strides];
  strides[d] = x.strides[d]! * step;
  const xShape = x.shape;
  return viewOp(x, "slice", shape, strides, x.offset + s * x.strides[d]!, (g) => embedSlice(g, xShape, d, s, step));
}

export function squeeze(x: Tensor, dim?: number): Tensor {
  checkTensor(x, "x", "squeeze");
  const xShape = x.shape;
  let keep: number[];
  if (dim === undefined) {
    keep = x.shape.map((_, i) => i).filter((i) => x.shape[i] !== 1);
  } else {
    const d = normalizeDim(dim, x.ndim, "squeeze");
    keep = x.shape.map((_, i) => i).filter((i) => i !== d || x.shape[i] !== 1);
  }
  return viewOp(
    x,
    "squeeze",
    keep.map((i) => x.shape[i]!),
    keep.map((i) => x.strides[i]!),
    x.offset,
    (g) => reshape(g, xShape),
  );
}

export function unsqueeze(x: Tensor, dim: number): Tensor {
  checkTensor(x, "x", "unsqueeze");
  const d = normalizeDim(dim, x.ndim + 1, "unsqueeze");
  const shape = [...x.shape];
  const strides = [...x.strides];
  const stride = d < x.ndim ? x.strides[d]! * x.shape[d]! : 1;
  shape.splice(d, 0, 1);
  strides.splice(d, 0, stride);
  const xShape = x.shape;
  return viewOp(x, "unsqueeze", shape, strides, x.offset, (g) => reshape(g, xShape));
}

/** Broadcasts size-1 dims (and new leading dims) to `shape` without copying; -1 keeps a dim. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor(x, "x", "expand");
  if (!Array.isArray(shape) || !shape.every((v) => Number.isInteger(v) && v >= -1)) {
    throw new ArgumentError(expected("an array of integers >= -1", "expand's shape", shape));
  }
  if (shape.length < x.ndim) throw new ShapeError(`expand: cannot expand shape ${formatShape(x.shape)} to fewer dims ${formatShape(shape)}`);
  const lead = shape.length - x.ndim;
  const outShape: number[] = [];
  const strides: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    const want = shape[i]!;
    if (i < lead) {
      if (want < 0) throw new ShapeError(`expand: -1 is not allowed for new leading dim ${i}`);
      outShape.push(want);
      strides.push(0);
      continue;
    }
    const have = x.shape[i - lead]!;
    if (want === -1 || want === have) {
      outShape.push(have);
      strides.push(x.strides[i - lead]!);
    } else if (have === 1) {
      outShape.push(want);
      strides.push(0);
    } else {
      throw new ShapeError(`expand: dim ${i - lead} of shape ${formatShape(x.shape)} has size ${have} and cannot expand to ${want} (only size-1 dims expand)`);
    }
  }
  const xShape = x.shape;
  return viewOp(x, "expand", outShape, strides, x.offset, (g) => sumTo(g, xShape));
}

/** A dense row-major tensor: a new view when x is already dense, else a copy. */
export function contiguous(x: Tensor): Tensor {
  checkTensor(x, "x", "contiguous");
  const out = x.isContiguous ? x._alias() : materialize(x);
  return record("contiguous", out, [x], (g) => [g]);
}

/** Element-wise dtype conversion (round to nearest even). Differentiable between float dtypes. */
export function cast(x: Tensor, dtype: DType): Tensor {
  checkTensor(x, "x", "cast");
  const info = dtypeInfo(dtype, "cast's dtype");
  if (info.isQuantized) throw new DTypeError(`cast: ${dtype} is a packed 4-bit format; quantize through Linear4bit / quantize4bit`);
  if (dtype === x.dtype) return record("cast", x._alias(), [x], (g) => [g]);
  const src = dense(x);
  const out = empty(x.shape, dtype, x.device);
  if (x.numel > 0) native().cast(out.storage, 0, dtypeId(dtype), src.storage, src.byteOffset, dtypeId(x.dtype), x.numel);
  if (src !== x) src.dispose();
  if (!isFloatDType(dtype) || !isFloatDType(x.dtype)) return out;
  const from = x.dtype;
  return record("cast", out, [x], (g) => [cast(g, from)]);
}

/** A copy on another device (a new view when already there). Differentiable. */
export function toDevice(x: Tensor, device: Device): Tensor {
  checkTensor(x, "x", "to");
  const target = normalizeDevice(device, "to's device");
  const from = x.device;
  if (target === from) return record("to", x._alias(), [x], (g) => [g]);
  const src = dense(x);
  const out = empty(x.shape, x.dtype, target);
  const bytes = x.numel * DTYPES[x.dtype].bytes;
  if (bytes > 0) native().copyBytes(out.storage, 0, src.storage, src.byteOffset, bytes);
  if (src !== x) src.dispose();
  return record("to", out, [x], (g) => [toDevice(g, from)]);
}

/** Concatenates tensors of one dtype and device along `dim`; all other dims must match. */
export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw new ArgumentError(expected("a non-empty array of Tensors", "cat's tensors", tensors));
  tensors.forEach((t, i) => checkTensor(t, `tensors[${i}]`, "cat"));
  const first = tensors[0]!;
  checkSameDevice("cat", ...tensors.map((t, i): [string, Tensor] => [`tensors[${i}]`, t]));
  if (first.ndim === 0) throw new ShapeError("cat: cannot concatenate 0-d tensors; unsqueeze them first");
  const d = normalizeDim(dim, first.ndim, "cat");
  let total = 0;
  tensors.forEach((t: Tensor, i: number) => {
    if (t.dtype !== first.dtype) throw new DTypeError(`cat: tensors[${i}] is ${t.dtype} but tensors[0] is ${first.dtype}`);
    if (t.ndim !== first.ndim || t.shape.some((s: number, k: number) => k !== d && s !== first.shape[k])) {
      throw new ShapeError(`cat: tensors[${i}] has shape ${formatShape(t.shape)}, which differs from tensors[0] ${formatShape(first.shape)} outside dim ${d}`);
    }
    total += t.shape[d]!;
  });
  const shape = [...first.shape];
  shape[d] = total;
  const out = empty(shape, first.dtype, first.device);
  const sizes: number[] = [];
  let pos = 0;
  for (const t of tensors) {
    const len = t.shape[d]!;
    const region = out._alias(t.shape, out.strides, pos * out.strides[d]!);
    copyInto(region, t);
    region.dispose();
    sizes.push(len);
    pos += len;
  }
  return record("cat", out, tensors, (g, _saved, needs) => {
    let at = 0;
    return sizes.map((len, i) => {
      const start = at;
      at += len;
      return needs[i] ? contiguous(narrow(g, d, start, len)) : null;
    });
  });
}

/** Stacks same-shape tensors along a new dim. */
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw new ArgumentError(expected("a non-empty array of Tensors", "stack's tensors", tensors));
  const first = checkTensor(tensors[0], "tensors[0]", "stack");
  const d = normalizeDim(dim, first.ndim + 1, "stack");
  const parts = tensors.map((t, i) => unsqueeze(checkTensor(t, `tensors[${i}]`, "stack"), d));
  const out = cat(parts, d);
  for (const p of parts) p.dispose();
  return out;
}
