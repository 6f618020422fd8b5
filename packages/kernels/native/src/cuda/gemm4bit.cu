// CUDA fused 4-bit GEMM of quant_kernels.h: out (M, N) = x (M, K) @ dequant(W (N, K) NF4/FP4)^T (+ bias).
//
// M <= 16, K % 32 == 0, 16-byte aligned W rows and x rows (every Linear of a decoder at small batch): one streaming
// pass over W (spec §16.3 / §16.4 design). Each lane takes 32 K-elements of a row per step (a warp strides K by 1024) as
// one 16-byte streaming load of packed W (__ldcs: evict-first, W is read once) and one scale (plain absmax, or the
// nested fmaf(code[q], absmax2[blk >> 8], offset) with the 256-entry code in shared memory). One warp per output
// feature, or 2 / 4 warps splitting a long K (their sums added in warp order). CTAs are persistent and every warp loads
// its next chunk of steps while it computes the current one, so loads stay in flight for the whole kernel.
// The 16-entry LUT sits in a register of every lane (lanes 16..31 repeat lanes 0..15) and is read with __shfl_sync:
// the shuffle uses only the low 5 bits of the source lane, so `word >> shift` needs no mask (the fifth bit just picks
// the copy). The decoded weights of a step are reused for the MB rows of x (16-byte vector loads through the read-only
// cache, converted to float32); each row sums x * LUT over the 32 elements and multiplies by the scale once,
// accumulating in float32. A xor-shuffle warp sum follows; the bias is added in float32 and the result rounded once to T.
// M == 1 with K <= 16384 (decoder GEMVs) runs gemv4_m1_kernel instead: the same decode, but each warp keeps its slice
// of the activation row in registers for the whole kernel, so only the weights stream through L1 (see its comment).
// Other shapes (K % 32 != 0, unaligned offsets) use a scalar kernel with the same structure.
//
// M > 16: W is dequantized, in row chunks, into scratch of the activation dtype (T(fp32(LUT * scale)), the values of
// bitsandbytes' dequantize-then-matmul path) and multiplied by cuda::matmul (cuBLAS, float32 accumulation).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <atomic>
#include <cstring>
#include <type_traits>

#include "common.cuh"
#include "gemm.h"
#include "quant_kernels.h"

namespace lowbit::cuda::quant {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kWarps = 4;           // warps per CUDA block of the general fast kernel
constexpr int kM1Warps = 16;        // warps per CUDA block of the batch-1 kernel (one step of a row each)
constexpr int kM1Depth = 8;         // items whose per-warp sums the batch-1 kernel buffers between barriers
constexpr int kUnroll = 4;          // 1024-element K steps whose loads are issued together
constexpr int64_t kMaxFusedM = 16;  // larger M goes through dequantize + matmul
constexpr int64_t kChunkBytes = int64_t{64} << 20;  // scratch bound of the large-M path (per buffer)

struct Lut16 {
  float v[16];
};

Lut16 lut_table(cpu::QuantType t) {
  Lut16 r{};
  const float* p = cpu::lut4(t);
  for (int i = 0; i < 16; ++i) r.v[i] = p[i];
  return r;
}

int log2_exact(int64_t v) {
  int l = 0;
  while ((int64_t{1} << l) < v) ++l;
  return l;
}

bool aligned(const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

template <typename F>
void dispatch_float(DType dt, F&& f) {
  switch (dt) {
    case DType::Float16: f(__half{}); break;
    case DType::BFloat16: f(__nv_bfloat16{}); break;
    default: f(float{}); break;
  }
}

// The pointers of one call (device pointers; nested_* null in the plain state).
struct WeightArgs {
  const uint8_t* packed;
  const float* absmax;
  const uint8_t* qabsmax;
  const float* nested_absmax;
  const float* nested_code;
  float offset;
  int lg_bs;
};

// Scale of flat block `blk`: the plain absmax or fmaf(code[q], absmax2[blk >> 8], offset) (one rounding, as the CPU
// gemm4bit and upstream's fused kernels).
template <bool NESTED>
__device__ __forceinline__ float block_scale(const WeightArgs& w, const float* s_code, int64_t blk) {
  if (NESTED) return __fmaf_rn(s_code[w.qabsmax[blk]], __ldg(w.nested_absmax + (blk >> 8)), w.offset);
  return __ldg(w.absmax + blk);
}

// ---- 32 activations from a 16-byte aligned pointer, as float32 --------------------------------------------------------

__device__ __forceinline__ void load_x32(const float* p, float (&xv)[32]) {
  const float4* q = reinterpret_cast<const float4*>(p);
#pragma unroll
  for (int v = 0; v < 8; ++v) {
    const float4 f = __ldg(q + v);
    xv[4 * v] = f.x, xv[4 * v + 1] = f.y, xv[4 * v + 2] = f.z, xv[4 * v + 3] = f.w;
  }
}
__device__ __forceinline__ void load_x32(const __nv_bfloat16* p, float (&xv)[32]) {
  const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int v = 0; v < 4; ++v) {
    const uint4 u = __ldg(q + v);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      xv[8 * v + 2 * j] = __uint_as_float(w[j] << 16);
      xv[8 * v + 2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
  }
}
__device__ __forceinline__ void load_x32(const __half* p, float (&xv)[32]) {
  const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int v = 0; v < 4; ++v) {
    const uint4 u = __ldg(q + v);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      __half2 h;
      std::memcpy(&h, &w[j], 4);
      const float2 f = __half22float2(h);
      xv[8 * v + 2 * j] = f.x;
      xv[8 * v + 2 * j + 1] = f.y;
    }
  }
}

