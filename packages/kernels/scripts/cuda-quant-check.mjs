#!/usr/bin/env node
// Checks the CUDA bitsandbytes kernels of a built addon on a machine with a GPU, with nothing but Node (no vitest, no
// node_modules): every linalg / quantization kernel on cuda:0 against the CPU backend of the same addon (quantizers and
// dequantizers byte-identical, GEMMs within tolerance), the edge cases (odd n, tail blocks, zero / NaN / Inf blocks,
// exact ties, unaligned offsets), typed errors for bad arguments on cuda, and benchmarks (device copy bandwidth,
// gemm4bit NF4 + double quant, dequantize4bit, quantize4bit, int8 GEMV).
//
//   node scripts/cuda-quant-check.mjs [path/to/lowbit_kernels.node]   (default: $LOWBIT_KERNELS_PATH or build/Release)
//   LOWBIT_CHECK_SMALL=1  small sizes and no benchmarks (for compute-sanitizer)
//   LOWBIT_CHECK_DEVICE=cpu  compares the CPU with itself: a dry run of the script on a machine without a GPU
//   LOWBIT_CHECK_ONLY=<regex>  runs only the checks whose name matches
//   LOWBIT_CHECK_VERBOSE=1  prints every gemm4bit case with its time
//
// Prints one line per check; exits non-zero when any check failed.
import { join } from "node:path";
import { performance } from "node:perf_hooks";

import {
  addonPathFrom,
  loadAddon,
  ArgumentError,
  DTypeError,
  ShapeError,
  DeviceError,
  assert,
  throwsClass,
  hostTimeIt,
  deviceTimeIt as deviceTimeItOn,
} from "./check-harness.mjs";

const addonPath = addonPathFrom(process.argv[2]);
const b = loadAddon(addonPath);
const SMALL = process.env.LOWBIT_CHECK_SMALL === "1";
const ONLY = process.env.LOWBIT_CHECK_ONLY ? new RegExp(process.env.LOWBIT_CHECK_ONLY) : null;
const VERBOSE = process.env.LOWBIT_CHECK_VERBOSE === "1";


const F32 = 0, F16 = 1, BF16 = 2, I8 = 5, U8 = 6;
const DT_NAME = { [F32]: "f32", [F16]: "f16", [BF16]: "bf16" };
const DT_SIZE = { [F32]: 4, [F16]: 2, [BF16]: 2 };
const NF4 = 0, FP4 = 1;
const GPU = process.env.LOWBIT_CHECK_DEVICE ?? "cuda:0";

let failures = 0;
async function check(name, fn) {
  if (ONLY && !ONLY.test(name)) return;
  const t0 = performance.now();
  const took = () => `[${((performance.now() - t0) / 1e3).toFixed(1)} s]`;
  try {
    const detail = await fn();
    console.log(`ok   ${name}${detail ? ` (${detail})` : ""} ${took()}`);
  } catch (error) {
    failures++;
    console.log(`FAIL ${name} ${took()}: ${error instanceof Error ? error.stack : String(error)}`);
  }
}

// ---- data ----------------------------------------------------------------------------------------------------------

