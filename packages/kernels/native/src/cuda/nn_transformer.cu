// CUDA transformer-block and training kernels (semantics of cpu/nn_transformer.cc): HF LlamaRMSNorm forward and
// backward (gw from per-block partials summed in a fixed order), HF rotary embedding, embedding gather and its
// deterministic scatter-add (ids sorted stably, each vocabulary row summed by one thread per column in position
// order), cross-entropy forward / backward with a device-side target check, and torch.optim.AdamW's update.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common.cuh"
#include "deferred_check.h"
#include "nn_common.cuh"
#include "nn_kernels.h"

namespace lowbit::cuda::nn {
namespace {

using nn_detail::DeviceIndexCheck;
using nn_detail::dispatch_float;
using nn_detail::IndexCheck;
using nn_detail::kNoBadIndex;
using nn_detail::launch_rows;
using nn_detail::read_index;
using nn_detail::round_to;
using nn_detail::RowGroup;

constexpr int kThreads = 256;

// ---- rmsNorm -------------------------------------------------------------------------------------------

// out = round(w * round(x * rsqrt(mean(x^2) + eps))) (the inner rounding only for 16-bit dtypes: HF's
// hidden_states.to(input_dtype)).
template <typename T, bool kWarp>
__global__ void rms_norm_kernel(T* out, const T* x, const void* w, DType w_dt, int64_t rows, int64_t cols, float eps) {
  __shared__ float smem[32];
  using G = RowGroup<kWarp>;
  for (int64_t r = G::first(); r < rows; r += G::stride()) {
    const T* xr = x + r * cols;
    T* orow = out + r * cols;
    float ss = 0.0f;
    for (int64_t c = G::lane(); c < cols; c += G::size()) {
      const float v = to_f(xr[c]);
      ss += v * v;
    }
    const float var = G::sum(ss, smem) / static_cast<float>(cols);
    const float inv = 1.0f / sqrtf(var + eps);
    for (int64_t c = G::lane(); c < cols; c += G::size()) {
      orow[c] = from_f<T>(cuda::load_f(w, w_dt, c) * round_to<T>(to_f(xr[c]) * inv));
    }
  }
}

// Rows [blk * per, (blk + 1) * per) of one block: gx for each row, and partial[blk] (cols,) = sum over those rows of
// gy * round(h). Each thread owns the columns c = threadIdx.x + k * blockDim.x of its block's partial row.
template <typename T>
__global__ void rms_norm_backward_kernel(T* gx, float* partial, const T* gy, const T* x, const void* w, DType w_dt,
                                         int64_t rows, int64_t cols, int64_t per, float eps) {
  __shared__ float smem[32];
  const int64_t blk = blockIdx.x;
  float* pw = partial + blk * cols;
  const int64_t r1 = std::min(rows, (blk + 1) * per);
  for (int64_t r = blk * per; r < r1; ++r) {
    const T* xr = x + r * cols;
    const T* gr = gy + r * cols;
    float ss = 0.0f, gwx = 0.0f;  // sum x^2 and sum (gy * w) * x in one pass
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float v = to_f(xr[c]);
      ss += v * v;
      gwx += to_f(gr[c]) * cuda::load_f(w, w_dt, c) * v;
    }
    const float var = block_sum(ss, smem) / static_cast<float>(cols);
    const float inv = 1.0f / sqrtf(var + eps);
    // c = mean(dh * h) with dh = gy * w and h = x * inv.
    const float cmean = block_sum(gwx, smem) * inv / static_cast<float>(cols);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float h = to_f(xr[c]) * inv;
      const float g = to_f(gr[c]);
      pw[c] += g * round_to<T>(h);
      gx[r * cols + c] = from_f<T>(inv * (g * cuda::load_f(w, w_dt, c) - h * cmean));
    }
  }
}

// gw[c] += partial[0][c] + partial[1][c] + ... in block order.
__global__ void sum_partials_kernel(float* gw, const float* partial, int64_t nb, int64_t cols) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += stride) {
    float acc = gw[c];
    for (int64_t b = 0; b < nb; ++b) acc += partial[b * cols + c];
    gw[c] = acc;
  }
}

