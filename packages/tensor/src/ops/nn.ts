// Neural-network ops with fused kernels: softmax / logSoftmax, RMSNorm, rotary embeddings, embedding
// lookup, cross-entropy and dropout. Each forward runs one kernel; each backward its matching
// backward kernel, reading the tensors saved at forward time.

import { ArgumentError, ShapeError, expected } from "@lowbit/dtypes";
import { record } from "../autograd.js";
import { checkFloat, checkIndex, checkNumber, checkRank, checkSameDevice, checkTensor } from "../check.js";
import { dtypeId, native, normalizeDevice, type Device } from "../native.js";
import { defaultGenerator, type Generator } from "../random.js";
import { contiguousStrides, formatShape, normalizeDim } from "../shape.js";
import { Tensor, empty, emptyZeroed, fromTypedArray } from "../tensor.js";
import { binaryRaw, mul, unaryRaw } from "./elementwise.js";
import { reduceRaw } from "./reduce.js";
import { cast, dense, materialize, transpose } from "./views.js";

function softmaxImpl(x: Tensor, dim: number, log: boolean): Tensor {
  const op = log ? "logSoftmax" : "softmax";
  checkFloat(x, "x", op);
  if (x.ndim === 0) throw new ShapeError(`${op}: expected at least a 1-D tensor but received a 0-d tensor`);
  const d = normalizeDim(dim, x.ndim, op);
  if (d !== x.ndim - 1) {
    // Move the axis last, normalise there, move it back (autograd flows through the transposes).
    const t = transpose(x, d, -1);
    const s = softmaxImpl(t, -1, log);
    const out = transpose(s, d, -1);
    t.dispose();
    s.dispose();
    return out;
  }
  const cols = x.shape[d]!;
  const rows = cols === 0 ? 0 : x.numel / cols;
  const src = dense(x);
  const out = empty(x.shape, x.dtype, x.device);
  if (rows > 0) native().softmax(out.storage, 0, src.storage, src.byteOffset, dtypeId(x.dtype), rows, cols, log);
  if (src !== x) src.dispose();
  return record(
    op,
    out,
    [x],
    (g, [y]) => {
      const gd = dense(g);
      const gx = empty(y!.shape, y!.dtype, y!.device);
      if (rows > 0) native().softmaxBackward(gx.storage, 0, gd.storage, gd.byteOffset, y!.storage, y!.byteOffset, dtypeId(y!.dtype), rows, cols, log);
      return [gx];
    },
    [out],
  );
}

/** softmax along `dim` (default last). */
export function softmax(x: Tensor, dim = -1): Tensor {
  return softmaxImpl(x, dim, false);
}

/** log(softmax(x)) along `dim`, computed stably. */
export function logSoftmax(x: Tensor, dim = -1): Tensor {
  return softmaxImpl(x, dim, true);
}

/**
 * HF LlamaRMSNorm: y = weight * (x * rsqrt(mean(x², last dim) + eps)), float32 math; x (..., C),
 * weight (C,) in any float dtype; y has x's dtype.
 */
