// Benchmark: NF4 quantize / dequantize throughput of the pure-TypeScript codecs (MB/s of float32 input).
// Run: pnpm --filter @lowbit/dtypes bench

import { dequantize4bit, quantize4bit } from "../src/index.js";

function randn(n: number): Float32Array {
  const out = new Float32Array(n);
  let s = 42;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    const u = (s + 1) / 4294967297;
    s = (s * 1103515245 + 12345) >>> 0;
    const v = s / 4294967296;
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

function timeIt(fn: () => void, reps: number): number {
  fn(); // warm-up (JIT)
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < reps; r++) fn();
  return Number(process.hrtime.bigint() - t0) / 1e9 / reps;
}

const n = 4096 * 4096;
const x = randn(n);
const mb = (n * 4) / 1e6;
console.log(`NF4 codec, pure TypeScript, ${n} float32 values (${mb.toFixed(0)} MB), node ${process.version}`);
for (const compressStatistics of [false, true]) {
  const label = compressStatistics ? "nf4 + double quant" : "nf4";
  let q = quantize4bit(x, { blocksize: 64, quantType: "nf4", compressStatistics });
  const tq = timeIt(() => {
    q = quantize4bit(x, { blocksize: 64, quantType: "nf4", compressStatistics });
  }, 3);
  const td = timeIt(() => {
    dequantize4bit(q.packed, q.state);
  }, 3);
  console.log(`${label.padEnd(20)} quantize ${(mb / tq).toFixed(1).padStart(7)} MB/s   dequantize ${(mb / td).toFixed(1).padStart(7)} MB/s`);
}