// ---- rope -----------------------------------------------------------------------------------------------

// One thread per (b, h, t, i < D/2): rotates the pair (x[i], x[i + D/2]). out may alias x (each pair has one owner).
template <typename T>
__global__ void rope_kernel(T* out, const T* x, const void* positions, bool pos64, const float* inv_freq, int64_t B,
                            int64_t H, int64_t T_, int64_t half, float scaling, bool inverse) {
  const int64_t total = B * H * T_ * half;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t i = e % half, row = e / half;  // row = (b * H + h) * T + t
    const int64_t t = row % T_, b = row / (T_ * H);
    const float pf = static_cast<float>(read_index(positions, pos64, b * T_ + t));  // HF: position_ids.float()
    const float ang = inv_freq[i] * pf;
    float sn, cs;
    sincosf(ang, &sn, &cs);
    cs = round_to<T>(cs * scaling);  // HF casts cos / sin to x.dtype
    sn = round_to<T>(sn * scaling);
    if (inverse) sn = -sn;
    const int64_t off = row * 2 * half;
    const float x1 = to_f(x[off + i]), x2 = to_f(x[off + i + half]);
    out[off + i] = from_f<T>(x1 * cs - x2 * sn);
    out[off + i + half] = from_f<T>(x2 * cs + x1 * sn);
  }
}

// ---- embedding ------------------------------------------------------------------------------------------

// out (n, row_units) = weight[ids[i]] copied in units of U (4, 8 or 16 bytes, or the element). Bad ids are recorded
// (first position, by atomicMin on an integer) and their rows written as zeros.
template <typename U>
__global__ void embedding_kernel(U* out, const U* weight, const void* ids, bool ids64, int64_t n, int64_t row_units,
                                 int64_t vocab, IndexCheck* check) {
  const int64_t total = n * row_units;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t i = e / row_units, u = e % row_units;
    const int64_t id = read_index(ids, ids64, i);
    if (id < 0 || id >= vocab) {
      if (u == 0) atomicMin(&check->first_bad, static_cast<unsigned long long>(i));
      out[e] = U{};
      continue;
    }
    out[e] = weight[id * row_units + u];
  }
}

// One thread: copies the call's first bad index (if any) into the device's deferred record, unless the record
// already holds an earlier call's error.
__global__ void deferred_merge_kernel(const IndexCheck* check, const void* ids, bool ids64, int64_t vocab, DeferredIndexError* rec) {
  const unsigned long long pos = check->first_bad;
  if (pos == kNoBadIndex || rec->position != kNoBadIndex) return;
  rec->position = pos;
  rec->value = read_index(ids, ids64, static_cast<int64_t>(pos));
  rec->bound = vocab;
  rec->op = static_cast<int32_t>(DeferredOp::Embedding);
}

// Records the first id outside [0, vocab).
__global__ void check_ids_kernel(const void* ids, bool ids64, int64_t n, int64_t vocab, IndexCheck* check) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t id = read_index(ids, ids64, i);
    if (id < 0 || id >= vocab) atomicMin(&check->first_bad, static_cast<unsigned long long>(i));
  }
}

// Checks ids and writes the sort inputs: keys[i] = ids[i] (int32), vals[i] = i.
__global__ void embedding_keys_kernel(uint32_t* keys, uint32_t* vals, const void* ids, bool ids64, int64_t n,
                                      int64_t vocab, IndexCheck* check) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t id = read_index(ids, ids64, i);
    if (id < 0 || id >= vocab) atomicMin(&check->first_bad, static_cast<unsigned long long>(i));
    keys[i] = static_cast<uint32_t>(id < 0 || id >= vocab ? 0 : id);
    vals[i] = static_cast<uint32_t>(i);
  }
}

