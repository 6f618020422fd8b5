// Plain TypeScript references for the neural-network kernels (float64 math unless a step is documented to
// round like HF / torch): the semantics the native CPU kernels are tested against. Slow and obvious on purpose.
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "@lowbit/dtypes";

export type FloatName = "float32" | "float16" | "bfloat16";

/** x rounded to a storage dtype (through float32, as the kernels store). */
export function roundTo(dtype: FloatName, x: number): number {
  switch (dtype) {
    case "float32":
      return Math.fround(x);
    case "float16":
      return f16BitsToF32(f32ToF16Bits(x));
    case "bfloat16":
      return bf16BitsToF32(f32ToBf16Bits(x));
  }
}

// ---- unary ------------------------------------------------------------------------------------------

export const UNARY_NAMES = [
  "neg", "exp", "log", "sqrt", "rsqrt", "abs", "silu", "gelu", "geluTanh",
  "relu", "sigmoid", "tanh", "scale", "addScalar", "powScalar", "square",
] as const;
export type UnaryName = (typeof UNARY_NAMES)[number];

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const GELU_KAPPA = 0.044715;

/** erf to ~1e-15 (Abramowitz-Stegun is too coarse; this is the series / continued fraction pair). */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // Maclaurin series: erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 80; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc by Lentz's continued fraction: erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))).
  let f = ax;
  let c = ax;
  let d = 0;
  for (let n = 1; n < 200; n++) {
    const a = n / 2;
    d = ax + a * d;
    d = d === 0 ? 1e-300 : 1 / d;
    c = ax + a / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export function unaryRef(op: UnaryName, x: number, alpha: number): number {
  switch (op) {
    case "neg": return -x;
    case "exp": return Math.exp(x);
    case "log": return Math.log(x);
    case "sqrt": return Math.sqrt(x);
    case "rsqrt": return 1 / Math.sqrt(x);
    case "abs": return Math.abs(x);
    case "silu": return x / (1 + Math.exp(-x));
    case "gelu": return 0.5 * x * (1 + erf(x / Math.SQRT2));
    case "geluTanh": return 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + GELU_KAPPA * x * x * x)));
    case "relu": return x < 0 ? 0 : x;
    case "sigmoid": return 1 / (1 + Math.exp(-x));
    case "tanh": return Math.tanh(x);
    case "scale": return alpha * x;
    case "addScalar": return x + alpha;
    case "powScalar": return Math.pow(x, alpha);
    case "square": return x * x;
  }
}

/** d op(x) / dx, analytic. */
export function unaryDerivRef(op: UnaryName, x: number, alpha: number): number {
  switch (op) {
    case "neg": return -1;
    case "exp": return Math.exp(x);
    case "log": return 1 / x;
    case "sqrt": return 0.5 / Math.sqrt(x);
    case "rsqrt": return -0.5 * Math.pow(x, -1.5);
    case "abs": return Math.sign(x);
    case "silu": {
      const s = 1 / (1 + Math.exp(-x));
      return s * (1 + x * (1 - s));
    }
    case "gelu": return 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
    case "geluTanh": {
      const inner = SQRT_2_OVER_PI * (x + GELU_KAPPA * x * x * x);
      const t = Math.tanh(inner);
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * GELU_KAPPA * x * x);
    }
    case "relu": return x > 0 ? 1 : 0;
    case "sigmoid": {
      const s = 1 / (1 + Math.exp(-x));
      return s * (1 - s);
    }
    case "tanh": {
      const t = Math.tanh(x);
      return 1 - t * t;
    }
    case "scale": return alpha;
    case "addScalar": return 1;
    case "powScalar": return alpha === 0 ? 0 : alpha * Math.pow(x, alpha - 1);
    case "square": return 2 * x;
  }
}

// ---- binary -----------------------------------------------------------------------------------------

export const BINARY_NAMES = ["add", "sub", "mul", "div", "maximum", "minimum"] as const;
export type BinaryName = (typeof BINARY_NAMES)[number];

export function binaryOpRef(op: BinaryName, a: number, b: number): number {
  switch (op) {
    case "add": return a + b;
    case "sub": return a - b;
    case "mul": return a * b;
    case "div": return a / b;
    case "maximum": return Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b);
    case "minimum": return Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b);
  }
}

