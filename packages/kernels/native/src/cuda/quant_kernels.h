// Launchers of the CUDA bitsandbytes kernels (quant.cu, gemm4bit.cu, int8.cu) as plain C++ (no CUDA headers), called
// by bind_linalg.cc after it has checked every argument. Same semantics as cpu/quant.h and cpu/linalg.h: the
// quantizers are byte-identical to the CPU ones (bitsandbytes' reciprocal of ../cuda_reciprocal.h, separately rounded
// products, the same thresholds and search), the dequantizers bit-identical, the GEMMs equal up to float32 summation
// order.
// Every launcher takes raw device pointers of `device` (any byte offset the binding accepted: kernels use vector
// loads only where the pointers allow them) and queues its kernels on cuda::stream(device) without waiting, except
// int8_vectorwise_quant with a threshold, whose outlier column list must reach the host (one small device→host copy;
// int8_vectorwise_quant_list keeps it on the device instead).
// Launch failures throw DeviceError, scratch allocations OutOfMemoryError.
#pragma once
#include <cstdint>
#include <vector>

#include "../cpu/linalg.h"  // Weight4bit (plain pointers; here they are device pointers)
#include "../cpu/quant.h"   // QuantType, kMmDequantScale
#include "../dtype.h"

namespace lowbit::cuda::quant {

// ---- 4-bit and 8-bit blockwise (quant.cu) -------------------------------------------------------------------------
// x (n,) float32 / float16 / bfloat16 -> packed (ceil(n/2),) uint8, absmax (ceil(n/bs),) float32 (spec §3–§8).
void quantize4bit(int device, uint8_t* packed, float* absmax, const void* x, DType dtype, int64_t n, int64_t blocksize,
                  cpu::QuantType type);
// out (n,) in out_dtype = T(fp32(LUT[code_i] * absmax[i / bs])).
void dequantize4bit(int device, void* out, DType out_dtype, const uint8_t* packed, const float* absmax, int64_t n,
                    int64_t blocksize, cpu::QuantType type);
// out (n_blocks,) float32 = fp32(fp32(code[q[i]] * nested[i / nested_bs]) + offset) (two roundings, spec §9).
void dequantize_nested_absmax(int device, float* out, const uint8_t* qabsmax, const float* nested_absmax, const float* code,
                              float offset, int64_t n_blocks, int64_t nested_blocksize);
// x (n,) -> codes (n,) uint8 by the CUDA binary search with even-index ties (§11.2), absmax (ceil(n/bs),) float32;
// code (256,) float32 sorted ascending (checked by the caller).
void quantize_blockwise8(int device, uint8_t* codes, float* absmax, const void* x, DType dtype, int64_t n, int64_t blocksize,
                         const float* code);
// out (n,) in out_dtype = T(fp32(code[q] * absmax[i / bs])).
void dequantize_blockwise8(int device, void* out, DType out_dtype, const uint8_t* codes, const float* absmax, const float* code,
                           int64_t n, int64_t blocksize);

// ---- fused 4-bit GEMM (gemm4bit.cu) ---------------------------------------------------------------------------------
// out (M, N) in dtype = x (M, K) @ dequant(W)^T (+ bias (N,) in dtype, or null), float32 accumulation; W (N, K) packed
// as cpu::Weight4bit describes (device pointers). M <= 16: one streaming pass over W — for float16 / bfloat16 x with
// K % 64 == 0 and blocksize >= 64 on tensor cores (bytes decoded to LUT pairs through a shared-memory table, mma.sync,
// float32 sums scaled per 64-element chunk); otherwise one warp per output feature with the LUT in registers decoded
// by warp shuffles (float32 x keeps float32 math). M > 16: W is dequantized in row chunks into scratch (dtype) and
// multiplied by cuda::matmul (cuBLAS).
void gemm4bit(int device, void* out, const void* x, DType dtype, const cpu::Weight4bit& w, int64_t M, int64_t N, int64_t K,
              const void* bias);

// ---- LLM.int8 (int8.cu) -----------------------------------------------------------------------------------------------
// x (rows, cols) -> CB (rows, cols) int8, SCB (rows,) float32 (spec §12.1, as cpu::int8_vectorwise_quant). With
// threshold > 0 the per-column outlier flags are computed on the device and copied back (the host waits), and the
// ascending outlier columns are returned (and zeroed in CB when rows > 1); with threshold 0 nothing waits.
std::vector<int32_t> int8_vectorwise_quant(int device, int8_t* CB, float* SCB, const void* x, DType dtype, int64_t rows,
                                           int64_t cols, double threshold);
// The same quantization, but the outlier columns stay on the device: list (cols + 1,) int32 receives their count at
// list[0] and the ascending indices after it (CB columns zeroed on the device when rows > 1). Nothing waits.
void int8_vectorwise_quant_list(int device, int8_t* CB, float* SCB, const void* x, DType dtype, int64_t rows, int64_t cols,
                                double threshold, int32_t* list);
// out (M, N) int32 = A (M, K) int8 @ B (N, K)^T int8, exact int32 accumulation (dp4a kernels; cuBLAS's integer GEMM
// for M > 8 when cuBLAS is loaded).
void int8_matmul(int device, int32_t* out, const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K);
// out (M, N) in out_dtype from C (M, N) int32 (spec §12.4, bit-identical to cpu::int8_mm_dequant).
void int8_mm_dequant(int device, void* out, DType out_dtype, const int32_t* C, const float* row_stats, const float* col_stats,
                     const void* bias, int64_t M, int64_t N);
// out (M, N) in dtype = T(out + x[:, cols] @ W[:, cols]^T), W[n, c] = fp32(fp32(CB[n, c] * SCB[n]) * (1/127));
// cols (n_cols,) int32 device pointer, every index in [0, K) (checked by the caller).
// int8_outlier_matmul_add over a device list written by int8_vectorwise_quant_list (count at list[0], clamped to K;
// indices outside [0, K) skipped): one thread per output, nothing waits.
void int8_outlier_matmul_add_list(int device, void* out, const void* x, DType dtype, const int8_t* CB, const float* SCB,
                                  const int32_t* list, int64_t M, int64_t N, int64_t K);
void int8_outlier_matmul_add(int device, void* out, const void* x, DType dtype, const int8_t* CB, const float* SCB,
                             const int32_t* cols, int64_t n_cols, int64_t M, int64_t N, int64_t K);

}  // namespace lowbit::cuda::quant