// After a stable sort by id: the block that meets the first position k of a run of equal ids adds the run's gy rows
// to gw[id] in position order, one thread per column (acc starts from gw: the CPU's `gw += g` order exactly).
template <typename T>
__global__ void embedding_scatter_kernel(float* gw, const T* gy, const uint32_t* keys, const uint32_t* pos, int64_t n,
                                         int64_t dim) {
  for (int64_t k = blockIdx.x; k < n; k += gridDim.x) {
    const uint32_t id = keys[k];
    if (k > 0 && keys[k - 1] == id) continue;  // not the start of a run (uniform over the block)
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
      float acc = gw[static_cast<int64_t>(id) * dim + c];
      for (int64_t kk = k; kk < n && keys[kk] == id; ++kk) acc += to_f(gy[static_cast<int64_t>(pos[kk]) * dim + c]);
      gw[static_cast<int64_t>(id) * dim + c] = acc;
    }
  }
}

// ---- cross-entropy --------------------------------------------------------------------------------------

// Checks the row's target; returns it, or -1 when the row is ignored or its target is bad (recorded in check).
template <bool kWarp>
__device__ __forceinline__ int64_t row_target(const void* targets, bool t64, int64_t r, int64_t cols, int64_t ignore_index,
                                              IndexCheck* check) {
  const int64_t t = read_index(targets, t64, r);
  if (t == ignore_index) return -1;
  if (t < 0 || t >= cols) {
    if (RowGroup<kWarp>::lane() == 0) atomicMin(&check->first_bad, static_cast<unsigned long long>(r));
    return -1;
  }
  if (RowGroup<kWarp>::lane() == 0) atomicAdd(&check->count, 1ull);
  return t;
}

// (max, sum of exp(x - max)) of a row with torch's cross_entropy order: max first, then the sum.
template <typename T, bool kWarp>
__device__ void row_max_sum(const T* row, int64_t cols, float* smem, float& m, float& s) {
  using G = RowGroup<kWarp>;
  float mx = -INFINITY;
  for (int64_t c = G::lane(); c < cols; c += G::size()) mx = fmaxf(mx, to_f(row[c]));
  m = G::max(mx, smem);
  float part = 0.0f;
  for (int64_t c = G::lane(); c < cols; c += G::size()) part += expf(to_f(row[c]) - m);
  s = G::sum(part, smem);
}

template <typename T, bool kWarp>
__global__ void cross_entropy_kernel(float* losses, const T* logits, const void* targets, bool t64, int64_t rows,
                                     int64_t cols, int64_t ignore_index, IndexCheck* check) {
  __shared__ float smem[32];
  using G = RowGroup<kWarp>;
  for (int64_t r = G::first(); r < rows; r += G::stride()) {
    const int64_t t = row_target<kWarp>(targets, t64, r, cols, ignore_index, check);
    if (t < 0) {  // uniform over the group
      if (G::lane() == 0) losses[r] = 0.0f;
      continue;
    }
    const T* row = logits + r * cols;
    float m, s;
    row_max_sum<T, kWarp>(row, cols, smem, m, s);
    if (G::lane() == 0) losses[r] = -((to_f(row[t]) - m) - logf(s));  // -log_softmax[t]
  }
}

template <typename T, bool kWarp>
__global__ void cross_entropy_backward_kernel(T* glogits, const T* logits, const void* targets, bool t64, int64_t rows,
                                              int64_t cols, int64_t ignore_index, float scale, IndexCheck* check) {
  __shared__ float smem[32];
  using G = RowGroup<kWarp>;
  for (int64_t r = G::first(); r < rows; r += G::stride()) {
    const int64_t t = row_target<kWarp>(targets, t64, r, cols, ignore_index, check);
    T* grow = glogits + r * cols;
    if (t < 0) {
      for (int64_t c = G::lane(); c < cols; c += G::size()) grow[c] = from_f<T>(0.0f);
      continue;
    }
    const T* row = logits + r * cols;
    float m, s;
    row_max_sum<T, kWarp>(row, cols, smem, m, s);
    for (int64_t c = G::lane(); c < cols; c += G::size()) {
      float g = scale * (expf(to_f(row[c]) - m) / s);
      if (c == t) g -= scale;
      grow[c] = from_f<T>(g);
    }
  }
}

