// CPU matrix products: the float32-accumulating matmul (f32/f16/bf16), the fused 4-bit GEMM over packed NF4/FP4
// weights, and the LLM.int8 integer matmul and outlier product. Pure C++ over raw pointers (no N-API); callers
// validate sizes. Every index is 64-bit. Multithreaded through lowbit::cpu::parallel_for.
#pragma once
#include <cstdint>
#include <functional>

#include "../dtype.h"
#include "quant.h"

namespace lowbit::cpu {

// Batched out[b] = alpha * op(A[b]) @ op(B[b]) + beta * out[b] (binding.ts `matmul`): op(A) (M, K), op(B) (K, N),
// out (M, N) contiguous. A is stored (M, K) or with trans_a (K, M); B (K, N) or with trans_b (N, K). Strides are
// elements between batch items (0 broadcasts A or B). A and B are `dtype` (f32/f16/bf16); out is `out_dtype`.
// Accumulates in float32 and rounds to out_dtype once. beta == 0 never reads out (NaN there does not propagate).
void matmul(void* out, DType out_dtype, const void* a, const void* b, DType dtype, int64_t batch, int64_t M, int64_t N,
            int64_t K, bool trans_a, bool trans_b, int64_t stride_a, int64_t stride_b, int64_t stride_out, float alpha,
            float beta);

// ---- the packed float32 GEMM engine (shared by matmul and gemm4bit) --------------------------------------------------
// A pack function fills `panel` (kc, width) for the operand rows [r0, r0 + rows) and depth [k0, k0 + kc):
// panel[k * width + r] = value(r0 + r, k0 + k) for r < rows and 0 for rows <= r < width. For A a "row" is i of
// A (M, K); for B it is column j of B (K, N). It is called concurrently from pool threads on disjoint panels.
using PackFn = std::function<void(float* panel, int64_t r0, int64_t rows, int64_t width, int64_t k0, int64_t kc)>;

// C (M, N) float32 with row stride ldc: C = alpha * A @ B + beta * C (beta == 0: C is not read).
void gemm_packed(float* C, int64_t ldc, int64_t M, int64_t N, int64_t K, const PackFn& pack_a, const PackFn& pack_b,
                 float alpha, float beta);

// A PackFn reading a strided matrix of f32/f16/bf16: value(r, k) = src[r * row_stride + k * k_stride].
PackFn strided_packer(const void* src, DType dtype, int64_t row_stride, int64_t k_stride);

// ---- 4-bit GEMM --------------------------------------------------------------------------------------------------
// A packed 4-bit weight W (N, K): element (n, k) is flat index n*K + k, code in the high nibble for even indices.
// Plain state: absmax (ceil(N*K/bs),) float32. Double-quant state (qabsmax != null): the scale of block b is
// fmaf(nested_code[qabsmax[b]], nested_absmax[b >> 8], offset) (spec §9, fused, one rounding).
struct Weight4bit {
  const uint8_t* packed = nullptr;
  const float* absmax = nullptr;         // plain state, or null
  const uint8_t* qabsmax = nullptr;      // double-quant state, or null
  const float* nested_absmax = nullptr;  // (ceil(n_blocks/256),)
  const float* nested_code = nullptr;    // (256,)
  float offset = 0.0f;
  int64_t blocksize = 64;
  QuantType type = QuantType::NF4;
};

// out (M, N) in dtype = x (M, K) in dtype @ dequant(W)^T (+ bias (N,) in dtype, or null), float32 accumulation.
// Weights are decoded on the fly from the nibbles; W is never materialized. The products use the dequantized values
// fp32(LUT[code] * scale), except the one-row AVX2 matvec, which sums x * LUT[code] per absmax block and multiplies by
// the block's scale once (the same value up to float32 rounding; tolerance-level, as every GEMM of spec §17).
void gemm4bit(void* out, const void* x, DType dtype, const Weight4bit& w, int64_t M, int64_t N, int64_t K, const void* bias);

// ---- LLM.int8 -----------------------------------------------------------------------------------------------------
// out (M, N) int32 = A (M, K) int8 @ B (N, K)^T int8, exact (wrapping) int32 accumulation.
void int8_matmul(int32_t* out, const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K);

// out (M, N) in dtype = T(out + x[:, cols] @ W[:, cols]^T) with W[n, c] = fp32(fp32(CB[n, c] * SCB[n]) * (1/127)),
// x (M, K) in dtype, CB (N, K) int8, SCB (N,) float32, cols (n_cols,) int32 in [0, K) (checked by the caller).
void int8_outlier_matmul_add(void* out, const void* x, DType dtype, const int8_t* CB, const float* SCB, const int32_t* cols,
                             int64_t n_cols, int64_t M, int64_t N, int64_t K);

}  // namespace lowbit::cpu
