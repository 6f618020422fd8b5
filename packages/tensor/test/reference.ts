// Plain TypeScript float64 references for every @lowbit/tensor op: obvious loops on Float64Array that
// define the semantics the kernels are tested against (forward directly, backward through central
// finite differences of these functions). Row-major, contiguous; shapes noted per function.

export interface Arr {
  shape: number[];
  data: Float64Array;
}

export function arr(shape: number[], data: ArrayLike<number>): Arr {
  return { shape: [...shape], data: Float64Array.from(data) };
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

// ---- elementwise -------------------------------------------------------------------------------------

/** erf to ~1e-15: Maclaurin series for |x| < 3, Lentz continued fraction for erfc beyond. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = exp(-x²)/√π · 1/(x + 1/2 / (x + 1 / (x + 3/2 / (x + 2 / ...))))
  let f = ax;
  for (let k = 60; k >= 1; k--) f = ax + k / 2 / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

export const UNARY: Record<string, (x: number, alpha?: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  abs: Math.abs,
  silu: (x) => x / (1 + Math.exp(-x)),
  gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  geluTanh: (x) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))),
  relu: (x) => Math.max(x, 0),
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  tanh: Math.tanh,
  square: (x) => x * x,
  pow: (x, a = 1) => x ** a,
};

export function map(a: Arr, f: (x: number) => number): Arr {
  return { shape: [...a.shape], data: a.data.map(f) };
}

export function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const da = a[a.length - r + i] ?? 1;
    const db = b[b.length - r + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`cannot broadcast ${a} and ${b}`);
    out.push(Math.max(da, db));
  }
  return out;
}

/** Index into `a` for a multi-index over a (broadcast) shape `shape`. */
function bindex(a: readonly number[], idx: readonly number[]): number {
  const st = stridesOf(a);
  let off = 0;
  const lead = idx.length - a.length;
  for (let i = 0; i < a.length; i++) off += (a[i] === 1 ? 0 : idx[lead + i]!) * st[i]!;
  return off;
}

function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return idx;
}

export function binary(a: Arr, b: Arr, f: (x: number, y: number) => number): Arr {
  const shape = broadcastShape(a.shape, b.shape);
  const n = numel(shape);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const idx = unravel(i, shape);
    data[i] = f(a.data[bindex(a.shape, idx)]!, b.data[bindex(b.shape, idx)]!);
  }
  return { shape, data };
}

// ---- reductions -----------------------------------------------------------------------------------------

export function reduce(a: Arr, dims: number[], op: "sum" | "mean" | "max", keepdim: boolean): Arr {
  const nd = dims.map((d) => (d < 0 ? d + a.shape.length : d));
  const keepShape = a.shape.map((s, i) => (nd.includes(i) ? 1 : s));
  const out = new Float64Array(numel(keepShape)).fill(op === "max" ? -Infinity : 0);
  const count = numel(nd.map((d) => a.shape[d]!));
  for (let i = 0; i < a.data.length; i++) {
    const idx = unravel(i, a.shape).map((v, d) => (nd.includes(d) ? 0 : v));
    const o = bindex(keepShape, idx);
    out[o] = op === "max" ? Math.max(out[o]!, a.data[i]!) : out[o]! + a.data[i]!;
  }
  if (op === "mean") for (let i = 0; i < out.length; i++) out[i]! /= count;
  return { shape: keepdim ? keepShape : a.shape.filter((_, i) => !nd.includes(i)), data: out };
}

export function argmaxLast(a: Arr): number[] {
  const cols = a.shape[a.shape.length - 1]!;
  const out: number[] = [];
  for (let r = 0; r < a.data.length / cols; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if (a.data[r * cols + c]! > a.data[r * cols + best]!) best = c;
    out.push(best);
  }
  return out;
}

// ---- matmul ---------------------------------------------------------------------------------------------