/** out (shape, contiguous) = a op b, a / b read through element strides. */
export function binaryRef(op: BinaryName, a: ArrayLike<number>, aStrides: number[], b: ArrayLike<number>, bStrides: number[], shape: number[]): Float64Array {
  const numel = shape.reduce((p, d) => p * d, 1);
  const out = new Float64Array(numel);
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < numel; i++) {
    let rem = i;
    for (let d = shape.length - 1; d >= 0; d--) {
      const n = shape[d]!;
      idx[d] = rem % n;
      rem = Math.floor(rem / n);
    }
    let ao = 0;
    let bo = 0;
    for (let d = 0; d < shape.length; d++) {
      ao += idx[d]! * aStrides[d]!;
      bo += idx[d]! * bStrides[d]!;
    }
    out[i] = binaryOpRef(op, a[ao]!, b[bo]!);
  }
  return out;
}

// ---- reductions -------------------------------------------------------------------------------------

export type ReduceName = "sum" | "mean" | "max";

/** x (outer, n, inner) -> (outer, inner). */
export function reduceRef(op: ReduceName, x: ArrayLike<number>, outer: number, n: number, inner: number): Float64Array {
  const out = new Float64Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let acc = op === "max" ? -Infinity : 0;
      for (let j = 0; j < n; j++) {
        const v = x[(o * n + j) * inner + i]!;
        acc = op === "max" ? (Number.isNaN(v) || Number.isNaN(acc) ? NaN : Math.max(acc, v)) : acc + v;
      }
      out[o * inner + i] = op === "mean" ? acc / n : acc;
    }
  }
  return out;
}

/** First index of the row maximum; NaN counts as the maximum. */
export function argmaxRef(x: ArrayLike<number>, rows: number, cols: number): Int32Array {
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 0; c < cols; c++) {
      const v = x[r * cols + c]!;
      const bv = x[r * cols + best]!;
      if (Number.isNaN(bv)) break;
      if (Number.isNaN(v) || v > bv) best = c;
    }
    out[r] = best;
  }
  return out;
}

export function softmaxRef(x: ArrayLike<number>, rows: number, cols: number, log: boolean): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let c = 0; c < cols; c++) m = Math.max(m, x[r * cols + c]!);
    let s = 0;
    for (let c = 0; c < cols; c++) s += Math.exp(x[r * cols + c]! - m);
    for (let c = 0; c < cols; c++) {
      const z = x[r * cols + c]! - m;
      out[r * cols + c] = log ? z - Math.log(s) : Math.exp(z) / s;
    }
  }
  return out;
}

/** gx from gy and the forward output y. */
export function softmaxBackwardRef(gy: ArrayLike<number>, y: ArrayLike<number>, rows: number, cols: number, log: boolean): Float64Array {
  const gx = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += log ? gy[r * cols + c]! : gy[r * cols + c]! * y[r * cols + c]!;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      gx[i] = log ? gy[i]! - Math.exp(y[i]!) * s : y[i]! * (gy[i]! - s);
    }
  }
  return gx;
}

// ---- RMSNorm ----------------------------------------------------------------------------------------

/**
 * HF LlamaRMSNorm: h = x * rsqrt(mean(x^2) + eps), h.to(input_dtype), out = w * h. `roundH` models the cast
 * of h to the input dtype (identity for float32); the final rounding to the output dtype is left to the caller.
 */
export function rmsNormRef(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, cols: number, eps: number, roundH: (v: number) => number = (v) => v): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += x[r * cols + c]! ** 2;
    const inv = 1 / Math.sqrt(ss / cols + eps);
    for (let c = 0; c < cols; c++) out[r * cols + c] = w[c]! * roundH(x[r * cols + c]! * inv);
  }
  return out;
}

/** Analytic gradients of sum(gy * rmsNorm(x, w)) (the cast of h taken as identity): gx, and gw (from rounded h). */
export function rmsNormBackwardRef(gy: ArrayLike<number>, x: ArrayLike<number>, w: ArrayLike<number>, rows: number, cols: number, eps: number, roundH: (v: number) => number = (v) => v): { gx: Float64Array; gw: Float64Array } {
  const gx = new Float64Array(rows * cols);
  const gw = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += x[r * cols + c]! ** 2;
    const inv = 1 / Math.sqrt(ss / cols + eps);
    let dot = 0;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const h = x[i]! * inv;
      gw[c]! += gy[i]! * roundH(h);
      dot += gy[i]! * w[c]! * h;
    }
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const h = x[i]! * inv;
      gx[i] = inv * (gy[i]! * w[c]! - (h * dot) / cols);
    }
  }
  return { gx, gw };
}

