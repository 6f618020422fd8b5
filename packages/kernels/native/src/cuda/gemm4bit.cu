// CUDA fused 4-bit GEMM of quant_kernels.h: out (M, N) = x (M, K) @ dequant(W (N, K) NF4/FP4)^T (+ bias).
//
// M <= 16 with float16 / bfloat16 activations, K % 64 == 0, K >= 256, blocksize >= 64, W and x 16-byte aligned (every
// Linear of a decoder at small batch): gemv4_mma_kernel, one streaming pass over W with the multiply-adds on the tensor
// cores (mma.sync m16n8k16, float32 accumulation). Decoding is one PRMT and one shared-memory load per packed byte (a
// byte -> (LUT[hi], LUT[lo]) pair table in T, replicated per bank), the block scale multiplies the float32 sums of each
// 64-element chunk, and M <= 16 rows cost about what one row does; at M <= 4 the MMA columns separate the chunks of
// a group instead of repeating x. See its comment for the layouts.
// Otherwise, M <= 16, K % 32 == 0, 16-byte aligned W rows and x rows (float32 activations, which keep float32 math, and
// the shapes above that the tensor-core kernel does not take): one streaming pass over W (spec §16.3 / §16.4 design).
// Each lane takes 32 K-elements of a row per step (a warp strides K by 1024) as one 16-byte streaming load of packed W
// (__ldcs: evict-first, W is read once) and one scale (plain absmax, or the nested fmaf(code[q], absmax2[blk >> 8],
// offset) with the 256-entry code in shared memory). One warp per output feature, or 2 / 4 warps splitting a long K
// (their sums added in warp order). CTAs are persistent and every warp loads its next chunk of steps while it computes
// the current one, so loads stay in flight for the whole kernel.
// The 16-entry LUT sits in a register of every lane (lanes 16..31 repeat lanes 0..15) and is read with __shfl_sync:
// the shuffle uses only the low 5 bits of the source lane, so `word >> shift` needs no mask (the fifth bit just picks
// the copy). The decoded weights of a step are reused for the MB rows of x (16-byte vector loads through the read-only
// cache, converted to float32); each row sums x * LUT over the 32 elements and multiplies by the scale once,
// accumulating in float32. A xor-shuffle warp sum follows; the bias is added in float32 and the result rounded once to T.
// M == 1 with K <= 16384 runs gemv4_m1_kernel instead: the same decode, but each warp keeps its slice of the activation
// row in registers for the whole kernel, so only the weights stream through L1 (see its comment).
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

// ---- 16-bit activations, M <= 16: tensor-core kernel ----------------------------------------------------------------
//
// W (N, K) is cut into tiles of 16 rows and 64-element chunks (one 32-byte sector per row), taken in groups of U = 4
// chunks (one 128-byte line per row). A warp issues mma.sync.m16n8k16 (A = 16 rows x 16 k of decoded weights in T,
// B = 16 k x 8 columns, float32 accumulators) and scales each chunk's float32 sums by its (row, block) scale in float32:
// bs >= 64 keeps every chunk inside one block. The tensor cores do the multiply-adds, so the SIMT work per packed byte
// is one PRMT and one shared load: a byte becomes the T pair (LUT[hi], LUT[lo]) with one load from a byte -> pair
// table replicated per bank ([byte][lane] in 256-byte rows, so the address is one PRMT of the packed word and lane * 4,
// and no two lanes share a bank). K is a reduction, so which physical k fills which MMA slot is free as long as A and B
// agree. Lane (g = lane / 4, t = lane % 4) always holds rows g and g + 8 of the tile; its bytes 2j, 2j + 1 of an 8-byte
// unit feed MMA j, with the matching x values (4 consecutive k) as two 32-bit words of B. LUT values are rounded to T
// once (bitsandbytes multiplies LUT(T) * absmax(T) in T; here only the LUT value is rounded, products and sums are
// float32).
// MB == 1, the one-row layout (COL): with a single row of x, 7 of the 8 B columns would repeat it, so the columns
// separate the chunks instead. Lane t owns chunk t of a group: it loads 16 contiguous bytes per row and half (the quad
// reads 64 contiguous bytes of a row, two sectors, per LDG.128), and column 2c of B holds x only at the k-slots of
// chunk c's weights, 0 elsewhere. D[row][2t] is then chunk t's sum, which lane t holds in c0 / c2 and scales with the
// scale it loaded itself; the quad's four partial sums are added (fixed order) once per item. Only 8 lanes of a warp
// hold x (32 values each, one 64-byte piece of the group), read from a shared stage whose 16-byte units are rotated so
// the 8 pieces hit different banks. Against 8 bytes per lane, one row in every B column and shuffled scales this
// halves the L1 wavefronts per weight (ncu: mio_throttle was the top stall) and ran 16.1 -> 12.9 us at 4096 x 14336.
// MB == 4 (M = 2..4), the four-row layout (C4): the same 16-byte loads; in half h of a group lane t's slots hold chunk
// 2h + t / 2, and column 4p + m of B carries chunk parity p for x row m (x only in the lanes t / 2 == g / 4, from
// the same rotated stage, now 4 rows). Each half gets its own accumulators, so lane t ends with chunks t / 2 and
// 2 + t / 2 for x rows 2 (t % 2) and + 1 and scales them itself; lanes t and t ^ 2 are added once per item. Same MMA
// count as one row: 18.7 -> 15.5 us at M = 4, 4096 x 14336.
// MB == 8 / 16: column n of B is x row n (read through L1), one or two n-tiles of 8 rows, so M <= 16 rows cost about
// what one does; lane t loads 8 bytes of every chunk of the group, and the scales are passed on with shuffles.
// A CTA of kMmaWarps warps walks items (tpi = kMmaWarps / wpt tiles each; wpt warps split a tile's chunks), persistent,
// one per SM. A warp's share of an item is done in groups of U chunks as straight-line code (the U units' load ->
// decode -> MMA chains overlap). The launch picks wpt so that every warp has whole groups where that costs the busiest
// CTA no extra tiles (mma_shape); the groups of a tile then go to its warps in turn (IL, MB <= 4: at each step the
// tile's warps read wpt consecutive lines of every row) or in contiguous runs. Otherwise a warp's run of cpw chunks ends
// in a partial group, whose loads are moved back inside the row and whose extra chunks are not added (the SPLIT variant
// of MB > 1 does not decode them). The next group's loads (possibly of the next item) are issued before the current
// group is computed. XREG (MB <= 4, one group per warp, e.g. K = 4096): the lane's x pieces stay in registers.
// Per-warp sums of an item go through shared memory and are added in warp order (deterministic) every kDepth items.
// The launch is a programmatic dependent one (see pdl_wait). Measured numbers (cuda-quant-check.mjs through the addon,
// H100) are in docs/benchmarks.md; the variants tried and their history in bench/gemv4-lab/README.md.
// Requires T = half / bfloat16, K % 64 == 0, K >= 64 * U, bs >= 64, x and packed 16-byte aligned.

