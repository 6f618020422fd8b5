// Shape arithmetic shared by every op: element counts, row-major strides, axis normalisation and
// numpy-style broadcasting. Pure functions on plain number arrays; no tensors, no native calls.

import { ArgumentError, ShapeError, expected } from "@lowbit/dtypes";

export type Shape = readonly number[];

export function numelOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major strides, in elements. */
export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

/** Whether (shape, strides) is dense row-major; size-1 dims may have any stride. */
export function isContiguousLayout(shape: Shape, strides: Shape): boolean {
  let expect = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const d = shape[i]!;
    if (d !== 1 && strides[i] !== expect) return false;
    expect *= d;
  }
  return true;
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Validates a user shape: an array of non-negative integers. */
export function checkShapeArg(shape: unknown, name = "shape"): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => typeof d === "number" && Number.isInteger(d) && d >= 0)) {
    throw new ArgumentError(expected("an array of non-negative integers", name, shape));
  }
  return [...(shape as number[])];
}

/** Maps a possibly negative axis into [0, rank); throws naming the op when out of range. */
export function normalizeDim(dim: unknown, rank: number, op: string, name = "dim"): number {
  if (typeof dim !== "number" || !Number.isInteger(dim)) throw new ArgumentError(expected("an integer", `${op}'s ${name}`, dim));
  const lo = rank === 0 ? -1 : -rank;
  const hi = rank === 0 ? 0 : rank - 1;
  if (dim < lo || dim > hi) throw new ArgumentError(expected(`an integer in [${lo}, ${hi}]`, `${op}'s ${name}`, dim));
  return dim < 0 ? dim + Math.max(rank, 1) : dim;
}

/** Normalises a list of axes (or all axes when undefined) to sorted unique non-negative axes. */
export function normalizeDims(dims: unknown, rank: number, op: string): number[] {
  if (dims === undefined || dims === null) return Array.from({ length: rank }, (_, i) => i);
  const list = Array.isArray(dims) ? dims : [dims];
  const out = new Set<number>();
  for (const d of list) {
    const n = normalizeDim(d, rank, op);
    if (out.has(n)) throw new ArgumentError(`${op}: axis ${String(d)} appears more than once in dims [${list.join(", ")}]`);
    out.add(n);
  }
  return [...out].sort((a, b) => a - b);
}

/** numpy broadcasting of two shapes; throws a ShapeError naming the op. */
export function broadcastShapes(a: Shape, b: Shape, op: string): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(`${op}: shapes ${formatShape(a)} and ${formatShape(b)} cannot be broadcast (dim ${i}: ${da} vs ${db})`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides that read (shape, strides) as if broadcast to `target` (0 on broadcast axes). */
export function broadcastStrides(shape: Shape, strides: Shape, target: Shape): number[] {
  const out = new Array<number>(target.length).fill(0);
  const lead = target.length - shape.length;
  for (let i = 0; i < shape.length; i++) {
    out[lead + i] = shape[i] === 1 && target[lead + i] !== 1 ? 0 : strides[i]!;
  }
  return out;
}

/** Resolves one -1 in a reshape target against `numel`. */
export function inferReshape(target: readonly number[], numel: number, op: string): number[] {
  if (!Array.isArray(target) || !target.every((d) => typeof d === "number" && Number.isInteger(d) && d >= -1)) {
    throw new ArgumentError(expected("an array of integers >= -1", `${op}'s shape`, target));
  }
  const out = [...target];
  const free = out.indexOf(-1);
  if (free !== out.lastIndexOf(-1)) throw new ShapeError(`${op}: only one dimension can be -1, received ${formatShape(target)}`);
  const known = out.reduce((p, d) => (d === -1 ? p : p * d), 1);
  if (free >= 0) {
    if (known === 0 || numel % known !== 0) throw new ShapeError(`${op}: cannot reshape ${numel} elements into ${formatShape(target)}`);
    out[free] = numel / known;
  }
  if (numelOf(out) !== numel) throw new ShapeError(`${op}: cannot reshape ${numel} elements into ${formatShape(target)}`);
  return out;
}

/**
 * Strides for viewing (shape, strides) as `target` without copying, or null when the memory layout
 * does not allow it. This is torch's computeStride: the source is cut into chunks of dims that are
 * contiguous with each other, and every chunk must be covered exactly by a run of target dims.
 */
export function viewStrides(shape: Shape, strides: Shape, target: Shape): number[] | null {
  if (shape.length === 0 || numelOf(shape) === 0) return contiguousStrides(target);
  const out = new Array<number>(target.length);
  let viewD = target.length - 1;
  let chunkBase = strides[strides.length - 1]!;
  let tensorNumel = 1;
  let viewNumel = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    tensorNumel *= shape[d]!;
    const chunkEnds = d === 0 || (shape[d - 1] !== 1 && strides[d - 1] !== tensorNumel * chunkBase);
    if (!chunkEnds) continue;
    while (viewD >= 0 && (viewNumel < tensorNumel || target[viewD] === 1)) {
      out[viewD] = viewNumel * chunkBase;
      viewNumel *= target[viewD]!;
      viewD--;
    }
    if (viewNumel !== tensorNumel) return null;
    if (d > 0) {
      chunkBase = strides[d - 1]!;
      tensorNumel = 1;
      viewNumel = 1;
    }
  }
  return viewD === -1 ? out : null;
}
