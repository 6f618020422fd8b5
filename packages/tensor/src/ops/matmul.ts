// Matrix products: matmul (numpy semantics: batched, batch dims broadcast, 1-D operands promoted)
// and linear (x @ W^T + b, the layer op). Transposed views are passed to the kernel as transA/transB
// instead of being copied; batch dims that are broadcast or densely packed become one batch stride.

import { ShapeError } from "@lowbit/dtypes";
import { needsGrad, noGrad, record } from "../autograd.js";
import { checkFloat, checkRank, checkSameDType, checkSameDevice } from "../check.js";
import { dtypeId, native } from "../native.js";
import { broadcastShapes, broadcastStrides, contiguousStrides, formatShape, numelOf, type Shape } from "../shape.js";
import { Tensor, empty } from "../tensor.js";
import { binaryRaw } from "./elementwise.js";
import { reduceRaw, sumTo } from "./reduce.js";
import { materialize, reshape, squeeze, transpose, unsqueeze } from "./views.js";

interface Operand {
  t: Tensor;
  trans: boolean;
  /** Elements between batch items; 0 broadcasts one matrix over the batch. */
  stride: number;
}

/**
 * How to hand x (..., R, C) to the kernel over `batchShape`: as stored when the matrix part is dense
 * row-major (trans false) or dense column-major (trans true) and the batch dims are all broadcast or
 * densely packed; otherwise as a dense copy (which the caller must dispose: `t !== x`).
 */
function operand(x: Tensor, batchShape: Shape): Operand {
  const r = x.ndim;
  const R = x.shape[r - 2]!;
  const C = x.shape[r - 1]!;
  const rs = x.strides[r - 2]!;
  const cs = x.strides[r - 1]!;
  let trans: boolean | null = null;
  if ((cs === 1 || C === 1) && (rs === C || R === 1)) trans = false;
  else if ((rs === 1 || R === 1) && (cs === R || C === 1)) trans = true;
  const bs = broadcastStrides(x.shape.slice(0, r - 2), x.strides.slice(0, r - 2), batchShape);
  let stride: number | null = null;
  if (bs.every((s, i) => s === 0 || batchShape[i] === 1)) stride = 0;
  else {
    const packed = contiguousStrides(batchShape).map((s) => s * R * C);
    if (bs.every((s, i) => batchShape[i] === 1 || s === packed[i])) stride = R * C;
  }
  if (trans !== null && stride !== null) return { t: x, trans, stride };
  const full = x._alias([...batchShape, R, C], [...bs, rs, cs], x.offset);
  const t = materialize(full);
  full.dispose();
  return { t, trans: false, stride: numelOf(batchShape) > 1 ? R * C : 0 };
}

/** @internal out (batch..., M, N) = a (..., M, K) @ b (..., K, N), outside autograd (ranks >= 2). */
export function matmulRaw(a: Tensor, b: Tensor): Tensor {
  const M = a.shape[a.ndim - 2]!;
  const K = a.shape[a.ndim - 1]!;
  const N = b.shape[b.ndim - 1]!;
  const batchShape = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), "matmul");
  const batch = numelOf(batchShape);
  const out = empty([...batchShape, M, N], a.dtype, a.device);
  if (out.numel === 0) return out;
  if (K === 0) return out; // an empty sum: zeros
  const A = operand(a, batchShape);
  const B = operand(b, batchShape);
  // One big GEMM when every A matrix is stacked row-wise under one shared B.
  const fold = batch > 1 && B.stride === 0 && !A.trans && A.stride === M * K;
  native().matmul(
    out.storage, 0, A.t.storage, A.t.byteOffset, B.t.storage, B.t.byteOffset,
    dtypeId(a.dtype), dtypeId(a.dtype),
    fold ? 1 : batch, fold ? batch * M : M, N, K,
    A.trans, B.trans, A.stride, B.stride, fold ? 0 : M * N, 1, 0,
  );
  if (A.t !== a) A.t.dispose();
  if (B.t !== b) B.t.dispose();
  return out;
}

