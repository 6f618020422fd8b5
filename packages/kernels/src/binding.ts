// The raw native binding: one hand-written type for everything `lowbit_kernels.node` exports.
// Users never see it; @lowbit/tensor wraps it. Every kernel dispatches on the device of its storages
// (CPU now, CUDA through the same entry points), so nothing above this file knows the device.
//
// Conventions for every kernel below:
// - A tensor argument is a pair (storage, byteOffset). Unless strides are given, it is contiguous,
//   row-major, with the shape the kernel's size arguments describe.
// - Dtypes are the stable ids of @lowbit/dtypes' table (DTYPES[name].id): float32 0, float16 1,
//   bfloat16 2, ..., int32 8, int64 9, uint8 6, int8 5.
// - Float math is done in float32 (accumulation included) whatever the storage dtype; results are
//   rounded to the output dtype once, round to nearest even.
// - Native code checks every argument it indexes with: types, dtype support, that every read and
//   write stays inside its storage, that outputs are writable, that all storages share one device.
//   A failed check throws ArgumentError / DTypeError / ShapeError / DeviceError (classes defined in JS
//   and handed to the addon by `initialize`); nothing crashes the process.
// - [sync] runs on the calling thread (large CPU kernels split work over the addon's thread pool);
//   [async] runs off the JS thread and returns a promise.

/** A block of memory owned by the addon: 64-byte-aligned host memory, a read-only file mapping, or device memory. */
export interface NativeStorage {
  readonly byteLength: number;
  /** "cpu" or "cuda:N". */
  readonly device: string;
  /** File mappings are read-only; kernels refuse to write them. */
  readonly readOnly: boolean;
  readonly disposed: boolean;
  /** Frees the memory now (idempotent). Any later use throws DisposedError. */
  dispose(): void;
}

export interface NativeMemoryStats {
  /** Bytes in live storages on this device. */
  allocatedBytes: number;
  /** Highest allocatedBytes since start or the last resetPeakMemoryStats. */
  peakBytes: number;
  /** Bytes held from the system (>= allocated when a caching allocator keeps freed blocks). */
  reservedBytes: number;
}

export interface NativeDeviceInfo {
  device: string;
  name: string;
  totalBytes: number;
  freeBytes: number;
  /** CUDA only. */
  multiProcessorCount?: number;
  computeCapability?: [number, number];
}

export interface NativeErrorClasses {
  ArgumentError: new (message: string) => Error;
  DTypeError: new (message: string) => Error;
  ShapeError: new (message: string) => Error;
  DisposedError: new (message: string) => Error;
  DeviceError: new (message: string) => Error;
  OutOfMemoryError: new (message: string, requestedBytes: number, freeBytes: number) => Error;
  FileError: new (message: string) => Error;
}

export type Storage = NativeStorage;

/** Unary elementwise ops; `alpha` is the scalar argument where an op has one. */
export const UnaryOp = {
  neg: 0,
  exp: 1,
  log: 2,
  sqrt: 3,
  rsqrt: 4,
  abs: 5,
  silu: 6,
  /** Exact (erf) GELU, HF "gelu". */
  gelu: 7,
  /** tanh approximation, HF "gelu_pytorch_tanh". */
  geluTanh: 8,
  relu: 9,
  sigmoid: 10,
  tanh: 11,
  /** alpha * x */
  scale: 12,
  /** x + alpha */
  addScalar: 13,
  /** x ** alpha */
  powScalar: 14,
  square: 15,
} as const;
export type UnaryOpId = (typeof UnaryOp)[keyof typeof UnaryOp];

export const BinaryOp = { add: 0, sub: 1, mul: 2, div: 3, maximum: 4, minimum: 5 } as const;
export type BinaryOpId = (typeof BinaryOp)[keyof typeof BinaryOp];

export const ReduceOp = { sum: 0, mean: 1, max: 2 } as const;
export type ReduceOpId = (typeof ReduceOp)[keyof typeof ReduceOp];

