#!/usr/bin/env node
// Checks the CUDA nn kernels of a built addon against its CPU kernels on a machine with a GPU, with nothing but
// Node: every kernel runs on the same random non-zero inputs on cpu and on cuda:0 and the results must agree
// (float32 within 1e-4, float16 / bfloat16 within 1e-2, relative to each value plus the same fraction of the
// output's largest magnitude; integer and copied outputs exactly). Also: the typed errors of bad ids / targets /
// shapes on cuda (the process keeps working afterwards), run-to-run determinism of the accumulating kernels, and
// timings (decode attention Tk = 4096, 32 q heads / 8 kv heads, D = 128, bf16; prefill attention; a few others).
//
//   node scripts/cuda-nn-check.mjs [path/to/lowbit_kernels.node] [--no-timing]
//   (addon default: $LOWBIT_KERNELS_PATH or build/Release; --no-timing, e.g. under compute-sanitizer;
//   LOWBIT_NN_CHECK_DEVICE=cpu: a dry run of the script itself on a machine without a GPU)
//
// On the device machine (no Node there): build here with `LOWBIT_CUDA_ARCHS=90 LOWBIT_BUILD_DIR=build-nn node
// scripts/build-native.mjs`, then `run` with carry [".gpu/kernels-core/node.xz", "packages/kernels/build-nn/Release"]:
//   python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.gpu/kernels-core/node.xz'),open('/tmp/node','wb'))"
//   chmod +x /tmp/node; cd packages/kernels; A=build-nn/Release/lowbit_kernels.node
//   /tmp/node scripts/cuda-nn-check.mjs $A
//   /usr/local/cuda/bin/compute-sanitizer --tool memcheck /tmp/node scripts/cuda-nn-check.mjs $A --no-timing
//
// Prints one PASS / FAIL line per case and a summary; exits non-zero when a case failed.
import { join } from "node:path";
import { performance } from "node:perf_hooks";

import { addonPathFrom, loadAddon, ArgumentError, ShapeError, DeviceError } from "./check-harness.mjs";

const args = process.argv.slice(2);
const timing = !args.includes("--no-timing");
const positional = args.filter((a) => !a.startsWith("--"));
const addonPath = addonPathFrom(positional[0]);
const b = loadAddon(addonPath);


// LOWBIT_NN_CHECK_DEVICE=cpu compares the CPU with itself: a dry run of this script on a machine without a GPU.
const GPU = process.env.LOWBIT_NN_CHECK_DEVICE ?? "cuda:0";
const dryRun = GPU === "cpu";
const F32 = 0, F16 = 1, BF16 = 2, U8 = 6, I32 = 8, I64 = 9;
const DNAME = { [F32]: "f32", [F16]: "f16", [BF16]: "bf16", [U8]: "u8", [I32]: "i32", [I64]: "i64" };
const SIZE = { [F32]: 4, [F16]: 2, [BF16]: 2, [U8]: 1, [I32]: 4, [I64]: 8 };
const RTOL = { [F32]: 1e-4, [F16]: 1e-2, [BF16]: 1e-2 };
const UNARY = ["neg", "exp", "log", "sqrt", "rsqrt", "abs", "silu", "gelu", "geluTanh", "relu", "sigmoid", "tanh", "scale", "addScalar", "powScalar", "square"];
const BINARY = ["add", "sub", "mul", "div", "maximum", "minimum"];