// The 32 LUT values of 16 packed bytes (element 2i in the high nibble of byte i). `lut` holds LUT[lane & 15].
// Every lane of the warp must call it (shuffles).
__device__ __forceinline__ void decode32(const uint4& wv, float lut, float (&w)[32]) {
  const uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      w[8 * j + 2 * b] = __shfl_sync(kFull, lut, static_cast<int>(words[j] >> (8 * b + 4)));
      w[8 * j + 2 * b + 1] = __shfl_sync(kFull, lut, static_cast<int>(words[j] >> (8 * b)));
    }
  }
}

// One chunk of a warp's work: kUnroll steps (32 weights per lane each) of one output feature's row, loaded ahead of use.
struct Chunk {
  uint4 wv[kUnroll];    // packed weights
  float a[kUnroll];     // plain: the block's absmax; nested: absmax2[blk >> 8]
  uint32_t q[kUnroll];  // nested: the block's absmax code
};

// Fast path: up to MB rows of x (blockIdx.y picks the group of MB rows), persistent CTAs (about as many as fit on the
// GPU at once) that walk items g = blockIdx.x, blockIdx.x + gridDim.x, ...; an item is the kWarps / wpr output features
// whose K steps the CTA's warps share (wpr = 2^lg_wpr warps per feature; step s of a row goes to warp s % wpr). A warp's
// steps of one item are split into chunks of kUnroll steps, and the next chunk (of this item or the next) is loaded
// while the current one is computed, so every warp keeps its loads in flight. At the end of an item the wpr partial
// sums of a feature are added in warp order through shared memory (deterministic). Requires K % 32 == 0, packed and
// x 16-byte aligned (so every row of W and of x is).
template <typename T, int MB, bool NESTED>
__global__ void __launch_bounds__(kWarps * 32, MB >= 8 ? 2 : 1)
    gemv4_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w, const T* __restrict__ bias, int64_t M, int64_t N,
                 int64_t K, int lg_wpr, Lut16 lut) {
  __shared__ float s_code[NESTED ? 256 : 1];
  __shared__ float s_part[2][kWarps][MB];  // by item parity, so one barrier per item suffices
  if (NESTED) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
    __syncthreads();
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wpr = 1 << lg_wpr;
  const int kw = warp & (wpr - 1);             // this warp's share of a row's K steps
  const int fpi = kWarps >> lg_wpr;            // output features per item
  const int64_t items = (N + fpi - 1) / fpi;
  const int64_t steps = (K + 1023) >> 10;      // 1024-element steps of a row
  const int64_t spw = (steps + wpr - 1) >> lg_wpr;
  const int64_t cpi = (spw + kUnroll - 1) / kUnroll;  // chunks per item (the same for every warp)
  const float lut_reg = lut.v[lane & 15];
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MB;
  const int rows = static_cast<int>(M - m0 < MB ? M - m0 : MB);
  const T* xrow = x + m0 * K;
  int64_t g = blockIdx.x;
  if (g >= items) return;  // block-uniform

  auto feature = [&](int64_t item) { return item * fpi + (warp >> lg_wpr); };
  // First element (for this lane) of step j of this warp in a row; >= K when the step does not exist.
  auto step_k = [&](int64_t j) { return ((static_cast<int64_t>(kw) + (j << lg_wpr)) << 10) + lane * 32; };
  auto load = [&](Chunk& ch, int64_t item, int64_t c) {
    const int64_t n = feature(item);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k = step_k(c * kUnroll + u);
      if (n < N && k < K) {
        ch.wv[u] = __ldcs(reinterpret_cast<const uint4*>(w.packed + ((n * K + k) >> 1)));
        const int64_t blk = (n * K + k) >> w.lg_bs;  // 32 elements never straddle a block
        if (NESTED) {
          ch.q[u] = w.qabsmax[blk];
          ch.a[u] = __ldg(w.nested_absmax + (blk >> 8));
        } else {
          ch.a[u] = __ldg(w.absmax + blk);
          ch.q[u] = 0;
        }
      } else {
        ch.wv[u] = make_uint4(0u, 0u, 0u, 0u);
        ch.a[u] = 0.0f;
        ch.q[u] = 0;
      }
    }
  };

  float acc[MB];