/** 4-bit quant types: the `quant_type` of bitsandbytes. */
export const QuantType = { nf4: 0, fp4: 1 } as const;
export type QuantTypeId = (typeof QuantType)[keyof typeof QuantType];

export interface Binding {
  /** [sync] Must be called once, before anything else, with the JS error classes native code throws. */
  initialize(errors: NativeErrorClasses): void;
  readonly version: string;
  /** Whether this build compiled the CUDA sources (says nothing about a GPU being present). */
  readonly cudaCompiled: boolean;

  // ---- devices and memory --------------------------------------------------------------------
  /** [sync] Number of usable CUDA devices; 0 when not compiled, no driver or no GPU. */
  cudaDeviceCount(): number;
  /** [sync] Why CUDA is unusable (no driver, too old, no GPU, not compiled), or null when it works. */
  cudaUnavailableReason(): string | null;
  deviceInfo(device: string): NativeDeviceInfo;
  /**
   * [sync] What CUDA `matmul` runs on for a CUDA device: "cublas" (cuBLAS, loaded at run time:
   * libcublas.so.13, then .12) or "fallback" (lowbit's built-in tiled kernel: correct but far slower; used
   * when cuBLAS is not installed, in which case a warning is printed once to stderr, or when the
   * environment variable LOWBIT_CUBLAS=0 chooses it). Loads cuBLAS on first call. ArgumentError for "cpu".
   */
  cudaGemmBackend(device: string): "cublas" | "fallback";
  memoryStats(device: string): NativeMemoryStats;
  resetPeakMemoryStats(device: string): void;
  /** [sync] Waits until every queued operation on the device has finished. */
  synchronize(device: string): void;
  /**
   * [sync] Milliseconds of device time taken by the operations `work` queues on a CUDA device: timing events are
   * recorded on the device's stream before and after calling `work`, and the second one is waited for (the
   * torch.cuda.Event(enable_timing=True) pattern). The span also holds any gaps in which the device waited for the
   * host, so benchmarks queue their launches behind deviceSleep to time the device alone. An error thrown by `work`
   * propagates. ArgumentError for "cpu".
   */
  deviceElapsed(device: string, work: () => void): number;
  /**
   * Queues a kernel that keeps a CUDA device's stream busy for `microseconds` (0 .. 10 s; like torch.cuda._sleep),
   * so the operations queued after it wait and run back to back. ArgumentError for "cpu".
   */
  deviceSleep(device: string, microseconds: number): void;
  setNumThreads(n: number): void;
  getNumThreads(): number;

  // ---- storage ---------------------------------------------------------------------------------
  /**
   * [sync] New storage, zero-filled unless `zero` is false (then its contents are undefined: for outputs the caller
   * overwrites entirely). Throws OutOfMemoryError (requested and free bytes) when it cannot.
   */
  allocate(device: string, byteLength: number, zero?: boolean): NativeStorage;
  /** [sync] Maps a whole file read-only (zero-copy). */
  mapFile(path: string): NativeStorage;
  /** [async] Reads `byteLength` bytes at `fileOffset` of a file into new storage on `device`. */
  readFile(path: string, fileOffset: number, byteLength: number, device: string): Promise<NativeStorage>;
  /** [sync] Copies bytes between storages on any devices (host↔device through pinned staging). */
  copyBytes(dst: Storage, dstOffset: number, src: Storage, srcOffset: number, byteLength: number): void;
  /** [sync] Host typed array → storage. */
  upload(dst: Storage, dstOffset: number, src: ArrayBufferView): void;
  /** [sync] Storage → host typed array (fills all of `dst`). */
  download(src: Storage, srcOffset: number, dst: ArrayBufferView): void;
  /** [sync] Fills `count` elements of `dtype` with `value` (converted to the dtype). */
  fill(dst: Storage, dstOffset: number, dtype: number, count: number, value: number): void;