/** a (..., M, K) @ b (..., K, N) with broadcast batch dims (both at least 2-D). */
export function matmul(a: Arr, b: Arr): Arr {
  const M = a.shape[a.shape.length - 2]!;
  const K = a.shape[a.shape.length - 1]!;
  const N = b.shape[b.shape.length - 1]!;
  const batch = broadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const nb = numel(batch);
  const data = new Float64Array(nb * M * N);
  for (let bi = 0; bi < nb; bi++) {
    const idx = unravel(bi, batch);
    const ao = bindex(a.shape.slice(0, -2), idx) * M * K;
    const bo = bindex(b.shape.slice(0, -2), idx) * K * N;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a.data[ao + i * K + k]! * b.data[bo + k * N + j]!;
        data[bi * M * N + i * N + j] = s;
      }
    }
  }
  return { shape: [...batch, M, N], data };
}

export function transpose2(a: Arr): Arr {
  const [R, C] = a.shape.slice(-2) as [number, number];
  const lead = a.shape.slice(0, -2);
  const data = new Float64Array(a.data.length);
  for (let b = 0; b < numel(lead); b++) for (let i = 0; i < R; i++) for (let j = 0; j < C; j++) data[b * R * C + j * R + i] = a.data[b * R * C + i * C + j]!;
  return { shape: [...lead, C, R], data };
}

/** x (..., K) @ w (N, K)^T + b (N,) */
export function linear(x: Arr, w: Arr, b: Arr | null): Arr {
  const y = matmul(x, transpose2(w));
  return b === null ? y : binary(y, b, (p, q) => p + q);
}

// ---- normalisation, softmax, loss ---------------------------------------------------------------------------

export function softmaxLast(a: Arr, log = false): Arr {
  const cols = a.shape[a.shape.length - 1]!;
  const out = new Float64Array(a.data.length);
  for (let r = 0; r < a.data.length / cols; r++) {
    let m = -Infinity;
    for (let c = 0; c < cols; c++) m = Math.max(m, a.data[r * cols + c]!);
    let s = 0;
    for (let c = 0; c < cols; c++) s += Math.exp(a.data[r * cols + c]! - m);
    for (let c = 0; c < cols; c++) {
      const z = a.data[r * cols + c]! - m;
      out[r * cols + c] = log ? z - Math.log(s) : Math.exp(z) / s;
    }
  }
  return { shape: [...a.shape], data: out };
}

/** HF LlamaRMSNorm: w * x / sqrt(mean(x²) + eps) over the last dim. */
export function rmsNorm(x: Arr, w: Arr, eps: number): Arr {
  const C = w.data.length;
  const out = new Float64Array(x.data.length);
  for (let r = 0; r < x.data.length / C; r++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x.data[r * C + c]! ** 2;
    const inv = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) out[r * C + c] = w.data[c]! * x.data[r * C + c]! * inv;
  }
  return { shape: [...x.shape], data: out };
}

/** HF rotate_half rope: x (B, H, T, D), positions (B, T), invFreq (D/2). */
export function rope(x: Arr, positions: number[][], invFreq: ArrayLike<number>, scaling = 1): Arr {
  const [B, H, T, D] = x.shape as [number, number, number, number];
  const half = D / 2;
  const out = new Float64Array(x.data.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let t = 0; t < T; t++) {
        const base = ((b * H + h) * T + t) * D;
        for (let i = 0; i < half; i++) {
          const ang = positions[b]![t]! * invFreq[i]!;
          const c = Math.cos(ang) * scaling;
          const s = Math.sin(ang) * scaling;
          const x1 = x.data[base + i]!;
          const x2 = x.data[base + half + i]!;
          out[base + i] = x1 * c - x2 * s;
          out[base + half + i] = x2 * c + x1 * s;
        }
      }
  return { shape: [...x.shape], data: out };
}

/**
 * GQA attention: q (B, Hq, Tq, D), k/v (B, Hkv, Tk, D). Query i at position qStart + i; causal hides
 * keys j > qStart + i; mask (B, Tk) 0 hides keys. Rows seeing no key are 0.
 */