#pragma unroll
  for (int m = 0; m < MB; ++m) acc[m] = 0.0f;
  int parity = 0;
  int64_t c = 0;
  Chunk cur, nxt;
  load(cur, g, 0);
  for (;;) {
    int64_t g2 = g, c2 = c + 1;
    if (c2 == cpi) {
      c2 = 0;
      g2 += gridDim.x;
    }
    const bool more = g2 < items;  // block-uniform
    if (more) load(nxt, g2, c2);
    const int64_t n = feature(g);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k = step_k(c * kUnroll + u);
      if (n >= N || k - lane * 32 >= K) continue;  // warp-uniform (the step's first element)
      float wf[32];
      decode32(cur.wv[u], lut_reg, wf);
      if (k < K) {
        const float sc = NESTED ? __fmaf_rn(s_code[cur.q[u]], cur.a[u], w.offset) : cur.a[u];
#pragma unroll
        for (int m = 0; m < MB; ++m) {
          if (m < rows) {
            float xv[32];
            load_x32(xrow + m * K + k, xv);
            float p0 = 0.0f, p1 = 0.0f;  // two chains: even / odd elements
#pragma unroll
            for (int j = 0; j < 16; ++j) {
              p0 = fmaf(xv[2 * j], wf[2 * j], p0);
              p1 = fmaf(xv[2 * j + 1], wf[2 * j + 1], p1);
            }
            acc[m] = fmaf(p0 + p1, sc, acc[m]);
          }
        }
      }
    }
    if (c == cpi - 1) {  // the item is done: reduce and store its features
#pragma unroll
      for (int m = 0; m < MB; ++m) acc[m] = warp_sum(acc[m]);  // every lane holds the sums
      if (wpr > 1) {
        if (lane == 0) {
#pragma unroll
          for (int m = 0; m < MB; ++m) s_part[parity][warp][m] = acc[m];
        }
        __syncthreads();
        if (kw == 0) {
          for (int j = 1; j < wpr; ++j) {
#pragma unroll
            for (int m = 0; m < MB; ++m) acc[m] += s_part[parity][warp + j][m];
          }
        }
      }
      if (kw == 0 && n < N) {
        const float b = bias != nullptr ? to_f(bias[n]) : 0.0f;
#pragma unroll
        for (int m = 0; m < MB; ++m)
          if (lane == m && m < rows) out[(m0 + m) * N + n] = from_f<T>(acc[m] + b);
      }
#pragma unroll
      for (int m = 0; m < MB; ++m) acc[m] = 0.0f;
      parity ^= 1;
    }
    if (!more) break;
    cur = nxt;
    g = g2;
    c = c2;
  }
}