// Programmatic dependent launch (sm_90+): the kernel is launched with programmatic stream serialization and lets the
// next launch start at once (launch_dependents), so on each SM its CTA starts as soon as the previous grid's CTA there
// exits instead of after the whole grid and its memory flush. Before griddepcontrol.wait it only builds the decode table
// and asks the L2 for the first lines it will read (prefetch.global.L2: a hint, and the L2 is coherent, so a line the
// previous grid still writes is not read stale); x, the weights, the codes and out are touched only after the wait,
// which returns once the previous grid has completed and its writes are visible. Both are no-ops below sm_90 and when
// the launch has no programmatic dependency.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

constexpr int kMmaWarps = 16;                 // warps per CTA
constexpr int kMmaUnroll = 4;                 // chunks per group (U)
constexpr int kMmaLutBytes = 256 * 64 * 4;    // byte -> pair table

template <typename T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  uint32_t u;
  if constexpr (std::is_same<T, __half>::value) {
    const __half2 h = __floats2half2_rn(lo, hi);
    std::memcpy(&u, &h, 4);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    std::memcpy(&u, &h, 4);
  }
  return u;
}

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same<T, __half>::value) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// 8 bytes of packed weights, streamed (ld.global.cs: W is read once; the L2::256B prefetch hint and the
// ld.global.nc.L1::no_allocate form measured the same or slower).
__device__ __forceinline__ uint2 ld_w8(const uint8_t* p) { return __ldcs(reinterpret_cast<const uint2*>(p)); }
__device__ __forceinline__ uint4 ld_w16(const uint8_t* p) { return __ldcs(reinterpret_cast<const uint4*>(p)); }

// Shared-memory slot of 16-byte unit L of an x row in the one-row layout: the 4 units of each 64-byte piece P (= L / 4)
// are rotated by P / 2 % 4, so the 8 pieces that the active lanes of a group read (consecutive, the first even) fall in
// 8 different bank quads: each LDS.128 of x is one wavefront.
// With up to four rows (MB == 4) the rotation of row m is P / 2 + m, so the 16 pieces of an LDS.128 of x (4 rows x 4
// consecutive pieces, rows K * 2 bytes apart) fill the 8 bank quads twice: two wavefronts, the least for 256 bytes.
__device__ __forceinline__ int x_slot(int L, int m) { return (L & ~3) | ((L ^ ((L >> 3) + m)) & 3); }

