// CUDA LLM.int8 kernels of quant_kernels.h: vectorwise quantization with outlier columns, the exact int8 matmul
// (dp4a), int8_mm_dequant (bit-identical to cpu::int8_mm_dequant: explicit roundings, one fmaf) and the outlier product.
//
// int8 matmul: small M (<= 8) with 16-byte aligned rows runs a GEMV-style kernel (one warp per row of B, 16-byte
// streaming loads of B, kUnroll steps in flight, dp4a on int8x4 words, int32 warp sum); larger M goes to cuBLAS's
// integer GEMM (gemm.h int8_gemm_cublas: tensor cores, exact) when cuBLAS is in use and takes the operands (K % 4 == 0,
// 16-byte aligned); everything else runs a 64x64 tiled kernel with shared-memory tiles of 32-byte K slices
// (bounds-checked byte loads where K % 4 != 0 or rows are not 4-byte aligned; padding is zero, so the sums are exact).
// int32 accumulation wraps as on the CPU. The outlier product runs one thread per output for M <= 8; larger M gathers
// the outlier columns of x and of the dequantized weight into dense float32 matrices and adds their product with the
// float GEMM (cuBLAS), so a prefill with many outlier columns does not re-read scattered weight bytes per output.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/block/block_scan.cuh>

#include <cfloat>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "../cuda_reciprocal.h"
#include "common.cuh"
#include "cuda_backend.h"
#include "gemm.h"
#include "quant_kernels.h"

namespace lowbit::cuda::quant {
namespace {

constexpr unsigned kFull = 0xffffffffu;

// The reciprocal's correction tables (cuda_reciprocal.h); all threads of a row read the same entry.
__constant__ uint8_t c_rcp_up[128] = {LOWBIT_RCP_UP_BYTES};
__constant__ uint8_t c_rcp_down[128] = {LOWBIT_RCP_DOWN_BYTES};

bool aligned(const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

template <typename F>
void dispatch_float(DType dt, F&& f) {
  switch (dt) {
    case DType::Float16: f(__half{}); break;
    case DType::BFloat16: f(__nv_bfloat16{}); break;
    default: f(float{}); break;
  }
}

// 2-D grid over (rows, cols): x strides columns (capped), y rows (grid-stride beyond 65535).
dim3 rows_grid(int64_t rows, int64_t cols, int threads) {
  int64_t gx = (cols + threads - 1) / threads;
  if (gx > 4096) gx = 4096;
  if (gx < 1) gx = 1;
  int64_t gy = rows < 65535 ? rows : 65535;
  if (gy < 1) gy = 1;
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
}

// ---- vectorwise quantization (spec §12.1) --------------------------------------------------------------------------

// One CUDA block per row (grid-stride): absmax over |x| < thr (all elements without split; NaN skipped), then
// q = rint(clamp(fp32(x * fp32(127 * rcp(absmax))), -127, 127)) with NaN -> 0, rcp = bitsandbytes' reciprocal
// (cuda_reciprocal.h, as the CPU); outlier elements become 0 and set flags[c].
template <typename T>
__global__ void __launch_bounds__(256) rowquant_kernel(int8_t* __restrict__ CB, float* __restrict__ SCB, const T* __restrict__ x,
                                                       int64_t rows, int64_t cols, bool split, float thr, uint8_t* __restrict__ flags) {
  __shared__ float smem[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    float am = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float a = fabsf(to_f(xr[c]));
      if (split && a >= thr) {
        flags[c] = 1;  // idempotent racing stores
        continue;
      }
      am = fmaxf(am, a);
    }
    am = block_max(am, smem);
    if (threadIdx.x == 0) SCB[r] = am;
    // __fdividef(127, am) as bitsandbytes computes it (and the CPU): +inf for an all-zero row
    const float scale = __fmul_rn(127.0f, cuda_reciprocal(am, c_rcp_up, c_rcp_down));
    int8_t* q = CB + r * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float v = to_f(xr[c]);
      if (split && fabsf(v) >= thr) {
        q[c] = 0;
        continue;
      }
      float s = __fmul_rn(v, scale);
      if (isnan(s)) s = 0.0f;
      s = fminf(127.0f, fmaxf(-127.0f, s));
      q[c] = static_cast<int8_t>(__float2int_rn(s));  // round half to even
    }
  }
}

// CB[r, c] = 0 for the listed columns c = list[j], j < n: n is n_list, or with `count` (a device list's count, written
// by compact_flags_kernel) that count clamped to n_list. Indices outside [0, cols) are skipped.
__global__ void zero_columns_kernel(int8_t* __restrict__ CB, const int32_t* __restrict__ list, int64_t n_list, const int32_t* __restrict__ count,
                                    int64_t rows, int64_t cols) {
  const int64_t n = count == nullptr ? n_list : (*count < n_list ? *count : n_list);
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int32_t c = list[j];
      if (c >= 0 && c < cols) CB[r * cols + c] = 0;
    }
}