// ---- reporting --------------------------------------------------------------------------------------------
let passed = 0;
let failed = 0;
function report(ok, name, detail) {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "PASS" : "FAIL"} ${name}${detail ? ` (${detail})` : ""}`);
}
function runCase(name, fn) {
  try {
    const detail = fn();
    report(true, name, detail);
  } catch (error) {
    report(false, name, error instanceof Error ? (error.stack ?? error.message) : String(error));
  }
}
function assert(condition, message) {
  if (!condition) throw new Error(message);
}
function expectThrow(fn, cls, pattern) {
  try {
    fn();
  } catch (error) {
    assert(error instanceof cls, `expected ${cls.name} but got ${error?.constructor?.name}: ${error?.message}`);
    if (pattern) assert(pattern.test(error.message), `message "${error.message}" does not match ${pattern}`);
    return error.message;
  }
  throw new Error(`expected ${cls.name} but nothing was thrown`);
}

// ---- data -------------------------------------------------------------------------------------------------
let seed = 0x12345678;
function rand() {
  // mulberry32
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
// n values uniform in [lo, hi), never exactly 0.
function uniform(n, lo = -1, hi = 1) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = lo + (hi - lo) * rand();
    if (v === 0) v = 0.5 * (hi + lo) + 1e-3;
    a[i] = v;
  }
  return a;
}
function ints(n, lo, hi, dtype = I32) {
  const a = dtype === I64 ? new BigInt64Array(n) : new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = lo + Math.floor((hi - lo) * rand());
    a[i] = dtype === I64 ? BigInt(v) : v;
  }
  return a;
}

const live = [];
function alloc(device, bytes) {
  const s = b.allocate(device, Math.max(bytes, 1));
  live.push(s);
  return s;
}
function freeAll() {
  for (const s of live.splice(0)) s.dispose();
}

// Storage on `device` holding `values` (Float32Array, converted to a float dtype by the CPU cast kernel, or an
// integer typed array stored as is).
function tensor(device, dtype, values) {
  const n = values.length;
  const bytes = n * SIZE[dtype];
  const host = alloc("cpu", bytes);
  if (dtype === F32 || dtype === F16 || dtype === BF16) {
    if (dtype === F32) b.upload(host, 0, values);
    else {
      const tmp = alloc("cpu", n * 4);
      b.upload(tmp, 0, values);
      b.cast(host, 0, dtype, tmp, 0, F32, n);
    }
  } else {
    b.upload(host, 0, values);
  }
  if (device === "cpu") return host;
  const dev = alloc(device, bytes);
  b.copyBytes(dev, 0, host, 0, bytes);
  return dev;
}
// Contents of a float storage as float32 (any device).
function readFloat(storage, dtype, n, offset = 0) {
  const bytes = n * SIZE[dtype];
  const host = alloc("cpu", bytes);
  b.copyBytes(host, 0, storage, offset, bytes);
  const out = new Float32Array(n);
  if (dtype === F32) b.download(host, 0, out);
  else {
    const tmp = alloc("cpu", n * 4);
    b.cast(tmp, 0, F32, host, 0, dtype, n);
    b.download(tmp, 0, out);
  }
  return out;
}
function readBytes(storage, n, offset = 0) {
  const out = new Uint8Array(n);
  if (n === 0) return out;
  if (storage.device === "cpu") b.download(storage, offset, out);
  else {
    const host = alloc("cpu", n);
    b.copyBytes(host, 0, storage, offset, n);
    b.download(host, 0, out);
  }
  return out;
}
function readInt32(storage, n) {
  const u = readBytes(storage, n * 4);
  return new Int32Array(u.buffer, u.byteOffset, n);
}

// got ≈ want: |g - w| <= rtol * (|w| + max|want|); NaN matches NaN, ±inf matches itself. Returns the largest
// error relative to (|w| + max|want|) as a detail string.
function allclose(what, got, want, rtol) {
  assert(got.length === want.length, `${what}: length ${got.length} vs ${want.length}`);
  let maxAbs = 0;
  for (const w of want) if (Number.isFinite(w)) maxAbs = Math.max(maxAbs, Math.abs(w));
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i], w = want[i];
    if (Number.isNaN(w) || !Number.isFinite(w)) {
      assert(Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w)), `${what}[${i}]: got ${g}, want ${w}`);
      continue;
    }
    const err = Math.abs(g - w) / (Math.abs(w) + maxAbs || 1);
    if (!(err <= rtol)) throw new Error(`${what}[${i}]: got ${g}, want ${w} (relative error ${err.toExponential(2)} > ${rtol})`);
    worst = Math.max(worst, err);
  }
  return `${what} max err ${worst.toExponential(1)}`;
}
function sameBytes(what, got, want) {
  assert(got.length === want.length, `${what}: length differs`);
  for (let i = 0; i < got.length; i++) assert(got[i] === want[i], `${what}: byte ${i} differs (${got[i]} vs ${want[i]})`);
  return `${what} identical`;
}

// Runs `call(st)` on cpu and on cuda with the same inputs. spec.inputs: {name: [dtype, values]}; spec.outputs:
// {name: [dtype, n, initialValues?, rtol?]}. Returns {cpu, cuda, ret} with the outputs read back as float32 (or Int32Array
// for I32 outputs).
function both(spec, call) {
  const res = {};
  for (const [key, device] of [["cpu", "cpu"], ["cuda", GPU]]) {
    const st = {};
    for (const [name, [dtype, values]] of Object.entries(spec.inputs ?? {})) st[name] = values === null ? null : tensor(device, dtype, values);
    for (const [name, [dtype, n, init]] of Object.entries(spec.outputs)) {
      st[name] = init ? tensor(device, dtype, init) : alloc(device, n * SIZE[dtype]);
    }
    const ret = call(st, device);
    const outs = {};
    for (const [name, [dtype, n]] of Object.entries(spec.outputs)) {
      outs[name] = dtype === I32 ? readInt32(st[name], n) : readFloat(st[name], dtype, n);
    }
    res[key] = { outs, ret };
  }
  return res;
}
// Compares every output of `both` (rtol from the output dtype unless given).
function compareAll(spec, res, rtol) {
  const details = [];
  for (const [name, [dtype, , , rtolOut]] of Object.entries(spec.outputs)) {
    const got = res.cuda.outs[name], want = res.cpu.outs[name];
    if (dtype === I32) {
      for (let i = 0; i < want.length; i++) assert(got[i] === want[i], `${name}[${i}]: got ${got[i]}, want ${want[i]}`);
      details.push(`${name} exact`);
    } else {
      details.push(allclose(name, got, want, rtolOut ?? rtol ?? RTOL[dtype]));
    }
  }
  return details.join(", ");
}
function check(name, spec, call, rtol) {
  runCase(name, () => {
    try {
      return compareAll(spec, both(spec, call), rtol);
    } finally {
      freeAll();
    }
  });
}

// ---- start ------------------------------------------------------------------------------------------------
console.log(`addon ${addonPath} version ${b.version}, cudaCompiled ${b.cudaCompiled}`);
if (dryRun) {
  console.log("dry run: cpu against cpu");
} else {
  if (!b.cudaCompiled || b.cudaDeviceCount() < 1) {
    console.log(`FAIL no CUDA device: ${b.cudaUnavailableReason()}`);
    process.exit(1);
  }
  const info = b.deviceInfo(GPU);
  console.log(`device ${info.name}, ${info.multiProcessorCount} SMs, cc ${info.computeCapability.join(".")}`);
}

// ---- elementwise ------------------------------------------------------------------------------------------
const positiveOps = new Set(["log", "sqrt", "rsqrt", "powScalar"]);
const alphaOf = { scale: 1.7, addScalar: 0.3, powScalar: 2.5 };
for (const dtype of [F32, BF16, F16]) {
  const n = 10007;
  UNARY.forEach((op, id) => {
    if (dtype === F16 && !["exp", "gelu", "silu", "powScalar"].includes(op)) return;
    const x = positiveOps.has(op) ? uniform(n, 0.1, 3) : uniform(n, -3, 3);
    const g = uniform(n, -1, 1);
    const alpha = alphaOf[op] ?? 0;
    const spec = { inputs: { x: [dtype, x] }, outputs: { out: [dtype, n] } };
    check(`unary ${op} ${DNAME[dtype]} n=${n}`, spec, (s) => b.unary(id, s.out, 0, s.x, 0, dtype, n, alpha));
    const specB = { inputs: { x: [dtype, x], gy: [dtype, g] }, outputs: { gx: [dtype, n] } };
    check(`unaryBackward ${op} ${DNAME[dtype]} n=${n}`, specB, (s) => b.unaryBackward(id, s.gx, 0, s.gy, 0, s.x, 0, dtype, n, alpha));
  });
}
check("unary powScalar alpha=2 (exact square) f32 at a byte offset", { inputs: { x: [F32, uniform(1001, -2, 2)] }, outputs: { out: [F32, 1002] } }, (s) =>
  b.unary(14, s.out, 4, s.x, 0, F32, 1001, 2),
);

{
  const binCases = [
    { label: "contiguous [37,129]", shape: [37, 129], as: [129, 1], bs: [129, 1], na: 37 * 129, nb: 37 * 129 },
    { label: "broadcast [4,5,33] a(4,1,33) b(1,5,33)", shape: [4, 5, 33], as: [33, 0, 1], bs: [0, 33, 1], na: 4 * 33, nb: 5 * 33 },
    { label: "row + bias [64,100] b(100)", shape: [64, 100], as: [100, 1], bs: [0, 1], na: 6400, nb: 100 },
    { label: "transposed b [16,24] b(24,16)", shape: [16, 24], as: [24, 1], bs: [1, 16], na: 384, nb: 384 },
    { label: "scalar b [3,7,11]", shape: [3, 7, 11], as: [77, 11, 1], bs: [0, 0, 0], na: 231, nb: 1 },
  ];
  for (const dtype of [F32, BF16]) {
    for (const c of binCases) {
      const numel = c.shape.reduce((x, y) => x * y, 1);
      BINARY.forEach((op, id) => {
        const a = uniform(c.na, -2, 2);
        const bv = op === "div" ? uniform(c.nb, 0.5, 2) : uniform(c.nb, -2, 2);
        const spec = { inputs: { a: [dtype, a], b: [dtype, bv] }, outputs: { out: [dtype, numel] } };
        check(`binary ${op} ${DNAME[dtype]} ${c.label}`, spec, (s) => b.binary(id, s.out, 0, s.a, 0, c.as, s.b, 0, c.bs, dtype, c.shape));
      });
    }
  }
}

// ---- reductions and normalisation ------------------------------------------------------------------------------
for (const dtype of [F32, BF16]) {
  for (const [outer, n, inner] of [[7, 300, 1], [3, 3000, 1], [3, 50, 77], [1, 5000, 40], [2, 1, 9], [3, 0, 4]]) {
    ["sum", "mean", "max"].forEach((op, id) => {
      if (op === "max" && n === 0) return;
      const x = uniform(outer * n * inner, -2, 2);
      const spec = { inputs: { x: [dtype, x] }, outputs: { out: [dtype, outer * inner] } };
      check(`reduce ${op} ${DNAME[dtype]} (${outer},${n},${inner})`, spec, (s) => b.reduce(id, s.out, 0, s.x, 0, dtype, outer, n, inner));
    });
  }
  for (const [rows, cols, ties] of [[33, 1000, false], [5, 5000, false], [40, 37, true], [3, 4000, true]]) {
    const x = ties ? Float32Array.from(uniform(rows * cols, 0, 5), Math.floor) : uniform(rows * cols, -3, 3);
    const spec = { inputs: { x: [dtype, x] }, outputs: { out: [I32, rows] } };
    check(`argmax ${DNAME[dtype]} (${rows},${cols})${ties ? " with ties" : ""}`, spec, (s) => b.argmax(s.out, 0, s.x, 0, dtype, rows, cols));
  }
  for (const [rows, cols] of [[64, 100], [8, 3000], [3, 50000], [100, 1]]) {
    for (const log of [false, true]) {
      const x = uniform(rows * cols, -4, 4);
      const spec = { inputs: { x: [dtype, x] }, outputs: { out: [dtype, rows * cols] } };
      check(`${log ? "logSoftmax" : "softmax"} ${DNAME[dtype]} (${rows},${cols})`, spec, (s) => b.softmax(s.out, 0, s.x, 0, dtype, rows, cols, log));
      const y = log ? uniform(rows * cols, -6, -0.1) : uniform(rows * cols, 0.001, 0.5);
      const specB = { inputs: { gy: [dtype, uniform(rows * cols)], y: [dtype, y] }, outputs: { gx: [dtype, rows * cols] } };
      check(`${log ? "logSoftmax" : "softmax"}Backward ${DNAME[dtype]} (${rows},${cols})`, specB, (s) =>
        b.softmaxBackward(s.gx, 0, s.gy, 0, s.y, 0, dtype, rows, cols, log),
      );
    }
  }
}
check(
  "softmax f32 rows with -inf (masked) entries",
  { inputs: { x: [F32, Float32Array.from(uniform(4 * 40, -3, 3), (v, i) => (i % 40 < 10 || i >= 120 ? -Infinity : v))] }, outputs: { out: [F32, 160] } },
  (s) => b.softmax(s.out, 0, s.x, 0, F32, 4, 40, false),
);

for (const [dtype, wdt, rows, cols] of [[BF16, BF16, 17, 4096], [F32, F32, 33, 200], [F16, F32, 5, 64], [BF16, F32, 300, 1500]]) {
  const x = uniform(rows * cols, -2, 2);
  const w = uniform(cols, 0.5, 1.5);
  const spec = { inputs: { x: [dtype, x], w: [wdt, w] }, outputs: { out: [dtype, rows * cols] } };
  const tag = `${DNAME[dtype]} w ${DNAME[wdt]} (${rows},${cols})`;
  check(`rmsNorm ${tag}`, spec, (s) => b.rmsNorm(s.out, 0, s.x, 0, s.w, 0, dtype, wdt, rows, cols, 1e-6));
  const specB = {
    inputs: { x: [dtype, x], w: [wdt, w], gy: [dtype, uniform(rows * cols)] },
    // gw (float32) sums products with round_dt(h): a last-bit difference of h can flip one rounding, so 16-bit
    // inputs get 2e-3.
    outputs: { gx: [dtype, rows * cols], gw: [F32, cols, uniform(cols), dtype === F32 ? 1e-4 : 2e-3] },
  };
  check(`rmsNormBackward ${tag}`, specB, (s) => b.rmsNormBackward(s.gx, 0, s.gw, 0, s.gy, 0, s.x, 0, s.w, 0, dtype, wdt, rows, cols, 1e-6));
}

// ---- rope -------------------------------------------------------------------------------------------------
for (const [dtype, pdt, B, H, T, D, scaling, inverse] of [
  [F32, I32, 2, 3, 17, 64, 1.0, false],
  [F32, I64, 2, 3, 17, 64, 0.9, true],
  [BF16, I32, 1, 8, 33, 128, 1.0, false],
  [F16, I64, 2, 2, 5, 10, 1.2, true],
]) {
  const invFreq = new Float32Array(D / 2).map((_, i) => 1 / Math.pow(10000, (2 * i) / D));
  const spec = {
    inputs: { x: [dtype, uniform(B * H * T * D, -2, 2)], pos: [pdt, ints(B * T, 0, 4000, pdt)], inv: [F32, invFreq] },
    outputs: { out: [dtype, B * H * T * D] },
  };
  check(`rope ${DNAME[dtype]} pos ${DNAME[pdt]} (B${B},H${H},T${T},D${D}) scaling ${scaling}${inverse ? " inverse" : ""}`, spec, (s) =>
    b.rope(s.out, 0, s.x, 0, dtype, s.pos, 0, pdt, s.inv, 0, B, H, T, D, scaling, inverse),
  );
}

// ---- attention --------------------------------------------------------------------------------------------
function maskData(B, Tk, pattern) {
  const m = new Uint8Array(B * Tk).fill(1);
  if (pattern === "pad") {
    // batch 0: left padding of 3; last batch: every 7th key masked.
    for (let j = 0; j < Math.min(3, Tk); j++) m[j] = 0;
    for (let j = 0; j < Tk; j += 7) m[(B - 1) * Tk + j] = 0;
  } else if (pattern === "empty") {
    for (let j = 0; j < Tk; j++) m[j] = 0; // batch 0 sees nothing
  }
  return m;
}
const attnCases = [
  // decode (flash-decoding path)
  { label: "decode", dtype: F32, B: 2, Hq: 8, Hkv: 2, Tq: 1, Tk: 300, S: 512, D: 64, causal: true, qStart: 299, mask: "pad" },
  { label: "decode", dtype: BF16, B: 2, Hq: 8, Hkv: 2, Tq: 1, Tk: 300, S: 512, D: 64, causal: true, qStart: 299, mask: "pad" },
  { label: "decode llama", dtype: BF16, B: 1, Hq: 32, Hkv: 8, Tq: 1, Tk: 4096, S: 4096, D: 128, causal: true, qStart: 4095, mask: null },
  { label: "decode Tq=2 G=4", dtype: F16, B: 2, Hq: 8, Hkv: 2, Tq: 2, Tk: 77, S: 100, D: 128, causal: true, qStart: 75, mask: "pad" },
  { label: "decode G=8 D=256", dtype: F32, B: 1, Hq: 8, Hkv: 1, Tq: 1, Tk: 130, S: 130, D: 256, causal: false, qStart: 0, mask: null },
  { label: "decode D=66 (unaligned lanes)", dtype: F32, B: 1, Hq: 4, Hkv: 4, Tq: 1, Tk: 45, S: 64, D: 66, causal: false, qStart: 0, mask: "pad" },
  { label: "decode short (one split)", dtype: BF16, B: 3, Hq: 4, Hkv: 1, Tq: 1, Tk: 5, S: 8, D: 32, causal: true, qStart: 4, mask: null },
  { label: "decode empty row", dtype: F32, B: 2, Hq: 4, Hkv: 2, Tq: 1, Tk: 40, S: 40, D: 64, causal: false, qStart: 0, mask: "empty" },
  // prefill (tiled path)
  { label: "prefill", dtype: F32, B: 2, Hq: 4, Hkv: 2, Tq: 37, Tk: 42, S: 64, D: 64, causal: true, qStart: 5, mask: "pad" },
  { label: "prefill", dtype: BF16, B: 2, Hq: 4, Hkv: 2, Tq: 37, Tk: 42, S: 64, D: 64, causal: true, qStart: 5, mask: "pad" },
  { label: "prefill", dtype: F16, B: 1, Hq: 6, Hkv: 3, Tq: 70, Tk: 70, S: 80, D: 128, causal: true, qStart: 0, mask: null },
  { label: "prefill D=80 non-causal", dtype: F32, B: 1, Hq: 2, Hkv: 1, Tq: 50, Tk: 70, S: 70, D: 80, causal: false, qStart: 0, mask: null },
  { label: "prefill D=256", dtype: BF16, B: 1, Hq: 4, Hkv: 2, Tq: 20, Tk: 20, S: 24, D: 256, causal: true, qStart: 0, mask: "pad" },
  { label: "prefill empty rows", dtype: F32, B: 2, Hq: 2, Hkv: 1, Tq: 33, Tk: 33, S: 33, D: 32, causal: true, qStart: 0, mask: "empty" },
  { label: "prefill long", dtype: BF16, B: 1, Hq: 8, Hkv: 2, Tq: 300, Tk: 300, S: 300, D: 128, causal: true, qStart: 0, mask: null },
];
function attnTag(c) {
  return `${c.label} ${DNAME[c.dtype]} B${c.B} Hq${c.Hq} Hkv${c.Hkv} Tq${c.Tq} Tk${c.Tk} S${c.S} D${c.D}${c.causal ? ` causal q0=${c.qStart}` : ""}${c.mask ? ` mask:${c.mask}` : ""}`;
}
function attnInputs(c) {
  const nq = c.B * c.Hq * c.Tq * c.D, nkv = c.B * c.Hkv * c.S * c.D;
  return { q: uniform(nq, -1, 1), k: uniform(nkv, -1, 1), v: uniform(nkv, -1, 1), mask: c.mask ? maskData(c.B, c.Tk, c.mask) : null, nq, nkv };
}
const scaleOf = (c) => 1 / Math.sqrt(c.D);
for (const c of attnCases) {
  const d = attnInputs(c);
  const rows = c.B * c.Hq * c.Tq;
  const spec = {
    inputs: { q: [c.dtype, d.q], k: [c.dtype, d.k], v: [c.dtype, d.v], mask: [U8, d.mask] },
    outputs: { out: [c.dtype, d.nq], lse: [F32, rows] },
  };
  check(`attention ${attnTag(c)}`, spec, (s) =>
    b.attention(s.out, 0, s.q, 0, s.k, 0, s.v, 0, c.dtype, c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.S, c.D, scaleOf(c), c.causal, c.qStart, s.mask, 0, s.lse, 0),
  );
}
// Backward: out and lse come from the CPU forward; both devices get them as inputs.
for (const c of attnCases.filter((x) => !x.label.startsWith("decode llama"))) {
  runCase(`attentionBackward ${attnTag(c)}`, () => {
    try {
      const d = attnInputs(c);
      const rows = c.B * c.Hq * c.Tq;
      const q = tensor("cpu", c.dtype, d.q), k = tensor("cpu", c.dtype, d.k), v = tensor("cpu", c.dtype, d.v);
      const mask = d.mask ? tensor("cpu", U8, d.mask) : null;
      const out = alloc("cpu", d.nq * SIZE[c.dtype]);
      const lse = alloc("cpu", rows * 4);
      b.attention(out, 0, q, 0, k, 0, v, 0, c.dtype, c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.S, c.D, scaleOf(c), c.causal, c.qStart, mask, 0, lse, 0);
      const outF = readFloat(out, c.dtype, d.nq), lseF = readFloat(lse, F32, rows);
      const spec = {
        inputs: { g: [c.dtype, uniform(d.nq)], q: [c.dtype, d.q], k: [c.dtype, d.k], v: [c.dtype, d.v], out: [c.dtype, outF], lse: [F32, lseF], mask: [U8, d.mask] },
        outputs: { dq: [c.dtype, d.nq], dk: [c.dtype, d.nkv, uniform(d.nkv)], dv: [c.dtype, d.nkv, uniform(d.nkv)] },
      };
      const res = both(spec, (s) =>
        b.attentionBackward(s.dq, 0, s.dk, 0, s.dv, 0, s.g, 0, s.q, 0, s.k, 0, s.v, 0, s.out, 0, s.lse, 0, c.dtype, c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.S, c.D, scaleOf(c), c.causal, c.qStart, s.mask, 0),
      );
      return compareAll(spec, res);
    } finally {
      freeAll();
    }
  });
}

// ---- embedding, cross-entropy, adamw ----------------------------------------------------------------------------
for (const [wdt, idt, n, dim, vocab] of [[BF16, I32, 300, 128, 1000], [F32, I64, 257, 7, 50], [F16, I32, 100, 3, 20], [F32, I32, 64, 0, 10]]) {
  runCase(`embedding ${DNAME[wdt]} ids ${DNAME[idt]} n=${n} dim=${dim} vocab=${vocab}`, () => {
    try {
      const w = uniform(vocab * dim, -1, 1), ids = ints(n, 0, vocab, idt);
      const outs = [];
      for (const device of ["cpu", GPU]) {
        const ws = tensor(device, wdt, w), is = tensor(device, idt, ids), out = alloc(device, n * dim * SIZE[wdt]);
        b.embedding(out, 0, ws, 0, wdt, is, 0, idt, n, dim, vocab);
        outs.push(readBytes(out, n * dim * SIZE[wdt]));
      }
      return sameBytes("out", outs[1], outs[0]);
    } finally {
      freeAll();
    }
  });
}
for (const [gdt, idt, n, dim, vocab] of [[F32, I32, 2000, 300, 50], [BF16, I64, 777, 64, 1000], [F32, I32, 5, 1, 3]]) {
  runCase(`embeddingBackward ${DNAME[gdt]} ids ${DNAME[idt]} n=${n} dim=${dim} vocab=${vocab} (gw +=, and run to run)`, () => {
    try {
      const gy = uniform(n * dim), ids = ints(n, 0, vocab, idt), gw0 = uniform(vocab * dim);
      const outs = [];
      for (const device of ["cpu", GPU, GPU]) {
        const gs = tensor(device, gdt, gy), is = tensor(device, idt, ids), gw = tensor(device, F32, gw0);
        b.embeddingBackward(gw, 0, gs, 0, gdt, is, 0, idt, n, dim, vocab);
        outs.push(readFloat(gw, F32, vocab * dim));
      }
      const cmp = allclose("gw", outs[1], outs[0], 1e-5);
      const bu8 = (a) => new Uint8Array(a.buffer);
      sameBytes("gw run 2", bu8(outs[2]), bu8(outs[1]));
      let exact = true;
      for (let i = 0; i < outs[0].length; i++) exact &&= Object.is(outs[0][i], outs[1][i]);
      return `${cmp}, deterministic, ${exact ? "bit-identical to cpu" : "not bit-identical to cpu"}`;
    } finally {
      freeAll();
    }
  });
}
for (const [dtype, tdt, rows, cols, ignore] of [[F32, I32, 64, 1000, -100], [BF16, I64, 8, 50000, -100], [F32, I64, 40, 7, 3], [BF16, I32, 16, 2048, -1]]) {
  runCase(`crossEntropy + backward ${DNAME[dtype]} targets ${DNAME[tdt]} (${rows},${cols}) ignore=${ignore}`, () => {
    try {
      const logits = uniform(rows * cols, -5, 5);
      const t = ints(rows, 0, cols, tdt);
      for (let r = 0; r < rows; r += 5) t[r] = tdt === I64 ? BigInt(ignore) : ignore; // some ignored rows
      const spec = { inputs: { x: [dtype, logits], t: [tdt, t] }, outputs: { loss: [F32, rows] } };
      const res = both(spec, (s) => b.crossEntropy(s.loss, 0, s.x, 0, dtype, s.t, 0, tdt, rows, cols, ignore));
      assert(res.cuda.ret === res.cpu.ret, `count: cuda ${res.cuda.ret}, cpu ${res.cpu.ret}`);
      const d1 = compareAll(spec, res);
      const scale = 1 / res.cpu.ret;
      const specB = { inputs: spec.inputs, outputs: { gx: [dtype, rows * cols] } };
      const d2 = compareAll(specB, both(specB, (s) => b.crossEntropyBackward(s.gx, 0, s.x, 0, dtype, s.t, 0, tdt, rows, cols, ignore, scale)));
      return `count ${res.cuda.ret}, ${d1}, ${d2}`;
    } finally {
      freeAll();
    }
  });
}
for (const [pdt, gdt, n] of [[F32, F32, 10000], [BF16, BF16, 4099], [F32, BF16, 333], [F16, F32, 1000]]) {
  const spec = {
    inputs: { g: [gdt, uniform(n, -0.1, 0.1)] },
    outputs: { p: [pdt, n, uniform(n)], m: [F32, n, uniform(n, -0.01, 0.01)], v: [F32, n, uniform(n, 1e-6, 1e-4)] },
  };
  check(`adamw param ${DNAME[pdt]} grad ${DNAME[gdt]} n=${n}`, spec, (s) => b.adamw(s.p, 0, s.g, 0, s.m, 0, s.v, 0, pdt, gdt, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, 3));
}

// ---- determinism of the accumulating / split kernels ---------------------------------------------------------
runCase("run-to-run identical: rmsNormBackward gw, attentionBackward dk/dv, decode attention", () => {
  try {
    const rows = 300, cols = 1500;
    const x = tensor(GPU, BF16, uniform(rows * cols)), w = tensor(GPU, BF16, uniform(cols)), gy = tensor(GPU, BF16, uniform(rows * cols));
    const gws = [];
    for (let r = 0; r < 2; r++) {
      const gx = alloc(GPU, rows * cols * 2), gw = tensor(GPU, F32, new Float32Array(cols).fill(0.25));
      b.rmsNormBackward(gx, 0, gw, 0, gy, 0, x, 0, w, 0, BF16, BF16, rows, cols, 1e-5);
      gws.push(readBytes(gw, cols * 4));
    }
    sameBytes("gw", gws[1], gws[0]);
    const c = { B: 1, Hq: 8, Hkv: 2, Tq: 100, Tk: 100, S: 100, D: 64 };
    const nq = c.B * c.Hq * c.Tq * c.D, nkv = c.B * c.Hkv * c.S * c.D;
    const q = tensor(GPU, BF16, uniform(nq)), k = tensor(GPU, BF16, uniform(nkv)), v = tensor(GPU, BF16, uniform(nkv)), g = tensor(GPU, BF16, uniform(nq));
    const out = alloc(GPU, nq * 2), lse = alloc(GPU, c.B * c.Hq * c.Tq * 4);
    b.attention(out, 0, q, 0, k, 0, v, 0, BF16, c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.S, c.D, 0.125, true, 0, null, 0, lse, 0);
    const grads = [];
    for (let r = 0; r < 2; r++) {
      const dq = alloc(GPU, nq * 2), dk = alloc(GPU, nkv * 2), dv = alloc(GPU, nkv * 2);
      b.attentionBackward(dq, 0, dk, 0, dv, 0, g, 0, q, 0, k, 0, v, 0, out, 0, lse, 0, BF16, c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.S, c.D, 0.125, true, 0, null, 0);
      grads.push([readBytes(dq, nq * 2), readBytes(dk, nkv * 2), readBytes(dv, nkv * 2)]);
    }
    for (let i = 0; i < 3; i++) sameBytes(["dq", "dk", "dv"][i], grads[1][i], grads[0][i]);
    const dec = [];
    const kc = tensor(GPU, BF16, uniform(2 * 4096 * 128)), vc = tensor(GPU, BF16, uniform(2 * 4096 * 128)), qd = tensor(GPU, BF16, uniform(8 * 128));
    for (let r = 0; r < 2; r++) {
      const o = alloc(GPU, 8 * 128 * 2);
      b.attention(o, 0, qd, 0, kc, 0, vc, 0, BF16, 1, 8, 2, 1, 4000, 4096, 128, 0.088, true, 3999, null, 0, null, 0);
      dec.push(readBytes(o, 8 * 128 * 2));
    }
    sameBytes("decode out", dec[1], dec[0]);
    return "identical";
  } finally {
    freeAll();
  }
});

// ---- errors on cuda ---------------------------------------------------------------------------------------
runCase("embedding bad id on cuda → ArgumentError naming ids[5]; the device keeps working", () => {
  try {
    const w = tensor(GPU, F32, uniform(10 * 4)), out = alloc(GPU, 8 * 16);
    const ids = tensor(GPU, I32, Int32Array.from([1, 2, 3, 4, 0, 10, -1, 2]));
    const msg = expectThrow(() => b.embedding(out, 0, w, 0, F32, ids, 0, I32, 8, 4, 10), ArgumentError, /ids\[5\] but received 10$/);
    const ids64 = tensor(GPU, I64, BigInt64Array.from([1n, 2n, -7n]));
    expectThrow(() => b.embedding(out, 0, w, 0, F32, ids64, 0, I64, 3, 4, 10), ArgumentError, /ids\[2\] but received -7$/);
    const good = tensor(GPU, I32, Int32Array.from([9, 0]));
    b.embedding(out, 0, w, 0, F32, good, 0, I32, 2, 4, 10);
    const got = readFloat(out, F32, 8), wf = readFloat(w, F32, 40);
    for (let i = 0; i < 4; i++) assert(got[i] === wf[36 + i] && got[4 + i] === wf[i], "embedding after the error is wrong");
    return msg;
  } finally {
    freeAll();
  }
});
runCase("embeddingBackward bad id on cuda → ArgumentError, gw untouched", () => {
  try {
    const gw0 = uniform(10 * 4);
    const gw = tensor(GPU, F32, gw0), gy = tensor(GPU, F32, uniform(3 * 4));
    const ids = tensor(GPU, I32, Int32Array.from([1, 11, 3]));
    const msg = expectThrow(() => b.embeddingBackward(gw, 0, gy, 0, F32, ids, 0, I32, 3, 4, 10), ArgumentError, /ids\[1\] but received 11$/);
    const after = readFloat(gw, F32, 40);
    for (let i = 0; i < 40; i++) assert(after[i] === gw0[i], "gw changed");
    return msg;
  } finally {
    freeAll();
  }
});
runCase("crossEntropy / crossEntropyBackward bad target on cuda → ArgumentError naming targets[3]", () => {
  try {
    const x = tensor(GPU, F32, uniform(5 * 6)), loss = alloc(GPU, 5 * 4), gx = alloc(GPU, 5 * 6 * 4);
    const t = tensor(GPU, I64, BigInt64Array.from([0n, -100n, 5n, 6n, 7n]));
    const msg = expectThrow(() => b.crossEntropy(loss, 0, x, 0, F32, t, 0, I64, 5, 6, -100), ArgumentError, /targets\[3\] but received 6$/);
    expectThrow(() => b.crossEntropyBackward(gx, 0, x, 0, F32, t, 0, I64, 5, 6, -100, 1), ArgumentError, /targets\[3\] but received 6$/);
    const ok = tensor(GPU, I64, BigInt64Array.from([0n, -100n, 5n, 1n, 2n]));
    const count = b.crossEntropy(loss, 0, x, 0, F32, ok, 0, I64, 5, 6, -100);
    assert(count === 4, `count ${count}`);
    return msg;
  } finally {
    freeAll();
  }
});
if (!dryRun) runCase("attention with D > 256 on cuda → ShapeError; mixed devices → DeviceError", () => {
  try {
    const D = 300;
    const q = alloc(GPU, D * 4), k = alloc(GPU, D * 4), v = alloc(GPU, D * 4), out = alloc(GPU, D * 4);
    const msg = expectThrow(() => b.attention(out, 0, q, 0, k, 0, v, 0, F32, 1, 1, 1, 1, 1, 1, D, 1, false, 0, null, 0, null, 0), ShapeError, /D <= 256/);
    const c = alloc("cpu", 16);
    expectThrow(() => b.unary(0, out, 0, c, 0, F32, 4, 0), DeviceError);
    b.unary(0, out, 0, q, 0, F32, 4, 0);
    b.synchronize(GPU);
    return msg;
  } finally {
    freeAll();
  }
});

// ---- timings ----------------------------------------------------------------------------------------------
// Mean µs per call of `fn` over `iters` calls after `warm` warm-up calls, queued back to back (kernels are
// asynchronous: the time per call is the larger of the GPU time and the host cost of a call).
function time(fn, iters, warm = 5) {
  for (let i = 0; i < warm; i++) fn();
  b.synchronize(GPU);
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) fn();
  b.synchronize(GPU);
  return ((performance.now() - t0) * 1000) / iters;
}
if (timing && !dryRun) {
  runCase("timings", () => {
    try {
      const lines = [];
      // Host cost of one binding call that launches one tiny kernel.
      const t1 = alloc(GPU, 64);
      lines.push(`unary n=16 (binding + launch floor): ${time(() => b.unary(0, t1, 0, t1, 0, F32, 16, 0), 2000).toFixed(1)} µs`);
      // Decode: B=1, 32 q heads, 8 kv heads, D=128, bf16, Tk = 4096 valid keys.
      for (const S of [4096, 8192]) {
        const Tk = 4096, D = 128;
        const q = tensor(GPU, BF16, uniform(32 * D)), k = tensor(GPU, BF16, uniform(8 * S * D)), v = tensor(GPU, BF16, uniform(8 * S * D));
        const out = alloc(GPU, 32 * D * 2), lse = alloc(GPU, 32 * 4);
        const us = time(() => b.attention(out, 0, q, 0, k, 0, v, 0, BF16, 1, 32, 8, 1, Tk, S, D, 0.088, true, Tk - 1, null, 0, lse, 0), 500, 20);
        const gbs = (2 * 8 * Tk * D * 2) / (us * 1e-6) / 1e9;
        lines.push(`decode attention bf16 B1 Hq32 Hkv8 D128 Tk${Tk} S${S}: ${us.toFixed(1)} µs/call (K+V ${(2 * 8 * Tk * D * 2) / 2 ** 20} MiB → ${gbs.toFixed(0)} GB/s)`);
      }
      {
        const B = 8, Tk = 4096, S = 4096, D = 128;
        const q = tensor(GPU, BF16, uniform(B * 32 * D)), k = tensor(GPU, BF16, uniform(B * 8 * S * D)), v = tensor(GPU, BF16, uniform(B * 8 * S * D));
        const out = alloc(GPU, B * 32 * D * 2);
        const us = time(() => b.attention(out, 0, q, 0, k, 0, v, 0, BF16, B, 32, 8, 1, Tk, S, D, 0.088, true, Tk - 1, null, 0, null, 0), 200, 10);
        const gbs = (B * 2 * 8 * Tk * D * 2) / (us * 1e-6) / 1e9;
        lines.push(`decode attention bf16 B8 Hq32 Hkv8 D128 Tk4096: ${us.toFixed(1)} µs/call (${gbs.toFixed(0)} GB/s)`);
      }
      // Prefill and its backward: B=1, 32 q heads, 8 kv heads, T=2048, D=128, causal, bf16.
      {
        const T = 2048, D = 128;
        const nq = 32 * T * D, nkv = 8 * T * D;
        const q = tensor(GPU, BF16, uniform(nq)), k = tensor(GPU, BF16, uniform(nkv)), v = tensor(GPU, BF16, uniform(nkv)), g = tensor(GPU, BF16, uniform(nq));
        const out = alloc(GPU, nq * 2), lse = alloc(GPU, 32 * T * 4), dq = alloc(GPU, nq * 2), dk = alloc(GPU, nkv * 2), dv = alloc(GPU, nkv * 2);
        const fwd = () => b.attention(out, 0, q, 0, k, 0, v, 0, BF16, 1, 32, 8, T, T, T, D, 0.088, true, 0, null, 0, lse, 0);
        const usF = time(fwd, 5, 1);
        const flops = 4 * 32 * T * T * D * 0.5;
        lines.push(`prefill attention bf16 B1 Hq32 Hkv8 T${T} D${D} causal: ${(usF / 1000).toFixed(2)} ms/call (${(flops / (usF * 1e-6) / 1e12).toFixed(1)} TFLOP/s)`);
        const usB = time(() => b.attentionBackward(dq, 0, dk, 0, dv, 0, g, 0, q, 0, k, 0, v, 0, out, 0, lse, 0, BF16, 1, 32, 8, T, T, T, D, 0.088, true, 0, null, 0), 3, 1);
        lines.push(`attentionBackward bf16 same shape: ${(usB / 1000).toFixed(2)} ms/call (${((2.5 * flops) / (usB * 1e-6) / 1e12).toFixed(1)} TFLOP/s)`);
      }
      {
        const rows = 4096, cols = 4096;
        const x = tensor(GPU, BF16, uniform(rows * cols)), w = tensor(GPU, BF16, uniform(cols)), out = alloc(GPU, rows * cols * 2);
        const us = time(() => b.rmsNorm(out, 0, x, 0, w, 0, BF16, BF16, rows, cols, 1e-6), 50);
        lines.push(`rmsNorm bf16 (4096,4096): ${us.toFixed(1)} µs (${((rows * cols * 4) / (us * 1e-6) / 1e9).toFixed(0)} GB/s)`);
        const us2 = time(() => b.softmax(out, 0, x, 0, BF16, rows, cols, false), 50);
        lines.push(`softmax bf16 (4096,4096): ${us2.toFixed(1)} µs (${((rows * cols * 4) / (us2 * 1e-6) / 1e9).toFixed(0)} GB/s)`);
        const us3 = time(() => b.unary(6, out, 0, x, 0, BF16, rows * cols, 0), 50);
        lines.push(`unary silu bf16 16M: ${us3.toFixed(1)} µs (${((rows * cols * 4) / (us3 * 1e-6) / 1e9).toFixed(0)} GB/s)`);
        const us4 = time(() => b.binary(2, out, 0, x, 0, [cols, 1], x, 0, [cols, 1], BF16, [rows, cols]), 50);
        lines.push(`binary mul bf16 16M contiguous: ${us4.toFixed(1)} µs (${((rows * cols * 6) / (us4 * 1e-6) / 1e9).toFixed(0)} GB/s)`);
      }
      {
        const rows = 512, cols = 128256;
        const x = tensor(GPU, BF16, uniform(rows * cols, -5, 5)), t = tensor(GPU, I32, ints(rows, 0, cols)), loss = alloc(GPU, rows * 4);
        const us = time(() => b.crossEntropy(loss, 0, x, 0, BF16, t, 0, I32, rows, cols, -100), 10, 2);
        lines.push(`crossEntropy bf16 (512,128256) incl. count copy-back: ${us.toFixed(1)} µs`);
        const n = 16384, dim = 4096, vocab = 128256;
        const ids = tensor(GPU, I32, ints(n, 0, vocab)), gy = tensor(GPU, BF16, uniform(n * dim)), gw = alloc(GPU, vocab * dim * 4);
        const usE = time(() => b.embeddingBackward(gw, 0, gy, 0, BF16, ids, 0, I32, n, dim, vocab), 5, 1);
        lines.push(`embeddingBackward bf16 n=16384 dim=4096 vocab=128256: ${usE.toFixed(1)} µs`);
      }
      for (const l of lines) console.log(`  ${l}`);
      return `${lines.length} timings`;
    } finally {
      freeAll();
    }
  });
}

console.log(`cuda-nn-check: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