// Batch-1 fast path: the activation row stays in registers. A CUDA block of kM1Warps warps; wpr = 2^lg_wpr warps share
// a row (an item is kM1Warps / wpr rows) and warp kw always takes step kw of every row (elements kw * 1024 + lane * 32
// + [0, 32)), so it loads its slice of x once, at the start, and afterwards streams only W: L1 traffic is the weights
// alone (the general kernel reads 4x as many activation bytes as weight bytes through L1, which bounds it). CTAs are
// persistent (one per SM); a warp's items are processed in chunks of kUnroll, the next chunk loading while the current
// one computes. The per-warp sums of an item go to shared memory and are added in warp order once every kM1Depth items
// (one barrier per kM1Depth items, double-buffered). Requires K <= 1024 * kM1Warps, K % 32 == 0, x and packed 16-byte
// aligned.
template <typename T>
__device__ __forceinline__ void load_x_words(const T* p, uint32_t (&xw)[sizeof(T) * 8]) {
  const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int v = 0; v < static_cast<int>(sizeof(T)) * 2; ++v) {
    const uint4 u = __ldg(q + v);
    xw[4 * v] = u.x, xw[4 * v + 1] = u.y, xw[4 * v + 2] = u.z, xw[4 * v + 3] = u.w;
  }
}
// sum over the 32 elements of x (raw words) * wf, in two chains (even / odd elements).
template <typename T>
__device__ __forceinline__ float dot_x(const uint32_t (&xw)[sizeof(T) * 8], const float (&wf)[32]) {
  float p0 = 0.0f, p1 = 0.0f;
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    float a, b;
    if constexpr (sizeof(T) == 4) {
      a = __uint_as_float(xw[2 * j]);
      b = __uint_as_float(xw[2 * j + 1]);
    } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
      a = __uint_as_float(xw[j] << 16);
      b = __uint_as_float(xw[j] & 0xffff0000u);
    } else {
      __half2 h;
      std::memcpy(&h, &xw[j], 4);
      const float2 f = __half22float2(h);
      a = f.x;
      b = f.y;
    }
    p0 = fmaf(a, wf[2 * j], p0);
    p1 = fmaf(b, wf[2 * j + 1], p1);
  }
  return p0 + p1;
}