// ---- AdamW ----------------------------------------------------------------------------------------------

struct AdamWScalars {
  float decay, w1, b2, w2, neg_step, bc2_sqrt, eps;
};

template <typename P>
__global__ void adamw_kernel(P* param, const void* grad, DType g_dt, float* m, float* v, int64_t n, AdamWScalars k) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float pi = to_f(param[i]) * k.decay;  // param.mul_(1 - lr * wd)
    const float gi = cuda::load_f(grad, g_dt, i);
    const float mo = m[i];
    const float mi = k.w1 < 0.5f ? mo + k.w1 * (gi - mo) : gi - (gi - mo) * (1.0f - k.w1);  // exp_avg.lerp_(grad, 1 - b1)
    const float vi = v[i] * k.b2 + k.w2 * gi * gi;                  // exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
    const float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;             // (v.sqrt() / sqrt(bc2)).add_(eps)
    param[i] = from_f<P>(pi + k.neg_step * (mi / denom));          // param.addcdiv_(m, denom, -lr / bc1)
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------------------------

void rms_norm(int device, void* out, const void* x, const void* w, DType dt, DType w_dt, int64_t rows, int64_t cols,
              float eps) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_rows(device, rows, cols, rms_norm_kernel<T, true>, rms_norm_kernel<T, false>, static_cast<T*>(out),
                static_cast<const T*>(x), w, w_dt, rows, cols, eps);
  });
  check_launch("rmsNorm");
}

void rms_norm_backward(int device, void* gx, float* gw, const void* gy, const void* x, const void* w, DType dt,
                       DType w_dt, int64_t rows, int64_t cols, float eps) {
  if (rows <= 0 || cols <= 0) return;
  cudaStream_t st = stream(device);
  // A fixed number of row blocks (not tied to the GPU), so gw is the same on every device.
  const int64_t nb0 = std::min<int64_t>(rows, 256);
  const int64_t per = (rows + nb0 - 1) / nb0;
  const int64_t nb = (rows + per - 1) / per;
  Scratch partial(device, nb * cols * static_cast<int64_t>(sizeof(float)));  // (nb, cols)
  check_cuda(cudaMemsetAsync(partial.as<float>(), 0, static_cast<size_t>(nb * cols) * sizeof(float), st), "cudaMemsetAsync");
  const int threads = cols >= 2048 ? 512 : (cols >= 512 ? 256 : 128);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    rms_norm_backward_kernel<T><<<static_cast<unsigned>(nb), threads, 0, st>>>(
        static_cast<T*>(gx), partial.as<float>(), static_cast<const T*>(gy), static_cast<const T*>(x), w, w_dt, rows, cols,
        per, eps);
  });
  check_launch("rmsNormBackward");
  sum_partials_kernel<<<grid_for(cols, kThreads), kThreads, 0, st>>>(gw, partial.as<float>(), nb, cols);
  check_launch("rmsNormBackward");
}

void rope(int device, void* out, const void* x, DType dt, const void* positions, DType pos_dt, const float* inv_freq,
          int64_t B, int64_t H, int64_t T, int64_t D, float scaling, bool inverse) {
  const int64_t half = D / 2;
  const int64_t total = B * H * T * half;
  if (total <= 0) return;
  cudaStream_t st = stream(device);
  dispatch_float(dt, [&](auto tag) {
    using E = decltype(tag);
    rope_kernel<E><<<grid_for(total, kThreads), kThreads, 0, st>>>(static_cast<E*>(out), static_cast<const E*>(x), positions,
                                                                    pos_dt == DType::Int64, inv_freq, B, H, T, half, scaling,
                                                                    inverse);
  });
  check_launch("rope");
}