// The 8 LUT pairs of 8 packed bytes: p[i] = (LUT[hi nibble], LUT[lo nibble]) of byte i, from the shared table.
__device__ __forceinline__ void decode8(const unsigned char* s_lut, uint32_t lane4, uint2 wv, uint32_t (&p)[8]) {
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    p[b] = *reinterpret_cast<const uint32_t*>(s_lut + __byte_perm(wv.x, lane4, 0x5504u | (b << 4)));
    p[4 + b] = *reinterpret_cast<const uint32_t*>(s_lut + __byte_perm(wv.y, lane4, 0x5504u | (b << 4)));
  }
}

template <int MB>
struct MmaCfg {
  static constexpr int NT = MB == 16 ? 2 : 1;                // n-tiles of 8 x rows
  static constexpr int kDepth = MB == 1 ? 8 : 2;             // items buffered between barriers
  static constexpr int kVals = MB == 1 ? 1 : MB;             // sums per (warp, row) in the item buffer
  static constexpr int kXRows = MB == 1 || MB == 4 ? MB : 0;  // x rows staged in shared memory (the wide layouts)
};

// Dynamic shared memory of the MMA kernel for MB, K and the element size: table, staged x, code, item buffer.
template <int MB>
size_t mma_smem_bytes(int64_t K, int es) {
  using Cfg = MmaCfg<MB>;
  return static_cast<size_t>(kMmaLutBytes) + static_cast<size_t>(Cfg::kXRows) * K * es + 256 * 4 +
         static_cast<size_t>(2) * Cfg::kDepth * kMmaWarps * 16 * Cfg::kVals * 4;
}

// One group of U chunks of rows g and g + 8 of a lane: packed bytes, and the scale inputs of the S chunks this lane
// loads (chunk t + 4 v of the group, or t / 2 + 2 v for MB == 4; nested: absmax code q and absmax2 a; plain: absmax
// in a).
template <int U, int S = (U + 3) / 4>
struct MGroup {
  static constexpr int SPL = S;
  uint2 wg[U], wh[U];
  uint32_t qg[SPL], qh[SPL];
  float ag[SPL], ah[SPL];
};