// One block of kCompactThreads: the ascending indices of the set flags into list[1..], their count into list[0]. Each
// thread takes a contiguous run of columns, so an exclusive scan of the per-thread counts places every index.
constexpr int kCompactThreads = 1024;
__global__ void __launch_bounds__(kCompactThreads) compact_flags_kernel(const uint8_t* __restrict__ flags, int64_t cols, int32_t* __restrict__ list) {
  using Scan = cub::BlockScan<int, kCompactThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int64_t per = (cols + kCompactThreads - 1) / kCompactThreads;
  const int64_t c0 = static_cast<int64_t>(threadIdx.x) * per;
  const int64_t c1 = c0 + per < cols ? c0 + per : cols;
  int count = 0;
  for (int64_t c = c0; c < c1; ++c) count += flags[c] != 0;
  int at = 0, total = 0;
  Scan(tmp).ExclusiveSum(count, at, total);
  for (int64_t c = c0; c < c1; ++c)
    if (flags[c] != 0) list[1 + at++] = static_cast<int32_t>(c);
  if (threadIdx.x == 0) list[0] = total;
}

// The smallest float t with double(t) >= threshold, so `|x| >= t` in float32 decides exactly as the CPU's
// `double(|x|) >= threshold` (for threshold > FLT_MAX only infinity qualifies).
float float_threshold(double threshold) {
  if (threshold > static_cast<double>(FLT_MAX)) return INFINITY;
  float t = static_cast<float>(threshold);
  if (static_cast<double>(t) < threshold) t = std::nextafter(t, INFINITY);
  return t;
}

// ---- int8 matmul -------------------------------------------------------------------------------------------------

constexpr int kGemvWarps = 4;
constexpr int kGemvUnroll = 4;
constexpr int64_t kGemvMaxM = 8;