int64_t embedding(int device, void* out, const void* weight, DType w_dt, const void* ids, DType ids_dt, int64_t n,
                  int64_t dim, int64_t vocab, bool defer_check, int64_t* bad_id) {
  if (n <= 0) return -1;
  const bool ids64 = ids_dt == DType::Int64;
  const int64_t row_bytes = dim * dtype_size(w_dt);
  DeviceIndexCheck check(device);
  if (!defer_check) {
    // Ids are checked before anything is written, so a bad id leaves `out` untouched (as on the CPU).
    check_ids_kernel<<<grid_for(n, kThreads), kThreads, 0, stream(device)>>>(ids, ids64, n, vocab, check.ptr());
    check_launch("embedding");
    const IndexCheck r = check.read();
    if (r.first_bad != kNoBadIndex) {
      const int64_t pos = static_cast<int64_t>(r.first_bad);
      *bad_id = nn_detail::fetch_index(device, ids, ids64, pos);
      return pos;
    }
  }
  if (row_bytes > 0) {
    cudaStream_t st = stream(device);
    // Widest copy unit that divides the row and the alignment of both pointers.
    const uintptr_t align = reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(weight);
    auto launch = [&](auto unit) {
      using U = decltype(unit);
      const int64_t units = row_bytes / static_cast<int64_t>(sizeof(U));
      embedding_kernel<U><<<grid_for(n * units, kThreads), kThreads, 0, st>>>(
          static_cast<U*>(out), static_cast<const U*>(weight), ids, ids64, n, units, vocab, check.ptr());
    };
    if (row_bytes % 16 == 0 && align % 16 == 0) launch(uint4{});
    else if (row_bytes % 8 == 0 && align % 8 == 0) launch(uint2{});
    else if (row_bytes % 4 == 0 && align % 4 == 0) launch(uint32_t{});
    else launch(uint16_t{});  // 16-bit rows of odd length (offsets are element-aligned)
    check_launch("embedding");
  } else if (defer_check) {
    check_ids_kernel<<<grid_for(n, kThreads), kThreads, 0, stream(device)>>>(ids, ids64, n, vocab, check.ptr());
    check_launch("embedding");
  }
  if (defer_check) {
    // No waiting: the result travels to the host behind the kernels and is read at the next synchronisation.
    deferred_merge_kernel<<<1, 1, 0, stream(device)>>>(check.ptr(), ids, ids64, vocab, deferred_record(device));
    check_launch("embedding");
    deferred_commit(device);
  }
  return -1;
}

int64_t embedding_backward(int device, float* gw, const void* gy, DType gy_dt, const void* ids, DType ids_dt, int64_t n,
                           int64_t dim, int64_t vocab, int64_t* bad_id) {
  if (n <= 0) return -1;
  const bool ids64 = ids_dt == DType::Int64;
  cudaStream_t st = stream(device);
  // keys / vals in, sorted keys / vals out.
  Scratch buf(device, 4 * n * static_cast<int64_t>(sizeof(uint32_t)));
  uint32_t* keys = buf.as<uint32_t>();
  uint32_t* vals = keys + n;
  uint32_t* skeys = vals + n;
  uint32_t* svals = skeys + n;
  {
    DeviceIndexCheck check(device);
    embedding_keys_kernel<<<grid_for(n, kThreads), kThreads, 0, st>>>(keys, vals, ids, ids64, n, vocab, check.ptr());
    check_launch("embeddingBackward");
    const IndexCheck r = check.read();  // gw is untouched until every id is known to be valid
    if (r.first_bad != kNoBadIndex) {
      const int64_t pos = static_cast<int64_t>(r.first_bad);
      *bad_id = nn_detail::fetch_index(device, ids, ids64, pos);
      return pos;
    }
  }
  if (dim <= 0) return -1;
  int end_bit = 1;
  while (end_bit < 32 && (int64_t{1} << end_bit) < vocab) ++end_bit;
  size_t temp_bytes = 0;
  const int num = static_cast<int>(n);
  check_cuda(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys, skeys, vals, svals, num, 0, end_bit, st),
             "embeddingBackward (radix sort)");
  Scratch temp(device, std::max<int64_t>(static_cast<int64_t>(temp_bytes), 16));
  check_cuda(cub::DeviceRadixSort::SortPairs(temp.as<void>(), temp_bytes, keys, skeys, vals, svals, num, 0, end_bit, st),
             "embeddingBackward (radix sort)");
  const int64_t blocks = std::min<int64_t>(n, static_cast<int64_t>(nn_detail::sm_count(device)) * 8);
  const int threads = dim >= 256 ? 256 : (dim >= 64 ? 64 : 32);
  dispatch_float(gy_dt, [&](auto tag) {
    using T = decltype(tag);
    embedding_scatter_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, st>>>(gw, static_cast<const T*>(gy), skeys,
                                                                                    svals, n, dim);
  });
  check_launch("embeddingBackward");
  return -1;
}