export function attention(q: Arr, k: Arr, v: Arr, opts: { causal?: boolean; mask?: number[][] | null; scale?: number; qStart?: number } = {}): Arr {
  const [B, Hq, Tq, D] = q.shape as [number, number, number, number];
  const [, Hkv, Tk] = k.shape as [number, number, number, number];
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const qStart = opts.qStart ?? Tk - Tq;
  const group = Hq / Hkv;
  const out = new Float64Array(q.data.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < Tq; i++) {
        const scores: number[] = [];
        const keys: number[] = [];
        for (let j = 0; j < Tk; j++) {
          if (opts.causal && j > qStart + i) continue;
          if (opts.mask && opts.mask[b]![j] === 0) continue;
          let s = 0;
          for (let d = 0; d < D; d++) s += q.data[((b * Hq + h) * Tq + i) * D + d]! * k.data[((b * Hkv + hk) * Tk + j) * D + d]!;
          scores.push(s * scale);
          keys.push(j);
        }
        if (keys.length === 0) continue;
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((p, c) => p + c, 0);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          keys.forEach((j, n) => (acc += (e[n]! / z) * v.data[((b * Hkv + hk) * Tk + j) * D + d]!));
          out[((b * Hq + h) * Tq + i) * D + d] = acc;
        }
      }
    }
  return { shape: [...q.shape], data: out };
}

/** weight (V, Dm)[ids] → (n, Dm) */
export function embedding(w: Arr, ids: number[]): Arr {
  const Dm = w.shape[1]!;
  const out = new Float64Array(ids.length * Dm);
  ids.forEach((id, r) => {
    for (let c = 0; c < Dm; c++) out[r * Dm + c] = w.data[id * Dm + c]!;
  });
  return { shape: [ids.length, Dm], data: out };
}

/** Mean (or sum / per-row) cross-entropy of logits (N, C) against targets, skipping ignoreIndex. */
export function crossEntropy(logits: Arr, targets: number[], ignoreIndex = -100, reduction: "mean" | "sum" | "none" = "mean"): Arr {
  const ls = softmaxLast(logits, true);
  const C = logits.shape[logits.shape.length - 1]!;
  const per = targets.map((t, r) => (t === ignoreIndex ? 0 : -ls.data[r * C + t]!));
  if (reduction === "none") return arr([targets.length], per);
  const total = per.reduce((a, b) => a + b, 0);
  const count = targets.filter((t) => t !== ignoreIndex).length;
  return arr([], [reduction === "sum" ? total : total / count]);
}

/** One torch.optim.AdamW step on float64 copies; returns new (p, m, v). */
export function adamwStep(
  p: Float64Array, g: Float64Array, m: Float64Array, v: Float64Array, step: number,
  o: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number },
): void {
  const bc1 = 1 - o.beta1 ** step;
  const bc2 = 1 - o.beta2 ** step;
  for (let i = 0; i < p.length; i++) {
    p[i]! *= 1 - o.lr * o.weightDecay;
    m[i] = o.beta1 * m[i]! + (1 - o.beta1) * g[i]!;
    v[i] = o.beta2 * v[i]! + (1 - o.beta2) * g[i]! * g[i]!;
    p[i]! -= (o.lr * (m[i]! / bc1)) / (Math.sqrt(v[i]! / bc2) + o.eps);
  }
}

// ---- finite differences ------------------------------------------------------------------------------------

/**
 * Gradients of L = sum(f(inputs) · r) with respect to each input, by central differences in float64
 * (step h relative to the value's magnitude).
 */
export function numericGrads(f: (inputs: Arr[]) => Arr, inputs: Arr[], r: Float64Array, h = 1e-6): Float64Array[] {
  const loss = (xs: Arr[]): number => {
    const y = f(xs);
    let s = 0;
    for (let i = 0; i < y.data.length; i++) s += y.data[i]! * r[i]!;
    return s;
  };
  return inputs.map((x, k) => {
    const g = new Float64Array(x.data.length);
    for (let i = 0; i < x.data.length; i++) {
      const orig = x.data[i]!;
      const step = h * Math.max(1, Math.abs(orig));
      const plus = inputs.map((t, j) => (j === k ? { shape: t.shape, data: Float64Array.from(t.data) } : t));
      plus[k]!.data[i] = orig + step;
      const minus = inputs.map((t, j) => (j === k ? { shape: t.shape, data: Float64Array.from(t.data) } : t));
      minus[k]!.data[i] = orig - step;
      g[i] = (loss(plus) - loss(minus)) / (2 * step);
    }
    return g;
  });
}