// mulberry32: small, seeded, reproducible.
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  return { next, normal };
}
function randn(n, seed, scale = 1) {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r.normal() * scale;
  return out;
}
function randBytes(n, seed) {
  const r = rng(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (r.next() * 256) | 0;
  return out;
}
function bytesOf(view) {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}
function f32Bits(x) {
  return new Uint32Array(new Float32Array([x]).buffer)[0];
}
function bitsF32(u) {
  return new Float32Array(new Uint32Array([u]).buffer)[0];
}

// float32 values -> bytes of `dtype` through the addon's CPU cast (round to nearest even).
function encode(values, dtype) {
  if (dtype === F32) return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const src = b.allocate("cpu", values.byteLength || 1);
  const dst = b.allocate("cpu", values.length * 2 || 1);
  if (values.length) b.upload(src, 0, values);
  b.cast(dst, 0, dtype, src, 0, F32, values.length);
  const out = new Uint8Array(values.length * 2);
  if (values.length) b.download(dst, 0, out);
  src.dispose();
  dst.dispose();
  return out;
}
// bytes of `dtype` -> float32 values.
function decode(bytes, dtype) {
  if (dtype === F32) return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const n = bytes.byteLength / 2;
  const src = b.allocate("cpu", bytes.byteLength || 1);
  const dst = b.allocate("cpu", n * 4 || 1);
  if (n) b.upload(src, 0, bytes);
  b.cast(dst, 0, F32, src, 0, dtype, n);
  const out = new Float32Array(n);
  if (n) b.download(dst, 0, out);
  src.dispose();
  dst.dispose();
  return out;
}

// ---- running one op on both devices ------------------------------------------------------------------------------

// A storage on `device` holding `data` (bytes) at byte offset `offset`, followed by `extra` zero bytes.
function place(device, data, offset = 0, extra = 0) {
  const s = b.allocate(device, offset + data.byteLength + extra);
  if (data.byteLength) b.upload(s, offset, data);
  return s;
}
function readBytes(s, offset, n) {
  const out = new Uint8Array(n);
  if (n) b.download(s, offset, out);
  return out;
}

// inputs / outputs: { name: { data: bytes, offset } } / { name: { bytes, offset, init? } }. `call(S, device)` runs the
// op with S[name] = { s: storage, o: offset } (null inputs stay null). Returns { cpu, gpu } with each output's bytes
// and the call's return value as `ret`.
let stageTag = null; // with LOWBIT_CHECK_VERBOSE: the case whose device runs are announced (locates a hang)
async function runBoth(inputs, outputs, call) {
  const result = {};
  for (const [key, device] of [["cpu", "cpu"], ["gpu", GPU]]) {
    if (VERBOSE && stageTag) console.log(`       ${stageTag} on ${device}`);
    const S = {};
    for (const [k, v] of Object.entries(inputs)) S[k] = v === null ? { s: null, o: 0 } : { s: place(device, v.data, v.offset ?? 0), o: v.offset ?? 0 };
    for (const [k, v] of Object.entries(outputs)) S[k] = { s: place(device, v.init ?? new Uint8Array(v.bytes), v.offset ?? 0), o: v.offset ?? 0 };
    const ret = await call(S, device);
    const outs = { ret };
    for (const [k, v] of Object.entries(outputs)) outs[k] = readBytes(S[k].s, v.offset ?? 0, v.bytes);
    for (const v of Object.values(S)) v.s?.dispose();
    result[key] = outs;
  }
  return result;
}

function firstDiff(a, c) {
  const n = Math.min(a.length, c.length);
  for (let i = 0; i < n; i++) if (a[i] !== c[i]) return i;
  return a.length === c.length ? -1 : n;
}
function assertBytes(want, got, what) {
  const i = firstDiff(want, got);
  assert(i < 0, `${what}: ${want.length} bytes, first difference at byte ${i}: cpu ${want[i]} cuda ${got[i]}`);
}
// Bit-identical floats of `dtype` except that any NaN equals any NaN (payloads differ between the CPU and CUDA casts).
function assertFloatBits(want, got, dtype, what) {
  const size = dtype === F32 ? 4 : 2;
  const W = size === 4 ? new Uint32Array(want.buffer, want.byteOffset, want.byteLength / 4) : new Uint16Array(want.buffer, want.byteOffset, want.byteLength / 2);
  const G = size === 4 ? new Uint32Array(got.buffer, got.byteOffset, got.byteLength / 4) : new Uint16Array(got.buffer, got.byteOffset, got.byteLength / 2);
  const isNaN_ = (u) =>
    dtype === F32 ? (u & 0x7fffffff) > 0x7f800000 : dtype === BF16 ? (u & 0x7fff) > 0x7f80 : (u & 0x7fff) > 0x7c00;
  for (let i = 0; i < W.length; i++) {
    if (W[i] !== G[i] && !(isNaN_(W[i]) && isNaN_(G[i]))) {
      throw new Error(`${what}: element ${i} of ${W.length} differs: cpu 0x${W[i].toString(16)} cuda 0x${G[i].toString(16)}`);
    }
  }
}
// max |want - got| / max |want| (NaN mismatches are failures).
function relErr(want, got) {
  let scale = 0, err = 0;
  for (let i = 0; i < want.length; i++) {
    const a = want[i], c = got[i];
    if (Number.isNaN(a) || Number.isNaN(c)) {
      if (Number.isNaN(a) !== Number.isNaN(c)) return Infinity;
      continue;
    }
    scale = Math.max(scale, Math.abs(a));
    err = Math.max(err, Math.abs(a - c));
  }
  return err / (scale || 1);
}
const TOL = { [F32]: 1e-5, [F16]: 4e-3, [BF16]: 1.6e-2 };

// A sorted 256-entry code like bitsandbytes' signed dynamic map: negatives, 0 at 127, 1.0 at 255, and two duplicate pairs.
function sortedCode(seed) {
  const r = rng(seed);
  const v = [];
  for (let i = 0; i < 127; i++) v.push(-Math.pow(r.next(), 3));
  for (let i = 0; i < 127; i++) v.push(Math.pow(r.next(), 3));
  v.push(0);
  v.sort((x, y) => x - y);
  const code = new Float32Array(256);
  for (let i = 0; i < 255; i++) code[i] = v[i];
  code[255] = 1;
  code[40] = code[41]; // duplicates (allowed: sorted means non-decreasing)
  code[200] = code[199];
  return code;
}

// x for the quantizers: random normals with special blocks. Block j (of bs) is: 0 all zeros, 1 one NaN, 2 all NaN,
// 3 one +Inf, 4 subnormals only, 5 values on the NF4 thresholds and midpoints (absmax 1), then random.
function quantInput(n, bs, seed) {
  const x = randn(n, seed, 2.5);
  const block = (j, f) => {
    for (let i = j * bs; i < Math.min(n, (j + 1) * bs); i++) x[i] = f(i - j * bs);
  };
  const nb = Math.ceil(n / bs);
  if (nb > 6) {
    block(0, () => 0);
    block(1, (i) => (i === 3 ? NaN : x[bs + i]));
    block(2, () => NaN);
    block(3, (i) => (i === 1 ? Infinity : x[3 * bs + i]));
    block(4, (i) => bitsF32(1 + i) * (i & 1 ? -1 : 1));
    const thr = [0xbf591cd8, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec, 0xbe0d38bc, 0xbd3a7871, 0x3d22faff, 0x3df64862, 0x3e5067e0,
      0x3e9582d4, 0x3ec753f9, 0x3f006d04, 0x3f248daf, 0x3f5c89da, 0x3b2aaab9, 0x3db00000, 0x3e555555, 0x3e955555, 0x3ed55556, 0x3f155550, 0x3f555555];
    block(5, (i) => (i === 0 ? 1 : (i & 1 ? -1 : 1) * Math.abs(bitsF32(thr[i % thr.length]))));
  }
  return x;
}

console.log(`addon ${addonPath} version ${b.version}, cudaCompiled ${b.cudaCompiled}, small ${SMALL}`);
if (GPU !== "cpu") {
  if (!b.cudaCompiled || b.cudaDeviceCount() < 1) {
    console.log(`FAIL no CUDA device: ${b.cudaUnavailableReason()}`);
    process.exit(1);
  }
  const info = b.deviceInfo(GPU);
  console.log(`device ${info.name}, ${info.multiProcessorCount} SMs, cc ${info.computeCapability.join(".")}, gemm backend ${b.cudaGemmBackend(GPU)}`);
}

// ---- 4-bit -------------------------------------------------------------------------------------------------------------

await check("quantize4bit: bytes identical to the CPU (f32/f16/bf16, NF4/FP4, every blocksize, odd n, tails, special blocks)", async () => {
  let cases = 0;
  for (const dtype of [F32, F16, BF16]) {
    for (const qt of [NF4, FP4]) {
      for (const bs of [32, 64, 128, 256, 512, 1024, 2048, 4096]) {
        const ns = SMALL ? [bs * 7 + 3, 1] : [bs * 9 + 7, bs * 8, 1, 13, bs * 70 + 1];
        for (const n of ns) {
          // offsets: aligned, and unaligned x / packed (scalar paths)
          for (const [xo, po] of n > 100 ? [[0, 0], [DT_SIZE[dtype], 1]] : [[0, 0]]) {
            const x = encode(quantInput(n, bs, n + bs + qt), dtype);
            const r = await runBoth(
              { x: { data: x, offset: xo } },
              { packed: { bytes: Math.ceil(n / 2), offset: po }, absmax: { bytes: Math.ceil(n / bs) * 4, offset: 4 } },
              (S) => b.quantize4bit(S.packed.s, S.packed.o, S.absmax.s, S.absmax.o, S.x.s, S.x.o, dtype, n, bs, qt),
            );
            const tag = `${DT_NAME[dtype]} ${qt ? "fp4" : "nf4"} bs ${bs} n ${n} offsets ${xo}/${po}`;
            assertBytes(r.cpu.packed, r.gpu.packed, `${tag} packed`);
            assertBytes(r.cpu.absmax, r.gpu.absmax, `${tag} absmax`);
            cases++;
          }
        }
      }
    }
  }
  return `${cases} cases`;
});

await check("quantize4bitAsync on cuda resolves after queuing and matches quantize4bit", async () => {
  const n = 4096 * 3 + 5, bs = 64;
  const x = encode(randn(n, 7), BF16);
  const r = await runBoth(
    { x: { data: x } },
    { packed: { bytes: Math.ceil(n / 2) }, absmax: { bytes: Math.ceil(n / bs) * 4 } },
    async (S) => {
      const p = b.quantize4bitAsync(S.packed.s, 0, S.absmax.s, 0, S.x.s, 0, BF16, n, bs, NF4);
      assert(p instanceof Promise, "not a promise");
      await p;
    },
  );
  assertBytes(r.cpu.packed, r.gpu.packed, "packed");
  assertBytes(r.cpu.absmax, r.gpu.absmax, "absmax");
});

await check("dequantize4bit: bit-identical to the CPU (every out dtype, NF4/FP4, odd n, special absmax)", async () => {
  let cases = 0;
  for (const qt of [NF4, FP4]) {
    for (const bs of [32, 64, 256, 4096]) {
      for (const n of SMALL ? [bs * 5 + 3] : [bs * 33 + 3, bs * 8, 1, 9]) {
        const packed = randBytes(Math.ceil(n / 2), n + bs);
        const am = randn(Math.ceil(n / bs), bs, 3);
        if (am.length > 4) {
          am[0] = 0;
          am[1] = Infinity;
          am[2] = NaN;
          am[3] = -3.4028234663852886e38;
        }
        for (const od of [F32, F16, BF16]) {
          for (const [oo, po] of [[0, 0], [DT_SIZE[od] * 3, 1]]) {
            const bytes = n * DT_SIZE[od];
            const r = await runBoth(
              { packed: { data: packed, offset: po }, absmax: { data: bytesOf(am) } },
              { out: { bytes, offset: oo } },
              (S) => b.dequantize4bit(S.out.s, S.out.o, od, S.packed.s, S.packed.o, S.absmax.s, 0, n, bs, qt),
            );
            assertFloatBits(r.cpu.out, r.gpu.out, od, `${qt ? "fp4" : "nf4"} bs ${bs} n ${n} ${DT_NAME[od]} offsets ${oo}/${po}`);
            cases++;
          }
        }
      }
    }
  }
  return `${cases} cases`;
});

await check("dequantizeNestedAbsmax: bit-identical (two roundings)", async () => {
  for (const nbs of [64, 256, 4096]) {
    const nb = SMALL ? 1000 : 100003;
    const q = randBytes(nb, 3);
    const nested = randn(Math.ceil(nb / nbs), 4, 0.1);
    const code = sortedCode(5);
    const r = await runBoth(
      { q: { data: q, offset: 1 }, nested: { data: bytesOf(nested) }, code: { data: bytesOf(code), offset: 8 } },
      { out: { bytes: nb * 4 } },
      (S) => b.dequantizeNestedAbsmax(S.out.s, 0, S.q.s, S.q.o, S.nested.s, 0, S.code.s, S.code.o, 0.0123456789, nb, nbs),
    );
    assertFloatBits(r.cpu.out, r.gpu.out, F32, `nested bs ${nbs}`);
  }
});

// ---- 8-bit blockwise ----------------------------------------------------------------------------------------------------

await check("quantizeBlockwise8 / dequantizeBlockwise8: identical to the CPU (ties to the even code, NaN, zero, Inf blocks)", async () => {
  const code = sortedCode(11);
  let cases = 0;
  for (const dtype of [F32, F16, BF16]) {
    for (const bs of [64, 128, 256, 512, 1024, 2048, 4096]) {
      for (const n of SMALL ? [bs * 7 + 3] : [bs * 9 + 5, 3]) {
        const xv = quantInput(n, bs, bs + n);
        if (n > bs * 6) {
          // block 5: absmax 1 and the exact fp32 midpoints of adjacent codes (ties)
          for (let i = 1; i < bs && 5 * bs + i < n; i++) {
            const k = i % 255;
            xv[5 * bs + i] = Math.fround(Math.fround(code[k] + code[k + 1]) * 0.5);
          }
          xv[5 * bs] = 1;
        }
        const x = encode(xv, dtype);
        for (const [xo, co] of [[0, 0], [DT_SIZE[dtype], 1]]) {
          const r = await runBoth(
            { x: { data: x, offset: xo }, code: { data: bytesOf(code) } },
            { codes: { bytes: n, offset: co }, absmax: { bytes: Math.ceil(n / bs) * 4 } },
            (S) => b.quantizeBlockwise8(S.codes.s, S.codes.o, S.absmax.s, 0, S.x.s, S.x.o, dtype, n, bs, S.code.s, 0),
          );
          const tag = `${DT_NAME[dtype]} bs ${bs} n ${n} offsets ${xo}/${co}`;
          assertBytes(r.cpu.codes, r.gpu.codes, `${tag} codes`);
          assertBytes(r.cpu.absmax, r.gpu.absmax, `${tag} absmax`);
          for (const od of [F32, BF16]) {
            const d = await runBoth(
              { codes: { data: r.cpu.codes, offset: co }, absmax: { data: r.cpu.absmax }, code: { data: bytesOf(code) } },
              { out: { bytes: n * DT_SIZE[od], offset: 2 * co * DT_SIZE[od] } },
              (S) => b.dequantizeBlockwise8(S.out.s, S.out.o, od, S.codes.s, S.codes.o, S.absmax.s, 0, S.code.s, 0, n, bs),
            );
            assertFloatBits(d.cpu.out, d.gpu.out, od, `${tag} dequant ${DT_NAME[od]}`);
          }
          cases++;
        }
      }
    }
  }
  return `${cases} cases`;
});

// ---- gemm4bit ------------------------------------------------------------------------------------------------------------

// Random weight state for (N, K): packed nibbles and plain absmax, or the double-quant state.
function weightState(N, K, bs, nested, seed) {
  const nk = N * K;
  const nb = Math.ceil(nk / bs);
  const packed = randBytes(Math.ceil(nk / 2), seed);
  if (!nested) return { packed, absmax: bytesOf(randn(nb, seed + 1, 0.05).map(Math.abs)), nested: null, code: null, offset: 0 };
  return {
    packed,
    absmax: randBytes(nb, seed + 2),
    nested: bytesOf(randn(Math.ceil(nb / 256), seed + 3, 0.02).map(Math.abs)),
    code: bytesOf(sortedCode(seed + 4)),
    offset: 0.031,
  };
}

async function gemmCase(dtype, qt, nested, M, N, K, bs, withBias, xo = 0, po = 0) {
  const t0 = performance.now();
  const w = weightState(N, K, bs, nested, M * 7 + N + K);
  const x = encode(randn(M * K, M + K), dtype);
  const bias = withBias ? encode(randn(N, N, 0.5), dtype) : null;
  const es = DT_SIZE[dtype];
  stageTag = `${DT_NAME[dtype]} ${qt ? "fp4" : "nf4"}${nested ? "+dq" : ""} M ${M} N ${N} K ${K} bs ${bs}`;
  const r = await runBoth(
    {
      x: { data: x, offset: xo },
      packed: { data: w.packed, offset: po },
      absmax: { data: w.absmax },
      nested: w.nested ? { data: w.nested } : null,
      code: w.code ? { data: w.code } : null,
      bias: bias ? { data: bias } : null,
    },
    { out: { bytes: M * N * es } },
    (S) =>
      b.gemm4bit(S.out.s, 0, S.x.s, S.x.o, dtype, S.packed.s, S.packed.o, S.absmax.s, 0, S.nested.s, 0, S.code.s, 0, w.offset, M, N, K, bs, qt,
        S.bias.s, 0),
  );
  const err = relErr(decode(r.cpu.out, dtype), decode(r.gpu.out, dtype));
  const tag = `${DT_NAME[dtype]} ${qt ? "fp4" : "nf4"}${nested ? "+dq" : ""} M ${M} N ${N} K ${K} bs ${bs}${withBias ? " bias" : ""} offsets ${xo}/${po}`;
  if (VERBOSE) console.log(`     ${tag}: error ${err.toExponential(2)} [${((performance.now() - t0) / 1e3).toFixed(2)} s]`);
  assert(err <= TOL[dtype], `${tag}: relative error ${err.toExponential(2)} > ${TOL[dtype]}`);
  return err;
}

await check("gemm4bit: CUDA within tolerance of the CPU (fused M <= 16, generic shapes, unaligned, large M via matmul)", async () => {
  let worst = { [F32]: 0, [F16]: 0, [BF16]: 0 };
  let cases = 0;
  const shapes = SMALL
    ? [[1, 40, 256, 64], [3, 9, 100, 32], [20, 24, 128, 64], [1, 9, 8192, 64], [2, 5, 20480, 128], [1, 21, 14336, 64], [2, 12, 320, 64]]
    : [[1, 256, 1024, 64], [2, 130, 2048, 128], [3, 64, 4096, 64], [4, 33, 96, 32], [5, 48, 1056, 256], [8, 64, 512, 64], [13, 40, 3072, 4096],
      [16, 100, 1024, 64], [1, 37, 100, 64], [7, 9, 31, 32], [17, 50, 512, 64], [40, 96, 1024, 64], [64, 300, 2048, 128],
      [1, 21, 14336, 64], [3, 10, 9216, 64], [16, 7, 20480, 256],
      // a decoder's MLP shape: K = 14336 at N = 4096 runs 8 warps per tile (whole groups, no split); K = 4096 at M = 1
      // keeps x in registers (one group per warp)
      [1, 4096, 14336, 64], [4, 4096, 14336, 64], [1, 520, 4096, 64]];
  for (const dtype of [F32, F16, BF16]) {
    for (const [M, N, K, bs] of shapes) {
      for (const nested of [false, true]) {
        const qt = (M + N) & 1 ? FP4 : NF4;
        worst[dtype] = Math.max(worst[dtype], await gemmCase(dtype, qt, nested, M, N, K, bs, (M & 1) === 1));
        cases++;
      }
    }
    // unaligned x and packed: the generic kernel
    worst[dtype] = Math.max(worst[dtype], await gemmCase(dtype, NF4, true, 2, 24, 256, 64, true, DT_SIZE[dtype], 1));
    // K = 0: out = bias
    worst[dtype] = Math.max(worst[dtype], await gemmCase(dtype, NF4, false, 3, 5, 0, 64, true));
    cases += 2;
  }
  return `${cases} cases, worst relative error f32 ${worst[F32].toExponential(2)}, f16 ${worst[F16].toExponential(2)}, bf16 ${worst[BF16].toExponential(2)}`;
});

// ---- LLM.int8 ------------------------------------------------------------------------------------------------------------

await check("int8VectorwiseQuant: CB, SCB and outlier columns identical (thresholds 0 and 6, one and many rows, NaN / zero rows)", async () => {
  let cases = 0;
  for (const dtype of [F32, F16, BF16]) {
    for (const [rows, cols] of SMALL ? [[5, 300], [1, 77]] : [[33, 1000], [1, 4096], [300, 64], [2, 5000]]) {
      for (const threshold of [0, 6, 3.0000001]) {
        const xv = randn(rows * cols, rows + cols, 2);
        for (let c = 0; c < cols; c += 97) xv[((c * 7) % rows) * cols + c] = c & 1 ? -9 : 7.5; // outliers
        if (rows > 3) {
          for (let c = 0; c < cols; c++) xv[cols + c] = 0; // zero row
          xv[2 * cols + 1] = NaN;
        }
        const x = encode(xv, dtype);
        const r = await runBoth(
          { x: { data: x, offset: DT_SIZE[dtype] } },
          { CB: { bytes: rows * cols, offset: 1 }, SCB: { bytes: rows * 4 } },
          (S) => b.int8VectorwiseQuant(S.CB.s, S.CB.o, S.SCB.s, 0, S.x.s, S.x.o, dtype, rows, cols, threshold),
        );
        const tag = `${DT_NAME[dtype]} ${rows}x${cols} threshold ${threshold}`;
        assertBytes(r.cpu.CB, r.gpu.CB, `${tag} CB`);
        assertBytes(r.cpu.SCB, r.gpu.SCB, `${tag} SCB`);
        assert(r.gpu.ret instanceof Int32Array, `${tag}: outliers are not an Int32Array`);
        assert(r.cpu.ret.join() === r.gpu.ret.join(), `${tag}: outliers cpu [${r.cpu.ret.slice(0, 8)}…] cuda [${r.gpu.ret.slice(0, 8)}…]`);
        if (threshold === 0) assert(r.gpu.ret.length === 0, "outliers without a threshold");
        cases++;
      }
    }
  }
  return `${cases} cases`;
});

await check("int8Matmul: exact int32 (GEMV and tiled kernels, K % 4 != 0, unaligned)", async () => {
  let cases = 0;
  const shapes = SMALL ? [[1, 20, 64], [9, 70, 33]] : [[1, 300, 4096], [3, 77, 1024], [8, 64, 160], [9, 130, 4096], [70, 65, 129], [1, 5, 7], [130, 200, 64]];
  for (const [M, N, K] of shapes) {
    for (const ao of [0, 3]) {
      const a = randBytes(M * K, M + K + ao);
      const w = randBytes(N * K, N + K);
      if (ao === 0) a.fill(0x80, 0, Math.min(a.length, 64)); // -128 entries
      const r = await runBoth(
        { a: { data: a, offset: ao }, w: { data: w } },
        { out: { bytes: M * N * 4 } },
        (S) => b.int8Matmul(S.out.s, 0, S.a.s, S.a.o, S.w.s, 0, M, N, K),
      );
      assertBytes(r.cpu.out, r.gpu.out, `M ${M} N ${N} K ${K} offset ${ao}`);
      cases++;
    }
  }
  return `${cases} cases`;
});

await check("int8MmDequant: bit-identical (every out dtype, with and without bias)", async () => {
  let cases = 0;
  for (const od of [F32, F16, BF16]) {
    for (const withBias of [false, true]) {
      const M = SMALL ? 3 : 37, N = SMALL ? 50 : 1000;
      const r0 = rng(M + N + od);
      const C = new Int32Array(M * N).map(() => Math.round((r0.next() - 0.5) * 2e6));
      C[0] = 2147483647;
      C[1] = -2147483648;
      const rs = randn(M, 1, 3).map(Math.abs);
      const cs = randn(N, 2, 3).map(Math.abs);
      rs[0] = 0;
      const bias = withBias ? encode(randn(N, 3), od) : null;
      const r = await runBoth(
        { C: { data: bytesOf(C) }, rs: { data: bytesOf(rs) }, cs: { data: bytesOf(cs) }, bias: bias ? { data: bias } : null },
        { out: { bytes: M * N * DT_SIZE[od] } },
        (S) => b.int8MmDequant(S.out.s, 0, od, S.C.s, 0, S.rs.s, 0, S.cs.s, 0, S.bias.s, 0, M, N),
      );
      assertFloatBits(r.cpu.out, r.gpu.out, od, `${DT_NAME[od]}${withBias ? " bias" : ""}`);
      cases++;
    }
  }
  return `${cases} cases`;
});

await check("int8OutlierMatmulAdd: within tolerance", async () => {
  for (const dtype of [F32, BF16]) {
    const M = 5, N = 70, K = 300;
    const x = encode(randn(M * K, 9, 3), dtype);
    const CB = randBytes(N * K, 10);
    const SCB = randn(N, 11, 2).map(Math.abs);
    const cols = new Int32Array([3, 17, 100, 299]);
    const out0 = encode(randn(M * N, 12), dtype);
    const r = await runBoth(
      { x: { data: x }, CB: { data: CB }, SCB: { data: bytesOf(SCB) }, cols: { data: bytesOf(cols) } },
      { out: { bytes: M * N * DT_SIZE[dtype], init: out0 } },
      (S) => b.int8OutlierMatmulAdd(S.out.s, 0, S.x.s, 0, dtype, S.CB.s, 0, S.SCB.s, 0, S.cols.s, 0, cols.length, M, N, K),
    );
    const err = relErr(decode(r.cpu.out, dtype), decode(r.gpu.out, dtype));
    assert(err <= TOL[dtype], `${DT_NAME[dtype]}: relative error ${err}`);
  }
});

await check("matmul / matmulAsync dispatch to cuda (cuda/gemm.h)", async () => {
  const M = 33, N = 47, K = 65;
  for (const dtype of [F32, BF16]) {
    const a = encode(randn(M * K, 1), dtype), w = encode(randn(K * N, 2), dtype);
    for (const asyncCall of [false, true]) {
      const r = await runBoth({ a: { data: a }, w: { data: w } }, { out: { bytes: M * N * 4 } }, async (S) => {
        const args = [S.out.s, 0, S.a.s, 0, S.w.s, 0, dtype, F32, 1, M, N, K, false, false, 0, 0, 0, 1, 0];
        if (asyncCall) await b.matmulAsync(...args);
        else b.matmul(...args);
      });
      const err = relErr(decode(r.cpu.out, F32), decode(r.gpu.out, F32));
      assert(err < (dtype === F32 ? 1e-5 : 1e-3), `${DT_NAME[dtype]} ${asyncCall ? "async" : "sync"}: relative error ${err}`);
    }
  }
});

// ---- bad arguments on cuda --------------------------------------------------------------------------------------------

if (GPU !== "cpu") await check("bad arguments on cuda throw typed errors and the device keeps working", async () => {
  const g = b.allocate(GPU, 1 << 16);
  const c = b.allocate("cpu", 1 << 16);
  throwsClass(() => b.quantize4bit(g, 0, g, 8192, g, 16384, BF16, 1000, 48, NF4), ArgumentError, /blocksize/);
  throwsClass(() => b.quantize4bit(g, 0, g, 8192, g, 16384, I8, 1000, 64, NF4), DTypeError);
  throwsClass(() => b.quantize4bit(g, 0, g, 8192, g, 16384, BF16, 1 << 20, 64, NF4), ShapeError);
  throwsClass(() => b.quantize4bit(g, 0, c, 0, g, 16384, BF16, 1000, 64, NF4), DeviceError);
  throwsClass(() => b.quantize4bit(g, 0, g, 8192, g, 16385, BF16, 1000, 64, NF4), ArgumentError, /multiple of 2/);
  throwsClass(() => b.quantize4bitAsync(g, 0, g, 8192, g, 16384, BF16, 1000, 64, 2), ArgumentError);
  throwsClass(() => b.dequantize4bit(g, 0, U8, g, 16384, g, 32768, 100, 64, NF4), DTypeError);
  throwsClass(() => b.gemm4bit(g, 0, g, 4096, BF16, g, 8192, g, 16384, g, 20000, null, 0, 0, 1, 8, 64, 64, NF4, null, 0), ArgumentError, /nestedCode/);
  throwsClass(() => b.gemm4bit(g, 0, g, 4096, BF16, g, 8192, g, 16384, null, 0, null, 0, 0, 1, 8, 64, 64, NF4, c, 0), DeviceError);
  throwsClass(() => b.gemm4bit(g, 0, g, 4096, BF16, g, 8192, g, 16384, null, 0, null, 0, 0, 1, 8, 1 << 20, 64, NF4, null, 0), ShapeError);
  // an unsorted code on the device is caught (through a host copy)
  const bad = sortedCode(1);
  bad[10] = 5;
  b.upload(g, 60000, bad);
  throwsClass(() => b.quantizeBlockwise8(g, 0, g, 8192, g, 16384, F32, 100, 64, g, 60000), ArgumentError, /sorted/);
  throwsClass(() => b.dequantizeBlockwise8(g, 0, F32, g, 8192, g, 16384, g, 60000, 100, 32), ArgumentError, /blocksize/);
  // out-of-range outlier columns on the device
  b.upload(g, 50000, new Int32Array([1, 2, 64]));
  throwsClass(() => b.int8OutlierMatmulAdd(g, 0, g, 4096, F32, g, 8192, g, 16384, g, 50000, 3, 2, 4, 64), ArgumentError, /cols\[2\]/);
  throwsClass(() => b.int8VectorwiseQuant(g, 0, g, 8192, g, 16384, F32, 4, 4, -1), ArgumentError, /threshold/);
  throwsClass(() => b.int8Matmul(g, 0, g, 8192, c, 0, 2, 2, 2), DeviceError);
  throwsClass(() => b.int8MmDequant(g, 0, F32, g, 8192, g, 16384, g, 20000, null, 0, 100, 1000), ShapeError);
  throwsClass(() => b.matmul(g, 0, g, 8192, c, 0, F32, F32, 1, 4, 4, 4, false, false, 0, 0, 0, 1, 0), DeviceError);
  let rejected = null;
  try {
    await b.matmulAsync(g, 0, g, 8192, g, 16384, F32, F32, 1, 4, 4, 4, false, false, 0, 0, 0, 1, 0);
  } catch (e) {
    rejected = e;
  }
  assert(rejected === null, `a valid matmulAsync rejected: ${rejected}`);
  // still working
  const x = encode(randn(256, 5), F32);
  b.upload(g, 0, x);
  b.quantize4bit(g, 4096, g, 8192, g, 0, F32, 256, 64, NF4);
  b.synchronize(GPU);
  const p = new Uint8Array(128);
  b.download(g, 4096, p);
  assert(p.some((v) => v !== 0), "quantize4bit after errors wrote nothing");
  g.dispose();
  c.dispose();
});

// ---- benchmarks --------------------------------------------------------------------------------------------------------

// Seconds per call of fn on the GPU: by the host clock (timeIt) and on the device alone (deviceTimeIt).
const timeIt = (fn, iters) => hostTimeIt(b, GPU, fn, iters);
const deviceTimeIt = (fn, iters) => deviceTimeItOn(b, GPU, fn, iters);
const gbps = (bytes, s) => (bytes / s / 1e9).toFixed(0);

if (!SMALL) {
  let copyBw = 0;
  await check("benchmark: device-to-device copy (copyBytes, 1 GiB)", async () => {
    const n = 1 << 30;
    const s1 = b.allocate(GPU, n), s2 = b.allocate(GPU, n);
    const t = deviceTimeIt(() => b.copyBytes(s2, 0, s1, 0, n), 10);
    s1.dispose();
    s2.dispose();
    copyBw = (2 * n) / t / 1e9;
    return `${(t * 1e3).toFixed(3)} ms: ${copyBw.toFixed(0)} GB/s read + written (${(n / t / 1e9).toFixed(0)} GB/s copied)`;
  });

  // Weights rotate over kCopies copies (> 50 MB of L2 together), as a model's layers do: each call reads from memory.
  const kCopies = 4;
  await check("benchmark: gemm4bit NF4 + double quant, bf16, bs 64", async () => {
    const lines = [];
    for (const [N, K] of [[4096, 14336], [14336, 4096]]) {
      const w = weightState(N, K, 64, true, N);
      const copies = [];
      for (let c = 0; c < kCopies; c++) {
        const g = {};
        for (const k of ["packed", "absmax", "nested", "code"]) g[k] = place(GPU, w[k]);
        copies.push(g);
      }
      const xs = place(GPU, encode(randn(16 * K, 1), BF16));
      const out = b.allocate(GPU, 16 * N * 2);
      const weightBytes = w.packed.byteLength + w.absmax.byteLength + w.nested.byteLength;
      for (const M of [1, 4, 16]) {
        let i = 0;
        const call = () => {
          const g = copies[i++ % kCopies];
          b.gemm4bit(out, 0, xs, 0, BF16, g.packed, 0, g.absmax, 0, g.nested, 0, g.code, 0, w.offset, M, N, K, 64, NF4, null, 0);
        };
        const iters = M === 1 ? 400 : 100;
        const t = deviceTimeIt(call, iters), wall = timeIt(call, iters);
        const bw = weightBytes / t / 1e9;
        lines.push(
          `N ${N} K ${K} M ${M}: ${(t * 1e6).toFixed(1)} us on the device (${(wall * 1e6).toFixed(1)} us per call by the host clock), ` +
            `${bw.toFixed(0)} GB/s of weights${copyBw ? ` = ${((100 * bw) / copyBw).toFixed(0)}% of copy` : ""}`,
        );
      }
      for (const g of copies) for (const s of Object.values(g)) s.dispose();
      xs.dispose();
      out.dispose();
    }
    // The floor of one call (argument checks + launch) on a tiny problem.
    {
      const w = weightState(4, 64, 64, true, 1);
      const g = {};
      for (const k of ["packed", "absmax", "nested", "code"]) g[k] = place(GPU, w[k]);
      const xs = place(GPU, encode(randn(64, 1), BF16));
      const out = b.allocate(GPU, 8);
      const call = () => b.gemm4bit(out, 0, xs, 0, BF16, g.packed, 0, g.absmax, 0, g.nested, 0, g.code, 0, w.offset, 1, 4, 64, 64, NF4, null, 0);
      const t = timeIt(call, 1000), td = deviceTimeIt(call, 1000);
      lines.push(`per-call floor (N 4 K 64 M 1): ${(t * 1e6).toFixed(1)} us by the host clock, ${(td * 1e6).toFixed(1)} us on the device`);
      for (const s of [...Object.values(g), xs, out]) s.dispose();
    }
    return "\n     " + lines.join("\n     ");
  });

  await check("benchmark: dequantize4bit and quantize4bit (14336 x 4096, NF4 bs 64, bf16)", async () => {
    const n = 14336 * 4096, bs = 64;
    const packed = b.allocate(GPU, n / 2), absmax = b.allocate(GPU, (n / bs) * 4), x = b.allocate(GPU, n * 2);
    const tile = place(GPU, encode(randn(1 << 20, 3), BF16));
    for (let o = 0; o < n * 2; o += 1 << 21) b.copyBytes(x, o, tile, 0, Math.min(1 << 21, n * 2 - o));
    const tq = deviceTimeIt(() => b.quantize4bit(packed, 0, absmax, 0, x, 0, BF16, n, bs, NF4), 20);
    const td = deviceTimeIt(() => b.dequantize4bit(x, 0, BF16, packed, 0, absmax, 0, n, bs, NF4), 20);
    const moved = n * 2 + n / 2 + (n / bs) * 4;
    for (const s of [packed, absmax, x, tile]) s.dispose();
    return `quantize ${(tq * 1e6).toFixed(0)} us = ${gbps(moved, tq)} GB/s (${(n / tq / 1e9).toFixed(1)} Gelem/s); dequantize ${(td * 1e6).toFixed(0)} us = ${gbps(moved, td)} GB/s`;
  });

  await check("benchmark: int8 GEMV (int8Matmul M=1 + int8MmDequant, 14336 x 4096)", async () => {
    const N = 14336, K = 4096;
    const bytes = randBytes(N * K, 1);
    const ws = [place(GPU, bytes), place(GPU, bytes)];
    const a = place(GPU, randBytes(K, 2));
    const c = b.allocate(GPU, N * 4), out = b.allocate(GPU, N * 2);
    const rs = place(GPU, bytesOf(new Float32Array([1]))), cs = place(GPU, bytesOf(randn(N, 3).map(Math.abs)));
    let i = 0;
    const t = deviceTimeIt(() => {
      b.int8Matmul(c, 0, a, 0, ws[i++ & 1], 0, 1, N, K);
      b.int8MmDequant(out, 0, BF16, c, 0, rs, 0, cs, 0, null, 0, 1, N);
    }, 200);
    for (const s of [...ws, a, c, out, rs, cs]) s.dispose();
    return `${(t * 1e6).toFixed(1)} us, ${gbps(N * K, t)} GB/s of int8 weights`;
  });
}

console.log(failures === 0 ? "ALL PASSED" : `${failures} FAILED`);
process.exit(failures === 0 ? 0 : 1);