int64_t cross_entropy(int device, float* losses, const void* logits, DType dt, const void* targets, DType t_dt,
                      int64_t rows, int64_t cols, int64_t ignore_index, int64_t* bad_target) {
  if (rows <= 0) return 0;
  const bool t64 = t_dt == DType::Int64;
  DeviceIndexCheck check(device);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_rows(device, rows, cols, cross_entropy_kernel<T, true>, cross_entropy_kernel<T, false>, losses,
                static_cast<const T*>(logits), targets, t64, rows, cols, ignore_index, check.ptr());
  });
  check_launch("crossEntropy");
  const IndexCheck r = check.read();  // also waits for the losses
  if (r.first_bad != kNoBadIndex) {
    const int64_t row = static_cast<int64_t>(r.first_bad);
    *bad_target = nn_detail::fetch_index(device, targets, t64, row);
    return -1 - row;
  }
  return static_cast<int64_t>(r.count);
}

int64_t cross_entropy_backward(int device, void* glogits, const void* logits, DType dt, const void* targets, DType t_dt,
                               int64_t rows, int64_t cols, int64_t ignore_index, float scale, int64_t* bad_target) {
  if (rows <= 0) return 0;
  const bool t64 = t_dt == DType::Int64;
  DeviceIndexCheck check(device);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_rows(device, rows, cols, cross_entropy_backward_kernel<T, true>, cross_entropy_backward_kernel<T, false>,
                static_cast<T*>(glogits), static_cast<const T*>(logits), targets, t64, rows, cols, ignore_index, scale,
                check.ptr());
  });
  check_launch("crossEntropyBackward");
  const IndexCheck r = check.read();
  if (r.first_bad != kNoBadIndex) {
    const int64_t row = static_cast<int64_t>(r.first_bad);
    *bad_target = nn_detail::fetch_index(device, targets, t64, row);
    return -1 - row;
  }
  return static_cast<int64_t>(r.count);
}

void adamw(int device, void* param, DType p_dt, const void* grad, DType g_dt, float* m, float* v, int64_t n,
           const cpu::AdamWParams& hp) {
  if (n <= 0) return;
  // Scalars as torch's _single_tensor_adamw computes them (Python floats, i.e. double), used as float32.
  AdamWScalars k;
  k.decay = static_cast<float>(1.0 - hp.lr * hp.weight_decay);
  k.w1 = static_cast<float>(1.0 - hp.beta1);
  k.b2 = static_cast<float>(hp.beta2);
  k.w2 = static_cast<float>(1.0 - hp.beta2);
  const double bc1 = 1.0 - std::pow(hp.beta1, static_cast<double>(hp.step));
  const double bc2 = 1.0 - std::pow(hp.beta2, static_cast<double>(hp.step));
  k.neg_step = static_cast<float>(-(hp.lr / bc1));
  k.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  k.eps = static_cast<float>(hp.eps);
  cudaStream_t st = stream(device);
  dispatch_float(p_dt, [&](auto tag) {
    using P = decltype(tag);
    adamw_kernel<P><<<grid_for(n, kThreads), kThreads, 0, st>>>(static_cast<P*>(param), grad, g_dt, m, v, n, k);
  });
  check_launch("adamw");
}

}  // namespace lowbit::cuda::nn