template <typename T, bool NESTED>
__global__ void __launch_bounds__(kM1Warps * 32, 1)
    gemv4_m1_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w, const T* __restrict__ bias, int64_t N, int64_t K,
                    int lg_wpr, Lut16 lut) {
  __shared__ float s_code[NESTED ? 256 : 1];
  __shared__ float s_buf[2][kM1Depth][kM1Warps];  // per-warp sums of kM1Depth items, double-buffered
  if (NESTED) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
    __syncthreads();
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wpr = 1 << lg_wpr;
  const int fpi = kM1Warps >> lg_wpr;  // rows (output features) per item
  const int64_t items = (N + fpi - 1) / fpi;
  const int64_t g0 = blockIdx.x;
  if (g0 >= items) return;  // block-uniform
  const int64_t mine = (items - g0 + gridDim.x - 1) / gridDim.x;  // this CTA's items: g0, g0 + gridDim.x, ...
  const float lut_reg = lut.v[lane & 15];
  const int64_t kbase = static_cast<int64_t>(warp & (wpr - 1)) << 10;  // this warp's step
  const int64_t k = kbase + lane * 32;
  const bool has_step = kbase < K;  // warp-uniform
  const bool lane_ok = k < K;
  constexpr int XW = sizeof(T) * 8;
  uint32_t xw[XW];
  if (lane_ok) {
    load_x_words<T>(x + k, xw);
  } else {
#pragma unroll
    for (int j = 0; j < XW; ++j) xw[j] = 0u;
  }
  auto row_of = [&](int64_t i) { return (g0 + i * gridDim.x) * fpi + (warp >> lg_wpr); };
  auto load = [&](Chunk& ch, int64_t c) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = c * kUnroll + u;
      const int64_t n = row_of(i);
      if (i < mine && n < N && lane_ok) {
        ch.wv[u] = __ldcs(reinterpret_cast<const uint4*>(w.packed + ((n * K + k) >> 1)));
        const int64_t blk = (n * K + k) >> w.lg_bs;  // 32 elements never straddle a block
        if (NESTED) {
          ch.q[u] = w.qabsmax[blk];
          ch.a[u] = __ldg(w.nested_absmax + (blk >> 8));
        } else {
          ch.a[u] = __ldg(w.absmax + blk);
          ch.q[u] = 0;
        }
      } else {
        ch.wv[u] = make_uint4(0u, 0u, 0u, 0u);
        ch.a[u] = 0.0f;
        ch.q[u] = 0;
      }
    }
  };

  Chunk cur, nxt;
  load(cur, 0);
  for (int64_t c = 0;; ++c) {
    const bool more = (c + 1) * kUnroll < mine;  // block-uniform
    if (more) load(nxt, c + 1);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = c * kUnroll + u;
      if (i >= mine) break;  // block-uniform
      const int64_t n = row_of(i);
      float part = 0.0f;
      if (has_step && n < N) {  // warp-uniform: the shuffles need the whole warp
        float wf[32];
        decode32(cur.wv[u], lut_reg, wf);
        if (lane_ok) part = dot_x<T>(xw, wf) * (NESTED ? __fmaf_rn(s_code[cur.q[u]], cur.a[u], w.offset) : cur.a[u]);
        part = warp_sum(part);
      }
      const int slot = static_cast<int>(i % kM1Depth);
      const int buf = static_cast<int>((i / kM1Depth) & 1);
      if (lane == 0) s_buf[buf][slot][warp] = part;
      if (slot == kM1Depth - 1 || i == mine - 1) {  // block-uniform: flush the buffered items
        __syncthreads();
        const int64_t first = i - slot;
        for (int t = threadIdx.x; t < (slot + 1) * fpi; t += blockDim.x) {
          const int d = t / fpi, f = t - d * fpi;
          const int64_t nn = (g0 + (first + d) * gridDim.x) * fpi + f;
          if (nn < N) {
            float sum = 0.0f;
            for (int j = 0; j < wpr; ++j) sum += s_buf[buf][d][f * wpr + j];
            out[nn] = from_f<T>(sum + (bias != nullptr ? to_f(bias[nn]) : 0.0f));
          }
        }
      }
    }
    if (!more) break;
    cur = nxt;
  }
}

// Any shape and alignment: one warp per output feature, one element per lane per step, up to 16 rows of x.
template <typename T, bool NESTED>
__global__ void __launch_bounds__(kWarps * 32) gemv4_generic_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w,
                                                                    const T* __restrict__ bias, int64_t M, int64_t N, int64_t K,
                                                                    Lut16 lut) {
  constexpr int MB = kMaxFusedM;
  __shared__ float s_code[NESTED ? 256 : 1];
  __shared__ float s_lut[16];
  if (NESTED)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
  if (threadIdx.x < 16) s_lut[threadIdx.x] = lut.v[threadIdx.x];
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * MB;
  const int rows = static_cast<int>(M - m0 < MB ? M - m0 : MB);
  float acc[MB];
#pragma unroll
  for (int m = 0; m < MB; ++m) acc[m] = 0.0f;
  for (int64_t k = lane; k < K; k += 32) {
    const int64_t flat = n * K + k;
    const uint32_t byte = w.packed[flat >> 1];
    const uint32_t c = (flat & 1) ? (byte & 15u) : (byte >> 4);
    const float wk = __fmul_rn(s_lut[c], block_scale<NESTED>(w, s_code, flat >> w.lg_bs));
#pragma unroll
    for (int m = 0; m < MB; ++m)
      if (m < rows) acc[m] = fmaf(to_f(x[(m0 + m) * K + k]), wk, acc[m]);
  }
  const float b = bias != nullptr ? to_f(bias[n]) : 0.0f;
#pragma unroll
  for (int m = 0; m < MB; ++m) {
    const float v = warp_sum(acc[m]);
    if (lane == m && m < rows) out[(m0 + m) * N + n] = from_f<T>(v + b);
  }
}