  // ---- layout and conversion -----------------------------------------------------------------
  /** [sync] Element-wise dtype conversion of `numel` contiguous elements (float ↔ float ↔ int; RNE). */
  cast(dst: Storage, dstOffset: number, dstDtype: number, src: Storage, srcOffset: number, srcDtype: number, numel: number): void;
  /** [sync] dst[idx] = src[idx] over `shape`, both with element strides (contiguous(), cat, KV-cache appends). */
  copyStrided(
    dst: Storage, dstOffset: number, dstStrides: number[],
    src: Storage, srcOffset: number, srcStrides: number[],
    dtype: number, shape: number[],
  ): void;

  // ---- elementwise ---------------------------------------------------------------------------
  /** [sync] out = op(x) over `numel` contiguous elements. */
  unary(op: UnaryOpId, out: Storage, outOffset: number, x: Storage, xOffset: number, dtype: number, numel: number, alpha: number): void;
  /** [sync] gx = gy * d op(x)/dx (alpha as in `unary`). */
  unaryBackward(op: UnaryOpId, gx: Storage, gxOffset: number, gy: Storage, gyOffset: number, x: Storage, xOffset: number, dtype: number, numel: number, alpha: number): void;
  /** [sync] out = a op b over `shape`; `out` contiguous, a/b read with element strides (0 = broadcast). */
  binary(
    op: BinaryOpId, out: Storage, outOffset: number,
    a: Storage, aOffset: number, aStrides: number[],
    b: Storage, bOffset: number, bStrides: number[],
    dtype: number, shape: number[],
  ): void;

  // ---- reductions and normalisation --------------------------------------------------------------
  /** [sync] x viewed as (outer, n, inner) → out (outer, inner), reducing the middle axis. */
  reduce(op: ReduceOpId, out: Storage, outOffset: number, x: Storage, xOffset: number, dtype: number, outer: number, n: number, inner: number): void;
  /** [sync] out (rows,) int32 = argmax over the last axis of x (rows, cols); first index on ties. */
  argmax(out: Storage, outOffset: number, x: Storage, xOffset: number, dtype: number, rows: number, cols: number): void;
  /** [sync] (log-)softmax over the last axis of (rows, cols). */
  softmax(out: Storage, outOffset: number, x: Storage, xOffset: number, dtype: number, rows: number, cols: number, log: boolean): void;
  /** [sync] gx from gy and the forward output y. */
  softmaxBackward(gx: Storage, gxOffset: number, gy: Storage, gyOffset: number, y: Storage, yOffset: number, dtype: number, rows: number, cols: number, log: boolean): void;
  /** [sync] HF LlamaRMSNorm: out = w * (x * rsqrt(mean(x^2) + eps)) with f32 math; x (rows, cols), w (cols,). */
  rmsNorm(out: Storage, outOffset: number, x: Storage, xOffset: number, w: Storage, wOffset: number, dtype: number, wDtype: number, rows: number, cols: number, eps: number): void;
  /** [sync] gx (dtype) and gw (float32, accumulated: gw += ...) of rmsNorm. */
  rmsNormBackward(
    gx: Storage, gxOffset: number, gw: Storage, gwOffset: number,
    gy: Storage, gyOffset: number, x: Storage, xOffset: number, w: Storage, wOffset: number,
    dtype: number, wDtype: number, rows: number, cols: number, eps: number,
  ): void;

