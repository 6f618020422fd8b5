// Benchmark of the CPU kernels, printed in one run: memcpy bandwidth (copyBytes of 256 MiB), f32 matmul GFLOP/s at
// 1024^3, the NF4 double-quant gemm4bit matvec (M = 1) on 4096x14336 and 14336x4096 weights as GB/s of packed
// weights + absmax read and as a share of the memcpy bandwidth, and dequantize4bit / quantize4bit throughput.
// Run: node --import tsx bench/kernels.bench.ts   (timings are the best of several runs after a warm-up)
import { DTYPES, DYNAMIC_MAP_SIGNED } from "@lowbit/dtypes";

import { QuantType, getBinding, type NativeStorage } from "../src/index.js";

const b = getBinding();
const F32 = DTYPES.float32.id;
const BF16 = DTYPES.bfloat16.id;

/** Best wall time in seconds of `runs` calls after `warmup` calls. */
function best(fn: () => void, runs = 5, warmup = 1): number {
  for (let i = 0; i < warmup; i++) fn();
  let t = Infinity;
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    t = Math.min(t, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return t;
}

/** A storage of `n` float32 values, uniform in [-1, 1). */
function randomF32(n: number): NativeStorage {
  const s = b.allocate("cpu", n * 4);
  const chunk = new Float32Array(1 << 20);
  for (let off = 0; off < n; off += chunk.length) {
    const len = Math.min(chunk.length, n - off);
    for (let i = 0; i < len; i++) chunk[i] = Math.random() * 2 - 1;
    b.upload(s, off * 4, len === chunk.length ? chunk : chunk.subarray(0, len));
  }
  return s;
}

const fmt = (v: number, digits = 1): string => v.toFixed(digits);
console.log(`@lowbit/kernels CPU benchmark, ${b.getNumThreads()} threads, addon ${b.version}`);

// ---- memcpy bandwidth ------------------------------------------------------------------------------------
const COPY_BYTES = 256 * 1024 * 1024;
const src = b.allocate("cpu", COPY_BYTES);
const dst = b.allocate("cpu", COPY_BYTES);
b.fill(src, 0, DTYPES.uint8.id, COPY_BYTES, 7);
const tCopy = best(() => b.copyBytes(dst, 0, src, 0, COPY_BYTES));
const memcpyGBs = COPY_BYTES / tCopy / 1e9;
console.log(`memcpy (copyBytes 256 MiB)            ${fmt(memcpyGBs, 2)} GB/s copied`);
src.dispose();
dst.dispose();

// ---- f32 matmul -----------------------------------------------------------------------------------------
{
  const n = 1024;
  const A = randomF32(n * n);
  const B = randomF32(n * n);
  const C = b.allocate("cpu", n * n * 4);
  for (const [label, transB] of [["A @ B", false], ["A @ B^T", true]] as const) {
    const t = best(() => b.matmul(C, 0, A, 0, B, 0, F32, F32, 1, n, n, n, false, transB, 0, 0, 0, 1, 0));
    console.log(`matmul f32 1024^3 (${label})`.padEnd(39) + `${fmt((2 * n * n * n) / t / 1e9)} GFLOP/s (${fmt(t * 1e3, 2)} ms)`);
  }
  A.dispose();
  B.dispose();
  C.dispose();
}

// ---- NF4 double-quant gemm4bit ---------------------------------------------------------------------------
/** Quantizes a random (N, K) weight to NF4 with double quantization, all natively. */
function nf4DoubleQuant(N: number, K: number, bs = 64) {
  const n = N * K;
  const nb = Math.ceil(n / bs);
  const w = randomF32(n);
  const packed = b.allocate("cpu", n / 2);
  const absmax = b.allocate("cpu", nb * 4);
  b.quantize4bit(packed, 0, absmax, 0, w, 0, F32, n, bs, QuantType.nf4);
  w.dispose();
  // offset = mean(absmax); the centred absmax is 8-bit quantized with the signed dynamic map in blocks of 256.
  const am = new Float32Array(nb);
  b.download(absmax, 0, am);
  let sum = 0;
  for (const v of am) sum += v;
  const offset = Math.fround(sum / nb);
  for (let i = 0; i < nb; i++) am[i] = am[i]! - offset;
  b.upload(absmax, 0, am);
  const qabsmax = b.allocate("cpu", nb);
  const nested = b.allocate("cpu", Math.ceil(nb / 256) * 4);
  const code = b.allocate("cpu", 1024);
  b.upload(code, 0, DYNAMIC_MAP_SIGNED);
  b.quantizeBlockwise8(qabsmax, 0, nested, 0, absmax, 0, F32, nb, 256, code, 0);
  absmax.dispose();
  const bytesRead = n / 2 + nb + Math.ceil(nb / 256) * 4 + 1024;
  return { packed, qabsmax, nested, code, offset, bytesRead, bs };
}

for (const [N, K] of [[4096, 14336], [14336, 4096]] as const) {
  const q = nf4DoubleQuant(N, K);
  for (const [M, dtype, name] of [[1, F32, "f32"], [1, BF16, "bf16"], [4, F32, "f32"], [16, F32, "f32"]] as const) {
    const bytesX = dtype === F32 ? 4 : 2;
    const x = b.allocate("cpu", M * K * bytesX);
    b.fill(x, 0, dtype, M * K, 0.5);
    const out = b.allocate("cpu", M * N * bytesX);
    const t = best(
      () => b.gemm4bit(out, 0, x, 0, dtype, q.packed, 0, q.qabsmax, 0, q.nested, 0, q.code, 0, q.offset, M, N, K, q.bs, QuantType.nf4, null, 0),
      M === 1 ? 40 : 8,
      2,
    );
    const gbs = q.bytesRead / t / 1e9;
    const line = `gemm4bit NF4+DQ ${N}x${K} M=${M} x ${name}`.padEnd(39);
    console.log(`${line}${fmt(t * 1e3, 2)} ms, ${fmt(gbs, 2)} GB/s weights+absmax = ${fmt((100 * gbs) / memcpyGBs, 0)}% of memcpy, ${fmt((2 * M * N * K) / t / 1e9)} GFLOP/s`);
    x.dispose();
    out.dispose();
  }
  q.packed.dispose();
  q.qabsmax.dispose();
  q.nested.dispose();
  q.code.dispose();
}

// ---- dequantize4bit / quantize4bit throughput -------------------------------------------------------------
{
  const n = 4096 * 14336;
  const bs = 64;
  const w = randomF32(n);
  const packed = b.allocate("cpu", n / 2);
  const absmax = b.allocate("cpu", (n / bs) * 4);
  const tq = best(() => b.quantize4bit(packed, 0, absmax, 0, w, 0, F32, n, bs, QuantType.nf4), 3);
  console.log(`quantize4bit NF4 f32 -> 4 bit`.padEnd(39) + `${fmt(n / tq / 1e9, 2)} Gelem/s (${fmt(tq * 1e3, 1)} ms for 4096x14336)`);
  for (const [dtype, name, bytes] of [[F32, "f32", 4], [BF16, "bf16", 2]] as const) {
    const out = dtype === F32 ? w : b.allocate("cpu", n * bytes);
    const t = best(() => b.dequantize4bit(out, 0, dtype, packed, 0, absmax, 0, n, bs, QuantType.nf4), 5);
    console.log(
      `dequantize4bit NF4 -> ${name}`.padEnd(39) +
        `${fmt(n / t / 1e9, 2)} Gelem/s, ${fmt((n * bytes + n / 2 + (n / bs) * 4) / t / 1e9, 2)} GB/s read+written (${fmt(t * 1e3, 1)} ms)`,
    );
    if (out !== w) out.dispose();
  }
  w.dispose();
  packed.dispose();
  absmax.dispose();
}
