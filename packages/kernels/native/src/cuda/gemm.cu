// The CUDA float GEMM (gemm.h): row-major batched out = alpha * op(A) @ op(B) + beta * out, run as the
// column-major product out^T = op(B)^T op(A)^T through cuBLAS (cublasGemmStridedBatchedEx, float32
// compute: full float32 for float32 inputs, tensor cores with float32 accumulation for 16-bit ones), or,
// when cuBLAS is missing or LOWBIT_CUBLAS=0, through a shared-memory tiled kernel with float32
// accumulation. Type pairs cuBLAS lacks (float32 in → 16-bit out, float16 ↔ bfloat16) are computed into a
// float32 scratch and rounded once by an epilogue kernel, as the CPU matmul does.
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>

#include "common.cuh"
#include "cublas_loader.h"
#include "gemm.h"

namespace lowbit::cuda {
namespace {

constexpr int kMaxDevices = 64;
// cuBLAS's recommended workspace on Hopper; it comes from the device's pool and is kept for the process.
constexpr int64_t kWorkspaceBytes = int64_t{32} << 20;
constexpr int kStatusNotSupported = 15;  // CUBLAS_STATUS_NOT_SUPPORTED

// ---- cuBLAS state ------------------------------------------------------------------------------------------

struct CublasState {
  std::once_flag once;
  cublas::Handle handle = nullptr;
};
std::array<CublasState, kMaxDevices> g_cublas;

// LOWBIT_CUBLAS=0 (or false / off / no) forces the built-in kernel.
bool cublas_forced_off() { return env_switched_off("LOWBIT_CUBLAS"); }

// Printed once per process (process.emitWarning is not reachable from here).
void warn_fallback(const std::string& why) {
  static std::once_flag once;
  std::call_once(once, [&] {
    std::fprintf(stderr,
                 "lowbit: %s; CUDA matmul uses lowbit's built-in GEMM kernel instead (correct, but far slower). Install cuBLAS "
                 "(libcublas.so.13 or .12) for full speed, or set LOWBIT_CUBLAS=0 to choose the built-in kernel without this warning.\n",
                 why.c_str());
    std::fflush(stderr);
  });
}

// The cuBLAS handle of `device`, bound to stream(device) with its workspace set, or nullptr when matmul
// on the device uses the built-in kernel. Created on first use.
cublas::Handle cublas_handle(int device) {
  cudaStream_t s = stream(device);  // validates the index and makes the device current
  CublasState& st = g_cublas[static_cast<size_t>(device)];
  std::call_once(st.once, [&] {
    if (cublas_forced_off()) return;
    const cublas::Api* api = cublas::api();
    if (api == nullptr) {
      warn_fallback(cublas::load_error());
      return;
    }
    // The workspace first: if it throws OutOfMemoryError, call_once runs again on the next call.
    void* workspace = api->set_workspace != nullptr ? pool_alloc(device, kWorkspaceBytes, "cuBLAS workspace") : nullptr;
    cublas::Handle h = nullptr;
    cublas::Status status = api->create(&h);
    if (status != cublas::kSuccess) {
      pool_free(device, workspace);
      warn_fallback(api->library + ": cublasCreate failed on cuda:" + std::to_string(device) + " (status " + std::to_string(status) + ")");
      return;
    }
    // cublasSetStream resets the workspace, so the workspace is set after it.
    status = api->set_stream(h, s);
    if (status == cublas::kSuccess) status = api->set_math_mode(h, cublas::kDefaultMath);  // no TF32 for float32
    if (status == cublas::kSuccess && workspace != nullptr) status = api->set_workspace(h, workspace, static_cast<size_t>(kWorkspaceBytes));
    if (status != cublas::kSuccess) {
      api->destroy(h);
      pool_free(device, workspace);
      warn_fallback(api->library + ": configuring the cuBLAS handle failed (status " + std::to_string(status) + ")");
      return;
    }
    st.handle = h;  // lives for the process, like the stream it is bound to
  });
  return st.handle;
}

int cublas_type(DType d) {
  switch (d) {
    case DType::Float16: return cublas::kR16F;
    case DType::BFloat16: return cublas::kR16BF;
    default: return cublas::kR32F;
  }
}

// Whether cublasGemmEx with CUBLAS_COMPUTE_32F takes A/B of `in` with C of `out`.
bool cublas_pair_supported(DType in, DType out) { return out == in || out == DType::Float32; }

// One cuBLAS call over every batch item (chunks of at most INT_MAX items). Returns the cuBLAS status.
int cublas_gemm(cublas::Handle h, void* out, DType od, const void* a, const void* b, DType dt, int64_t batch, int64_t M, int64_t N,
                int64_t K, bool ta, bool tb, int64_t sa, int64_t sb, int64_t so, float alpha, float beta) {
  const cublas::Api* api = cublas::api();
  const int64_t es = dtype_size(dt), os = dtype_size(od);
  // Column-major view: out^T (N, M) = op(B)^T (N, K) @ op(A)^T (K, M).
  // B stored (K, N) row-major is B^T (N, K) column-major with ld N: no transpose. Stored (N, K) (transB)
  // is a (K, N) column-major matrix with ld K: transpose it. Likewise for A with ld K / M.
  const int op_b = tb ? cublas::kOpT : cublas::kOpN, ld_b = static_cast<int>(tb ? K : N);
  const int op_a = ta ? cublas::kOpT : cublas::kOpN, ld_a = static_cast<int>(ta ? M : K);
  constexpr int64_t kMaxBatch = INT_MAX;
  for (int64_t b0 = 0; b0 < batch; b0 += kMaxBatch) {
    const int nb = static_cast<int>(std::min(kMaxBatch, batch - b0));
    const auto* bp = static_cast<const uint8_t*>(b) + b0 * sb * es;
    const auto* ap = static_cast<const uint8_t*>(a) + b0 * sa * es;
    auto* cp = static_cast<uint8_t*>(out) + b0 * so * os;
    const int status = api->gemm_strided_batched_ex(h, op_b, op_a, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, bp,
                                                    cublas_type(dt), ld_b, sb, ap, cublas_type(dt), ld_a, sa, &beta, cp, cublas_type(od),
                                                    static_cast<int>(N), so, nb, cublas::kCompute32F, cublas::kGemmDefault);
    if (status != cublas::kSuccess) return status;
  }
  return cublas::kSuccess;
}

// ---- built-in kernels -----------------------------------------------------------------------------------------

constexpr int kBM = 64, kBN = 64, kBK = 16, kTM = 4, kTN = 4;
constexpr int kGemmThreads = (kBM / kTM) * (kBN / kTN);  // 256: each thread owns a 4x4 block of the tile
static_assert(kBM * kBK % kGemmThreads == 0 && kBK * kBN % kGemmThreads == 0, "tile loads must divide evenly");

// Grid-stride over (batch, M tiles, N tiles). A tile of op(A) (64, 16) and op(B) (16, 64) per step of K, both
// converted to float32 in shared memory; out-of-range elements load as 0.
template <typename T>
__global__ void __launch_bounds__(kGemmThreads) gemm_tiled_kernel(void* out, DType od, const T* __restrict__ A, const T* __restrict__ B,
                                                                  int64_t batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
                                                                  int64_t sa, int64_t sb, int64_t so, float alpha, float beta) {
  __shared__ float As[kBK][kBM + 4];  // As[k][m] = op(A)[m0 + m, k0 + k]
  __shared__ float Bs[kBK][kBN + 4];  // Bs[k][n] = op(B)[k0 + k, n0 + n]
  const int tid = threadIdx.x;
  const int tx = tid % (kBN / kTN), ty = tid / (kBN / kTN);
  const int64_t tiles_m = (M + kBM - 1) / kBM, tiles_n = (N + kBN - 1) / kBN;
  for (int64_t bz = blockIdx.z; bz < batch; bz += gridDim.z) {
    const T* Ab = A + bz * sa;
    const T* Bb = B + bz * sb;
    for (int64_t tm = blockIdx.y; tm < tiles_m; tm += gridDim.y) {
      for (int64_t tn = blockIdx.x; tn < tiles_n; tn += gridDim.x) {
        const int64_t m0 = tm * kBM, n0 = tn * kBN;
        float acc[kTM][kTN];
#pragma unroll
        for (int i = 0; i < kTM; ++i)
#pragma unroll
          for (int j = 0; j < kTN; ++j) acc[i][j] = 0.0f;
        for (int64_t k0 = 0; k0 < K; k0 += kBK) {
          // Consecutive threads read consecutive addresses of the stored layout (coalesced).
          for (int e = tid; e < kBM * kBK; e += kGemmThreads) {
            const int mm = ta ? e % kBM : e / kBK, kk = ta ? e / kBM : e % kBK;
            const int64_t gm = m0 + mm, gk = k0 + kk;
            float v = 0.0f;
            if (gm < M && gk < K) v = to_f(ta ? Ab[gk * M + gm] : Ab[gm * K + gk]);
            As[kk][mm] = v;
          }
          for (int e = tid; e < kBK * kBN; e += kGemmThreads) {
            const int nn = tb ? e / kBK : e % kBN, kk = tb ? e % kBK : e / kBN;
            const int64_t gn = n0 + nn, gk = k0 + kk;
            float v = 0.0f;
            if (gn < N && gk < K) v = to_f(tb ? Bb[gn * K + gk] : Bb[gk * N + gn]);
            Bs[kk][nn] = v;
          }
          __syncthreads();
#pragma unroll
          for (int kk = 0; kk < kBK; ++kk) {
            float ar[kTM], br[kTN];
#pragma unroll
            for (int i = 0; i < kTM; ++i) ar[i] = As[kk][ty * kTM + i];
#pragma unroll
            for (int j = 0; j < kTN; ++j) br[j] = Bs[kk][tx * kTN + j];
#pragma unroll
            for (int i = 0; i < kTM; ++i)
#pragma unroll
              for (int j = 0; j < kTN; ++j) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
          }
          __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < kTM; ++i) {
          const int64_t gm = m0 + ty * kTM + i;
          if (gm >= M) continue;
#pragma unroll
          for (int j = 0; j < kTN; ++j) {
            const int64_t gn = n0 + tx * kTN + j;
            if (gn >= N) continue;
            const int64_t idx = bz * so + gm * N + gn;
            float v = alpha * acc[i][j];
            if (beta != 0.0f) v += beta * cuda::load_f(out, od, idx);  // beta == 0 never reads out (NaN there stays out)
            cuda::store_f(out, od, idx, v);
          }
        }
      }
    }
  }
}

// out[b * so + r] = alpha * acc[b * mn + r] + beta * out[...] for r < mn, rounded once to od; acc == nullptr
// means a zero product (K == 0).
__global__ void gemm_epilogue_kernel(void* out, DType od, const float* __restrict__ acc, int64_t batch, int64_t mn, int64_t so, float alpha,
                                     float beta) {
  const int64_t total = batch * mn;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t bz = i / mn, r = i - bz * mn;
    const int64_t idx = bz * so + r;
    float v = acc != nullptr ? alpha * acc[i] : 0.0f;
    if (beta != 0.0f) v += beta * cuda::load_f(out, od, idx);
    cuda::store_f(out, od, idx, v);
  }
}

void launch_epilogue(cudaStream_t s, void* out, DType od, const float* acc, int64_t batch, int64_t mn, int64_t so, float alpha, float beta) {
  constexpr int threads = 256;
  gemm_epilogue_kernel<<<grid_for(batch * mn, threads), threads, 0, s>>>(out, od, acc, batch, mn, so, alpha, beta);
  check_launch("matmul epilogue");
}

template <typename T>
void launch_tiled_typed(cudaStream_t s, void* out, DType od, const void* a, const void* b, int64_t batch, int64_t M, int64_t N, int64_t K,
                        bool ta, bool tb, int64_t sa, int64_t sb, int64_t so, float alpha, float beta) {
  const int64_t tiles_m = (M + kBM - 1) / kBM, tiles_n = (N + kBN - 1) / kBN;
  dim3 grid(static_cast<unsigned>(std::min<int64_t>(tiles_n, INT_MAX)), static_cast<unsigned>(std::min<int64_t>(tiles_m, 65535)),
            static_cast<unsigned>(std::min<int64_t>(batch, 65535)));
  gemm_tiled_kernel<T><<<grid, kGemmThreads, 0, s>>>(out, od, static_cast<const T*>(a), static_cast<const T*>(b), batch, M, N, K, ta, tb, sa,
                                                      sb, so, alpha, beta);
  check_launch("matmul (built-in kernel)");
}

void launch_tiled(cudaStream_t s, void* out, DType od, const void* a, const void* b, DType dt, int64_t batch, int64_t M, int64_t N, int64_t K,
                  bool ta, bool tb, int64_t sa, int64_t sb, int64_t so, float alpha, float beta) {
  switch (dt) {
    case DType::Float16: return launch_tiled_typed<__half>(s, out, od, a, b, batch, M, N, K, ta, tb, sa, sb, so, alpha, beta);
    case DType::BFloat16: return launch_tiled_typed<__nv_bfloat16>(s, out, od, a, b, batch, M, N, K, ta, tb, sa, sb, so, alpha, beta);
    default: return launch_tiled_typed<float>(s, out, od, a, b, batch, M, N, K, ta, tb, sa, sb, so, alpha, beta);
  }
}

// Elements spanned by `batch` items of `per` elements `stride` apart.
int64_t extent(int64_t batch, int64_t stride, int64_t per) { return (batch - 1) * stride + per; }

bool aligned_to(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0; }

void check_float_dtype(DType d, const char* name) {
  if (!is_compute_float(d)) {
    throw_dtype_error(std::string("Expected float32, float16 or bfloat16 for ") + name + " but received " + dtype_name(d));
  }
}

// The product on pointers aligned to their element sizes.
void run_gemm(int device, cudaStream_t s, void* out, DType od, const void* a, const void* b, DType dt, int64_t batch, int64_t M, int64_t N,
              int64_t K, bool ta, bool tb, int64_t sa, int64_t sb, int64_t so, float alpha, float beta) {
  cublas::Handle h = cublas_handle(device);
  const bool fits = M <= INT_MAX && N <= INT_MAX && K <= INT_MAX;
  if (h != nullptr && fits) {
    if (cublas_pair_supported(dt, od)) {
      const int status = cublas_gemm(h, out, od, a, b, dt, batch, M, N, K, ta, tb, sa, sb, so, alpha, beta);
      if (status == cublas::kSuccess) return;
      if (status != kStatusNotSupported) throw_device_error("cublasGemmStridedBatchedEx failed on cuda:" + std::to_string(device) + " (status " + std::to_string(status) + ")");
    } else {
      // float32 product into scratch, then one rounding to od with alpha / beta (the CPU epilogue).
      const int64_t mn = M * N;
      Scratch acc(device, batch * mn * 4);
      const int status = cublas_gemm(h, acc.as<void>(), DType::Float32, a, b, dt, batch, M, N, K, ta, tb, sa, sb, mn, 1.0f, 0.0f);
      if (status == cublas::kSuccess) {
        launch_epilogue(s, out, od, acc.as<float>(), batch, mn, so, alpha, beta);
        return;
      }
      if (status != kStatusNotSupported) throw_device_error("cublasGemmStridedBatchedEx failed on cuda:" + std::to_string(device) + " (status " + std::to_string(status) + ")");
    }
  }
  launch_tiled(s, out, od, a, b, dt, batch, M, N, K, ta, tb, sa, sb, so, alpha, beta);
}

}  // namespace