// ---- large M: dequantize row chunks, then matmul ----------------------------------------------------------------------

// out (count,) in T = T(fp32(LUT[code] * scale)) for the flat weight elements [flat0, flat0 + count).
template <typename T, bool NESTED>
__global__ void dequant_rows_kernel(T* __restrict__ out, WeightArgs w, int64_t flat0, int64_t count, Lut16 lut) {
  __shared__ float s_code[NESTED ? 256 : 1];
  __shared__ float s_lut[16];
  if (NESTED)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
  if (threadIdx.x < 16) s_lut[threadIdx.x] = lut.v[threadIdx.x];
  __syncthreads();
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t flat = flat0 + e;
    const uint32_t byte = w.packed[flat >> 1];
    const uint32_t c = (flat & 1) ? (byte & 15u) : (byte >> 4);
    out[e] = from_f<T>(__fmul_rn(s_lut[c], block_scale<NESTED>(w, s_code, flat >> w.lg_bs)));
  }
}

// out (M, N) = T(bias[n]) (or 0 without a bias).
template <typename T>
__global__ void bias_rows_kernel(T* __restrict__ out, const T* __restrict__ bias, int64_t M, int64_t N) {
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y)
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < N; j += static_cast<int64_t>(gridDim.x) * blockDim.x)
      out[m * N + j] = bias != nullptr ? bias[j] : from_f<T>(0.0f);
}

// out[m, n0 + j] = T(c[m, j] + bias[n0 + j]) for the (M, cols) float32 product of one chunk.
template <typename T>
__global__ void chunk_epilogue_kernel(T* __restrict__ out, const float* __restrict__ c, const T* __restrict__ bias, int64_t M,
                                      int64_t N, int64_t n0, int64_t cols) {
  for (int64_t m = blockIdx.y; m < M; m += gridDim.y)
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < cols; j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const float b = bias != nullptr ? to_f(bias[n0 + j]) : 0.0f;
      out[m * N + n0 + j] = from_f<T>(c[m * cols + j] + b);
    }
}

dim3 rows_grid(int64_t M, int64_t cols, int threads) {
  int64_t gx = (cols + threads - 1) / threads;
  if (gx > 4096) gx = 4096;
  if (gx < 1) gx = 1;
  const int64_t gy = M < 65535 ? M : 65535;
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy < 1 ? 1 : gy));
}

template <typename T>
void launch_dequant_rows(cudaStream_t s, T* out, const WeightArgs& w, bool nested, int64_t flat0, int64_t count, const Lut16& lut) {
  const unsigned grid = grid_for(count, 256);
  if (nested) dequant_rows_kernel<T, true><<<grid, 256, 0, s>>>(out, w, flat0, count, lut);
  else dequant_rows_kernel<T, false><<<grid, 256, 0, s>>>(out, w, flat0, count, lut);
  check_launch("gemm4bit (dequantize)");
}

