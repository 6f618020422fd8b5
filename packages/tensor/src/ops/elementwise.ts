// Elementwise ops on float tensors: unary math (neg, exp, log, sqrt, rsqrt, abs, silu, gelu, relu,
// sigmoid, tanh, square, pow by a scalar), binary arithmetic with numpy broadcasting (add, sub, mul,
// div, maximum, minimum) and their scalar variants. Kernels compute in float32 and round once to the
// tensor's dtype; gradients of broadcast inputs are summed back to the input's shape.

import { ArgumentError, expected } from "@lowbit/dtypes";
import { BinaryOp, UnaryOp, type BinaryOpId, type UnaryOpId } from "@lowbit/kernels";
import { needsGrad, record } from "../autograd.js";
import { checkFloat, checkNumber, checkSameDType, checkSameDevice } from "../check.js";
import { dtypeId, native } from "../native.js";
import { broadcastShapes, broadcastStrides } from "../shape.js";
import { Tensor, empty, full } from "../tensor.js";
import { sumTo } from "./reduce.js";
import { dense } from "./views.js";

type UnaryName = keyof typeof UnaryOp;
type BinaryName = keyof typeof BinaryOp;

/** @internal out = op(x) through the unary kernel, outside autograd. */
export function unaryRaw(op: UnaryName, x: Tensor, alpha = 0): Tensor {
  const src = dense(x);
  const out = empty(x.shape, x.dtype, x.device);
  if (x.numel > 0) native().unary(UnaryOp[op] as UnaryOpId, out.storage, 0, src.storage, src.byteOffset, dtypeId(x.dtype), x.numel, alpha);
  if (src !== x) src.dispose();
  return out;
}

/** @internal gx = gy * op'(x), outside autograd (gy and x of one shape). */
export function unaryBackwardRaw(op: UnaryName, gy: Tensor, x: Tensor, alpha = 0): Tensor {
  const g = dense(gy);
  const xs = dense(x);
  const out = empty(x.shape, x.dtype, x.device);
  if (x.numel > 0) {
    native().unaryBackward(UnaryOp[op] as UnaryOpId, out.storage, 0, g.storage, g.byteOffset, xs.storage, xs.byteOffset, dtypeId(x.dtype), x.numel, alpha);
  }
  if (g !== gy) g.dispose();
  if (xs !== x) xs.dispose();
  return out;
}

function unary(op: UnaryName, name: string, x: Tensor, alpha = 0): Tensor {
  checkFloat(x, "x", name);
  const out = unaryRaw(op, x, alpha);
  if (op === "addScalar") return record(name, out, [x], (g) => [g]);
  if (op === "scale") return record(name, out, [x], (g) => [unaryRaw("scale", g, alpha)]);
  if (op === "neg") return record(name, out, [x], (g) => [unaryRaw("neg", g)]);
  return record(name, out, [x], (g, [xs]) => [unaryBackwardRaw(op, g, xs!, alpha)], [x]);
}

/** @internal out = a op b with broadcasting, outside autograd (same dtype and device, checked by callers). */
export function binaryRaw(op: BinaryName, a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShapes(a.shape, b.shape, op);
  const out = empty(shape, a.dtype, a.device);
  if (out.numel === 0) return out;
  const as = broadcastStrides(a.shape, a.strides, shape);
  const bs = broadcastStrides(b.shape, b.strides, shape);
  const kshape = shape.length === 0 ? [1] : shape;
  native().binary(
    BinaryOp[op] as BinaryOpId,
    out.storage, 0,
    a.storage, a.byteOffset, shape.length === 0 ? [0] : as,
    b.storage, b.byteOffset, shape.length === 0 ? [0] : bs,
    dtypeId(a.dtype), kshape,
  );
  return out;
}

/** A 0-d tensor holding `value` in t's dtype and device (scalar operands of binary ops). */
function scalarLike(t: Tensor, value: number): Tensor {
  return full([], value, { dtype: t.dtype, device: t.device });
}