void matmul(int device, void* out, DType outDtype, const void* a, const void* b, DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K,
            bool transA, bool transB, int64_t strideA, int64_t strideB, int64_t strideOut, float alpha, float beta) {
  check_float_dtype(dtype, "dtype");
  check_float_dtype(outDtype, "outDtype");
  if (batch < 0 || M < 0 || N < 0 || K < 0 || strideA < 0 || strideB < 0 || strideOut < 0) {
    throw_argument_error("Expected non-negative sizes and strides for matmul");
  }
  if (batch == 0 || M == 0 || N == 0) return;
  cudaStream_t s = stream(device);
  const int64_t es = dtype_size(dtype), os = dtype_size(outDtype);
  // Operands at byte offsets that are not multiples of their element size (cuBLAS and the typed loads of
  // the kernels need aligned elements) are copied to aligned scratch first; an unaligned out is computed
  // in scratch and copied back.
  std::optional<Scratch> out_tmp;
  void* o = out;
  const int64_t out_bytes = extent(batch, strideOut, M * N) * os;
  if (!aligned_to(out, os)) {
    out_tmp.emplace(device, out_bytes);
    o = out_tmp->as<void>();
    // Copied in whatever beta is: the copy back rewrites the whole extent, gaps between batch items included.
    check_cuda(cudaMemcpyAsync(o, out, static_cast<size_t>(out_bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
  }
  if (K == 0) {
    launch_epilogue(s, o, outDtype, nullptr, batch, M * N, strideOut, alpha, beta);  // out = beta * out
  } else {
    std::optional<Scratch> a_tmp, b_tmp;
    const void* ap = a;
    const void* bp = b;
    if (!aligned_to(a, es)) {
      const int64_t bytes = extent(batch, strideA, M * K) * es;
      a_tmp.emplace(device, bytes);
      check_cuda(cudaMemcpyAsync(a_tmp->as<void>(), a, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
      ap = a_tmp->as<void>();
    }
    if (!aligned_to(b, es)) {
      const int64_t bytes = extent(batch, strideB, K * N) * es;
      b_tmp.emplace(device, bytes);
      check_cuda(cudaMemcpyAsync(b_tmp->as<void>(), b, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
      bp = b_tmp->as<void>();
    }
    run_gemm(device, s, o, outDtype, ap, bp, dtype, batch, M, N, K, transA, transB, strideA, strideB, strideOut, alpha, beta);
  }
  if (o != out) check_cuda(cudaMemcpyAsync(out, o, static_cast<size_t>(out_bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
}

const char* gemm_backend(int device) { return cublas_handle(device) != nullptr ? "cublas" : "fallback"; }

bool int8_gemm_cublas(int device, int32_t* out, const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K) {
  // cuBLAS's integer GEMM wants K-contiguous operands with ld % 4 == 0 ("TN"), and int sizes.
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (K % 4 != 0 || M > INT_MAX || N > INT_MAX || K > INT_MAX || !aligned16(a) || !aligned16(b) || !aligned16(out)) return false;
  cublas::Handle h = cublas_handle(device);
  if (h == nullptr) return false;
  const cublas::Api* api = cublas::api();
  // Column-major view: out^T (N, M) = B (N, K) as op T of a (K, N) ld K matrix, times A^T (K, M) (ld K, op N).
  const int32_t alpha = 1, beta = 0;
  const int status = api->gemm_ex(h, cublas::kOpT, cublas::kOpN, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, b,
                                  cublas::kR8I, static_cast<int>(K), a, cublas::kR8I, static_cast<int>(K), &beta, out, cublas::kR32I,
                                  static_cast<int>(N), cublas::kCompute32I, cublas::kGemmDefault);
  if (status == cublas::kSuccess) return true;
  constexpr int kStatusInvalidValue = 7;  // CUBLAS_STATUS_INVALID_VALUE: a shape / alignment this build rejects
  if (status == kStatusNotSupported || status == kStatusInvalidValue) return false;
  throw_device_error("int8Matmul: cublasGemmEx (int8, CUBLAS_COMPUTE_32I) failed on cuda:" + std::to_string(device) + " (status " +
                     std::to_string(status) + ")");
}

}  // namespace lowbit::cuda