template <typename T, int MB, bool NESTED, int U, bool SPLIT, bool XREG>
__global__ void __launch_bounds__(kMmaWarps * 32, 1)
    gemv4_mma_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w, const T* __restrict__ bias, int64_t M, int64_t N,
                     int64_t K, int lg_wpt, int cpw, Lut16 lut) {
  using Cfg = MmaCfg<MB>;
  constexpr bool COL = MB == 1;        // the one-row layout: lane t owns chunk t of a group, column 2t of the MMA
  constexpr bool C4 = MB == 4;         // the four-row layout: column 4 p + m = chunk parity p of a half, x row m
  constexpr bool WIDE = COL || C4;     // 16-byte weight loads per lane, x staged in shared memory
  constexpr bool IL = WIDE && !SPLIT;  // whole groups, interleaved over the warps of a tile
  constexpr int NT = Cfg::NT, D = Cfg::kDepth, V = Cfg::kVals, SPL = C4 ? 2 : MGroup<U>::SPL;
  using Group = MGroup<U, SPL>;
  static_assert(!WIDE || U == 4, "the wide layouts take groups of 4 chunks");
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* s_lut = smem;                                      // [256 bytes][64 words]; words 0..31 used
  T* s_x = reinterpret_cast<T*>(smem + kMmaLutBytes);                  // WIDE: x (kXRows, K), see x_slot
  float* s_code = reinterpret_cast<float*>(smem + kMmaLutBytes + Cfg::kXRows * K * static_cast<int64_t>(sizeof(T)));
  float* s_buf = s_code + 256;                                      // [2][D][kMmaWarps][16][V]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int wpt = 1 << lg_wpt, tpi = kMmaWarps >> lg_wpt, ti = warp >> lg_wpt, kw = warp & (wpt - 1);
  const int C = static_cast<int>(K >> 6);  // chunks per row (>= U)
  const int ntiles = static_cast<int>((N + 15) >> 4);
  const int items = (ntiles + tpi - 1) / tpi;
  const int g0 = blockIdx.x;
  if (g0 >= items) return;  // block-uniform
  const int mine = (items - g0 + static_cast<int>(gridDim.x) - 1) / static_cast<int>(gridDim.x);  // items of this CTA
  const int G = (cpw + U - 1) / U;  // groups per item
  const int total = mine * G;       // groups of this warp
  const int64_t rowbytes = K >> 1;
  const int lg_cpb = w.lg_bs - 6;   // chunks per block = 2^lg_cpb
  const int run0 = kw * cpw;                   // this warp's chunks of a row: [run0, run1)
  const int run1 = run0 + cpw < C ? run0 + cpw : C;

  // A group covers chunks [cs, cs + U) of the warp's run, clipped to [cs, run1); its loads read chunks [cl, cl + U)
  // with cl = min(cs, C - U), always inside the row, and unit u counts iff lo <= u < hi (warp-uniform).
  // IL: group q of warp kw is chunks [(kw + q wpt) U, + U), so at each step the wpt warps of a tile read wpt consecutive
  // 128-byte lines of every row (measured 0.5 us faster at K = 14336 than contiguous runs; needs C % (wpt U) == 0).
  auto group_start = [&](int q) {
    if constexpr (IL) return (kw + q * wpt) * U;
    const int cs = run0 + q * U;
    return cs < C - U ? cs : C - U;
  };

  // Load side: rows g and g + 8 of the item being loaded (clamped to N - 1: those sums are never stored).
  const uint8_t* lpg = nullptr;
  const uint8_t* lph = nullptr;
  int64_t lfg = 0, lfh = 0;  // flat chunk index of the rows' first chunk
  const int nlast = static_cast<int>(N - 1);
  auto set_item = [&](int i) {
    const int r = ((g0 + i * static_cast<int>(gridDim.x)) * tpi + ti) * 16 + g;
    const int64_t rg = r < nlast ? r : nlast, rh = r + 8 < nlast ? r + 8 : nlast;
    lpg = w.packed + rg * rowbytes + t * (WIDE ? 16 : 8);
    lph = w.packed + rh * rowbytes + t * (WIDE ? 16 : 8);
    lfg = rg * C;
    lfh = rh * C;
  };
  auto load = [&](Group& b, int q) {
    const int cl = group_start(q);
    const uint8_t* pg = lpg + cl * 32;
    const uint8_t* ph = lph + cl * 32;
    if constexpr (WIDE) {  // half h of the group's 128 bytes of a row: the quad reads 64 contiguous bytes, lane t 16 of them
#pragma unroll
      for (int h = 0; h < U / 2; ++h) {
        const uint4 a = ld_w16(pg + h * 64), c = ld_w16(ph + h * 64);
        b.wg[2 * h] = make_uint2(a.x, a.y), b.wg[2 * h + 1] = make_uint2(a.z, a.w);
        b.wh[2 * h] = make_uint2(c.x, c.y), b.wh[2 * h + 1] = make_uint2(c.z, c.w);
      }
    } else {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        b.wg[u] = ld_w8(pg + u * 32);
        b.wh[u] = ld_w8(ph + u * 32);
      }
    }
#pragma unroll
    for (int v = 0; v < SPL; ++v) {
      const int uu = C4 ? (t >> 1) + 2 * v : t + 4 * v;
      if (uu < U) {
        const int64_t bg = (lfg + cl + uu) >> lg_cpb, bh = (lfh + cl + uu) >> lg_cpb;
        if (NESTED) {
          b.qg[v] = w.qabsmax[bg];
          b.qh[v] = w.qabsmax[bh];
          b.ag[v] = __ldg(w.nested_absmax + (bg >> 8));
          b.ah[v] = __ldg(w.nested_absmax + (bh >> 8));
        } else {
          b.qg[v] = b.qh[v] = 0u;
          b.ag[v] = __ldg(w.absmax + bg);
          b.ah[v] = __ldg(w.absmax + bh);
        }
      } else {
        b.qg[v] = b.qh[v] = 0u;
        b.ag[v] = b.ah[v] = 0.0f;
      }
    }
  };

  // Before the wait (see pdl_wait): the L2 is asked for the lines of this lane's first group (rows g and g + 8) and the
  // byte -> pair table is built: thread (warp w, lane l) writes bytes b = w + 16 i, whose pairs are (LUT[i], LUT[w]).
  pdl_launch_dependents();
  set_item(0);
  prefetch_l2(lpg + group_start(0) * 32);
  prefetch_l2(lph + group_start(0) * 32);
  {
    const uint32_t hi = pack_pair<T>(0.0f, lut.v[warp & 15]) & 0xffff0000u;
    uint32_t* tw = reinterpret_cast<uint32_t*>(s_lut);
#pragma unroll
    for (int i = 0; i < 16; ++i) tw[((warp & 15) + 16 * i) * 64 + lane] = hi | (pack_pair<T>(lut.v[i], 0.0f) & 0xffffu);
  }
  pdl_wait();

  // The first group's loads go out before x is staged, so they are in flight meanwhile.
  Group cur, nxt;
  int li = 0;
  int lq = 0;
  load(cur, 0);
  if (++lq == G) lq = 0, ++li, set_item(li);

  if (NESTED)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
  if constexpr (WIDE) {  // x rows 0 .. kXRows - 1 (rows >= M as zeros), 16-byte units placed by x_slot
    const uint4* xs = reinterpret_cast<const uint4*>(x);
    uint4* xd = reinterpret_cast<uint4*>(s_x);
    const int nx = static_cast<int>(K * static_cast<int64_t>(sizeof(T)) / 16);  // units per row
    const int rows = M < Cfg::kXRows ? static_cast<int>(M) : Cfg::kXRows;
    for (int base = 0; base < Cfg::kXRows * nx; base += 4 * blockDim.x) {  // four loads in flight per thread
      uint4 v[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int idx = base + a * blockDim.x + threadIdx.x;
        v[a] = idx < rows * nx ? __ldg(xs + idx) : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int idx = base + a * blockDim.x + threadIdx.x;
        if (idx < Cfg::kXRows * nx) {
          const int m = Cfg::kXRows == 1 ? 0 : idx / nx, L = idx - m * nx;
          xd[m * nx + x_slot(L, m)] = v[a];
        }
      }
    }
  }
  __syncthreads();

  const uint32_t lane4 = static_cast<uint32_t>(lane) * 4;
  // x in the wide layouts: only the lanes that provide a column at the k-slots of that column's chunk hold x, and every
  // other B value is 0. Lane (g, t) provides column g at the slots of its own weights, which in half h of a group
  // belong to chunk 2h + t / 2.
  // One row (column 2c = chunk c): lane (g, t) is active iff g is even and g / 2 % 2 == t / 2, in half xh = g / 4 only,
  // with x's piece 4 xh + t of the group.
  // Four rows (column 4p + m = chunk parity p, x row m): lane (g, t) is active iff t / 2 == g / 4, in both halves,
  // with pieces t and 4 + t of x row xm = g % 4.
  const bool xon = COL ? (g & 1) == 0 && ((g >> 1) & 1) == (t >> 1) : C4 && (t >> 1) == (g >> 2);
  const int xh = g >> 2, xm = C4 ? g & 3 : 0;
  uint32_t xr[C4 && XREG ? 2 : 1][WIDE ? 16 : 1] = {};  // [half (C4 with x in registers)][32 values as pairs]
  // Piece P (32 elements, 64 bytes) of staged x row xm into dst, when this lane is active: 4 LDS.128, one wavefront
  // each for one row, two for four.
  auto load_x = [&](int P, uint32_t(&dst)[WIDE ? 16 : 1]) {
    if constexpr (WIDE) {
      if (!xon) return;
      const uint4* xp = reinterpret_cast<const uint4*>(s_x + static_cast<int64_t>(xm) * K) + P * 4;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint4 v = xp[i ^ (((P >> 1) + xm) & 3)];  // x_slot(4 P + i, xm)
        dst[4 * i] = v.x, dst[4 * i + 1] = v.y, dst[4 * i + 2] = v.z, dst[4 * i + 3] = v.w;
      }
    }
  };
  if constexpr (XREG) {  // one group per warp: its x stays in registers for the kernel
    const int P0 = group_start(0) * 2 + t;
    if constexpr (COL) load_x(P0 + 4 * xh, xr[0]);
    if constexpr (C4) load_x(P0, xr[0]), load_x(P0 + 4, xr[C4 && XREG ? 1 : 0]);
  }
  float acc[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  int ci = 0;
  int cq = 0;
  for (int s = 0; s < total; ++s) {
    const bool more = s + 1 < total;  // block-uniform
    if (more) {
      load(nxt, lq);
      if (++lq == G) lq = 0, ++li, set_item(li);
    }
    // the scales of the chunks this lane loaded
    float sg[SPL], sh[SPL];
#pragma unroll
    for (int v = 0; v < SPL; ++v) {
      sg[v] = NESTED ? __fmaf_rn(s_code[cur.qg[v]], cur.ag[v], w.offset) : cur.ag[v];
      sh[v] = NESTED ? __fmaf_rn(s_code[cur.qh[v]], cur.ah[v], w.offset) : cur.ah[v];
    }
    const int cl = group_start(cq);
    const int lo = IL ? 0 : run0 + cq * U - cl;
    const int hi = IL ? U : run1 - cl;  // may be <= 0 or > U: only chunks lo <= u < hi count
    if constexpr (COL) {
      // Unit u = 8 bytes of a lane's rows (half u / 2 of the group, bytes 8 (u % 2) of the lane's 16): decode, four MMAs
      // with x only where the unit's chunk has its column (xon in half xh). Lane t then holds in d[.][0] / d[.][2] the
      // sums of chunk t for rows g / g + 8 and scales them with the scales it loaded itself (no shuffles).
      if constexpr (!XREG) load_x(cl * 2 + 4 * xh + t, xr[0]);
      float d[U][4];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        uint32_t pg[8], ph[8];
        decode8(s_lut, lane4, cur.wg[u], pg);
        decode8(s_lut, lane4, cur.wh[u], ph);
        const bool on = xon && xh == (u >> 1);
        uint32_t xw[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) xw[q] = on ? xr[0][(u & 1) * 8 + q] : 0u;
        d[u][0] = d[u][1] = d[u][2] = d[u][3] = 0.0f;
#pragma unroll
        for (int q = 0; q < 4; ++q) mma16816<T>(d[u], pg[2 * q], ph[2 * q], pg[2 * q + 1], ph[2 * q + 1], xw[2 * q], xw[2 * q + 1]);
      }
      if (t >= lo && t < hi) {
        acc[0][0] = fmaf((d[0][0] + d[1][0]) + (d[2][0] + d[3][0]), sg[0], acc[0][0]);
        acc[0][2] = fmaf((d[0][2] + d[1][2]) + (d[2][2] + d[3][2]), sh[0], acc[0][2]);
      }
    } else if constexpr (C4) {
      // Half h (units 2h, 2h + 1): lane t's slots hold chunk 2h + t / 2, and D[row][4p + m] is chunk parity p's sum
      // for x row m, so lane t holds chunk t / 2 (half 0) / 2 + t / 2 (half 1) for x rows 2 (t % 2) and + 1, rows
      // g (c0, c1) and g + 8 (c2, c3), and scales them with the two chunks' scales it loaded itself.
      float d[U][4];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if constexpr (!XREG) load_x(cl * 2 + 4 * h + t, xr[0]);
#pragma unroll
        for (int part = 0; part < 2; ++part) {
          const int u = 2 * h + part;
          uint32_t pg[8], ph[8];
          decode8(s_lut, lane4, cur.wg[u], pg);
          decode8(s_lut, lane4, cur.wh[u], ph);
          uint32_t xw[8];
#pragma unroll
          for (int q = 0; q < 8; ++q) xw[q] = xr[XREG ? h : 0][part * 8 + q];
          d[u][0] = d[u][1] = d[u][2] = d[u][3] = 0.0f;
#pragma unroll
          for (int q = 0; q < 4; ++q) mma16816<T>(d[u], pg[2 * q], ph[2 * q], pg[2 * q + 1], ph[2 * q + 1], xw[2 * q], xw[2 * q + 1]);
        }
      }
#pragma unroll
      for (int v = 0; v < 2; ++v) {
        const int c = (t >> 1) + 2 * v;
        if (c >= lo && c < hi) {
          acc[0][0] = fmaf(d[2 * v][0] + d[2 * v + 1][0], sg[v], acc[0][0]);
          acc[0][1] = fmaf(d[2 * v][1] + d[2 * v + 1][1], sg[v], acc[0][1]);
          acc[0][2] = fmaf(d[2 * v][2] + d[2 * v + 1][2], sh[v], acc[0][2]);
          acc[0][3] = fmaf(d[2 * v][3] + d[2 * v + 1][3], sh[v], acc[0][3]);
        }
      }
    } else {
      // Unit u of the group (chunk cl + u; lane t holds bytes 8 t .. 8 t + 7 of it): decode, MMAs with column n of B
      // = x row n, and (when it counts) the sums scaled by the chunk's scales, passed on from lane u % 4.
      auto unit = [&](int u, bool counts) {
        const int src = (lane & ~3) | (u & 3);
        const float su = __shfl_sync(kFull, sg[u >> 2], src), sv = __shfl_sync(kFull, sh[u >> 2], src);
        const int c = cl + u;
        uint32_t pg[8], ph[8];
        decode8(s_lut, lane4, cur.wg[u], pg);
        decode8(s_lut, lane4, cur.wh[u], ph);
        float d[NT][4];
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          uint32_t xw[8];
          const int m = n * 8 + g;
          if (m < M) {
            const uint4* xp = reinterpret_cast<const uint4*>(x + m * K + c * 64 + t * 16);
            const uint4 xa = __ldg(xp), xb = __ldg(xp + 1);
            xw[0] = xa.x, xw[1] = xa.y, xw[2] = xa.z, xw[3] = xa.w, xw[4] = xb.x, xw[5] = xb.y, xw[6] = xb.z, xw[7] = xb.w;
          } else {
#pragma unroll
            for (int q = 0; q < 8; ++q) xw[q] = 0u;
          }
          d[n][0] = d[n][1] = d[n][2] = d[n][3] = 0.0f;
#pragma unroll
          for (int q = 0; q < 4; ++q) mma16816<T>(d[n], pg[2 * q], ph[2 * q], pg[2 * q + 1], ph[2 * q + 1], xw[2 * q], xw[2 * q + 1]);
        }
        if (counts) {  // warp-uniform
#pragma unroll
          for (int n = 0; n < NT; ++n) {
            acc[n][0] = fmaf(d[n][0], su, acc[n][0]);
            acc[n][1] = fmaf(d[n][1], su, acc[n][1]);
            acc[n][2] = fmaf(d[n][2], sv, acc[n][2]);
            acc[n][3] = fmaf(d[n][3], sv, acc[n][3]);
          }
        }
      };
      if constexpr (!SPLIT) {  // straight-line, so the U units' chains overlap; a unit past the run is computed, not added
#pragma unroll
        for (int u = 0; u < U; ++u) unit(u, u >= lo && u < hi);
      } else if (lo <= 0 && hi >= U) {  // warp-uniform: a full group
#pragma unroll
        for (int u = 0; u < U; ++u) unit(u, true);
      } else {  // a partial group (the end of a run): skip the units that do not count
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (u >= lo && u < hi) unit(u, true);
      }
    }
    if (cq == G - 1) {  // block-uniform: item ci is done for every warp
      const int slot = static_cast<int>(ci % D);
      const int bsel = static_cast<int>((ci / D) & 1);
      float* sb = s_buf + ((bsel * D + slot) * kMmaWarps + warp) * 16 * V;
      if constexpr (COL) {  // lane t holds chunk t's share of the run: add the quad's four in a fixed order
        float a0 = acc[0][0], a2 = acc[0][2];
        a0 += __shfl_xor_sync(kFull, a0, 1), a2 += __shfl_xor_sync(kFull, a2, 1);
        a0 += __shfl_xor_sync(kFull, a0, 2), a2 += __shfl_xor_sync(kFull, a2, 2);
        if (t == 0) sb[g] = a0, sb[g + 8] = a2;
      } else if constexpr (C4) {  // add the two chunk parities (lanes t, t ^ 2); lane t < 2 has x rows 2t, 2t + 1
        float a[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) a[j] = acc[0][j] + __shfl_xor_sync(kFull, acc[0][j], 2);
        if (t < 2) {
          const int m = 2 * t;
          sb[g * V + m] = a[0], sb[g * V + m + 1] = a[1], sb[(g + 8) * V + m] = a[2], sb[(g + 8) * V + m + 1] = a[3];
        }
      } else {
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          const int m = n * 8 + 2 * t;
          sb[g * V + m] = acc[n][0];
          sb[g * V + m + 1] = acc[n][1];
          sb[(g + 8) * V + m] = acc[n][2];
          sb[(g + 8) * V + m + 1] = acc[n][3];
        }
      }