export function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-6): Tensor {
  checkFloat(x, "x", "rmsNorm");
  checkFloat(weight, "weight", "rmsNorm");
  checkNumber(eps, "eps", "rmsNorm");
  checkSameDevice("rmsNorm", ["x", x], ["weight", weight]);
  checkRank(weight, 1, "weight", "rmsNorm", "(C,)");
  const C = weight.shape[0]!;
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== C) {
    throw new ShapeError(`rmsNorm: expected x of shape (..., ${C}) for weight ${formatShape(weight.shape)} but received ${formatShape(x.shape)}`);
  }
  const rows = C === 0 ? 0 : x.numel / C;
  const xs = dense(x);
  const ws = dense(weight);
  const out = empty(x.shape, x.dtype, x.device);
  if (rows > 0) {
    native().rmsNorm(out.storage, 0, xs.storage, xs.byteOffset, ws.storage, ws.byteOffset, dtypeId(x.dtype), dtypeId(weight.dtype), rows, C, eps);
  }
  const res = record(
    "rmsNorm",
    out,
    [x, weight],
    (g, [xd, wd], needs) => {
      const gd = dense(g);
      const gx = empty(xd!.shape, xd!.dtype, xd!.device);
      const gw = emptyZeroed([C], "float32", xd!.device); // accumulated by the kernel, starts at 0
      if (rows > 0) {
        native().rmsNormBackward(
          gx.storage, 0, gw.storage, 0, gd.storage, gd.byteOffset, xd!.storage, xd!.byteOffset, wd!.storage, wd!.byteOffset,
          dtypeId(xd!.dtype), dtypeId(wd!.dtype), rows, C, eps,
        );
      }
      return [needs[0] ? gx : null, needs[1] ? (wd!.dtype === "float32" ? gw : cast(gw, wd!.dtype)) : null];
    },
    [xs, ws],
  );
  if (xs !== x) xs.dispose();
  if (ws !== weight) ws.dispose();
  return res;
}

/** Rotary inverse frequencies, float32 (headDim / 2,): 1 / theta^(2i / headDim) (HF default rope). */
export function ropeInvFreq(headDim: number, theta = 10000, options: { device?: Device } = {}): Tensor {
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) throw new ArgumentError(expected("a positive even integer", "ropeInvFreq's headDim", headDim));
  checkNumber(theta, "theta", "ropeInvFreq");
  const inv = new Float32Array(headDim / 2);
  for (let i = 0; i < inv.length; i++) inv[i] = 1 / Math.fround(theta ** Math.fround((2 * i) / headDim));
  return fromTypedArray(inv, [headDim / 2], { dtype: "float32", device: normalizeDevice(options.device ?? "cpu") });
}

/**
 * HF rotary position embedding (rotate_half): x (B, H, T, D); positions (B, T) or (T,) int32/int64;
 * invFreq float32 (D/2,). cos and sin are multiplied by `attentionScaling`.
 */
export function rope(x: Tensor, positions: Tensor, invFreq: Tensor, options: { attentionScaling?: number } = {}): Tensor {
  checkFloat(x, "x", "rope");
  checkIndex(positions, "positions", "rope");
  checkTensor(invFreq, "invFreq", "rope");
  checkSameDevice("rope", ["x", x], ["positions", positions], ["invFreq", invFreq]);
  checkRank(x, 4, "x", "rope", "(B, H, T, D)");
  const [B, H, T, D] = x.shape as [number, number, number, number];
  if (D % 2 !== 0) throw new ShapeError(`rope: the head dim D must be even but x has shape ${formatShape(x.shape)}`);
  if (invFreq.dtype !== "float32") throw new ArgumentError(expected("a float32 tensor", "rope's invFreq", invFreq.dtype));
  if (invFreq.ndim !== 1 || invFreq.shape[0] !== D / 2) throw new ShapeError(`rope: expected invFreq of shape [${D / 2}] but received ${formatShape(invFreq.shape)}`);
  const scaling = checkNumber(options.attentionScaling ?? 1, "attentionScaling", "rope");
  let pos: Tensor;
  if (positions.ndim === 1 && positions.shape[0] === T) {
    // The kernel reads (B, T) rows: one batch row is the vector itself, more rows are a broadcast copy.
    const expanded = positions._alias([B, T], [B === 1 ? T : 0, positions.strides[0]!], positions.offset);
    pos = B === 1 && (positions.strides[0] === 1 || T === 1) ? expanded : materialize(expanded);
    if (pos !== expanded) expanded.dispose();
  } else if (positions.ndim === 2 && positions.shape[0] === B && positions.shape[1] === T) {
    pos = positions.isContiguous ? positions._alias() : materialize(positions);
  } else {
    throw new ShapeError(`rope: expected positions of shape [${B}, ${T}] or [${T}] for x ${formatShape(x.shape)} but received ${formatShape(positions.shape)}`);
  }
  const freq = invFreq.isContiguous ? invFreq._alias() : materialize(invFreq);
  const run = (src: Tensor, inverse: boolean, p: Tensor, f: Tensor): Tensor => {
    const s = dense(src);
    const out = empty([B, H, T, D], src.dtype, src.device);
    if (out.numel > 0) {
      native().rope(out.storage, 0, s.storage, s.byteOffset, dtypeId(src.dtype), p.storage, p.byteOffset, dtypeId(p.dtype), f.storage, f.byteOffset, B, H, T, D, scaling, inverse);
    }
    if (s !== src) s.dispose();
    return out;
  };
  const out = run(x, false, pos, freq);
  const res = record("rope", out, [x], (g, [p, f]) => [run(g, true, p!, f!)], [pos, freq]);
  pos.dispose();
  freq.dispose();
  return res;
}