/** Matrix product with numpy semantics (batched, batch dims broadcast; 1-D operands promoted). */
export function matmul(a: Tensor, b: Tensor): Tensor {
  checkFloat(a, "a", "matmul");
  checkFloat(b, "b", "matmul");
  checkSameDevice("matmul", ["a", a], ["b", b]);
  checkSameDType("matmul", ["a", a], ["b", b]);
  if (a.ndim === 0 || b.ndim === 0) throw new ShapeError(`matmul: operands must be at least 1-D but received shapes ${formatShape(a.shape)} and ${formatShape(b.shape)}`);
  if (a.ndim === 1 || b.ndim === 1) {
    // Promote as numpy does and drop the added dim afterwards (autograd flows through the views).
    const a2 = a.ndim === 1 ? unsqueeze(a, 0) : a;
    const b2 = b.ndim === 1 ? unsqueeze(b, -1) : b;
    const p = matmul(a2, b2);
    const out = a.ndim === 1 && b.ndim === 1 ? reshape(p, []) : squeeze(p, a.ndim === 1 ? -2 : -1);
    if (a2 !== a) a2.dispose();
    if (b2 !== b) b2.dispose();
    p.dispose();
    return out;
  }
  const K = a.shape[a.ndim - 1]!;
  if (b.shape[b.ndim - 2] !== K) {
    throw new ShapeError(`matmul: inner dims differ: a ${formatShape(a.shape)} has K = ${K} but b ${formatShape(b.shape)} has ${b.shape[b.ndim - 2]}`);
  }
  const out = matmulRaw(a, b);
  const aShape = a.shape;
  const bShape = b.shape;
  // b is read only for a's gradient and a only for b's.
  const keepB = needsGrad(a);
  const keepA = needsGrad(b);
  return record(
    "matmul",
    out,
    [a, b],
    (g, saved, needs) => {
      const as = keepA ? saved[0] : undefined;
      const bs = keepB ? saved[keepA ? 1 : 0] : undefined;
      // ga = g @ b^T, gb = a^T @ g, each summed over broadcast batch dims.
      const ga = needs[0] ? sumTo(matmulRaw(g, transpose(bs!, -1, -2)), aShape) : null;
      let gb: Tensor | null = null;
      if (needs[1]) {
        if (bShape.length === 2 && aShape.length > 2) {
          // Shared weight: fold the batch into rows, (K, B*M) @ (B*M, N).
          const a2 = reshape(as!, [-1, K]);
          const g2 = reshape(g, [-1, g.shape[g.ndim - 1]!]);
          gb = matmulRaw(transpose(a2, 0, 1), g2);
        } else {
          gb = sumTo(matmulRaw(transpose(as!, -1, -2), g), bShape);
        }
      }
      return [ga, gb];
    },
    [...(keepA ? [a] : []), ...(keepB ? [b] : [])],
  );
}

/**
 * The linear layer op: y (..., N) = x (..., K) @ weight (N, K)^T + bias (N,). The weight's transpose
 * is read in place; the gradients are gx = g @ W, gW = g^T @ x (N, K) and gb = sum of g over rows.
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  checkFloat(x, "x", "linear");
  checkFloat(weight, "weight", "linear");
  checkRank(weight, 2, "weight", "linear", "(out_features, in_features)");
  if (bias !== null) {
    checkFloat(bias, "bias", "linear");
    checkRank(bias, 1, "bias", "linear", "(out_features,)");
  }
  checkSameDevice("linear", ["x", x], ["weight", weight], ["bias", bias]);
  checkSameDType("linear", ["x", x], ["weight", weight]);
  if (bias !== null) checkSameDType("linear", ["x", x], ["bias", bias]);
  const [N, K] = weight.shape as [number, number];
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== K) {
    throw new ShapeError(`linear: expected x of shape (..., ${K}) for a weight of shape ${formatShape(weight.shape)} but received ${formatShape(x.shape)}`);
  }
  if (bias !== null && bias.shape[0] !== N) throw new ShapeError(`linear: expected bias of shape [${N}] but received ${formatShape(bias.shape)}`);
  const x2 = reshapeRaw(x, [-1, K]); // (M, K)
  const wT = weight._alias([K, N], [weight.strides[1]!, weight.strides[0]!], weight.offset);
  let y2 = matmulRaw(x2, wT); // (M, N)
  wT.dispose();
  if (bias !== null) {
    const withBias = binaryRaw("add", y2, bias);
    y2.dispose();
    y2 = withBias;
  }
  const outShape = [...x.shape.slice(0, -1), N];
  const out = y2._alias(outShape, contiguousStrides(outShape), 0);
  y2.dispose();
  x2.dispose();
  const xShape = x.shape;
  // Save only what the needed gradients read: W for gx, x for gW (a frozen W keeps no activation alive).
  const keepW = needsGrad(x);
  const keepX = needsGrad(weight);
  return record(
    "linear",
    out,
    [x, weight, bias],
    (g, saved, needs) => {
      const ws = keepW ? saved[0]! : null;
      const xs = keepX ? saved[keepW ? 1 : 0]! : null;
      const g2 = reshapeRaw(g, [-1, N]); // (M, N)
      const gx = needs[0] ? reshapeRaw(matmulRaw(g2, ws!), [...xShape]) : null; // (M, N) @ (N, K)
      let gw: Tensor | null = null;
      if (needs[1]) {
        const xs2 = reshapeRaw(xs!, [-1, K]);
        gw = matmulRaw(transpose(g2, 0, 1), xs2); // (N, M) @ (M, K)
      }
      const gb = needs[2] ? reshapeRaw(reduceRaw("sum", g2, [0]), [N]) : null;
      return [gx, gw, gb];
    },
    [...(keepW ? [weight] : []), ...(keepX ? [x] : [])],
  );
}

/** reshape outside autograd (a view when possible): for internal (M, K) flattenings. */
function reshapeRaw(x: Tensor, shape: number[]): Tensor {
  return noGrad(() => reshape(x, shape));
}