  // ---- transformer blocks ------------------------------------------------------------------------
  /**
   * [sync] HF rotary embedding (rotate_half, half-split): x (B, H, T, D) → out, angle = pos[b, t] * invFreq[i],
   * cos/sin multiplied by `attentionScaling`. positions (B, T) int32 or int64 (`posDtype`); invFreq float32 (D/2,).
   * `inverse` rotates by −angle (the backward pass).
   */
  rope(
    out: Storage, outOffset: number, x: Storage, xOffset: number, dtype: number,
    positions: Storage, positionsOffset: number, posDtype: number, invFreq: Storage, invFreqOffset: number,
    B: number, H: number, T: number, D: number, attentionScaling: number, inverse: boolean,
  ): void;
  /**
   * [sync] Scaled dot-product attention with GQA. q (B, Hq, Tq, D); k, v (B, Hkv, S, D) where S is the
   * cache capacity (the row pitch) and the first Tk positions are read, so k / v need ((B·Hkv − 1)·S + Tk)·D
   * elements after their offsets (a window of a cache may start past its first key); out (B, Hq, Tq, D). Query i sits at absolute
   * position qStart + i; with `causal` it sees keys j <= qStart + i. `mask` (B, Tk) uint8 (1 = attend,
   * 0 = padding) or null. `lse` (B, Hq, Tq) float32 receives the log-sum-exp for the backward pass, or null.
   * Rows that see no key produce zeros.
   */
  attention(
    out: Storage, outOffset: number, q: Storage, qOffset: number, k: Storage, kOffset: number, v: Storage, vOffset: number,
    dtype: number, B: number, Hq: number, Hkv: number, Tq: number, Tk: number, S: number, D: number,
    scale: number, causal: boolean, qStart: number, mask: Storage | null, maskOffset: number,
    lse: Storage | null, lseOffset: number,
  ): void;
  /** [sync] dq (B,Hq,Tq,D), dk and dv (B,Hkv,S,D; accumulated over the GQA group, overwritten) from gOut, the forward out and lse. */
  attentionBackward(
    dq: Storage, dqOffset: number, dk: Storage, dkOffset: number, dv: Storage, dvOffset: number,
    gOut: Storage, gOutOffset: number, q: Storage, qOffset: number, k: Storage, kOffset: number, v: Storage, vOffset: number,
    out: Storage, outOffset: number, lse: Storage, lseOffset: number,
    dtype: number, B: number, Hq: number, Hkv: number, Tq: number, Tk: number, S: number, D: number,
    scale: number, causal: boolean, qStart: number, mask: Storage | null, maskOffset: number,
  ): void;
  /**
   * [sync] out (n, dim) = weight[ids[i]]; ids int32/int64 checked against vocab (ArgumentError, out untouched). With
   * `deferCheck` on CUDA the call does not wait for the device: rows of bad ids are written as zeros and the first bad
   * id is thrown (ArgumentError) by the next device→host copy or synchronize of that device. The CPU always checks now.
   */
  embedding(out: Storage, outOffset: number, weight: Storage, weightOffset: number, wDtype: number, ids: Storage, idsOffset: number, idsDtype: number, n: number, dim: number, vocab: number, deferCheck?: boolean): void;
  /** [sync] gw (vocab, dim) float32 += scatter of gy (n, dim). */
  embeddingBackward(gw: Storage, gwOffset: number, gy: Storage, gyOffset: number, gyDtype: number, ids: Storage, idsOffset: number, idsDtype: number, n: number, dim: number, vocab: number): void;
  /**
   * [sync] losses (rows,) float32 = -log_softmax(logits)[target] (0 where target == ignoreIndex).
   * Returns the number of rows that were not ignored. targets int32/int64, checked against cols.
   */
  crossEntropy(losses: Storage, lossesOffset: number, logits: Storage, logitsOffset: number, dtype: number, targets: Storage, targetsOffset: number, tDtype: number, rows: number, cols: number, ignoreIndex: number): number;
  /** [sync] glogits = scale * (softmax(logits) - onehot(target)) (rows with ignoreIndex get 0). */
  crossEntropyBackward(glogits: Storage, glogitsOffset: number, logits: Storage, logitsOffset: number, dtype: number, targets: Storage, targetsOffset: number, tDtype: number, rows: number, cols: number, ignoreIndex: number, scale: number): void;
  /**
   * [sync] One AdamW step in place (torch.optim.AdamW semantics: decoupled weight decay p *= 1 - lr*wd first,
   * bias-corrected moments). param/grad in `dtype`; m, v float32.
   */
  adamw(param: Storage, paramOffset: number, grad: Storage, gradOffset: number, m: Storage, mOffset: number, v: Storage, vOffset: number, dtype: number, gDtype: number, n: number, lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number): void;

