// CUDA reductions over one axis: sum / mean / max of (outer, n, inner), argmax and (log-)softmax over the last
// axis, and the softmax backward (semantics of cpu/nn_reduce.cc). float32 accumulation; every reduction runs in a
// fixed order (strided per-thread partials, then a fixed tree), so results do not change from run to run.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "common.cuh"
#include "nn_common.cuh"
#include "nn_kernels.h"

namespace lowbit::cuda::nn {
namespace {

using cpu::ReduceOp;
using nn_detail::dispatch_float;
using nn_detail::launch_rows;
using nn_detail::nan_max;
using nn_detail::RowGroup;

constexpr float kNaN = __builtin_nanf("");

// ---- reduce ----------------------------------------------------------------------------------------------

// NaN-propagating max of a group (every thread gets the result).
template <bool kWarp>
__device__ float group_nan_max(float v, float* smem) {
  const bool nan = v != v;
  const float any_nan = RowGroup<kWarp>::sum(nan ? 1.0f : 0.0f, smem);
  const float m = RowGroup<kWarp>::max(nan ? -INFINITY : v, smem);
  return any_nan > 0.0f ? kNaN : m;
}

// inner == 1: a group per output, each reducing one contiguous row of n.
template <typename T, bool kWarp>
__global__ void reduce_rows_kernel(ReduceOp op, T* out, const T* x, int64_t outer, int64_t n) {
  __shared__ float smem[32];
  using G = RowGroup<kWarp>;
  for (int64_t o = G::first(); o < outer; o += G::stride()) {
    const T* row = x + o * n;
    float r;
    if (op == ReduceOp::Max) {
      float m = -INFINITY;
      for (int64_t i = G::lane(); i < n; i += G::size()) m = nan_max(m, to_f(row[i]));
      r = group_nan_max<kWarp>(m, smem);
    } else {
      float s = 0.0f;
      for (int64_t i = G::lane(); i < n; i += G::size()) s += to_f(row[i]);
      r = G::sum(s, smem);
      if (op == ReduceOp::Mean) r /= static_cast<float>(n);  // n = 0 gives NaN, as torch
    }
    if (G::lane() == 0) out[o] = from_f<T>(r);
  }
}

// inner > 1: a (32, 8) block per (outer, 32 columns); threadIdx.y splits the n rows, then the 8 partials of a
// column are combined in order.
constexpr int kColTile = 32;
constexpr int kRowSplit = 8;

template <typename T>
__global__ void reduce_cols_kernel(ReduceOp op, T* out, const T* x, int64_t outer, int64_t n, int64_t inner) {
  __shared__ float part[kRowSplit][kColTile + 1];
  const int64_t col_tiles = (inner + kColTile - 1) / kColTile;
  for (int64_t tile = blockIdx.x; tile < outer * col_tiles; tile += gridDim.x) {
    const int64_t o = tile / col_tiles, c = (tile % col_tiles) * kColTile + threadIdx.x;
    float acc = op == ReduceOp::Max ? -INFINITY : 0.0f;
    if (c < inner) {
      const T* base = x + o * n * inner + c;
      if (op == ReduceOp::Max) {
        for (int64_t j = threadIdx.y; j < n; j += kRowSplit) acc = nan_max(acc, to_f(base[j * inner]));
      } else {
        for (int64_t j = threadIdx.y; j < n; j += kRowSplit) acc += to_f(base[j * inner]);
      }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < inner) {
      float r = part[0][threadIdx.x];
      for (int k = 1; k < kRowSplit; ++k) r = op == ReduceOp::Max ? nan_max(r, part[k][threadIdx.x]) : r + part[k][threadIdx.x];
      if (op == ReduceOp::Mean) r /= static_cast<float>(n);
      out[o * inner + c] = from_f<T>(r);
    }
    __syncthreads();  // part is reused by the next tile
  }
}

// ---- argmax ----------------------------------------------------------------------------------------------

// (value, index) of the better candidate: a NaN beats everything (the first NaN wins), then the larger value,
// then the smaller index; index < 0 is "no candidate".
__device__ __forceinline__ void argmax_merge(float& v, int64_t& i, float v2, int64_t i2) {
  if (i2 < 0) return;
  if (i < 0) {
    v = v2;
    i = i2;
    return;
  }
  const bool n1 = v != v, n2 = v2 != v2;
  bool take;
  if (n1 || n2) take = n2 && (!n1 || i2 < i);
  else take = v2 > v || (v2 == v && i2 < i);
  if (take) {
    v = v2;
    i = i2;
  }
}

template <typename T, bool kWarp>
__global__ void argmax_kernel(int32_t* out, const T* x, int64_t rows, int64_t cols) {
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  using G = RowGroup<kWarp>;
  for (int64_t r = G::first(); r < rows; r += G::stride()) {
    const T* row = x + r * cols;
    float v = 0.0f;
    int64_t idx = -1;
    for (int64_t c = G::lane(); c < cols; c += G::size()) argmax_merge(v, idx, to_f(row[c]), c);
    for (int o = 16; o > 0; o >>= 1) {
      const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
      const int64_t i2 = __shfl_xor_sync(0xffffffffu, idx, o);
      argmax_merge(v, idx, v2, i2);
    }
    if (!kWarp) {
      const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
      __syncthreads();
      if (lane == 0) {
        sv[warp] = v;
        si[warp] = idx;
      }
      __syncthreads();
      if (warp == 0) {
        v = lane < nwarps ? sv[lane] : 0.0f;
        idx = lane < nwarps ? si[lane] : -1;
        for (int o = 16; o > 0; o >>= 1) {
          const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
          const int64_t i2 = __shfl_xor_sync(0xffffffffu, idx, o);
          argmax_merge(v, idx, v2, i2);
        }
      }
    }
    if (threadIdx.x % (kWarp ? 32 : blockDim.x) == 0) out[r] = static_cast<int32_t>(idx);
  }
}

// ---- softmax -------------------------------------------------------------------------------------------

// Online (max, sum of exp(x - max)) of a row, combined over the group. A row containing NaN gives max = NaN; a
// row of only -inf gives (-inf, 0) (the outputs are then NaN, as torch).
template <typename T, bool kWarp>
__device__ void row_max_sumexp(const T* row, int64_t cols, float* smem, float& m_out, float& s_out) {
  using G = RowGroup<kWarp>;
  float m = -INFINITY, s = 0.0f;
  bool nan = false;
  for (int64_t c = G::lane(); c < cols; c += G::size()) {
    const float x = to_f(row[c]);
    if (x != x) {
      nan = true;
    } else if (x > m) {
      s = s * expf(m - x) + 1.0f;  // m = -inf: s is 0 and exp(-inf) = 0
      m = x;
    } else if (m != -INFINITY) {
      s += expf(x - m);
    }
  }
  const float gm = G::max(m, smem);
  const float part = gm == -INFINITY ? 0.0f : s * expf(m - gm);
  const float gs = G::sum(part, smem);
  const float any_nan = G::sum(nan ? 1.0f : 0.0f, smem);
  m_out = any_nan > 0.0f ? kNaN : gm;
  s_out = gs;
}

template <typename T, bool kWarp>
__global__ void softmax_kernel(T* out, const T* x, int64_t rows, int64_t cols, bool log) {
  __shared__ float smem[32];
  using G = RowGroup<kWarp>;
  for (int64_t r = G::first(); r < rows; r += G::stride()) {
    const T* row = x + r * cols;
    T* orow = out + r * cols;
    float m, s;
    row_max_sumexp<T, kWarp>(row, cols, smem, m, s);
    if (log) {
      const float ls = logf(s);  // torch: (x - max) - log(sum)
      for (int64_t c = G::lane(); c < cols; c += G::size()) orow[c] = from_f<T>((to_f(row[c]) - m) - ls);
    } else {
      for (int64_t c = G::lane(); c < cols; c += G::size()) orow[c] = from_f<T>(expf(to_f(row[c]) - m) / s);
    }
  }
}

// softmax: gx = y * (gy - sum(gy * y)); log_softmax: gx = gy - exp(y) * sum(gy).
template <typename T, bool kWarp>
__global__ void softmax_backward_kernel(T* gx, const T* gy, const T* y, int64_t rows, int64_t cols, bool log) {
  __shared__ float smem[32];
  using G = RowGroup<kWarp>;
  for (int64_t r = G::first(); r < rows; r += G::stride()) {
    const T* g = gy + r * cols;
    const T* p = y + r * cols;
    T* o = gx + r * cols;
    float part = 0.0f;
    if (log) {
      for (int64_t c = G::lane(); c < cols; c += G::size()) part += to_f(g[c]);
    } else {
      for (int64_t c = G::lane(); c < cols; c += G::size()) part += to_f(g[c]) * to_f(p[c]);
    }
    const float s = G::sum(part, smem);
    if (log) {
      for (int64_t c = G::lane(); c < cols; c += G::size()) o[c] = from_f<T>(to_f(g[c]) - expf(to_f(p[c])) * s);
    } else {
      for (int64_t c = G::lane(); c < cols; c += G::size()) o[c] = from_f<T>(to_f(p[c]) * (to_f(g[c]) - s));
    }
  }
}

}  // namespace

void reduce(int device, cpu::ReduceOp op, void* out, const void* x, DType dt, int64_t outer, int64_t n, int64_t inner) {
  if (outer <= 0 || inner <= 0) return;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    if (inner == 1) {
      launch_rows(device, outer, n, reduce_rows_kernel<T, true>, reduce_rows_kernel<T, false>, op, static_cast<T*>(out),
                  static_cast<const T*>(x), outer, n);
    } else {
      const int64_t tiles = outer * ((inner + kColTile - 1) / kColTile);
      reduce_cols_kernel<T><<<static_cast<unsigned>(tiles < (1 << 20) ? tiles : (1 << 20)), dim3(kColTile, kRowSplit), 0,
                              stream(device)>>>(op, static_cast<T*>(out), static_cast<const T*>(x), outer, n, inner);
    }
  });
  check_launch("reduce");
}

void argmax(int device, int32_t* out, const void* x, DType dt, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_rows(device, rows, cols, argmax_kernel<T, true>, argmax_kernel<T, false>, out, static_cast<const T*>(x), rows, cols);
  });
  check_launch("argmax");
}

void softmax(int device, void* out, const void* x, DType dt, int64_t rows, int64_t cols, bool log) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_rows(device, rows, cols, softmax_kernel<T, true>, softmax_kernel<T, false>, static_cast<T*>(out),
                static_cast<const T*>(x), rows, cols, log);
  });
  check_launch("softmax");
}

void softmax_backward(int device, void* gx, const void* gy, const void* y, DType dt, int64_t rows, int64_t cols, bool log) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_rows(device, rows, cols, softmax_backward_kernel<T, true>, softmax_backward_kernel<T, false>, static_cast<T*>(gx),
                static_cast<const T*>(gy), static_cast<const T*>(y), rows, cols, log);
  });
  check_launch("softmaxBackward");
}

}  // namespace lowbit::cuda::nn
