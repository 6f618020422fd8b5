// The CUDA float GEMM behind binding.ts `matmul`, as plain C++ (no CUDA headers): cuBLAS loaded at run time
// (cublas_loader.h) with float32 accumulation, or lowbit's own tiled kernel when cuBLAS is missing or
// LOWBIT_CUBLAS=0. Implemented in cuda/gemm.cu; cuda/unavailable.cc defines throwing versions for builds
// without CUDA, so callers need no #if.
#pragma once
#include <cstdint>

#include "../dtype.h"

namespace lowbit::cuda {

// Batched out[b] = alpha * op(A[b]) @ op(B[b]) + beta * out[b], row-major, exactly binding.ts `matmul`:
// op(A) (M, K), op(B) (K, N), out (M, N) contiguous per batch item. A is stored (M, K) or with transA (K, M);
// B (K, N) or with transB (N, K). strideA / strideB / strideOut are elements between batch items (0
// broadcasts A or B). a, b are `dtype` (float32 / float16 / bfloat16); out is `outDtype` (the same set).
// Accumulates in float32 (no TF32 for float32 inputs; tensor cores for 16-bit inputs) and rounds to outDtype
// once. beta == 0 never reads out. All pointers are device pointers of `device`, at any byte offset (the
// caller has range-checked them and checked that out does not overlap a or b).
// Asynchronous: queued on stream(device), like every CUDA kernel of the addon. Throws DeviceError /
// OutOfMemoryError (scratch for unaligned operands or unsupported cuBLAS type pairs).
void matmul(int device, void* out, DType outDtype, const void* a, const void* b, DType dtype, int64_t batch, int64_t M,
            int64_t N, int64_t K, bool transA, bool transB, int64_t strideA, int64_t strideB, int64_t strideOut, float alpha,
            float beta);

// "cublas" when matmul on `device` runs through cuBLAS, "fallback" when it runs lowbit's own kernel (cuBLAS
// not installed, its handle could not be created, or LOWBIT_CUBLAS=0). Loads cuBLAS on first call.
const char* gemm_backend(int device);

// int8Matmul's large-M path (int8.cu): out (M, N) int32 = A (M, K) int8 @ B (N, K)^T through cuBLAS's integer GEMM
// (CUBLAS_COMPUTE_32I, exact). Returns false, having queued nothing, when cuBLAS is not in use on the device or does
// not take these operands (K % 4, 16-byte alignment, sizes past INT_MAX, NOT_SUPPORTED); the caller then runs its
// own kernel. Throws DeviceError on other cuBLAS failures. Asynchronous on stream(device).
bool int8_gemm_cublas(int device, int32_t* out, const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K);

}  // namespace lowbit::cuda