__device__ __forceinline__ int32_t warp_sum_i(int32_t v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// out (M, N) for M <= MB: one warp per row n of B; each lane 16 bytes of K per step (warp stride 512 bytes).
// Requires K % 16 == 0 and a, b 16-byte aligned.
template <int MB>
__global__ void __launch_bounds__(kGemvWarps * 32) int8_gemv_kernel(int32_t* __restrict__ out, const int8_t* __restrict__ a,
                                                                    const int8_t* __restrict__ b, int64_t M, int64_t N, int64_t K) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  int32_t acc[MB];
#pragma unroll
  for (int m = 0; m < MB; ++m) acc[m] = 0;
  const int8_t* brow = b + n * K;
  for (int64_t kb = 0; kb < K; kb += 512 * kGemvUnroll) {
    int4 bv[kGemvUnroll];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int64_t k = kb + u * 512 + lane * 16;
      bv[u] = k < K ? __ldcs(reinterpret_cast<const int4*>(brow + k)) : make_int4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int64_t k = kb + u * 512 + lane * 16;
      if (k < K) {
#pragma unroll
        for (int m = 0; m < MB; ++m) {
          if (m < M) {
            const int4 av = __ldg(reinterpret_cast<const int4*>(a + m * K + k));
            acc[m] = __dp4a(av.x, bv[u].x, acc[m]);
            acc[m] = __dp4a(av.y, bv[u].y, acc[m]);
            acc[m] = __dp4a(av.z, bv[u].z, acc[m]);
            acc[m] = __dp4a(av.w, bv[u].w, acc[m]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < MB; ++m) {
    const int32_t v = warp_sum_i(acc[m]);
    if (lane == m && m < M) out[m * N + n] = v;
  }
}

constexpr int kTile = 64;    // rows of A and of B per CUDA block
constexpr int kTileK = 32;   // K bytes per shared-memory slice
constexpr int kTileW = kTileK / 4;

// One int8x4 word of row `row` at byte k (zero beyond the matrix); `words`: K % 4 == 0 and p 4-byte aligned.
__device__ __forceinline__ int32_t load_word(const int8_t* __restrict__ p, int64_t row, int64_t rows, int64_t K, int64_t k, bool words) {
  if (row >= rows || k >= K) return 0;
  const int8_t* q = p + row * K + k;
  if (words) return *reinterpret_cast<const int32_t*>(q);
  uint32_t w = 0;
  for (int t = 0; t < 4; ++t)
    if (k + t < K) w |= static_cast<uint32_t>(static_cast<uint8_t>(q[t])) << (8 * t);
  return static_cast<int32_t>(w);
}

// out tile (64, 64) = A rows [i0, i0+64) . B rows [j0, j0+64); 256 threads, 4x4 outputs each.
__global__ void __launch_bounds__(256) int8_gemm_kernel(int32_t* __restrict__ out, const int8_t* __restrict__ a,
                                                        const int8_t* __restrict__ b, int64_t M, int64_t N, int64_t K, bool a_words,
                                                        bool b_words) {
  __shared__ int32_t As[kTile][kTileW + 1];  // +1: conflict-free column reads
  __shared__ int32_t Bs[kTile][kTileW + 1];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t tiles_m = (M + kTile - 1) / kTile;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kTile;
  for (int64_t tm = blockIdx.y; tm < tiles_m; tm += gridDim.y) {  // uniform per block
    const int64_t i0 = tm * kTile;
    int32_t acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0;
    for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
      for (int e = threadIdx.x; e < kTile * kTileW; e += blockDim.x) {
        const int r = e / kTileW, wi = e % kTileW;
        As[r][wi] = load_word(a, i0 + r, M, K, k0 + wi * 4, a_words);
        Bs[r][wi] = load_word(b, j0 + r, N, K, k0 + wi * 4, b_words);
      }
      __syncthreads();
#pragma unroll
      for (int wi = 0; wi < kTileW; ++wi) {
        int32_t av[4], bv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) av[i] = As[ty + 16 * i][wi];
#pragma unroll
        for (int j = 0; j < 4; ++j) bv[j] = Bs[tx + 16 * j][wi];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = __dp4a(av[i], bv[j], acc[i][j]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = i0 + ty + 16 * i;
      if (row >= M) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t col = j0 + tx + 16 * j;
        if (col < N) out[row * N + col] = acc[i][j];
      }
    }
  }
}

// K == 0: every product is an empty sum.
__global__ void zero_i32_kernel(int32_t* __restrict__ out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) out[i] = 0;
}

// ---- int8_mm_dequant (spec §12.4) ------------------------------------------------------------------------------------

template <typename T>
__global__ void mm_dequant_kernel(T* __restrict__ out, const int32_t* __restrict__ C, const float* __restrict__ row_stats,
                                  const float* __restrict__ col_stats, const T* __restrict__ bias, int64_t M, int64_t N) {
  constexpr bool kFused = std::is_same<T, __half>::value;  // only an fp16 bias is fused into the fmaf
  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    const float rs = row_stats[r];
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < N; c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int64_t i = r * N + c;
      const float prod = __fmul_rn(__int2float_rn(C[i]), rs);  // (C * row) * col, left to right
      const float p = __fmul_rn(prod, col_stats[c]);
      const float b = (kFused && bias != nullptr) ? to_f(bias[c]) : 0.0f;
      __half h = __float2half_rn(__fmaf_rn(p, cpu::kMmDequantScale, b));
      if (!kFused && bias != nullptr) h = __float2half_rn(__fadd_rn(__half2float(h), to_f(bias[c])));  // out.add_(bias)
      out[i] = from_f<T>(__half2float(h));
    }
  }
}

