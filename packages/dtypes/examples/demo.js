// Demo: quantize a random 1024×1024 matrix to NF4 / FP4 (with and without double quantization),
// 8-bit blockwise and LLM.int8, and print bytes per parameter and reconstruction error for each.
// Run from the repository root after a build: node packages/dtypes/examples/demo.js

import {
  dequantize4bit,
  dequantizeBlockwise,
  int8VectorwiseDequant,
  int8VectorwiseQuant,
  quantize4bit,
  quantizeBlockwise,
} from "../dist/index.js";

const rows = 1024;
const cols = 1024;
const n = rows * cols;
// Standard-normal weights from a fixed seed (Box–Muller over a small LCG).
const x = new Float32Array(n);
let s = 7;
const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
for (let i = 0; i < n; i++) x[i] = Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next());

function errors(y) {
  let abs = 0;
  let sq = 0;
  for (let i = 0; i < n; i++) {
    const d = y[i] - x[i];
    abs += Math.abs(d);
    sq += d * d;
  }
  return { mae: abs / n, rmse: Math.sqrt(sq / n) };
}

const rowsOut = [];
function report(format, bytes, y) {
  const { mae, rmse } = errors(y);
  rowsOut.push({ format, "bytes/param": (bytes / n).toFixed(4), "bits/param": ((bytes * 8) / n).toFixed(3), "mean |err|": mae.toFixed(5), rmse: rmse.toFixed(5) });
}

report("float32", n * 4, x);
for (const quantType of ["nf4", "fp4"]) {
  for (const compressStatistics of [false, true]) {
    const { packed, state } = quantize4bit(x, { blocksize: 64, quantType, compressStatistics });
    const stats = compressStatistics ? state.absmax.byteLength + state.state2.absmax.byteLength + 4 : state.absmax.byteLength;
    report(`${quantType}${compressStatistics ? " + double quant" : ""} (bs 64)`, packed.byteLength + stats, dequantize4bit(packed, state));
  }
}
const q8 = quantizeBlockwise(x, { blocksize: 4096 });
report("8-bit blockwise (bs 4096)", q8.codes.byteLength + q8.absmax.byteLength, dequantizeBlockwise(q8.codes, q8));
const int8 = int8VectorwiseQuant(x, rows, cols);
report("LLM.int8 (row-wise)", int8.CB.byteLength + int8.SCB.byteLength, int8VectorwiseDequant(int8.CB, int8.SCB, rows, cols));

console.log(`lowbit dtypes demo: a ${rows}×${cols} N(0,1) matrix in each format`);
console.table(rowsOut);