  // ---- matmul ----------------------------------------------------------------------------------
  /**
   * [sync] Batched out[b] = alpha * op(A[b]) @ op(B[b]) + beta * out[b] with op(A) (M, K), op(B) (K, N), out (M, N).
   * A is stored (M, K) or, with transA, (K, M); B is stored (K, N) or, with transB, (N, K).
   * Strides are elements between batch items (0 broadcasts). A and B share `dtype` (f32/f16/bf16);
   * out has `outDtype`. Accumulation in float32.
   */
  matmul(
    out: Storage, outOffset: number, a: Storage, aOffset: number, b: Storage, bOffset: number,
    dtype: number, outDtype: number, batch: number, M: number, N: number, K: number,
    transA: boolean, transB: boolean, strideA: number, strideB: number, strideOut: number, alpha: number, beta: number,
  ): void;
  /**
   * [async] The same as matmul. CPU: runs off the JS thread. CUDA: queued on the device's stream from the JS
   * thread (stream order is kept); the promise settles once the work is queued, or rejects if queuing fails.
   */
  matmulAsync(
    out: Storage, outOffset: number, a: Storage, aOffset: number, b: Storage, bOffset: number,
    dtype: number, outDtype: number, batch: number, M: number, N: number, K: number,
    transA: boolean, transB: boolean, strideA: number, strideB: number, strideOut: number, alpha: number, beta: number,
  ): Promise<void>;

  // ---- 4-bit (bitsandbytes NF4 / FP4) ------------------------------------------------------------
  /** [sync] Blockwise 4-bit quantization, the CUDA reference semantics (spec §3–§8): packed (ceil(n/2),) uint8, absmax (ceil(n/bs),) float32. Byte-identical to @lowbit/dtypes quantize4bit. */
  quantize4bit(packed: Storage, packedOffset: number, absmax: Storage, absmaxOffset: number, x: Storage, xOffset: number, dtype: number, n: number, blocksize: number, quantType: QuantTypeId): void;
  /**
   * [async] quantize4bit without blocking the event loop: off the JS thread on the CPU; on CUDA queued on the
   * device's stream, settling once queued (like matmulAsync).
   */
  quantize4bitAsync(packed: Storage, packedOffset: number, absmax: Storage, absmaxOffset: number, x: Storage, xOffset: number, dtype: number, n: number, blocksize: number, quantType: QuantTypeId): Promise<void>;
  /** [sync] out[i] = T(fp32(LUT[code_i] * absmax[i / bs])) for i < n. */
  dequantize4bit(out: Storage, outOffset: number, outDtype: number, packed: Storage, packedOffset: number, absmax: Storage, absmaxOffset: number, n: number, blocksize: number, quantType: QuantTypeId): void;
  /**
   * [sync] Standalone nested-absmax dequant (two roundings, spec §9):
   * out[i] = fp32(fp32(code[q[i]] * nestedAbsmax[i / nestedBlocksize]) + offset), float32 (nBlocks,).
   */
  dequantizeNestedAbsmax(out: Storage, outOffset: number, qabsmax: Storage, qabsmaxOffset: number, nestedAbsmax: Storage, nestedAbsmaxOffset: number, code: Storage, codeOffset: number, offset: number, nBlocks: number, nestedBlocksize: number): void;
  /**
   * [sync] Fused y = x @ dequant(W)^T (+ bias): x (M, K) in `dtype`, W (N, K) packed, out (M, N) in `dtype`.
   * Plain state: absmax float32 (N*K/bs,), nested* null. Double-quant state: absmax uint8 codes and
   * nestedAbsmax float32, nestedCode float32[256], offset; the scale is fmaf(code[q], nestedAbsmax[blk >> 8], offset).
   * Never materializes the dequantized W. bias (N,) in `dtype` or null.
   */
  gemm4bit(
    out: Storage, outOffset: number, x: Storage, xOffset: number, dtype: number,
    packed: Storage, packedOffset: number, absmax: Storage, absmaxOffset: number,
    nestedAbsmax: Storage | null, nestedAbsmaxOffset: number, nestedCode: Storage | null, nestedCodeOffset: number, offset: number,
    M: number, N: number, K: number, blocksize: number, quantType: QuantTypeId,
    bias: Storage | null, biasOffset: number,
  ): void;