function binary(op: BinaryName, a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === "number" && typeof b === "number") {
    throw new ArgumentError(`${op}: at least one operand must be a Tensor (received two numbers)`);
  }
  if (typeof a === "number" || typeof b === "number") {
    const t = (typeof a === "number" ? b : a) as Tensor;
    checkFloat(t, typeof a === "number" ? "b" : "a", op);
    const s = checkNumber(typeof a === "number" ? a : b, typeof a === "number" ? "a" : "b", op);
    // Affine cases map onto single unary kernels; the rest broadcast a 0-d tensor.
    if (typeof b === "number") {
      if (op === "add") return unary("addScalar", "add", t, s);
      if (op === "sub") return unary("addScalar", "sub", t, -s);
      if (op === "mul") return unary("scale", "mul", t, s);
      if (op === "div") return unary("scale", "div", t, 1 / s);
    } else {
      if (op === "add") return unary("addScalar", "add", t, s);
      if (op === "mul") return unary("scale", "mul", t, s);
    }
    const st = scalarLike(t, s);
    const out = typeof a === "number" ? binary(op, st, t) : binary(op, t, st);
    st.dispose();
    return out;
  }
  checkFloat(a, "a", op);
  checkFloat(b, "b", op);
  checkSameDevice(op, ["a", a], ["b", b]);
  checkSameDType(op, ["a", a], ["b", b]);
  const out = binaryRaw(op, a, b);
  const aShape = a.shape;
  const bShape = b.shape;
  switch (op) {
    case "add":
      return record(op, out, [a, b], (g, _s, needs) => [needs[0] ? sumTo(g, aShape) : null, needs[1] ? sumTo(g, bShape) : null]);
    case "sub":
      return record(op, out, [a, b], (g, _s, needs) => [needs[0] ? sumTo(g, aShape) : null, needs[1] ? sumTo(unaryRaw("neg", g), bShape) : null]);
    case "mul": {
      // Each gradient reads the other operand only.
      const keepA = needsGrad(b);
      const keepB = needsGrad(a);
      return record(
        op,
        out,
        [a, b],
        (g, saved, needs) => {
          const as = keepA ? saved[0] : undefined;
          const bs = keepB ? saved[keepA ? 1 : 0] : undefined;
          return [needs[0] ? sumTo(binaryRaw("mul", g, bs!), aShape) : null, needs[1] ? sumTo(binaryRaw("mul", g, as!), bShape) : null];
        },
        [...(keepA ? [a] : []), ...(keepB ? [b] : [])],
      );
    }
    case "div":
      return record(
        op,
        out,
        [a, b],
        (g, [as, bs], needs) => {
          const ga = needs[0] ? sumTo(binaryRaw("div", g, bs!), aShape) : null;
          // d(a/b)/db = -a / b²
          const gb = needs[1] ? sumTo(unaryRaw("neg", binaryRaw("div", binaryRaw("mul", g, as!), binaryRaw("mul", bs!, bs!))), bShape) : null;
          return [ga, gb];
        },
        [a, b],
      );
    case "maximum":
    case "minimum":
      return record(
        op,
        out,
        [a, b],
        (g, [as, bs], needs) => {
          // The winner takes the gradient; ties split it evenly (torch). relu'(d) = [d > 0] picks the
          // strict winner for each side, the remainder g - ga - gb is the tie part.
          const d = binaryRaw("sub", as!, bs!);
          const gFull = g; // out's (broadcast) shape, as d's
          const dNeg = unaryRaw("neg", d);
          const [dA, dB] = op === "maximum" ? [d, dNeg] : [dNeg, d];
          const winA = unaryBackwardRaw("relu", gFull, dA);
          const winB = unaryBackwardRaw("relu", gFull, dB);
          const halfTie = unaryRaw("scale", binaryRaw("sub", binaryRaw("sub", gFull, winA), winB), 0.5);
          return [
            needs[0] ? sumTo(binaryRaw("add", winA, halfTie), aShape) : null,
            needs[1] ? sumTo(binaryRaw("add", winB, halfTie), bShape) : null,
          ];
        },
        [a, b],
      );
  }
}

export function add(a: Tensor | number, b: Tensor | number): Tensor {
  return binary("add", a, b);
}
export function sub(a: Tensor | number, b: Tensor | number): Tensor {
  return binary("sub", a, b);
}
export function mul(a: Tensor | number, b: Tensor | number): Tensor {
  return binary("mul", a, b);
}
export function div(a: Tensor | number, b: Tensor | number): Tensor {
  return binary("div", a, b);
}
export function maximum(a: Tensor | number, b: Tensor | number): Tensor {
  return binary("maximum", a, b);
}
export function minimum(a: Tensor | number, b: Tensor | number): Tensor {
  return binary("minimum", a, b);
}

export function neg(x: Tensor): Tensor {
  return unary("neg", "neg", x);
}
export function exp(x: Tensor): Tensor {
  return unary("exp", "exp", x);
}
export function log(x: Tensor): Tensor {
  return unary("log", "log", x);
}
export function sqrt(x: Tensor): Tensor {
  return unary("sqrt", "sqrt", x);
}
export function rsqrt(x: Tensor): Tensor {
  return unary("rsqrt", "rsqrt", x);
}
export function abs(x: Tensor): Tensor {
  return unary("abs", "abs", x);
}
export function silu(x: Tensor): Tensor {
  return unary("silu", "silu", x);
}
/** GELU: "none" is the exact erf form (HF "gelu"), "tanh" the approximation (HF "gelu_pytorch_tanh"). */
export function gelu(x: Tensor, approximate: "none" | "tanh" = "none"): Tensor {
  if (approximate !== "none" && approximate !== "tanh") throw new ArgumentError(expected(`"none" or "tanh"`, "gelu's approximate", approximate));
  return approximate === "tanh" ? unary("geluTanh", "gelu", x) : unary("gelu", "gelu", x);
}
export function relu(x: Tensor): Tensor {
  return unary("relu", "relu", x);
}
export function sigmoid(x: Tensor): Tensor {
  return unary("sigmoid", "sigmoid", x);
}
export function tanh(x: Tensor): Tensor {
  return unary("tanh", "tanh", x);
}
export function square(x: Tensor): Tensor {
  return unary("square", "square", x);
}
/** x ** exponent for a scalar exponent. */
export function pow(x: Tensor, exponent: number): Tensor {
  checkNumber(exponent, "exponent", "pow");
  return unary("powScalar", "pow", x, exponent);
}
/** alpha * x. */
export function scale(x: Tensor, alpha: number): Tensor {
  checkNumber(alpha, "alpha", "scale");
  return unary("scale", "scale", x, alpha);
}
