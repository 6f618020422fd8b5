// Reductions over axes: sum, mean, max (with keepdim) and argmax, plus sumTo, which folds a
// broadcast gradient back onto an input's shape. The kernel reduces the middle axis of an
// (outer, n, inner) view, so each run of consecutive reduced axes costs one kernel call.

import { ShapeError } from "@lowbit/dtypes";
import { ReduceOp, type ReduceOpId } from "@lowbit/kernels";
import { record } from "../autograd.js";
import { checkFloat, checkTensor } from "../check.js";
import { dtypeId, native } from "../native.js";
import { contiguousStrides, formatShape, normalizeDim, normalizeDims, numelOf, sameShape, type Shape } from "../shape.js";
import { Tensor, empty, full } from "../tensor.js";
import { binaryRaw, unaryBackwardRaw, unaryRaw } from "./elementwise.js";
import { dense, materialize } from "./views.js";

type ReduceName = keyof typeof ReduceOp;

/** @internal Reduces `dims` (sorted, unique) of x, keeping them as size 1; outside autograd. */
export function reduceRaw(op: ReduceName, x: Tensor, dims: readonly number[]): Tensor {
  // Runs of consecutive axes, reduced last run first so earlier axis numbers stay valid.
  const runs: Array<[number, number]> = [];
  for (const d of dims) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last[1] === d - 1) last[1] = d;
    else runs.push([d, d]);
  }
  let cur = dense(x);
  let owned = cur !== x;
  for (let r = runs.length - 1; r >= 0; r--) {
    const [s, e] = runs[r]!;
    const shape = [...cur.shape];
    const outer = numelOf(shape.slice(0, s));
    const n = numelOf(shape.slice(s, e + 1));
    const inner = numelOf(shape.slice(e + 1));
    if (n === 0 && op === "max") throw new ShapeError(`max: cannot reduce an empty dim of shape ${formatShape(x.shape)}`);
    for (let d = s; d <= e; d++) shape[d] = 1;
    const out = empty(shape, x.dtype, x.device);
    if (outer * inner > 0) native().reduce(ReduceOp[op] as ReduceOpId, out.storage, 0, cur.storage, cur.byteOffset, dtypeId(x.dtype), outer, n, inner);
    if (owned) cur.dispose();
    cur = out;
    owned = true;
  }
  return owned ? cur : cur._alias();
}

/** The result shape with reduced dims dropped (or kept as 1). */
function resultShape(shape: Shape, dims: readonly number[], keepdim: boolean): number[] {
  return keepdim ? shape.map((s, i) => (dims.includes(i) ? 1 : s)) : shape.filter((_, i) => !dims.includes(i));
}

/** Broadcasts a reduced gradient (numel(keepShape) elements) back over `xShape` as a dense tensor. */
function spread(g: Tensor, keepShape: Shape, xShape: Shape): Tensor {
  const src = dense(g);
  const ks = contiguousStrides(keepShape);
  const view = src._alias(xShape, keepShape.map((s, i) => (s === 1 && xShape[i] !== 1 ? 0 : ks[i]!)), src.offset);
  const out = materialize(view);
  view.dispose();
  if (src !== g) src.dispose();
  return out;
}