template <typename T>
void gemm4bit_large(int device, T* out, const T* x, DType dtype, const WeightArgs& w, bool nested, const Lut16& lut, int64_t M,
                    int64_t N, int64_t K, const T* bias) {
  cudaStream_t s = stream(device);
  const int64_t es = static_cast<int64_t>(sizeof(T));
  int64_t nc = kChunkBytes / (K * es);
  if (nc < 1) nc = 1;
  if (nc >= N) {
    // One chunk: the product goes straight into out; a bias is written first and added by beta = 1 (one rounding).
    Scratch wd(device, N * K * es);
    launch_dequant_rows(s, wd.as<T>(), w, nested, 0, N * K, lut);
    float beta = 0.0f;
    if (bias != nullptr) {
      bias_rows_kernel<T><<<rows_grid(M, N, 256), 256, 0, s>>>(out, bias, M, N);
      check_launch("gemm4bit (bias)");
      beta = 1.0f;
    }
    matmul(device, out, dtype, x, wd.as<T>(), dtype, 1, M, N, K, false, true, 0, 0, 0, 1.0f, beta);
    return;
  }
  const int64_t by_c = kChunkBytes / (M * 4);
  if (by_c < nc) nc = by_c < 1 ? 1 : by_c;
  Scratch wd(device, nc * K * es);
  Scratch c(device, M * nc * 4);
  for (int64_t n0 = 0; n0 < N; n0 += nc) {
    const int64_t cols = N - n0 < nc ? N - n0 : nc;
    launch_dequant_rows(s, wd.as<T>(), w, nested, n0 * K, cols * K, lut);
    matmul(device, c.as<float>(), DType::Float32, x, wd.as<T>(), dtype, 1, M, cols, K, false, true, 0, 0, 0, 1.0f, 0.0f);
    chunk_epilogue_kernel<T><<<rows_grid(M, cols, 256), 256, 0, s>>>(out, c.as<float>(), bias, M, N, n0, cols);
    check_launch("gemm4bit (epilogue)");
  }
}

// Resident CTAs per SM of a kernel (occupancy calculator), computed once per kernel on the first device that runs it.
template <typename Kernel>
int blocks_per_sm(Kernel kernel, int threads, std::atomic<int>& cache) {
  int nb = cache.load(std::memory_order_relaxed);
  if (nb > 0) return nb;
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, kernel, threads, 0), "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  if (nb < 1) nb = 1;
  cache.store(nb, std::memory_order_relaxed);
  return nb;
}

int sm_count(int device) {
  static std::array<std::atomic<int>, 64> cache{};
  const size_t i = static_cast<size_t>(device) < cache.size() ? static_cast<size_t>(device) : 0;
  int v = cache[i].load(std::memory_order_relaxed);
  if (v > 0) return v;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  if (v < 1) v = 1;
  cache[i].store(v, std::memory_order_relaxed);
  return v;
}

template <typename T, int MB, bool NESTED>
void launch_fast_typed(int device, cudaStream_t s, T* out, const T* x, const WeightArgs& w, const T* bias, int64_t M, int64_t N, int64_t K,
                       const Lut16& lut) {
  // Warps per output feature: the fewest (1, 2 or 4) that leave each warp at most kUnroll steps of 1024 elements per row.
  const int64_t steps = (K + 1023) / 1024;
  int lg_wpr = 0;
  while (lg_wpr < 2 && (steps + (int64_t{1} << lg_wpr) - 1) / (int64_t{1} << lg_wpr) > kUnroll) ++lg_wpr;
  const int64_t per_item = kWarps >> lg_wpr;
  const int64_t items = (N + per_item - 1) / per_item;
  static std::atomic<int> occupancy{0};
  const int64_t resident = static_cast<int64_t>(blocks_per_sm(gemv4_kernel<T, MB, NESTED>, kWarps * 32, occupancy)) * sm_count(device);
  const int64_t gx = items < resident ? items : resident;
  gemv4_kernel<T, MB, NESTED><<<dim3(static_cast<unsigned>(gx), 1), kWarps * 32, 0, s>>>(out, x, w, bias, M, N, K, lg_wpr, lut);
}