  // ---- 8-bit blockwise and LLM.int8 --------------------------------------------------------------
  /** [sync] 8-bit blockwise quantization with a 256-entry sorted code (CUDA binary search, even-index ties). */
  quantizeBlockwise8(codes: Storage, codesOffset: number, absmax: Storage, absmaxOffset: number, x: Storage, xOffset: number, dtype: number, n: number, blocksize: number, code: Storage, codeOffset: number): void;
  /** [sync] out = T(fp32(code[q] * absmax[i / bs])). */
  dequantizeBlockwise8(out: Storage, outOffset: number, outDtype: number, codes: Storage, codesOffset: number, absmax: Storage, absmaxOffset: number, code: Storage, codeOffset: number, n: number, blocksize: number): void;
  /**
   * [sync] LLM.int8 vectorwise quantization of x (rows, cols): CB int8, SCB float32 row absmax excluding
   * |x| >= threshold when threshold > 0; outlier elements become 0 and, when rows > 1, whole outlier columns of CB are zeroed.
   * Returns the ascending outlier column indices — unless `outliers` (int32, cols + 1 entries, on x's device) is given:
   * then the count goes to outliers[0] and the indices after it, where they are computed, nothing waits for the device,
   * and an empty array is returned (int8OutlierMatmulAdd takes that list with nCols = -1).
   */
  int8VectorwiseQuant(CB: Storage, CBOffset: number, SCB: Storage, SCBOffset: number, x: Storage, xOffset: number, dtype: number, rows: number, cols: number, threshold: number, outliers?: Storage | null, outliersOffset?: number): Int32Array;
  /** [sync] out int32 (M, N) = A (M, K) int8 @ B (N, K)^T int8, exact int32 accumulation. */
  int8Matmul(out: Storage, outOffset: number, a: Storage, aOffset: number, b: Storage, bOffset: number, M: number, N: number, K: number): void;
  /** [sync] out (M, N) outDtype = fp16(fmaf(C * rowStats[r] * colStats[c], 1/127², bias[c])) as bitsandbytes' int8_mm_dequant; bias (N,) in outDtype or null. */
  int8MmDequant(out: Storage, outOffset: number, outDtype: number, C: Storage, COffset: number, rowStats: Storage, rowStatsOffset: number, colStats: Storage, colStatsOffset: number, bias: Storage | null, biasOffset: number, M: number, N: number): void;
  /**
   * [sync] The outlier part of LLM.int8: out (M, N) += x[:, cols] @ (CB[:, cols] * SCB / 127)^T computed in
   * float32 and rounded to `dtype`; x (M, K) dtype, CB (N, K) int8, SCB (N,) float32, cols int32 (nCols,), every
   * index checked (CUDA: through a host copy). nCols = -1: cols is an `outliers` list of int8VectorwiseQuant (K + 1
   * entries: count, indices), read where it lies (CUDA: in the kernel, count clamped to K, bad indices skipped).
   */
  int8OutlierMatmulAdd(out: Storage, outOffset: number, x: Storage, xOffset: number, dtype: number, CB: Storage, CBOffset: number, SCB: Storage, SCBOffset: number, cols: Storage, colsOffset: number, nCols: number, M: number, N: number, K: number): void;
}
