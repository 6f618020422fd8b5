#!/usr/bin/env node
// Checks the CUDA runtime, layout kernels and GEMM of a built addon on a machine with a GPU, with nothing
// but Node (no vitest, no node_modules): the caching allocator (reuse keeps `reserved` flat, statistics,
// stream-ordered frees, out-of-memory recovery), copies in every direction, `cast` for every dtype pair
// bit-identical to the CPU backend, `copyStrided` against the CPU backend, and `matmul` against the CPU
// matmul through cuBLAS and, in a child process with LOWBIT_CUBLAS=0, through the built-in kernel. Then it
// prints benchmarks: device-to-device copy bandwidth (1 GiB), host↔device bandwidth, bf16 GEMM 8192³ and
// f32 GEMM 4096³.
//
//   node scripts/cuda-core-check.mjs [--small] [path/to/lowbit_kernels.node]
//     --small   smaller problems, no out-of-memory test and no benchmarks (for compute-sanitizer:
//               compute-sanitizer --tool memcheck node scripts/cuda-core-check.mjs --small)
//   The addon defaults to $LOWBIT_KERNELS_PATH, then build/Release/lowbit_kernels.node.
//
// Prints one line per check ("ok" / "FAIL") and exits non-zero when any check failed.
//
// On this workplace's device machine (no Node there): build here with `LOWBIT_CUDA_ARCHS=90`, then `run`
// with carry [".gpu/kernels-core", "packages/kernels/build"] and a command like
//   xz -dc .gpu/kernels-core/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH &&
//   cd packages/kernels && node scripts/cuda-core-check.mjs 2>&1 | tee $OUT/core-check.log
// (about 20 s on an H100, benchmarks included).
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

import { addonPathFrom, loadAddon, ArgumentError, DTypeError, ShapeError, DeviceError, OutOfMemoryError, assert, throwsClass, hostTimeIt } from "./check-harness.mjs";

const scriptPath = fileURLToPath(import.meta.url);
const flags = new Set(process.argv.slice(2).filter((a) => a.startsWith("--")));
const positional = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const small = flags.has("--small");
const fallbackChild = flags.has("--fallback-child"); // internal: the LOWBIT_CUBLAS=0 child process
const addonPath = addonPathFrom(positional[0]);
const b = loadAddon(addonPath);


const DEV = "cuda:0";
// Dtype ids of @lowbit/dtypes' table.
const DT = { float32: 0, float16: 1, bfloat16: 2, float8_e4m3fn: 3, float8_e5m2: 4, int8: 5, uint8: 6, int16: 7, int32: 8, int64: 9, bool: 10 };
const SIZE = { float32: 4, float16: 2, bfloat16: 2, float8_e4m3fn: 1, float8_e5m2: 1, int8: 1, uint8: 1, int16: 2, int32: 4, int64: 8, bool: 1 };
const NAMES = Object.keys(DT);

let failures = 0;
const prefix = fallbackChild ? "  [fallback] " : "";
async function check(name, fn) {
  const t0 = performance.now();
  try {
    const detail = await fn();
    const ms = performance.now() - t0;
    console.log(`${prefix}ok   ${name}${detail ? ` (${detail})` : ""} [${ms.toFixed(0)} ms]`);
  } catch (error) {
    failures++;
    console.log(`${prefix}FAIL ${name}: ${error instanceof Error ? error.stack : String(error)}`);
  }
}

// ---- helpers ---------------------------------------------------------------------------------------------------

// Deterministic xorshift32 stream of uint32.
function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}
const bytesView = (a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
function download(s, offset = 0, length = s.byteLength - offset) {
  const out = new Uint8Array(length);
  b.download(s, offset, out);
  return out;
}
function firstMismatch(x, y) {
  if (x.length !== y.length) return Math.min(x.length, y.length);
  if (Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength))) return -1;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}