// The batch-1 kernel when a row fits one step per warp (K <= 1024 * kM1Warps); returns false otherwise.
template <typename T, bool NESTED>
bool launch_m1(int device, cudaStream_t s, T* out, const T* x, const WeightArgs& w, const T* bias, int64_t N, int64_t K, const Lut16& lut) {
  const int64_t steps = (K + 1023) / 1024;
  if (steps > kM1Warps) return false;
  int lg_wpr = 0;
  while ((int64_t{1} << lg_wpr) < steps) ++lg_wpr;
  const int64_t per_item = kM1Warps >> lg_wpr;
  const int64_t items = (N + per_item - 1) / per_item;
  static std::atomic<int> occupancy{0};
  const int64_t resident = static_cast<int64_t>(blocks_per_sm(gemv4_m1_kernel<T, NESTED>, kM1Warps * 32, occupancy)) * sm_count(device);
  const int64_t gx = items < resident ? items : resident;
  gemv4_m1_kernel<T, NESTED><<<dim3(static_cast<unsigned>(gx)), kM1Warps * 32, 0, s>>>(out, x, w, bias, N, K, lg_wpr, lut);
  return true;
}

template <typename T, int MB>
void launch_fast(int device, cudaStream_t s, T* out, const T* x, const WeightArgs& w, bool nested, const T* bias, int64_t M, int64_t N,
                 int64_t K, const Lut16& lut) {
  if (nested) launch_fast_typed<T, MB, true>(device, s, out, x, w, bias, M, N, K, lut);
  else launch_fast_typed<T, MB, false>(device, s, out, x, w, bias, M, N, K, lut);
}

}  // namespace

void gemm4bit(int device, void* out, const void* x, DType dtype, const cpu::Weight4bit& wt, int64_t M, int64_t N, int64_t K,
              const void* bias) {
  if (M <= 0 || N <= 0) return;
  cudaStream_t s = stream(device);
  const bool nested = wt.qabsmax != nullptr;
  const WeightArgs w{wt.packed, wt.absmax, wt.qabsmax, wt.nested_absmax, wt.nested_code, wt.offset, log2_exact(wt.blocksize)};
  const Lut16 lut = lut_table(wt.type);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = static_cast<T*>(out);
    const T* xt = static_cast<const T*>(x);
    const T* bt = static_cast<const T*>(bias);
    if (K <= 0) {  // an empty sum: out = bias (or 0)
      bias_rows_kernel<T><<<rows_grid(M, N, 256), 256, 0, s>>>(o, bt, M, N);
      check_launch("gemm4bit");
      return;
    }
    if (M > kMaxFusedM) {
      gemm4bit_large<T>(device, o, xt, dtype, w, nested, lut, M, N, K, bt);
      return;
    }
    const bool fast = K % 32 == 0 && aligned(wt.packed, 16) && aligned(x, 16);
    if (!fast) {
      const int64_t gx = (N + kWarps - 1) / kWarps;
      if (gx > INT32_MAX) throw_shape_error("gemm4bit on cuda supports N up to " + std::to_string(int64_t{INT32_MAX} * kWarps));
      const dim3 grid(static_cast<unsigned>(gx), 1);
      if (nested) gemv4_generic_kernel<T, true><<<grid, kWarps * 32, 0, s>>>(o, xt, w, bt, M, N, K, lut);
      else gemv4_generic_kernel<T, false><<<grid, kWarps * 32, 0, s>>>(o, xt, w, bt, M, N, K, lut);
    } else if (M == 1) {
      const bool done = nested ? launch_m1<T, true>(device, s, o, xt, w, bt, N, K, lut) : launch_m1<T, false>(device, s, o, xt, w, bt, N, K, lut);
      if (!done) launch_fast<T, 1>(device, s, o, xt, w, nested, bt, M, N, K, lut);
    } else if (M == 2) {
      launch_fast<T, 2>(device, s, o, xt, w, nested, bt, M, N, K, lut);
    } else if (M <= 4) {
      launch_fast<T, 4>(device, s, o, xt, w, nested, bt, M, N, K, lut);
    } else if (M <= 8) {
      launch_fast<T, 8>(device, s, o, xt, w, nested, bt, M, N, K, lut);
    } else {
      launch_fast<T, 16>(device, s, o, xt, w, nested, bt, M, N, K, lut);
    }
    check_launch("gemm4bit");
  });
}

}  // namespace lowbit::cuda::quant