function reduceOp(op: ReduceName, x: Tensor, dimsArg: number | number[] | undefined, keepdim: boolean): Tensor {
  checkFloat(x, "x", op);
  const dims = normalizeDims(dimsArg, x.ndim, op);
  const xShape = x.shape;
  const keepShape = resultShape(xShape, dims, true);
  const outShape = resultShape(xShape, dims, keepdim);
  const kept = reduceRaw(op, x, dims);
  const out = kept._alias(outShape, contiguousStrides(outShape), kept.offset);
  if (op === "sum") {
    kept.dispose();
    return record(op, out, [x], (g) => [spread(g, keepShape, xShape)]);
  }
  if (op === "mean") {
    kept.dispose();
    const n = numelOf(dims.map((d) => xShape[d]!));
    return record(op, out, [x], (g) => [unaryRaw("scale", spread(g, keepShape, xShape), 1 / n)]);
  }
  // max: the gradient goes to the maximal elements, split evenly among ties (torch amax).
  const res = record(
    op,
    out,
    [x],
    (g, [xs, m]) => {
      const ones = full([...xShape], 1, { dtype: xs!.dtype, device: xs!.device });
      const gap = binaryRaw("sub", m!, xs!); // m - x >= 0, zero exactly at the maxima
      const below = unaryBackwardRaw("relu", ones, gap); // 1 where x < m
      const isMax = unaryRaw("addScalar", unaryRaw("neg", below), 1);
      const count = reduceRaw("sum", isMax, dims);
      const share = binaryRaw("div", spread(g, keepShape, keepShape), count);
      return [binaryRaw("mul", isMax, share)];
    },
    [x, kept],
  );
  kept.dispose();
  return res;
}

/** Sum over `dims` (all when omitted). */
export function sum(x: Tensor, dims?: number | number[], keepdim = false): Tensor {
  return reduceOp("sum", x, dims, keepdim);
}

/** Mean over `dims` (all when omitted). */
export function mean(x: Tensor, dims?: number | number[], keepdim = false): Tensor {
  return reduceOp("mean", x, dims, keepdim);
}

/** Maximum over `dims` (all when omitted); the gradient is shared evenly among tied maxima. */
export function max(x: Tensor, dims?: number | number[], keepdim = false): Tensor {
  return reduceOp("max", x, dims, keepdim);
}

/** int32 index of the maximum along `dim` (first index on ties). Not differentiable. */
export function argmax(x: Tensor, dim = -1, keepdim = false): Tensor {
  checkFloat(x, "x", "argmax");
  if (x.ndim === 0) return full([], 0, { dtype: "int32", device: x.device });
  const d = normalizeDim(dim, x.ndim, "argmax");
  const cols = x.shape[d]!;
  if (cols === 0) throw new ShapeError(`argmax: dim ${d} of shape ${formatShape(x.shape)} is empty`);
  // Move `dim` last: (rows, cols).
  const perm = [...x.shape.keys()].filter((i) => i !== d).concat([d]);
  const moved = x._alias(perm.map((p) => x.shape[p]!), perm.map((p) => x.strides[p]!), x.offset);
  const src = dense(moved);
  const rows = x.numel / cols;
  const outShape = keepdim ? x.shape.map((s, i) => (i === d ? 1 : s)) : x.shape.filter((_, i) => i !== d);
  const out = empty(outShape, "int32", x.device);
  if (rows > 0) native().argmax(out.storage, 0, src.storage, src.byteOffset, dtypeId(x.dtype), rows, cols);
  if (src !== moved) src.dispose();
  moved.dispose();
  return out;
}

/**
 * Sums a gradient of a broadcast shape back to `shape`: leading dims are summed away and dims where
 * `shape` has 1 are summed with keepdim. Returns g itself when the shapes already agree.
 */
export function sumTo(g: Tensor, shape: Shape): Tensor {
  checkTensor(g, "g", "sumTo");
  if (sameShape(g.shape, shape)) return g;
  const lead = g.ndim - shape.length;
  if (lead < 0) throw new ShapeError(`sumTo: cannot sum shape ${formatShape(g.shape)} to the larger shape ${formatShape(shape)}`);
  const dims: number[] = [];
  for (let i = 0; i < g.ndim; i++) {
    if (i < lead) dims.push(i);
    else if (shape[i - lead] === 1 && g.shape[i] !== 1) dims.push(i);
    else if (shape[i - lead] !== g.shape[i]) {
      throw new ShapeError(`sumTo: shape ${formatShape(g.shape)} does not broadcast from ${formatShape(shape)}`);
    }
  }
  const r = dims.length > 0 ? reduceRaw("sum", g, dims) : g.isContiguous ? g._alias() : materialize(g);
  const out = r._alias(shape, contiguousStrides(shape), r.offset);
  r.dispose();
  return out;
}