// ---- outlier product ---------------------------------------------------------------------------------------------------

// out[m, n] += sum over j < n of x[m, c] * fp32(fp32(CB[n, c] * SCB[n]) * (1/127)), c = cols[j], in j order: n is
// n_cols, or with `count` (a device list's count: the host never learns it, so a decode step does not wait for the
// outlier columns) that count clamped to K. Indices outside [0, K) are skipped.
template <typename T>
__global__ void outlier_kernel(T* __restrict__ out, const T* __restrict__ x, const int8_t* __restrict__ CB, const float* __restrict__ SCB,
                               const int32_t* __restrict__ cols, int64_t n_cols, const int32_t* __restrict__ count, int64_t M, int64_t N,
                               int64_t K) {
  constexpr float kInv127 = 7.874015718698502e-3f;  // fp32 0x3c010204, upstream's (CB * SCB) * (1/127)
  const int64_t nc = count == nullptr ? n_cols : (*count < K ? *count : K);
  if (nc <= 0) return;
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
    for (int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; n < N; n += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const float sc = SCB[n];
      float s = 0.0f;
      for (int64_t j = 0; j < nc; ++j) {
        const int64_t c = __ldg(cols + j);
        if (c < 0 || c >= K) continue;
        const float wv = __fmul_rn(__fmul_rn(static_cast<float>(CB[n * K + c]), sc), kInv127);
        s = fmaf(to_f(x[m * K + c]), wv, s);
      }
      const int64_t i = m * N + n;
      out[i] = from_f<T>(__fadd_rn(to_f(out[i]), s));
    }
  }
}

// The operands of the large-M outlier product as dense float32 matrices: xs (M, n_cols) = x[:, cols] and
// ws (N, n_cols) = (CB[:, cols] * SCB) * (1/127), the values outlier_kernel multiplies.
template <typename T>
__global__ void outlier_gather_kernel(float* __restrict__ xs, float* __restrict__ ws, const T* __restrict__ x, const int8_t* __restrict__ CB,
                                      const float* __restrict__ SCB, const int32_t* __restrict__ cols, int64_t n_cols, int64_t M, int64_t N,
                                      int64_t K) {
  constexpr float kInv127 = 7.874015718698502e-3f;
  const int64_t nx = M * n_cols, total = nx + N * n_cols;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (e < nx) {
      const int64_t m = e / n_cols, j = e % n_cols;
      xs[e] = to_f(x[m * K + __ldg(cols + j)]);
    } else {
      const int64_t f = e - nx, n = f / n_cols, j = f % n_cols;
      ws[f] = __fmul_rn(__fmul_rn(static_cast<float>(CB[n * K + __ldg(cols + j)]), SCB[n]), kInv127);
    }
  }
}

}  // namespace

namespace {

// CB, SCB and (with a threshold) the per-column outlier flags (cleared first) of x (rows, cols), rows and cols > 0.
void launch_rowquant(cudaStream_t s, int8_t* CB, float* SCB, const void* x, DType dtype, int64_t rows, int64_t cols, double threshold,
                     uint8_t* flags) {
  const bool split = threshold > 0.0;
  if (split) check_cuda(cudaMemsetAsync(flags, 0, static_cast<size_t>(cols), s), "int8VectorwiseQuant");
  const unsigned grid = static_cast<unsigned>(rows < 65535 * 4 ? rows : 65535 * 4);
  const float thr = float_threshold(threshold);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    rowquant_kernel<T><<<grid, 256, 0, s>>>(CB, SCB, static_cast<const T*>(x), rows, cols, split, thr, flags);
  });
  check_launch("int8VectorwiseQuant");
}

}  // namespace