#pragma unroll
      for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
      if (slot == D - 1 || ci == mine - 1) {  // block-uniform: add the buffered items' sums, in warp order
        __syncthreads();
        const int first = ci - slot;
        const int per = tpi * 16 * V;
        for (int e = threadIdx.x; e < (slot + 1) * per; e += blockDim.x) {
          const int dd = e / per, rem = e - dd * per;
          const int tl = rem / (16 * V), rv = rem - tl * 16 * V;
          const int r = rv / V, m = rv - r * V;
          const int64_t n = (static_cast<int64_t>(g0 + (first + dd) * static_cast<int>(gridDim.x)) * tpi + tl) * 16 + r;
          if (n < N && m < M) {
            const float* p = s_buf + ((bsel * D + dd) * kMmaWarps + tl * wpt) * 16 * V + rv;
            float sum = 0.0f;
            for (int q = 0; q < wpt; ++q) sum += p[q * 16 * V];
            out[m * N + n] = from_f<T>(sum + (bias != nullptr ? to_f(bias[n]) : 0.0f));
          }
        }
      }
      ++ci;
      cq = 0;
    } else {
      ++cq;
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

// Whether launches on `device` use programmatic dependent launch: compute capability 9.0 or newer, unless the
// environment sets LOWBIT_PDL=0 / false / off / no (read once; for comparisons, and a way out should a driver misbehave).
bool pdl_enabled(int device) {
  static const bool allowed = !env_switched_off("LOWBIT_PDL");
  return allowed && device_attribute<cudaDevAttrComputeCapabilityMajor>(device) >= 9;
}

// How gemv4_mma_kernel splits W (N, K): 2^lg_wpt warps per 16-row tile, cpw chunks of 64 per warp, `items` work items
// of 16 / 2^lg_wpt tiles, and whether some warp's run ends in a partial group of chunks (split: the kernel variant that
// handles one; without it the straight-line code of one group is all the loop holds, which measured 0.3–0.5 us faster
// in bench/gemv4-lab, and at M <= 4 the groups can be interleaved over the tile's warps).
struct MmaShape {
  int lg_wpt, cpw;
  int64_t items;
  bool split;
};
MmaShape mma_shape(int64_t N, int64_t K, int64_t sms) {
  const int64_t C = K / 64, ntiles = (N + 15) / 16;
  auto shape = [&](int lg) {
    const int64_t tpi = kMmaWarps >> lg, cpw = (C + (int64_t{1} << lg) - 1) >> lg;
    return MmaShape{lg, static_cast<int>(cpw), (ntiles + tpi - 1) / tpi, cpw % kMmaUnroll != 0 || cpw << lg != C};
  };
  // Rounds of items times tiles per item: the tiles the busiest CTA walks.
  auto span = [&](const MmaShape& m) { return (m.items + sms - 1) / sms * (kMmaWarps >> m.lg_wpt); };
  // As many warps per tile (up to kMmaWarps) as leave each warp at least kMmaUnroll chunks of a row ...
  int lg0 = 4;
  while (lg0 > 0 && (C >> lg0) < kMmaUnroll) --lg0;
  const MmaShape first = shape(lg0);
  if (!first.split) return first;
  // ... unless fewer warps per tile give every warp whole groups at no more tiles for the busiest CTA
  // (K = 14336: 8 warps of 28 chunks, 16.2 us instead of 17.7 in bench/gemv4-lab at N = 4096).
  for (int lg = lg0 - 1; lg >= 0; --lg) {
    const MmaShape m = shape(lg);
    if (!m.split && span(m) <= span(first)) return m;
  }
  return first;
}

// gemv4_mma_kernel<T, MB> for M <= MB rows when its shared memory fits the device; returns false otherwise.
template <typename T, int MB, bool NESTED>
bool launch_mma_typed(int device, cudaStream_t s, T* out, const T* x, const WeightArgs& w, const T* bias, int64_t M, int64_t N,
                      int64_t K, const Lut16& lut) {
  const size_t smem = mma_smem_bytes<MB>(K, static_cast<int>(sizeof(T)));
  const int optin = device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(device);
  if (smem > static_cast<size_t>(optin)) return false;
  const int64_t sms = sm_count(device);  // one CTA per SM (512 threads x up to 128 registers)
  const MmaShape sh = mma_shape(N, K, sms);
  constexpr bool wide = MmaCfg<MB>::kXRows > 0;  // x staged in shared memory, so it can stay in registers
  const int v = !sh.split ? (wide && sh.cpw == kMmaUnroll ? 2 : 1) : 0;  // the kernel variant
  auto kernel = v == 0   ? gemv4_mma_kernel<T, MB, NESTED, kMmaUnroll, true, false>
                : v == 1 ? gemv4_mma_kernel<T, MB, NESTED, kMmaUnroll, false, false>
                         : gemv4_mma_kernel<T, MB, NESTED, kMmaUnroll, false, wide>;
  // Allow the device's whole opt-in shared memory once per (kernel, device); devices past the cache ask every time.
  static std::array<std::atomic<bool>, 64> allowed[3]{};
  auto& allow = allowed[v];
  const bool cached = static_cast<size_t>(device) < allow.size();
  if (!cached || !allow[static_cast<size_t>(device)].load(std::memory_order_relaxed)) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), "cudaFuncSetAttribute");
    if (cached) allow[static_cast<size_t>(device)].store(true, std::memory_order_relaxed);
  }
  const int lg_wpt = sh.lg_wpt, cpw = sh.cpw;
  const int64_t gx = sh.items < sms ? sh.items : sms;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(gx));
  cfg.blockDim = dim3(kMmaWarps * 32);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1]{};
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled(device) ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, out, x, w, bias, M, N, K, lg_wpt, cpw, lut), "gemm4bit");
  return true;
}

