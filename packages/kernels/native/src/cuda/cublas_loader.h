// cuBLAS / cuBLASLt loaded at run time with dlopen (libcublas.so.13, then .12), so the addon neither
// links nor requires cuBLAS: the CUDA GEMM uses it when present and falls back to its own kernels when
// not. Declares only the handful of entry points lowbit calls, with the ABI types spelled out here
// (cuBLAS headers are not needed to build).
#pragma once
#include <cstdint>
#include <string>

namespace lowbit::cuda::cublas {

using Handle = void*;        // cublasHandle_t
using LtHandle = void*;      // cublasLtHandle_t
using Stream = void*;        // cudaStream_t
using Status = int;          // cublasStatus_t; 0 = CUBLAS_STATUS_SUCCESS
constexpr Status kSuccess = 0;

// cublasOperation_t
enum Operation : int { kOpN = 0, kOpT = 1 };
// cudaDataType_t values used with GemmEx
enum DataType : int { kR32F = 0, kR16F = 2, kR16BF = 14, kR8I = 3, kR32I = 10 };
// cublasComputeType_t values used with GemmEx
enum ComputeType : int { kCompute32F = 68, kCompute32FFastTF32 = 77, kCompute32I = 72 };
// cublasMath_t
enum Math : int { kDefaultMath = 0, kTF32TensorOpMath = 3 };
// cublasGemmAlgo_t
constexpr int kGemmDefault = -1;

struct Api {
  std::string library;  // the soname that loaded, e.g. "libcublas.so.13"
  int version = 0;      // cublasGetProperty-style version (major * 10000 + minor * 100 + patch) or 0
  Status (*create)(Handle*) = nullptr;
  Status (*destroy)(Handle) = nullptr;
  Status (*set_stream)(Handle, Stream) = nullptr;
  Status (*set_math_mode)(Handle, int) = nullptr;
  Status (*sgemm)(Handle, int transa, int transb, int m, int n, int k, const float* alpha, const float* A, int lda,
                  const float* B, int ldb, const float* beta, float* C, int ldc) = nullptr;
  Status (*gemm_ex)(Handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A, int a_type, int lda,
                    const void* B, int b_type, int ldb, const void* beta, void* C, int c_type, int ldc, int compute_type,
                    int algo) = nullptr;
  Status (*gemm_strided_batched_ex)(Handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A, int a_type,
                                    int lda, long long stride_a, const void* B, int b_type, int ldb, long long stride_b,
                                    const void* beta, void* C, int c_type, int ldc, long long stride_c, int batch,
                                    int compute_type, int algo) = nullptr;
  // Optional (null when missing): cublasSetWorkspace_v2(handle, workspace, bytes), cuBLAS >= 11.5.
  Status (*set_workspace)(Handle, void* workspace, size_t bytes) = nullptr;
  // cuBLASLt (optional: null when libcublasLt could not be loaded).
  Status (*lt_create)(LtHandle*) = nullptr;
  Status (*lt_destroy)(LtHandle) = nullptr;
};

// Loads cuBLAS on first call (thread-safe) and returns its entry points, or nullptr when it is not
// installed / a required symbol is missing; load_error() then says why in one sentence. The sonames are
// tried through the dynamic loader's search path first, then in the toolkit's usual directories
// ($CUDA_HOME/lib64, $CUDA_PATH/lib64, /usr/local/cuda/lib64, /usr/local/cuda/targets/x86_64-linux/lib),
// since toolkit installs often leave those off the loader path.
const Api* api();
std::string load_error();

}  // namespace lowbit::cuda::cublas