std::vector<int32_t> int8_vectorwise_quant(int device, int8_t* CB, float* SCB, const void* x, DType dtype, int64_t rows, int64_t cols,
                                           double threshold) {
  std::vector<int32_t> outlier_cols;
  if (rows <= 0 || cols <= 0) return outlier_cols;
  cudaStream_t s = stream(device);
  const bool split = threshold > 0.0;
  Scratch flags(device, split ? cols : 0);
  launch_rowquant(s, CB, SCB, x, dtype, rows, cols, threshold, flags.as<uint8_t>());
  if (!split) return outlier_cols;
  std::vector<uint8_t> host(static_cast<size_t>(cols));
  copy_device_to_host(device, host.data(), flags.as<uint8_t>(), cols);  // waits for the kernel
  for (int64_t c = 0; c < cols; ++c)
    if (host[static_cast<size_t>(c)] != 0) outlier_cols.push_back(static_cast<int32_t>(c));
  if (rows > 1 && !outlier_cols.empty()) {
    const int64_t n_list = static_cast<int64_t>(outlier_cols.size());
    Scratch list(device, n_list * 4);
    copy_host_to_device(device, list.as<int32_t>(), outlier_cols.data(), n_list * 4);
    zero_columns_kernel<<<rows_grid(rows, n_list, 128), 128, 0, s>>>(CB, list.as<int32_t>(), n_list, nullptr, rows, cols);
    check_launch("int8VectorwiseQuant");
  }
  return outlier_cols;
}

void int8_vectorwise_quant_list(int device, int8_t* CB, float* SCB, const void* x, DType dtype, int64_t rows, int64_t cols,
                                double threshold, int32_t* list) {
  cudaStream_t s = stream(device);
  const bool split = threshold > 0.0 && rows > 0 && cols > 0;
  if (!split) check_cuda(cudaMemsetAsync(list, 0, sizeof(int32_t), s), "int8VectorwiseQuant");  // no outliers
  if (rows <= 0 || cols <= 0) return;
  Scratch flags(device, split ? cols : 0);
  launch_rowquant(s, CB, SCB, x, dtype, rows, cols, split ? threshold : 0.0, flags.as<uint8_t>());
  if (!split) return;
  compact_flags_kernel<<<1, kCompactThreads, 0, s>>>(flags.as<uint8_t>(), cols, list);
  check_launch("int8VectorwiseQuant");
  if (rows > 1) {
    zero_columns_kernel<<<rows_grid(rows, cols, 128), 128, 0, s>>>(CB, list + 1, cols, list, rows, cols);
    check_launch("int8VectorwiseQuant");
  }
}

void int8_outlier_matmul_add_list(int device, void* out, const void* x, DType dtype, const int8_t* CB, const float* SCB,
                                  const int32_t* list, int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  cudaStream_t s = stream(device);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    outlier_kernel<T><<<rows_grid(M, N, 128), 128, 0, s>>>(static_cast<T*>(out), static_cast<const T*>(x), CB, SCB, list + 1, K, list, M, N, K);
  });
  check_launch("int8OutlierMatmulAdd");
}