/** out (...ids, dim) = weight[ids]; ids int32/int64 of any shape, checked against the vocab. */
export interface EmbeddingOptions {
  /**
   * On CUDA, check the ids on the device without waiting for it: a decode step can then run without a host
   * synchronisation. Rows of out-of-range ids come out as zeros and the ArgumentError naming the first one is thrown
   * by the next device→host copy (e.g. `toTypedArray`) or synchronize of that device. Ignored on the CPU, which
   * always checks before writing. Default false (check now).
   */
  deferIdCheck?: boolean;
}

export function embedding(weight: Tensor, ids: Tensor, options: EmbeddingOptions = {}): Tensor {
  if (typeof options !== "object" || options === null) throw new ArgumentError(expected("an options object", "embedding's options", options));
  const defer = options.deferIdCheck ?? false;
  if (typeof defer !== "boolean") throw new ArgumentError(expected("a boolean", "embedding's deferIdCheck", defer));
  checkFloat(weight, "weight", "embedding");
  checkIndex(ids, "ids", "embedding");
  checkSameDevice("embedding", ["weight", weight], ["ids", ids]);
  checkRank(weight, 2, "weight", "embedding", "(vocab, dim)");
  const [V, Dm] = weight.shape as [number, number];
  const n = ids.numel;
  const ws = dense(weight);
  const is = dense(ids);
  const out = empty([...ids.shape, Dm], weight.dtype, weight.device);
  if (n > 0 && Dm > 0) native().embedding(out.storage, 0, ws.storage, ws.byteOffset, dtypeId(weight.dtype), is.storage, is.byteOffset, dtypeId(ids.dtype), n, Dm, V, defer);
  if (ws !== weight) ws.dispose();
  const wDtype = weight.dtype;
  const res = record(
    "embedding",
    out,
    [weight, null],
    (g, [idx]) => {
      const gd = dense(g);
      const gw = emptyZeroed([V, Dm], "float32", g.device); // float32 accumulation of repeated ids
      if (n > 0 && Dm > 0) native().embeddingBackward(gw.storage, 0, gd.storage, gd.byteOffset, dtypeId(g.dtype), idx!.storage, idx!.byteOffset, dtypeId(idx!.dtype), n, Dm, V);
      return [wDtype === "float32" ? gw : cast(gw, wDtype), null];
    },
    [is],
  );
  if (is !== ids) is.dispose();
  return res;
}

export interface CrossEntropyOptions {
  /** Targets equal to this are skipped (default -100). */
  ignoreIndex?: number;
  /** "mean" over non-ignored targets (default), "sum", or "none" (per-target losses). */
  reduction?: "mean" | "sum" | "none";
}