const hex = (u8, i, n) => Array.from(u8.subarray(i, i + n), (v) => v.toString(16).padStart(2, "0")).join("");
// A cpu and a cuda storage holding the same bytes.
function pair(bytes) {
  const c = b.allocate("cpu", bytes.byteLength);
  const g = b.allocate(DEV, bytes.byteLength);
  b.upload(c, 0, bytes);
  b.upload(g, 0, bytes);
  return { c, g, dispose: () => (c.dispose(), g.dispose()) };
}
function randomBytes(n, seed) {
  const r = rng(seed);
  const u = new Uint8Array(n);
  for (let i = 0; i < n; i++) u[i] = r() & 255;
  return u;
}
function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let u = 0;
  while (n >= 1024 && u < 3) {
    n /= 1024;
    u++;
  }
  return `${n.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

// ---- cast inputs: every bit pattern of the narrow formats, edge cases and random values of the wide ones --

function f32Inputs(n, seed) {
  const r = rng(seed);
  const u = new Uint32Array(n);
  const f = new Float32Array(u.buffer);
  const specials = [
    0, -0, Infinity, -Infinity, NaN, 1, -1, 0.5, 1.5, 2.5, -2.5, 448, 449, 464, 465, 480, 500, -448, -480, 57344, 61440, 65504, 65519, 65520,
    65536, 1e10, -1e10, 3.4e38, -3.4e38, 1e-40, -1e-40, 1e-45, 2 ** -6, 2 ** -9, 2 ** -10, 2 ** -14, 2 ** -16, 2 ** -17, 2 ** -24, 2 ** -25,
    127.5, 128, 255.5, 256, -128.5, -129, 32767.5, 32768, -32769, 2147483520, 2147483648, -2147483648, -2147483904, 9.2233720e18, -9.2233720e18,
    1.8446744e19, 16777217, 0.1, -0.1, 3.14159,
  ];
  let i = 0;
  for (const v of specials) f[i++] = v;
  for (const bits of [0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fbfffff, 0x00000001, 0x807fffff, 0x7f7fffff]) u[i++] = bits;
  while (i < n) {
    const kind = i % 6;
    if (kind === 0) u[i] = r(); // any bit pattern (NaN payloads included)
    else if (kind === 1) f[i] = (r() & 1 ? -1 : 1) * 2 ** ((r() % 100) - 40) * (1 + r() / 2 ** 32); // magnitudes for the int casts
    else if (kind === 2) u[i] = (r() & 0xffff0000) | 0x8000; // bfloat16 ties
    else if (kind === 3) u[i] = (r() & 0xffffe000) | 0x1000; // float16 ties
    else if (kind === 4) u[i] = (r() & 0xfff00000) | 0x80000; // float8_e4m3fn ties
    else u[i] = (r() & 0xffe00000) | 0x100000; // float8_e5m2 ties
    i++;
  }
  return bytesView(u);
}
function i32Inputs(n, seed) {
  const r = rng(seed);
  const a = new Int32Array(n);
  const edges = [0, 1, -1, 127, 128, -128, -129, 255, 256, 32767, 32768, -32768, -32769, 65535, 65536, 16777216, 16777217, 16777219, 2147483647, -2147483648];
  let i = 0;
  for (const v of edges) a[i++] = v;
  while (i < n) {
    a[i] = i % 2 ? r() | 0 : (r() >> (r() % 31)) | 0; // varied magnitudes
    i++;
  }
  return bytesView(a);
}
function i64Inputs(n, seed) {
  const r = rng(seed);
  const a = new BigInt64Array(n);
  const edges = [0n, 1n, -1n, 255n, 256n, -129n, 65535n, 16777217n, 2n ** 31n, -(2n ** 31n) - 1n, 2n ** 53n + 1n, 2n ** 62n + 12345n, 2n ** 63n - 1n, -(2n ** 63n)];
  let i = 0;
  for (const v of edges) a[i++] = v;
  while (i < n) {
    const v = (BigInt(r()) << 32n) | BigInt(r());
    const shift = BigInt(r() % 64);
    a[i] = BigInt.asIntN(64, i % 2 ? v : v >> shift);
    i++;
  }
  return bytesView(a);
}
function castInputs(name, n) {
  const size = SIZE[name];
  if (size === 1) return new Uint8Array(n).map((_, i) => i & 255);
  if (size === 2) return bytesView(new Uint16Array(n).map((_, i) => i & 65535));
  if (name === "float32") return f32Inputs(n, 12345);
  if (name === "int32") return i32Inputs(n, 777);
  return i64Inputs(n, 4242);
}

// ---- matmul ----------------------------------------------------------------------------------------------------

// Random values in (-1, 1) of `dtype` (rounded by the CPU cast), as raw bytes.
function randomTensor(dtype, n, seed) {
  const r = rng(seed);
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) f[i] = r() / 2 ** 31 - 1;
  if (dtype === "float32") return bytesView(f);
  const src = b.allocate("cpu", n * 4);
  const dst = b.allocate("cpu", n * SIZE[dtype]);
  b.upload(src, 0, f);
  b.cast(dst, 0, DT[dtype], src, 0, DT.float32, n);
  const out = download(dst);
  src.dispose();
  dst.dispose();
  return out;
}
// Raw bytes of `dtype` → Float32Array (through the CPU cast).
function toF32(bytes, dtype) {
  if (dtype === "float32") return new Float32Array(bytes.slice().buffer);
  const n = bytes.byteLength / SIZE[dtype];
  const src = b.allocate("cpu", bytes.byteLength);
  const dst = b.allocate("cpu", n * 4);
  b.upload(src, 0, bytes);
  b.cast(dst, 0, DT.float32, src, 0, DT[dtype], n);
  const out = new Float32Array(download(dst).buffer);
  src.dispose();
  dst.dispose();
  return out;
}

// One matmul on cpu and cuda from identical bytes; returns the error relative to max |reference|.
function matmulCase(c) {
  const { dtype, outDtype, batch, M, N, K, ta = false, tb = false, alpha = 1, beta = 0 } = c;
  const sa = c.sa ?? M * K, sb = c.sb ?? K * N, so = c.so ?? M * N;
  const offA = c.offA ?? 0, offB = c.offB ?? 0, offO = c.offO ?? 0; // byte offsets
  const es = SIZE[dtype], os = SIZE[outDtype];
  const aElems = batch > 0 ? (batch - 1) * sa + M * K : 0;
  const bElems = batch > 0 ? (batch - 1) * sb + K * N : 0;
  const oElems = batch > 0 ? (batch - 1) * so + M * N : 0;
  const aBytes = new Uint8Array(offA + aElems * es);
  aBytes.set(randomTensor(dtype, aElems, 11 + M), offA);
  const bBytes = new Uint8Array(offB + bElems * es);
  bBytes.set(randomTensor(dtype, bElems, 22 + N), offB);
  // out starts random (beta != 0 reads it) or NaN (beta == 0 must never read it).
  const oBytes = new Uint8Array(offO + oElems * os);
  if (beta !== 0) oBytes.set(randomTensor(outDtype, oElems, 33 + K), offO);
  else oBytes.set(bytesView(new Uint8Array(oElems * os).fill(0xff)), offO); // all-ones bytes: NaN in every float dtype
  const A = pair(aBytes), B = pair(bBytes), O = pair(oBytes);
  const args = [DT[dtype], DT[outDtype], batch, M, N, K, ta, tb, sa, sb, so, alpha, beta];
  b.matmul(O.c, offO, A.c, offA, B.c, offB, ...args);
  b.matmul(O.g, offO, A.g, offA, B.g, offB, ...args);
  const want = toF32(download(O.c, offO), outDtype);
  const got = toF32(download(O.g, offO), outDtype);
  A.dispose();
  B.dispose();
  O.dispose();
  let maxRef = 0, maxDiff = 0, nan = 0;
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(got[i]) !== Number.isNaN(want[i])) nan++;
    if (Number.isNaN(want[i])) continue;
    maxRef = Math.max(maxRef, Math.abs(want[i]));
    maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
  }
  assert(nan === 0, `${nan} elements differ in NaN-ness (beta == 0 must not read out)`);
  return maxRef === 0 ? maxDiff : maxDiff / maxRef;
}

function matmulCases() {
  const cases = [];
  for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
    cases.push({ name: `f32 37x29x53 ta=${ta} tb=${tb}`, dtype: "float32", outDtype: "float32", batch: 1, M: 37, N: 29, K: 53, ta, tb });
    cases.push({ name: `bf16 128x96x200 ta=${ta} tb=${tb}`, dtype: "bfloat16", outDtype: "bfloat16", batch: 1, M: 128, N: 96, K: 200, ta, tb });
    cases.push({ name: `f16→f32 65x63x17 ta=${ta} tb=${tb}`, dtype: "float16", outDtype: "float32", batch: 2, M: 65, N: 63, K: 17, ta, tb });
  }
  cases.push(
    { name: "f32 batch 3, A broadcast (strideA 0), out gaps, alpha/beta", dtype: "float32", outDtype: "float32", batch: 3, M: 33, N: 40, K: 70, sa: 0, so: 33 * 40 + 7, alpha: 0.5, beta: 0.25 },
    { name: "bf16 batch 4, B broadcast (strideB 0), transB, alpha/beta", dtype: "bfloat16", outDtype: "bfloat16", batch: 4, M: 64, N: 48, K: 96, tb: true, sb: 0, alpha: -1.5, beta: 1 },
    { name: "f16 batch 2 → f16, transA, beta", dtype: "float16", outDtype: "float16", batch: 2, M: 50, N: 70, K: 64, ta: true, beta: 0.5 },
    { name: "bf16 → f32", dtype: "bfloat16", outDtype: "float32", batch: 1, M: 100, N: 130, K: 90 },
    { name: "bf16 → f16 (through a float32 scratch)", dtype: "bfloat16", outDtype: "float16", batch: 2, M: 40, N: 50, K: 60, alpha: 2, beta: 0.5 },
    { name: "f16 → bf16 (through a float32 scratch)", dtype: "float16", outDtype: "bfloat16", batch: 1, M: 40, N: 50, K: 60, ta: true, tb: true },
    { name: "f32 → bf16 (through a float32 scratch)", dtype: "float32", outDtype: "bfloat16", batch: 2, M: 31, N: 17, K: 45, beta: 1 },
    { name: "gemv M=1", dtype: "bfloat16", outDtype: "bfloat16", batch: 1, M: 1, N: 300, K: 257, tb: true },
    { name: "N=1, K=1", dtype: "float32", outDtype: "float32", batch: 2, M: 20, N: 1, K: 1 },
    { name: "K=0 scales out by beta", dtype: "float32", outDtype: "float32", batch: 2, M: 5, N: 6, K: 0, beta: 0.5 },
    { name: "K=0, beta=0 zeroes out", dtype: "bfloat16", outDtype: "float16", batch: 1, M: 5, N: 6, K: 0 },
    { name: "operands at element (not 16-byte) aligned offsets", dtype: "bfloat16", outDtype: "float32", batch: 2, M: 24, N: 20, K: 28, offA: 2, offB: 6, offO: 4, so: 24 * 20 + 3, beta: 0.5 },
  );
  if (!small) {
    cases.push(
      { name: "f32 512x384x1000 batch 2", dtype: "float32", outDtype: "float32", batch: 2, M: 512, N: 384, K: 1000, tb: true },
      { name: "bf16 256x512x1024 batch 3, B broadcast", dtype: "bfloat16", outDtype: "bfloat16", batch: 3, M: 256, N: 512, K: 1024, sb: 0, tb: true },
    );
  }
  return cases;
}

async function matmulChecks(expectBackend) {
  await check(`cudaGemmBackend is "${expectBackend}"`, () => {
    const backend = b.cudaGemmBackend(DEV);
    assert(backend === expectBackend, `cudaGemmBackend("${DEV}") = "${backend}"`);
    throwsClass(() => b.cudaGemmBackend("cpu"), ArgumentError);
    return backend;
  });
  await check("matmul dispatches to CUDA", () => {
    const s = b.allocate(DEV, 64);
    try {
      b.matmul(s, 0, s, 16, s, 32, DT.float32, DT.float32, 1, 1, 1, 1, false, false, 1, 1, 1, 1, 0);
    } catch (error) {
      throw new Error(`the matmul binding does not run on CUDA storages (${error.message}); bind_linalg.cc must call lowbit::cuda::matmul`);
    } finally {
      s.dispose();
    }
  });
  for (const c of matmulCases()) {
    const tol = c.outDtype === "float32" && c.dtype === "float32" ? 1e-4 : c.outDtype === "float32" ? 1e-3 : 1e-2;
    await check(`matmul ${c.name}`, () => {
      const err = matmulCase(c);
      assert(err <= tol, `error ${err.toExponential(2)} relative to max |reference| exceeds ${tol}`);
      return `rel err ${err.toExponential(1)}`;
    });
  }
  await check("matmul errors: bad dtype, mixed devices", () => {
    const g = b.allocate(DEV, 64);
    const c = b.allocate("cpu", 64);
    throwsClass(() => b.matmul(g, 0, g, 16, g, 32, DT.int32, DT.float32, 1, 1, 1, 1, false, false, 1, 1, 1, 1, 0), DTypeError);
    throwsClass(() => b.matmul(g, 0, c, 16, g, 32, DT.float32, DT.float32, 1, 1, 1, 1, false, false, 1, 1, 1, 1, 0), DeviceError);
    g.dispose();
    c.dispose();
  });
}

// ---- the fallback child: matmul through the built-in kernel only -------------------------------------------------

if (fallbackChild) {
  await matmulChecks("fallback");
  if (!small) {
    await check("built-in GEMM speed (bf16 2048³, for information)", () => {
      const n = 2048;
      const A = b.allocate(DEV, n * n * 2), B = b.allocate(DEV, n * n * 2), C = b.allocate(DEV, n * n * 2);
      b.fill(A, 0, DT.bfloat16, n * n, 0.5);
      b.fill(B, 0, DT.bfloat16, n * n, 0.25);
      b.matmul(C, 0, A, 0, B, 0, DT.bfloat16, DT.bfloat16, 1, n, n, n, false, false, 0, 0, 0, 1, 0);
      b.synchronize(DEV);
      const t0 = performance.now();
      const iters = 3;
      for (let i = 0; i < iters; i++) b.matmul(C, 0, A, 0, B, 0, DT.bfloat16, DT.bfloat16, 1, n, n, n, false, false, 0, 0, 0, 1, 0);
      b.synchronize(DEV);
      const s = (performance.now() - t0) / 1000;
      const v = toF32(download(C, 0, 2), "bfloat16")[0];
      assert(v === 256, `C[0] = ${v}, expected 0.5 * 0.25 * 2048 = 256`);
      for (const x of [A, B, C]) x.dispose();
      return `${((2 * n ** 3 * iters) / s / 1e12).toFixed(2)} TFLOP/s`;
    });
  }
  process.exit(failures === 0 ? 0 : 1);
}

// ---- the main process ----------------------------------------------------------------------------------------------

console.log(`addon ${addonPath} version ${b.version}, cudaCompiled ${b.cudaCompiled}${small ? " (--small)" : ""}`);
const count = b.cudaDeviceCount();
if (count === 0) {
  console.log(`FAIL no CUDA device: ${b.cudaUnavailableReason()}`);
  process.exit(1);
}

await check("deviceInfo", () => {
  const info = b.deviceInfo(DEV);
  assert(info.name.length > 0 && info.multiProcessorCount > 0 && info.computeCapability[0] >= 7, JSON.stringify(info));
  assert(info.totalBytes > 0 && info.freeBytes > 0 && info.freeBytes <= info.totalBytes, JSON.stringify(info));
  return `${info.name}, ${info.multiProcessorCount} SMs, cc ${info.computeCapability.join(".")}, ${fmtBytes(info.freeBytes)} of ${fmtBytes(info.totalBytes)} free`;
});

await check("allocator: allocate/free in a loop reuses cached blocks (reserved stays flat)", () => {
  const sizes = [64 << 20, 1 << 20, 3 << 20, 17 << 20, 1000, 5 << 20];
  // First pass warms the cache; the next passes must not reserve anything more.
  const pass = () => {
    for (const n of sizes) {
      const s = b.allocate(DEV, n);
      s.dispose();
    }
  };
  pass();
  const reserved0 = b.memoryStats(DEV).reservedBytes;
  const iters = small ? 20 : 500;
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) pass();
  const us = ((performance.now() - t0) * 1000) / (iters * sizes.length);
  const reserved1 = b.memoryStats(DEV).reservedBytes;
  assert(reserved0 > 0, "reserved is 0 after allocating");
  assert(reserved1 === reserved0, `reserved grew from ${reserved0} to ${reserved1}`);
  return `reserved ${fmtBytes(reserved1)} flat over ${iters * sizes.length} allocate+zero-fill+dispose, ${us.toFixed(1)} µs each`;
});

await check("memory statistics: allocated, peak, reset, reserved >= allocated", () => {
  const base = b.memoryStats(DEV);
  b.resetPeakMemoryStats(DEV);
  assert(b.memoryStats(DEV).peakBytes === base.allocatedBytes, "peak not reset to allocated");
  const x = b.allocate(DEV, 10 << 20);
  const y = b.allocate(DEV, 30 << 20);
  const mid = b.memoryStats(DEV);
  assert(mid.allocatedBytes === base.allocatedBytes + (40 << 20), `allocated ${mid.allocatedBytes}`);
  assert(mid.reservedBytes >= mid.allocatedBytes, `reserved ${mid.reservedBytes} < allocated ${mid.allocatedBytes}`);
  y.dispose();
  const after = b.memoryStats(DEV);
  assert(after.allocatedBytes === base.allocatedBytes + (10 << 20), `allocated after dispose ${after.allocatedBytes}`);
  assert(after.peakBytes === base.allocatedBytes + (40 << 20), `peak ${after.peakBytes}`);
  assert(after.reservedBytes >= mid.allocatedBytes, "the freed block should stay cached");
  b.resetPeakMemoryStats(DEV);
  assert(b.memoryStats(DEV).peakBytes === after.allocatedBytes, "peak after reset");
  x.dispose();
  const empty = b.allocate(DEV, 0);
  assert(empty.byteLength === 0 && b.memoryStats(DEV).allocatedBytes === base.allocatedBytes, "zero-length storage");
  empty.dispose();
  return `allocated ${mid.allocatedBytes}, reserved ${fmtBytes(mid.reservedBytes)}`;
});

await check("frees are stream-ordered: a block freed while a kernel still reads it is reused only afterwards", () => {
  const n = 16 << 20; // float32 elements
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (i % 1000) - 500.25;
  const src = b.allocate(DEV, n * 4);
  b.upload(src, 0, data);
  const dst = b.allocate(DEV, n * 2);
  b.cast(dst, 0, DT.bfloat16, src, 0, DT.float32, n); // queued
  src.dispose(); // freed behind the cast
  const reuse = b.allocate(DEV, n * 4); // likely the same block; its zero fill runs after the cast
  b.fill(reuse, 0, DT.float32, n, 7);
  const cpuSrc = b.allocate("cpu", n * 4);
  const cpuDst = b.allocate("cpu", n * 2);
  b.upload(cpuSrc, 0, data);
  b.cast(cpuDst, 0, DT.bfloat16, cpuSrc, 0, DT.float32, n);
  const i = firstMismatch(download(dst), download(cpuDst));
  assert(i === -1, `cast result differs at byte ${i}`);
  for (const s of [dst, reuse, cpuSrc, cpuDst]) s.dispose();
});

await check("host→device uploads return once the source may be reused (staged), in stream order", () => {
  const sizes = [1, 100, 4096, 300 << 10, (20 << 20) + 13, 3, (40 << 20) + 7];
  const total = sizes.reduce((a, c) => a + c + 5, 0);
  const g = b.allocate(DEV, total);
  const expected = new Uint8Array(total);
  let at = 0;
  for (const [k, n] of sizes.entries()) {
    const data = randomBytes(n, k + 1);
    expected.set(data, at + 5);
    b.upload(g, at + 5, data);
    data.fill(0xee); // overwritten at once: the device must still receive the original bytes
    at += n + 5;
  }
  // Many small uploads back to back (they share the staging buffers).
  const small = b.allocate(DEV, 4096 * 4);
  const smallExpected = new Uint8Array(4096 * 4);
  for (let i = 0; i < 4096; i++) {
    const v = new Uint8Array([i & 255, i >> 8, 0xab, 0xcd]);
    smallExpected.set(v, i * 4);
    b.upload(small, i * 4, v);
    v.fill(0);
  }
  let i = firstMismatch(download(g), expected);
  assert(i === -1, `upload differs at byte ${i}`);
  i = firstMismatch(download(small), smallExpected);
  assert(i === -1, `small uploads differ at byte ${i}`);
  g.dispose();
  small.dispose();
});

await check("copyBytes in every direction, overlapping device copies, readFile to the device", async () => {
  const n = (24 << 20) + 7;
  const data = randomBytes(n, 99);
  const host = b.allocate("cpu", n);
  b.upload(host, 0, data);
  const g1 = b.allocate(DEV, n);
  const g2 = b.allocate(DEV, n);
  b.copyBytes(g1, 0, host, 0, n);
  b.copyBytes(g2, 1, g1, 0, n - 1);
  const back = download(g2);
  assert(back[0] === 0 && firstMismatch(back.subarray(1), data.subarray(0, n - 1)) === -1, "device copy chain differs");
  b.copyBytes(g2, 0, g2, 1, n - 1); // overlapping, towards lower addresses
  assert(firstMismatch(download(g2, 0, n - 1), data.subarray(0, n - 1)) === -1, "overlapping copy (down) differs");
  b.copyBytes(g2, 3, g2, 0, n - 3); // overlapping, towards higher addresses
  assert(firstMismatch(download(g2, 3, n - 3), data.subarray(0, n - 3)) === -1, "overlapping copy (up) differs");
  const host2 = b.allocate("cpu", n);
  b.copyBytes(host2, 0, g1, 0, n);
  assert(firstMismatch(download(host2), data) === -1, "device → host copyBytes differs");
  const dir = mkdtempSync(join(tmpdir(), "lowbit-core-check-"));
  try {
    const path = join(dir, "blob.bin");
    writeFileSync(path, data);
    const s = await b.readFile(path, 4321, n - 4321, DEV);
    assert(firstMismatch(download(s), data.subarray(4321)) === -1, "readFile content differs");
    s.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  for (const s of [host, host2, g1, g2]) s.dispose();
});

await check("cast: every dtype pair is bit-identical to the CPU backend", () => {
  const n = small ? 65536 + 77 : (1 << 18) + 77;
  let pairs = 0;
  for (const from of NAMES) {
    const input = castInputs(from, n);
    const P = pair(input);
    for (const to of NAMES) {
      const C = b.allocate("cpu", n * SIZE[to]);
      const G = b.allocate(DEV, n * SIZE[to]);
      b.cast(C, 0, DT[to], P.c, 0, DT[from], n);
      b.cast(G, 0, DT[to], P.g, 0, DT[from], n);
      const want = download(C), got = download(G);
      const i = firstMismatch(got, want);
      if (i !== -1) {
        const e = Math.floor(i / SIZE[to]);
        throw new Error(`${from} → ${to}: element ${e} (input 0x${hex(input, e * SIZE[from], SIZE[from])}) gives 0x${hex(got, e * SIZE[to], SIZE[to])} on cuda, 0x${hex(want, e * SIZE[to], SIZE[to])} on cpu`);
      }
      C.dispose();
      G.dispose();
      pairs++;
    }
    P.dispose();
  }
  return `${pairs} pairs × ${n} elements`;
});

await check("cast at unaligned byte offsets and in place", () => {
  const n = 5000;
  for (const from of NAMES) {
    const input = castInputs(from, n);
    const padded = new Uint8Array(input.byteLength + 3);
    padded.set(input, 3);
    const P = pair(padded);
    for (const to of NAMES) {
      const C = b.allocate("cpu", n * SIZE[to] + 1);
      const G = b.allocate(DEV, n * SIZE[to] + 1);
      b.cast(C, 1, DT[to], P.c, 3, DT[from], n);
      b.cast(G, 1, DT[to], P.g, 3, DT[from], n);
      const i = firstMismatch(download(G), download(C));
      assert(i === -1, `${from}@3 → ${to}@1 differs at byte ${i}`);
      C.dispose();
      G.dispose();
    }
    P.dispose();
  }
  // In place over the same bytes (equal element sizes).
  for (const [from, to] of [["float32", "int32"], ["float16", "bfloat16"], ["int8", "float8_e4m3fn"], ["int64", "int64"]]) {
    const P = pair(castInputs(from, n));
    b.cast(P.c, 0, DT[to], P.c, 0, DT[from], n);
    b.cast(P.g, 0, DT[to], P.g, 0, DT[from], n);
    assert(firstMismatch(download(P.g), download(P.c)) === -1, `in-place ${from} → ${to} differs`);
    P.dispose();
  }
  // A partial overlap is refused; the same dtype at shifted offsets is a memmove.
  const P = pair(castInputs("int32", n));
  throwsClass(() => b.cast(P.g, 4, DT.float32, P.g, 0, DT.int32, 100), ArgumentError);
  b.cast(P.c, 8, DT.int32, P.c, 0, DT.int32, 1000);
  b.cast(P.g, 8, DT.int32, P.g, 0, DT.int32, 1000);
  assert(firstMismatch(download(P.g), download(P.c)) === -1, "overlapping same-dtype cast differs");
  P.dispose();
});

await check("copyStrided matches the CPU backend (N-d, transposes, 0-strides, >12 dims, unaligned, overlapping)", () => {
  const cases = [
    // [esize, shape, srcStrides, dstStrides, srcOffsetElems, dstOffsetElems]
    [4, [257, 129], [1, 257], [129, 1], 0, 0], // transpose
    [2, [3, 40, 50], [2000, 1, 40], [2000, 50, 1], 1, 0],
    [8, [7, 9, 11], [99, 11, 1], [1, 7, 63], 0, 2],
    [1, [64, 33], [0, 1], [33, 1], 5, 0], // broadcast rows
    [4, [1000], [0], [1], 3, 0], // one value everywhere
    [2, [10, 1, 20], [0, 999, 1], [20, 20, 1], 0, 0], // size-1 dim with an odd stride
    [4, [5, 6], [12, 2], [12, 2], 0, 1], // strided on both sides
    [4, [1], [1], [1], 7, 3], // a single element
    // 14 dims that cannot merge (every dim transposed): launched as 4 pieces of 12 dims.
    [8, Array(14).fill(2), Array.from({ length: 14 }, (_, k) => 2 ** (14 - k)), Array.from({ length: 14 }, (_, k) => 2 ** k), 0, 0],
  ];
  const unaligned = [[4, [30, 40], [1, 30], [40, 1]], [2, [17, 19], [19, 1], [1, 17]], [8, [6, 7], [7, 1], [1, 6]]];
  const run = (esize, shape, srcSt, dstSt, srcOffBytes, dstOffBytes) => {
    const reach = (st) => shape.reduce((a, d, k) => a + (d - 1) * st[k], 0) + 1;
    const srcBytes = srcOffBytes + reach(srcSt) * esize, dstBytes = dstOffBytes + reach(dstSt) * esize;
    const dtype = { 1: DT.uint8, 2: DT.int16, 4: DT.float32, 8: DT.int64 }[esize];
    const S = pair(randomBytes(srcBytes, srcBytes));
    const D = pair(randomBytes(dstBytes, dstBytes + 1)); // untouched destination bytes must survive too
    b.copyStrided(D.c, dstOffBytes, dstSt, S.c, srcOffBytes, srcSt, dtype, shape);
    b.copyStrided(D.g, dstOffBytes, dstSt, S.g, srcOffBytes, srcSt, dtype, shape);
    const i = firstMismatch(download(D.g), download(D.c));
    assert(i === -1, `esize ${esize} shape ${JSON.stringify(shape)} src ${JSON.stringify(srcSt)} dst ${JSON.stringify(dstSt)} differs at byte ${i}`);
    S.dispose();
    D.dispose();
  };
  for (const [esize, shape, srcSt, dstSt, so, d] of cases) run(esize, shape, srcSt, dstSt, so * esize, d * esize);
  for (const [esize, shape, srcSt, dstSt] of unaligned) run(esize, shape, srcSt, dstSt, 1, 3);
  // Overlapping: shift a (100, 64) float32 block by one row inside one storage, and transpose in place.
  for (const [dstOff, dstSt, srcSt] of [[256, [64, 1], [64, 1]], [0, [1, 100], [64, 1]]]) {
    const P = pair(randomBytes(101 * 64 * 4, 5));
    b.copyStrided(P.c, dstOff, dstSt, P.c, 0, srcSt, DT.float32, [100, 64]);
    b.copyStrided(P.g, dstOff, dstSt, P.g, 0, srcSt, DT.float32, [100, 64]);
    assert(firstMismatch(download(P.g), download(P.c)) === -1, `overlapping copy to ${dstOff} differs`);
    P.dispose();
  }
  return `${cases.length + unaligned.length + 2} layouts`;
});

// The fallback kernel runs in a child process with LOWBIT_CUBLAS=0 (the backend is chosen once per process).
await check("matmul through the built-in kernel (child process, LOWBIT_CUBLAS=0)", () => {
  const args = [scriptPath, "--fallback-child", ...(small ? ["--small"] : []), addonPath];
  const r = spawnSync(process.execPath, args, { env: { ...process.env, LOWBIT_CUBLAS: "0" }, encoding: "utf8", maxBuffer: 1 << 26 });
  process.stdout.write(r.stdout ?? "");
  assert(!/lowbit: .*built-in GEMM/.test(r.stderr ?? ""), `LOWBIT_CUBLAS=0 must not print the fallback warning: ${r.stderr}`);
  if (r.stderr) process.stdout.write(r.stderr.split("\n").map((l) => (l ? `  [fallback stderr] ${l}` : l)).join("\n"));
  assert(r.status === 0, `the child exited with ${r.status ?? r.signal}`);
});

await matmulChecks(process.env.LOWBIT_CUBLAS === "0" ? "fallback" : "cublas");

await check("layout errors: mixed devices, packed dtypes", () => {
  const g = b.allocate(DEV, 64);
  const c = b.allocate("cpu", 64);
  throwsClass(() => b.cast(c, 0, DT.float16, g, 0, DT.float32, 4), DeviceError);
  throwsClass(() => b.copyStrided(g, 0, [1], c, 0, [1], DT.float32, [4]), DeviceError);
  throwsClass(() => b.cast(g, 0, 11, g, 32, DT.float32, 4), DTypeError);
  throwsClass(() => b.copyStrided(g, 0, [1], g, 32, [1], DT.float32, [100]), ShapeError);
  g.dispose();
  c.dispose();
});

if (!small) {
  await check("out of memory: OutOfMemoryError with requested / free bytes, then the device keeps working", () => {
    const e = throwsClass(() => b.allocate(DEV, 2 ** 44), OutOfMemoryError);
    assert(e.requestedBytes === 2 ** 44 && e.freeBytes > 0, `requested ${e.requestedBytes}, free ${e.freeBytes}`);
    // A realistic one: hold most of the memory, ask for more than is left, free, ask again.
    const free = b.deviceInfo(DEV).freeBytes;
    const big = b.allocate(DEV, Math.floor(free * 0.7));
    const e2 = throwsClass(() => b.allocate(DEV, Math.floor(free * 0.5)), OutOfMemoryError);
    // About 30% of the memory is still free: the report must say so (not count cached blocks as used).
    assert(e2.requestedBytes === Math.floor(free * 0.5) && e2.freeBytes > 0.2 * free && e2.freeBytes < e2.requestedBytes, `${e2.requestedBytes} / ${e2.freeBytes}`);
    big.dispose();
    const again = b.allocate(DEV, Math.floor(free * 0.5));
    again.dispose();
    // And compute afterwards.
    const x = b.allocate(DEV, 4096 * 4);
    const y = b.allocate(DEV, 4096 * 2);
    b.fill(x, 0, DT.float32, 4096, 1.5);
    b.cast(y, 0, DT.bfloat16, x, 0, DT.float32, 4096);
    const v = toF32(download(y), "bfloat16");
    assert(v.every((t) => t === 1.5), "device unusable after OOM");
    x.dispose();
    y.dispose();
    return e2.message;
  });

  // ---- benchmarks --------------------------------------------------------------------------------------------
  const time = (iters, fn) => hostTimeIt(b, DEV, fn, iters);

  await check("bench: device-to-device copy, 1 GiB", () => {
    const n = 1 << 30;
    const x = b.allocate(DEV, n), y = b.allocate(DEV, n);
    const s = time(10, () => b.copyBytes(y, 0, x, 0, n));
    x.dispose();
    y.dispose();
    return `${(n / s / 1e9).toFixed(0)} GB/s copied (${((2 * n) / s / 1e9).toFixed(0)} GB/s read + written)`;
  });

  await check("bench: host↔device, 256 MiB", () => {
    const n = 256 << 20;
    const host = new Uint8Array(n).fill(3);
    const g = b.allocate(DEV, n);
    const up = time(5, () => b.upload(g, 0, host));
    const down = time(5, () => b.download(g, 0, host));
    g.dispose();
    return `upload ${(n / up / 1e9).toFixed(1)} GB/s, download ${(n / down / 1e9).toFixed(1)} GB/s (pageable JS memory)`;
  });

  const gemmBench = (dtype, n, iters) => {
    const es = SIZE[dtype];
    // Random inputs in (-1, 1): uploaded as float32, cast on the GPU.
    const f = new Float32Array(n * n);
    const r = rng(n + es);
    const tmp = b.allocate(DEV, n * n * 4);
    const A = b.allocate(DEV, n * n * es), B = b.allocate(DEV, n * n * es), C = b.allocate(DEV, n * n * es);
    for (const dst of [A, B]) {
      for (let i = 0; i < n * n; i++) f[i] = r() / 2 ** 31 - 1;
      b.upload(tmp, 0, f);
      b.cast(dst, 0, DT[dtype], tmp, 0, DT.float32, n * n);
    }
    tmp.dispose();
    const s = time(iters, () => b.matmul(C, 0, A, 0, B, 0, DT[dtype], DT[dtype], 1, n, n, n, false, false, 0, 0, 0, 1, 0));
    // Spot-check four entries against a float64 dot product of the rounded inputs.
    const pick = [[0, 0], [n - 1, n - 1], [123, 4567 % n], [n >> 1, 77]];
    const rowA = (i) => toF32(download(A, i * n * es, n * es), dtype);
    const Bf = toF32(download(B), dtype);
    const Cf = toF32(download(C), dtype);
    let worst = 0;
    for (const [i, j] of pick) {
      const a = rowA(i);
      let ref = 0, mag = 0;
      for (let k = 0; k < n; k++) {
        ref += a[k] * Bf[k * n + j];
        mag += Math.abs(a[k] * Bf[k * n + j]);
      }
      worst = Math.max(worst, Math.abs(Cf[i * n + j] - ref) / mag);
    }
    for (const x of [A, B, C]) x.dispose();
    assert(worst < (dtype === "float32" ? 1e-5 : 1e-2), `spot check error ${worst}`);
    return `${((2 * n ** 3) / s / 1e12).toFixed(1)} TFLOP/s (${(s * 1000).toFixed(2)} ms per product; spot check rel err ${worst.toExponential(1)})`;
  };
  await check("bench: bf16 GEMM 8192³", () => gemmBench("bfloat16", 8192, 20));
  await check("bench: f32 GEMM 4096³ (full float32, no TF32)", () => gemmBench("float32", 4096, 10));
}

console.log(failures === 0 ? "cuda-core-check: all checks passed" : `cuda-core-check: ${failures} check(s) failed`);
process.exit(failures === 0 ? 0 : 1);