// ---- rotary embedding ---------------------------------------------------------------------------------

/**
 * HF rotate_half RoPE on x (B, H, T, D): the angle is float32(float32(pos) * invFreq[i]) like HF's float32
 * matmul; cos/sin (times scaling) are rounded to `dtype` (HF casts them to x.dtype); the rest is float64.
 */
export function ropeRef(x: ArrayLike<number>, positions: ArrayLike<number>, invFreq: ArrayLike<number>, B: number, H: number, T: number, D: number, scaling: number, inverse: boolean, dtype: FloatName): Float64Array {
  const half = D / 2;
  const out = new Float64Array(B * H * T * D);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const pos = Math.fround(positions[b * T + t]!);
      for (let i = 0; i < half; i++) {
        const ang = Math.fround(pos * invFreq[i]!);
        const c = roundTo(dtype, Math.fround(Math.cos(ang)) * Math.fround(scaling));
        let s = roundTo(dtype, Math.fround(Math.sin(ang)) * Math.fround(scaling));
        if (inverse) s = -s;
        for (let h = 0; h < H; h++) {
          const off = ((b * H + h) * T + t) * D;
          const x1 = x[off + i]!;
          const x2 = x[off + i + half]!;
          out[off + i] = x1 * c - x2 * s;
          out[off + i + half] = x2 * c + x1 * s;
        }
      }
    }
  }
  return out;
}

// ---- attention --------------------------------------------------------------------------------------

export interface AttentionDims {
  B: number;
  Hq: number;
  Hkv: number;
  Tq: number;
  Tk: number;
  S: number;
  D: number;
  scale: number;
  causal: boolean;
  qStart: number;
}

/** Whether query position t (absolute qStart + t) of batch b sees key j. mask (B, Tk), 0 = padding. */
function visible(d: AttentionDims, mask: ArrayLike<number> | null, b: number, t: number, j: number): boolean {
  if (j >= d.Tk) return false;
  if (mask !== null && mask[b * d.Tk + j] === 0) return false;
  return !d.causal || j <= d.qStart + t;
}

/** Probabilities P (Tk,) of one query row; null when it sees no key. */
function probsRow(d: AttentionDims, q: ArrayLike<number>, k: ArrayLike<number>, mask: ArrayLike<number> | null, b: number, h: number, t: number): { p: Float64Array; lse: number } | null {
  const kvh = Math.floor(h / (d.Hq / d.Hkv));
  const qo = ((b * d.Hq + h) * d.Tq + t) * d.D;
  const s = new Float64Array(d.Tk).fill(-Infinity);
  let m = -Infinity;
  for (let j = 0; j < d.Tk; j++) {
    if (!visible(d, mask, b, t, j)) continue;
    const ko = ((b * d.Hkv + kvh) * d.S + j) * d.D;
    let dot = 0;
    for (let e = 0; e < d.D; e++) dot += q[qo + e]! * k[ko + e]!;
    s[j] = dot * d.scale;
    m = Math.max(m, s[j]!);
  }
  if (m === -Infinity) return null;
  let sum = 0;
  for (let j = 0; j < d.Tk; j++) sum += Math.exp(s[j]! - m);
  const p = new Float64Array(d.Tk);
  for (let j = 0; j < d.Tk; j++) p[j] = Math.exp(s[j]! - m) / sum;
  return { p, lse: m + Math.log(sum) };
}

/** out (B, Hq, Tq, D) and lse (B, Hq, Tq); rows that see no key give zeros and lse -inf. */
export function attentionRef(d: AttentionDims, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, mask: ArrayLike<number> | null): { out: Float64Array; lse: Float64Array } {
  const out = new Float64Array(d.B * d.Hq * d.Tq * d.D);
  const lse = new Float64Array(d.B * d.Hq * d.Tq).fill(-Infinity);
  for (let b = 0; b < d.B; b++) {
    for (let h = 0; h < d.Hq; h++) {
      const kvh = Math.floor(h / (d.Hq / d.Hkv));
      for (let t = 0; t < d.Tq; t++) {
        const row = probsRow(d, q, k, mask, b, h, t);
        if (row === null) continue;
        const r = (b * d.Hq + h) * d.Tq + t;
        lse[r] = row.lse;
        for (let j = 0; j < d.Tk; j++) {
          const pj = row.p[j]!;
          if (pj === 0) continue;
          const vo = ((b * d.Hkv + kvh) * d.S + j) * d.D;
          for (let e = 0; e < d.D; e++) out[r * d.D + e]! += pj * v[vo + e]!;
        }
      }
    }
  }
  return { out, lse };
}