/**
 * Cross-entropy of logits (..., C) against int targets (...): -log_softmax(logits)[target]. The loss is
 * float32. With "mean" and every target ignored the result is NaN (as torch).
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options: CrossEntropyOptions = {}): Tensor {
  checkFloat(logits, "logits", "crossEntropy");
  checkIndex(targets, "targets", "crossEntropy");
  checkSameDevice("crossEntropy", ["logits", logits], ["targets", targets]);
  const ignoreIndex = options.ignoreIndex ?? -100;
  if (!Number.isInteger(ignoreIndex)) throw new ArgumentError(expected("an integer", "crossEntropy's ignoreIndex", ignoreIndex));
  const reduction = options.reduction ?? "mean";
  if (reduction !== "mean" && reduction !== "sum" && reduction !== "none") throw new ArgumentError(expected(`"mean", "sum" or "none"`, "crossEntropy's reduction", reduction));
  if (logits.ndim === 0) throw new ShapeError("crossEntropy: logits must be at least 1-D (..., C)");
  const C = logits.shape[logits.ndim - 1]!;
  const rows = logits.numel / Math.max(C, 1);
  const lead = logits.shape.slice(0, -1);
  if (targets.ndim !== lead.length || targets.shape.some((s, i) => s !== lead[i])) {
    throw new ShapeError(`crossEntropy: expected targets of shape ${formatShape(lead)} for logits ${formatShape(logits.shape)} but received ${formatShape(targets.shape)}`);
  }
  const ls = dense(logits);
  const ts = dense(targets);
  const losses = empty([rows], "float32", logits.device);
  const count = rows > 0 ? native().crossEntropy(losses.storage, 0, ls.storage, ls.byteOffset, dtypeId(logits.dtype), ts.storage, ts.byteOffset, dtypeId(targets.dtype), rows, C, ignoreIndex) : 0;
  let out: Tensor;
  if (reduction === "none") {
    out = losses._alias(lead, contiguousStrides(lead), 0);
  } else {
    const total = reduceRaw("sum", losses, [0]); // (1,)
    const reduced = reduction === "mean" ? unaryRaw("scale", total, count > 0 ? 1 / count : Number.NaN) : total;
    out = reduced._alias([], [], 0);
    if (reduced !== total) reduced.dispose();
    total.dispose();
  }
  losses.dispose();
  const lShape = logits.shape;
  const dtype = logits.dtype;
  const gscale = reduction === "mean" ? (count > 0 ? 1 / count : 0) : 1;
  const res = record(
    "crossEntropy",
    out,
    [logits, null],
    (g, [lsv, tsv]) => {
      const gl = empty([rows, C], dtype, g.device);
      if (rows > 0) {
        native().crossEntropyBackward(gl.storage, 0, lsv!.storage, lsv!.byteOffset, dtypeId(dtype), tsv!.storage, tsv!.byteOffset, dtypeId(tsv!.dtype), rows, C, ignoreIndex, gscale);
      }
      // Chain the upstream gradient: a scalar for mean/sum, one value per row for "none".
      const gc = dense(g.dtype === dtype ? g : cast(g, dtype));
      const gRows = reduction === "none" ? gc._alias([rows, 1], [1, 0], gc.offset) : gc._alias([1, 1], [0, 0], gc.offset);
      const scaled = binaryRaw("mul", gl, gRows);
      return [scaled._alias(lShape, contiguousStrides(lShape), 0), null];
    },
    [ls, ts],
  );
  if (ls !== logits) ls.dispose();
  if (ts !== targets) ts.dispose();
  return res;
}

/**
 * Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p). The mask
 * is drawn on the host from `generator` (default: the global one), so runs are reproducible.
 */
export function dropout(x: Tensor, p: number, options: { training?: boolean; generator?: Generator } = {}): Tensor {
  checkFloat(x, "x", "dropout");
  if (typeof p !== "number" || !(p >= 0 && p <= 1)) throw new ArgumentError(expected("a probability in [0, 1]", "dropout's p", p));
  const training = options.training ?? true;
  if (!training || p === 0) return record("dropout", x._alias(), [x], (g) => [g]);
  const gen = options.generator ?? defaultGenerator;
  const keep = 1 / (1 - p);
  const mask = new Float32Array(x.numel);
  for (let i = 0; i < mask.length; i++) mask[i] = gen.nextDouble() >= p ? keep : 0;
  const m = fromTypedArray(mask, [...x.shape], { dtype: x.dtype, device: x.device });
  const out = mul(x, m);
  m.dispose();
  return out;
}