// The tensor-core kernel when T is 16-bit and the shape fits it (see gemv4_mma_kernel); returns false otherwise.
template <typename T>
bool launch_mma(int device, cudaStream_t s, T* out, const T* x, const WeightArgs& w, bool nested, const T* bias, int64_t M, int64_t N,
                int64_t K, const Lut16& lut) {
  if constexpr (std::is_same<T, float>::value) {
    return false;  // float32 activations keep float32 math
  } else {
    if (M < 1 || M > kMaxFusedM || K % 64 != 0 || K / 64 < kMmaUnroll || w.lg_bs < 6) return false;
    if (K > INT32_MAX || N > INT32_MAX - 64 || !aligned(w.packed, 16) || !aligned(x, 16)) return false;
    if (M == 1) {  // x staged in shared memory; falls back to the 8-row kernel when K does not fit
      const bool done = nested ? launch_mma_typed<T, 1, true>(device, s, out, x, w, bias, M, N, K, lut)
                               : launch_mma_typed<T, 1, false>(device, s, out, x, w, bias, M, N, K, lut);
      if (done) return true;
    }
    if (M <= 4) {  // x staged in shared memory; falls back to the 8-row kernel when 4 rows of K do not fit
      const bool done = nested ? launch_mma_typed<T, 4, true>(device, s, out, x, w, bias, M, N, K, lut)
                               : launch_mma_typed<T, 4, false>(device, s, out, x, w, bias, M, N, K, lut);
      if (done) return true;
    }
    if (M <= 8)
      return nested ? launch_mma_typed<T, 8, true>(device, s, out, x, w, bias, M, N, K, lut)
                    : launch_mma_typed<T, 8, false>(device, s, out, x, w, bias, M, N, K, lut);
    return nested ? launch_mma_typed<T, 16, true>(device, s, out, x, w, bias, M, N, K, lut)
                  : launch_mma_typed<T, 16, false>(device, s, out, x, w, bias, M, N, K, lut);
  }
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
    if (fast && launch_mma<T>(device, s, o, xt, w, nested, bt, M, N, K, lut)) {
      // 16-bit activations: the tensor-core kernel
    } else if (!fast) {
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