void int8_matmul(int device, int32_t* out, const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0) return;
  cudaStream_t s = stream(device);
  if (K <= 0) {
    zero_i32_kernel<<<grid_for(M * N, 256), 256, 0, s>>>(out, M * N);
    check_launch("int8Matmul");
    return;
  }
  if (M <= kGemvMaxM && K % 16 == 0 && aligned(a, 16) && aligned(b, 16)) {
    const int64_t gx = (N + kGemvWarps - 1) / kGemvWarps;
    if (gx > INT32_MAX) throw_shape_error("int8Matmul on cuda supports N up to " + std::to_string(int64_t{INT32_MAX} * kGemvWarps));
    const unsigned grid = static_cast<unsigned>(gx);
    const int threads = kGemvWarps * 32;
    if (M == 1) int8_gemv_kernel<1><<<grid, threads, 0, s>>>(out, a, b, M, N, K);
    else if (M == 2) int8_gemv_kernel<2><<<grid, threads, 0, s>>>(out, a, b, M, N, K);
    else if (M <= 4) int8_gemv_kernel<4><<<grid, threads, 0, s>>>(out, a, b, M, N, K);
    else int8_gemv_kernel<8><<<grid, threads, 0, s>>>(out, a, b, M, N, K);
    check_launch("int8Matmul");
    return;
  }
  // Larger M: cuBLAS's tensor-core integer GEMM (exact int32 sums, so the same result as the kernel below).
  if (int8_gemm_cublas(device, out, a, b, M, N, K)) return;
  const int64_t tiles_n = (N + kTile - 1) / kTile, tiles_m = (M + kTile - 1) / kTile;
  if (tiles_n > INT32_MAX) throw_shape_error("int8Matmul on cuda supports N up to " + std::to_string(int64_t{INT32_MAX} * kTile));
  const dim3 grid(static_cast<unsigned>(tiles_n), static_cast<unsigned>(tiles_m < 65535 ? tiles_m : 65535));
  const bool a_words = K % 4 == 0 && aligned(a, 4), b_words = K % 4 == 0 && aligned(b, 4);
  int8_gemm_kernel<<<grid, 256, 0, s>>>(out, a, b, M, N, K, a_words, b_words);
  check_launch("int8Matmul");
}

void int8_mm_dequant(int device, void* out, DType out_dtype, const int32_t* C, const float* row_stats, const float* col_stats,
                     const void* bias, int64_t M, int64_t N) {
  if (M <= 0 || N <= 0) return;
  cudaStream_t s = stream(device);
  dispatch_float(out_dtype, [&](auto tag) {
    using T = decltype(tag);
    mm_dequant_kernel<T><<<rows_grid(M, N, 256), 256, 0, s>>>(static_cast<T*>(out), C, row_stats, col_stats,
                                                             static_cast<const T*>(bias), M, N);
  });
  check_launch("int8MmDequant");
}

void int8_outlier_matmul_add(int device, void* out, const void* x, DType dtype, const int8_t* CB, const float* SCB,
                             const int32_t* cols, int64_t n_cols, int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0 || n_cols <= 0) return;
  cudaStream_t s = stream(device);
  if (M > kGemvMaxM) {
    // Many rows (prefill): gather the outlier columns once and let the GEMM add xs @ ws^T into out, instead of
    // every (m, n) output re-reading its scattered CB bytes. The float32 sums come in the GEMM's order.
    Scratch xs(device, M * n_cols * 4), ws(device, N * n_cols * 4);
    dispatch_float(dtype, [&](auto tag) {
      using T = decltype(tag);
      outlier_gather_kernel<T><<<grid_for((M + N) * n_cols, 256), 256, 0, s>>>(xs.as<float>(), ws.as<float>(), static_cast<const T*>(x), CB, SCB,
                                                                                cols, n_cols, M, N, K);
    });
    check_launch("int8OutlierMatmulAdd");
    matmul(device, out, dtype, xs.as<float>(), ws.as<float>(), DType::Float32, 1, M, N, n_cols, false, true, 0, 0, 0, 1.0f, 1.0f);
    return;
  }
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    outlier_kernel<T><<<rows_grid(M, N, 128), 128, 0, s>>>(static_cast<T*>(out), static_cast<const T*>(x), CB, SCB, cols, n_cols, nullptr, M, N,
                                                           K);
  });
  check_launch("int8OutlierMatmulAdd");
}

}  // namespace lowbit::cuda::quant