/** Analytic gradients of sum(gOut * attention(q, k, v)): dq (B,Hq,Tq,D), dk / dv (B,Hkv,S,D) summed over groups. */
export function attentionBackwardRef(d: AttentionDims, gOut: ArrayLike<number>, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, mask: ArrayLike<number> | null): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const dq = new Float64Array(d.B * d.Hq * d.Tq * d.D);
  const dk = new Float64Array(d.B * d.Hkv * d.S * d.D);
  const dv = new Float64Array(d.B * d.Hkv * d.S * d.D);
  for (let b = 0; b < d.B; b++) {
    for (let h = 0; h < d.Hq; h++) {
      const kvh = Math.floor(h / (d.Hq / d.Hkv));
      for (let t = 0; t < d.Tq; t++) {
        const row = probsRow(d, q, k, mask, b, h, t);
        if (row === null) continue;
        const r = (b * d.Hq + h) * d.Tq + t;
        // dP_j = gOut . v_j; dS_j = P_j (dP_j - sum_i P_i dP_i).
        const dp = new Float64Array(d.Tk);
        let pdp = 0;
        for (let j = 0; j < d.Tk; j++) {
          if (row.p[j] === 0) continue;
          const vo = ((b * d.Hkv + kvh) * d.S + j) * d.D;
          let dot = 0;
          for (let e = 0; e < d.D; e++) dot += gOut[r * d.D + e]! * v[vo + e]!;
          dp[j] = dot;
          pdp += row.p[j]! * dot;
        }
        for (let j = 0; j < d.Tk; j++) {
          const pj = row.p[j]!;
          if (pj === 0) continue;
          const ds = pj * (dp[j]! - pdp) * d.scale;
          const ko = ((b * d.Hkv + kvh) * d.S + j) * d.D;
          for (let e = 0; e < d.D; e++) {
            dq[r * d.D + e]! += ds * k[ko + e]!;
            dk[ko + e]! += ds * q[r * d.D + e]!;
            dv[ko + e]! += pj * gOut[r * d.D + e]!;
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

// ---- embedding, cross-entropy, AdamW ----------------------------------------------------------------

/** losses (rows,) and the number of rows whose target is not ignoreIndex. */
export function crossEntropyRef(logits: ArrayLike<number>, targets: ArrayLike<number>, rows: number, cols: number, ignoreIndex: number): { losses: Float64Array; count: number } {
  const losses = new Float64Array(rows);
  const logp = softmaxRef(logits, rows, cols, true);
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const t = targets[r]!;
    if (t === ignoreIndex) continue;
    count++;
    losses[r] = -logp[r * cols + t]!;
  }
  return { losses, count };
}

/** scale * (softmax - onehot), zero rows for ignored targets. */
export function crossEntropyBackwardRef(logits: ArrayLike<number>, targets: ArrayLike<number>, rows: number, cols: number, ignoreIndex: number, scale: number): Float64Array {
  const p = softmaxRef(logits, rows, cols, false);
  for (let r = 0; r < rows; r++) {
    const t = targets[r]!;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      p[i] = t === ignoreIndex ? 0 : scale * (p[i]! - (c === t ? 1 : 0));
    }
  }
  return p;
}

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One torch.optim.AdamW step (float64) on p, m, v in place; `step` is the 1-based step count after it. */
export function adamwRef(p: Float64Array, g: ArrayLike<number>, m: Float64Array, v: Float64Array, hp: AdamWHyper, step: number): void {
  const bc1 = 1 - hp.beta1 ** step;
  const bc2 = 1 - hp.beta2 ** step;
  for (let i = 0; i < p.length; i++) {
    p[i]! *= 1 - hp.lr * hp.weightDecay;
    m[i] = hp.beta1 * m[i]! + (1 - hp.beta1) * g[i]!;
    v[i] = hp.beta2 * v[i]! + (1 - hp.beta2) * g[i]! * g[i]!;
    const denom = Math.sqrt(v[i]!) / Math.sqrt(bc2) + hp.eps;
    p[i]! -= (hp.lr / bc1) * (m[i]! / denom);
  }
}
