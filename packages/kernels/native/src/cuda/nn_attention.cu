// CUDA scaled-dot-product attention with GQA, causal / padding masks and a KV cache (capacity S, Tk valid), in
// float32 math over float32 / float16 / bfloat16 storage (semantics of cpu/nn_attention.cc).
//
// Forward, two kernels:
// - decode (few query rows per kv head, e.g. Tq = 1): flash-decoding. The valid keys are split into chunks, one
//   block per (chunk, b, kv head, group of <= 8 query rows); all query heads of a GQA group share the block, so
//   each K/V row is read once per step. The block's 4 warps take 32-key tiles (scores with a key per lane, P V with
//   lanes over the head dim, one online-softmax update per tile), merge their states, and write a partial (max,
//   sum, unnormalised output); a second kernel combines the chunks.
// - prefill: a tiled online-softmax kernel, one block per (64 or 32 query rows, query head, b); K/V tiles of 32
//   keys staged in shared memory as float32.
// Backward: delta = rowsum(dO * O); dq per query tile (over its visible keys) and dk / dv per key tile (over every
// query row of the GQA group), recomputing the probabilities from the forward's log-sum-exp. Every output element
// has one writer and every sum runs in a fixed order: results do not change from run to run.
#include <cuda_pipeline.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "nn_common.cuh"
#include "nn_kernels.h"

namespace lowbit::cuda::nn {
namespace {

using nn_detail::dispatch_float;

struct AttnParams {
  int64_t B, Hq, Hkv, Tq, Tk, S, D, G;
  float scale;
  bool causal;
  int64_t q_start;
  const uint8_t* mask;  // (B, Tk) 1 = attend, or null
};

AttnParams make_params(const cpu::AttentionShape& s, const uint8_t* mask) {
  return AttnParams{s.B, s.Hq, s.Hkv, s.Tq, s.Tk, s.S, s.D, s.Hq / s.Hkv, s.scale, s.causal, s.q_start, mask};
}

// One past the last key that query position t (absolute q_start + t) may see, ignoring padding.
__host__ __device__ __forceinline__ int64_t key_end(const AttnParams& p, int64_t t) {
  if (!p.causal) return p.Tk;
  const int64_t e = p.q_start + t + 1;
  return e < 0 ? 0 : (e > p.Tk ? p.Tk : e);
}
__device__ __forceinline__ bool padded(const AttnParams& p, int64_t b, int64_t j) {
  return p.mask != nullptr && p.mask[b * p.Tk + j] == 0;
}

// N consecutive elements at p as float32, with 16 / 8 / 4-byte loads (p aligned to N * sizeof(T)).
template <typename T, int N>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[N]) {
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  if constexpr (kBytes % 16 == 0) {
    constexpr int kPer = 16 / sizeof(T);
#pragma unroll
    for (int c = 0; c < kBytes / 16; ++c) {
      union {
        uint4 u;
        T e[kPer];
      } w;
      w.u = reinterpret_cast<const uint4*>(p)[c];
#pragma unroll
      for (int i = 0; i < kPer; ++i) out[c * kPer + i] = to_f(w.e[i]);
    }
  } else if constexpr (kBytes == 8) {
    union {
      uint2 u;
      T e[N];
    } w;
    w.u = *reinterpret_cast<const uint2*>(p);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = to_f(w.e[i]);
  } else if constexpr (kBytes == 4) {
    union {
      uint32_t u;
      T e[N];
    } w;
    w.u = *reinterpret_cast<const uint32_t*>(p);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = to_f(w.e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = to_f(p[i]);
  }
}

// The lane's DPL elements [d0, d0 + DPL) of a row of D (zeros past D).
template <typename T, int DPL>
__device__ __forceinline__ void load_lane(const T* row, int d0, int64_t D, bool vec, float (&out)[DPL]) {
  if (vec) {
    if (d0 < D) {
      load_vec<T, DPL>(row + d0, out);
    } else {
#pragma unroll
      for (int e = 0; e < DPL; ++e) out[e] = 0.0f;
    }
  } else {
#pragma unroll
    for (int e = 0; e < DPL; ++e) out[e] = d0 + e < D ? to_f(row[d0 + e]) : 0.0f;
  }
}

// ---- decode: split keys, then combine ---------------------------------------------------------------------

constexpr int kDecWarps = 4;
constexpr int kDecRows = 8;   // most query rows per block (RW, the rows a block keeps in registers, is 4 or 8)
constexpr int kDecTile = 32;  // keys per warp tile

// 16 bytes of elements (one vector load).
template <typename T>
union Pack16 {
  uint4 u;
  T e[16 / sizeof(T)];
};

// s[r] += q[r][d] * kv for the RW rows, q[.][d] read as float4s from shared memory (qd = qs + d * RW).
template <int RW>
__device__ __forceinline__ void score_step(float (&s)[RW], const float* qd, float kv) {
#pragma unroll
  for (int c = 0; c < RW / 4; ++c) {
    const float4 qq = reinterpret_cast<const float4*>(qd)[c];
    s[4 * c] = fmaf(qq.x, kv, s[4 * c]);
    s[4 * c + 1] = fmaf(qq.y, kv, s[4 * c + 1]);
    s[4 * c + 2] = fmaf(qq.z, kv, s[4 * c + 2]);
    s[4 * c + 3] = fmaf(qq.w, kv, s[4 * c + 3]);
  }
}

// Dynamic shared memory of the decode kernel: the staging layout (q, then per warp the tile's probabilities and its
// V rows) or the merge layout (per warp m, l and the output row), whichever is larger.
inline int64_t decode_smem_bytes(int64_t D, int RW, int DPL, int64_t elem) {
  const int64_t stage = D * RW * 4 + kDecWarps * kDecTile * RW * 4 + kDecWarps * kDecTile * 32 * DPL * elem;
  const int64_t merge = static_cast<int64_t>(kDecWarps) * RW * (2 + 32 * DPL) * 4;
  return stage > merge ? stage : merge;
}

// Block (split, b * Hkv + kv head, row group): keys [split * chunk, ...) of one kv head for RW query rows (row r of
// the kv head's G * Tq rows is query head kvh * G + r / Tq at position r % Tq). The 4 warps take tiles of 32 keys in
// turn. Per tile a warp starts copying its V rows to shared memory (`vec`: asynchronous DPL-element copies),
// computes the scores with one key per lane (no reductions; `kvec`: K rows read with 16-byte loads), updates each
// row's online softmax once per tile, and accumulates P V with lanes over the head dim (DPL elements each).
// Finally the warps' states are merged; with nsplit == 1 the block writes out / lse, otherwise the partial state
// (max, sum, unnormalised output) of its chunk for the combine kernel.
template <typename T, int DPL, int RW>
__global__ void __launch_bounds__(kDecWarps * 32)
    attn_decode_kernel(AttnParams p, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                       T* __restrict__ out, float* __restrict__ lse, int nsplit, int64_t chunk, bool kvec, bool vec,
                       float* __restrict__ pm, float* __restrict__ pl, float* __restrict__ pacc) {
  static_assert(RW % 4 == 0, "rows are read from shared memory as float4");
  extern __shared__ __align__(16) unsigned char dsm[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int split = blockIdx.x;
  // 32-bit index math: B * Hkv <= 65535 and G * Tq <= 16 (use_decode), so these quotients are small.
  const int hkv = static_cast<int>(p.Hkv), tq = static_cast<int>(p.Tq);
  const int64_t b = static_cast<int>(blockIdx.y) / hkv, kvh = static_cast<int>(blockIdx.y) % hkv;
  const int64_t R = p.G * p.Tq, r0 = static_cast<int64_t>(blockIdx.z) * RW;
  const int nr = static_cast<int>(std::min<int64_t>(RW, R - r0));
  const int D = static_cast<int>(p.D);
  const int d0 = lane * DPL;

  float* qs = reinterpret_cast<float*>(dsm);        // (D, RW): q of row r at qs[d * RW + r]
  float* Ps = qs + D * RW + warp * kDecTile * RW;    // (32 keys, RW) this warp's probabilities
  constexpr int kVld = 32 * DPL;                     // (32 keys, kVld) this warp's V rows (16-byte aligned)
  T* Vs = reinterpret_cast<T*>(qs + D * RW + kDecWarps * kDecTile * RW) + warp * kDecTile * kVld;

  int64_t rend[RW];
  int64_t kmax = 0;
#pragma unroll
  for (int ri = 0; ri < RW; ++ri) {
    rend[ri] = ri < nr ? key_end(p, static_cast<int>(r0 + ri) % tq) : 0;
    kmax = std::max(kmax, rend[ri]);
  }
  for (int idx = threadIdx.x; idx < D * RW; idx += blockDim.x) {
    const int ri = idx % RW, d = idx / RW;
    float val = 0.0f;
    if (ri < nr) {
      const int r = static_cast<int>(r0) + ri;
      const int64_t hq = kvh * p.G + r / tq, t = r % tq;
      val = to_f(q[((b * p.Hq + hq) * p.Tq + t) * D + d]);
    }
    qs[idx] = val;
  }
  __syncthreads();

  const int64_t j_begin = static_cast<int64_t>(split) * chunk;
  const int64_t j_end = std::min(j_begin + chunk, kmax);
  const int64_t kv_off = (b * p.Hkv + kvh) * p.S * D;

  float m[RW], l[RW], acc[RW][DPL];
#pragma unroll
  for (int ri = 0; ri < RW; ++ri) {
    m[ri] = -INFINITY;
    l[ri] = 0.0f;
#pragma unroll
    for (int e = 0; e < DPL; ++e) acc[ri][e] = 0.0f;
  }

  for (int64_t t0 = j_begin + static_cast<int64_t>(warp) * kDecTile; t0 < j_end; t0 += kDecWarps * kDecTile) {
    const int nk = static_cast<int>(std::min<int64_t>(kDecTile, j_end - t0));
    const T* vsrc = v + kv_off + t0 * D;
    if (vec && d0 < D) {
      // Start copying the tile's V rows (the lane's DPL elements of each) to shared memory: they arrive while the
      // scores are computed.
      constexpr int kUnit = DPL * sizeof(T) < 16 ? DPL * sizeof(T) : 16;  // bytes per copy (4, 8 or 16)
      constexpr int kUnitElems = kUnit / sizeof(T);
      for (int r = 0; r < nk; ++r)
#pragma unroll
        for (int u = 0; u < DPL / kUnitElems; ++u)
          __pipeline_memcpy_async(Vs + r * kVld + d0 + u * kUnitElems, vsrc + static_cast<int64_t>(r) * D + d0 + u * kUnitElems,
                                  kUnit);
    }
    __pipeline_commit();
    // Scores: lane j owns key t0 + j and reads its K row itself (16-byte loads, 256 bytes in flight per lane).
    float s[RW];
#pragma unroll
    for (int ri = 0; ri < RW; ++ri) s[ri] = 0.0f;
    if (lane < nk) {
      const T* kr = k + kv_off + (t0 + lane) * D;
      if (kvec) {
        constexpr int kPer = 16 / sizeof(T);  // elements per 16-byte chunk
        constexpr int kBatch = 16;             // chunks loaded together
        const int nchunks = D / kPer;
        for (int c0 = 0; c0 < nchunks; c0 += kBatch) {
          uint4 raw[kBatch];
#pragma unroll
          for (int c = 0; c < kBatch; ++c)
            if (c0 + c < nchunks) raw[c] = __ldg(reinterpret_cast<const uint4*>(kr) + c0 + c);
#pragma unroll
          for (int c = 0; c < kBatch; ++c) {
            if (c0 + c >= nchunks) break;
            Pack16<T> w;
            w.u = raw[c];
#pragma unroll
            for (int i = 0; i < kPer; ++i) score_step<RW>(s, qs + ((c0 + c) * kPer + i) * RW, to_f(w.e[i]));
          }
        }
      } else {
#pragma unroll 4
        for (int d = 0; d < D; ++d) score_step<RW>(s, qs + d * RW, to_f(kr[d]));
      }
    }
    // Online softmax, once per tile and row.
    const int64_t jj = t0 + lane;
    const bool kon = lane < nk && !padded(p, b, jj);
#pragma unroll
    for (int ri = 0; ri < RW; ++ri) {
      const float sc = kon && jj < rend[ri] ? s[ri] * p.scale : -INFINITY;
      const float mn = fmaxf(m[ri], warp_max(sc));  // -inf while the row has seen nothing
      const float pr = sc == -INFINITY ? 0.0f : expf(sc - mn);
      const float corr = m[ri] == -INFINITY ? 0.0f : expf(m[ri] - mn);
      l[ri] = l[ri] * corr + warp_sum(pr);
#pragma unroll
      for (int e = 0; e < DPL; ++e) acc[ri][e] *= corr;
      m[ri] = mn;
      Ps[lane * RW + ri] = pr;
    }
    __syncwarp();
    // acc += P V with lanes over the head dim: V from shared memory (vec), else kVB rows loaded together.
    __pipeline_wait_prior(0);
    __syncwarp();
    constexpr int kVB = DPL >= 8 ? 4 : 8;
    for (int j0 = 0; j0 < nk; j0 += kVB) {
      float vv[kVB][DPL];
#pragma unroll
      for (int u = 0; u < kVB; ++u) {
        if (j0 + u >= nk) break;
        if (!vec) load_lane<T, DPL>(vsrc + static_cast<int64_t>(j0 + u) * D, d0, D, false, vv[u]);
        else if (d0 < D) load_vec<T, DPL>(Vs + (j0 + u) * kVld + d0, vv[u]);
        else
#pragma unroll
          for (int e = 0; e < DPL; ++e) vv[u][e] = 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kVB; ++u) {
        if (j0 + u >= nk) break;
        const float4* pj = reinterpret_cast<const float4*>(Ps + (j0 + u) * RW);
#pragma unroll
        for (int c = 0; c < RW / 4; ++c) {
          const float4 pp = pj[c];
          const float pr4[4] = {pp.x, pp.y, pp.z, pp.w};
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int e = 0; e < DPL; ++e) acc[4 * c + i][e] = fmaf(pr4[i], vv[u][e], acc[4 * c + i][e]);
        }
      }
    }
    __syncwarp();  // Ps and Vs are rewritten by the next tile
  }

  // Merge the warps' states of each row (the staging memory is reused).
  __syncthreads();
  float* s_m = reinterpret_cast<float*>(dsm);  // (warps, RW)
  float* s_l = s_m + kDecWarps * RW;            // (warps, RW)
  float* s_acc = s_l + kDecWarps * RW;          // (warps, RW, 32 * DPL)
#pragma unroll
  for (int ri = 0; ri < RW; ++ri) {
    if (lane == 0) {
      s_m[warp * RW + ri] = m[ri];
      s_l[warp * RW + ri] = l[ri];
    }
#pragma unroll
    for (int e = 0; e < DPL; ++e) s_acc[(warp * RW + ri) * 32 * DPL + d0 + e] = acc[ri][e];
  }
  __syncthreads();
  for (int ri = warp; ri < nr; ri += kDecWarps) {
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecWarps; ++w) M = fmaxf(M, s_m[w * RW + ri]);
    float L = 0.0f, o[DPL];
#pragma unroll
    for (int e = 0; e < DPL; ++e) o[e] = 0.0f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kDecWarps; ++w) {
        const float f = expf(s_m[w * RW + ri] - M);
        L += s_l[w * RW + ri] * f;
#pragma unroll
        for (int e = 0; e < DPL; ++e) o[e] = fmaf(s_acc[(w * RW + ri) * 32 * DPL + d0 + e], f, o[e]);
      }
    }
    const int r = static_cast<int>(r0) + ri;
    const int64_t hq = kvh * p.G + r / tq, t = r % tq;
    const int64_t row = (b * p.Hq + hq) * p.Tq + t;
    if (nsplit == 1) {
#pragma unroll
      for (int e = 0; e < DPL; ++e)
        if (d0 + e < D) out[row * D + d0 + e] = from_f<T>(L > 0.0f ? o[e] / L : 0.0f);
      if (lane == 0 && lse != nullptr) lse[row] = L > 0.0f ? M + logf(L) : -INFINITY;
    } else {
      const int64_t slot = row * nsplit + split;
      if (lane == 0) {
        pm[slot] = M;
        pl[slot] = L;
      }
#pragma unroll
      for (int e = 0; e < DPL; ++e)
        if (d0 + e < D) pacc[slot * D + d0 + e] = o[e];
    }
  }
}

// Merges the nsplit partial states of each query row: a block per row, a thread per head-dim element. Every thread
// merges the splits in order with an online rescaling (no barriers), 32 splits loaded together.
template <typename T>
__global__ void attn_combine_kernel(const float* __restrict__ pm, const float* __restrict__ pl,
                                    const float* __restrict__ pacc, int nsplit, int64_t D, T* __restrict__ out,
                                    float* __restrict__ lse) {
  constexpr int kBatch = 32;
  const int64_t row = blockIdx.x;
  const float* rm = pm + row * nsplit;
  const float* rl = pl + row * nsplit;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    const float* base = pacc + row * nsplit * D + d;
    float M = -INFINITY, L = 0.0f, o = 0.0f;
    for (int s0 = 0; s0 < nsplit; s0 += kBatch) {
      float mv[kBatch], lv[kBatch], av[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        if (s0 + u < nsplit) {
          mv[u] = rm[s0 + u];
          lv[u] = rl[s0 + u];
          av[u] = base[static_cast<int64_t>(s0 + u) * D];
        }
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        if (s0 + u >= nsplit) break;
        if (mv[u] == -INFINITY) continue;  // a chunk that saw no key
        const float mn = fmaxf(M, mv[u]);
        const float c = M == -INFINITY ? 0.0f : expf(M - mn);
        const float w = expf(mv[u] - mn);
        L = fmaf(L, c, lv[u] * w);
        o = fmaf(o, c, av[u] * w);
        M = mn;
      }
    }
    out[row * D + d] = from_f<T>(L > 0.0f ? o / L : 0.0f);
    if (d == 0 && lse != nullptr) lse[row] = L > 0.0f ? M + logf(L) : -INFINITY;
  }
}

// ---- tiles in shared memory (prefill forward, backward) ---------------------------------------------------------
// 128 threads as a 16 (ty) x 8 (tx) grid. A "row tile" A has 16 * RPT rows (thread rows ty * RPT + i), a "column
// tile" B has 32 rows (thread columns tx + 8 * j, j < 4). Row-major float32 tiles with a leading dimension of D + 1
// (odd: consecutive rows fall in different banks); P-like tiles (rows x 32) have a leading dimension of 33.

constexpr int kTileThreads = 128;
constexpr int kColTile = 32;
constexpr int kPLd = kColTile + 1;

// out[i][j] = sum_d A[ty * RPT + i][d] * Bm[tx + 8 j][d].
template <int RPT>
__device__ __forceinline__ void tile_dots(const float* A, const float* Bm, int ld, int D, int ty, int tx, float (&out)[RPT][4]) {
#pragma unroll
  for (int i = 0; i < RPT; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) out[i][j] = 0.0f;
  const float* a0 = A + ty * RPT * ld;
  const float* b0 = Bm + tx * ld;
#pragma unroll 4
  for (int d = 0; d < D; ++d) {
    float a[RPT], bv[4];
#pragma unroll
    for (int i = 0; i < RPT; ++i) a[i] = a0[i * ld + d];
#pragma unroll
    for (int j = 0; j < 4; ++j) bv[j] = b0[j * 8 * ld + d];
#pragma unroll
    for (int i = 0; i < RPT; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) out[i][j] = fmaf(a[i], bv[j], out[i][j]);
  }
}

// acc[i][c] += sum_k P[ty * RPT + i][k] * V[k][tx + 8 c] over the 32 columns k of P (V has 32 rows, ld).
template <int RPT, int CPT>
__device__ __forceinline__ void tile_accum(float (&acc)[RPT][CPT], const float* P, const float* V, int ld, int D, int ty,
                                           int tx) {
#pragma unroll 2
  for (int kx = 0; kx < kColTile; ++kx) {
    float pv[RPT];
#pragma unroll
    for (int i = 0; i < RPT; ++i) pv[i] = P[(ty * RPT + i) * kPLd + kx];
    const float* vr = V + kx * ld + tx;
#pragma unroll
    for (int c = 0; c < CPT; ++c) {
      if (tx + 8 * c < D) {
        const float x = vr[8 * c];
#pragma unroll
        for (int i = 0; i < RPT; ++i) acc[i][c] = fmaf(pv[i], x, acc[i][c]);
      }
    }
  }
}

// dst[r][d] = src[r * D + d] as float32 for r < n, zeros for n <= r < rows (warps over rows, lanes over d).
template <typename T>
__device__ __forceinline__ void stage_rows(float* dst, int ld, const T* src, int64_t n, int rows, int D) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = warp; r < rows; r += kTileThreads / 32) {
    float* d = dst + r * ld;
    if (r < n) {
      const T* s = src + static_cast<int64_t>(r) * D;
      for (int c = lane; c < D; c += 32) d[c] = to_f(s[c]);
    } else {
      for (int c = lane; c < D; c += 32) d[c] = 0.0f;
    }
  }
}

// max / sum over the 8 tx lanes of a ty row group (consecutive lanes).
__device__ __forceinline__ float max8(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
}
__device__ __forceinline__ float sum8(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v + __shfl_xor_sync(0xffffffffu, v, 4);
}

// Rows per tile for a head-dim bound: the backward kernels keep two accumulators per thread (<= 32 registers each),
// the forward one (<= 64 registers, fewer shared-memory loads per multiply-add).
constexpr int rows_for(int kD) { return kD >= 256 ? 16 : 32; }
constexpr int fwd_rows_for(int kD) { return kD >= 256 ? 32 : 64; }

// ---- prefill forward ------------------------------------------------------------------------------------------

// Block (query tile, query head, b). Shared: Qs (kRows, ld), Ks / Vs (32, ld), Ps (kRows, 33).
template <typename T, int kD>
__global__ void __launch_bounds__(kTileThreads)
    attn_fwd_tile_kernel(AttnParams p, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         T* __restrict__ out, float* __restrict__ lse) {
  constexpr int kRows = fwd_rows_for(kD), RPT = kRows / 16, CPT = kD / 8;
  extern __shared__ float smem[];
  __shared__ uint8_t vis_pad[kColTile];  // 1 = key inside the tile and not padding
  const int D = static_cast<int>(p.D), ld = D + 1;
  float* Qs = smem;
  float* Ks = Qs + kRows * ld;
  float* Vs = Ks + kColTile * ld;
  float* Ps = Vs + kColTile * ld;
  const int tid = threadIdx.x, ty = tid >> 3, tx = tid & 7;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kRows, hq = blockIdx.y, b = blockIdx.z, kvh = hq / p.G;
  const int64_t nq = std::min<int64_t>(kRows, p.Tq - t0);
  const int64_t qrow0 = (b * p.Hq + hq) * p.Tq + t0;
  stage_rows(Qs, ld, q + qrow0 * D, nq, kRows, D);
  const int64_t kv_off = (b * p.Hkv + kvh) * p.S * D;
  const int64_t kend = key_end(p, t0 + nq - 1);

  float m[RPT], l[RPT], acc[RPT][CPT];
  int64_t rend[RPT];
#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
    const int64_t t = ty * RPT + i;
    rend[i] = t < nq ? key_end(p, t0 + t) : 0;
#pragma unroll
    for (int c = 0; c < CPT; ++c) acc[i][c] = 0.0f;
  }

  for (int64_t j0 = 0; j0 < kend; j0 += kColTile) {
    const int64_t nk = std::min<int64_t>(kColTile, kend - j0);
    __syncthreads();  // the previous tile's Ks / Vs / Ps are consumed
    stage_rows(Ks, ld, k + kv_off + j0 * D, nk, kColTile, D);
    stage_rows(Vs, ld, v + kv_off + j0 * D, nk, kColTile, D);
    if (tid < kColTile) vis_pad[tid] = tid < nk && !padded(p, b, j0 + tid) ? 1 : 0;
    __syncthreads();
    float s[RPT][4];
    tile_dots<RPT>(Qs, Ks, ld, D, ty, tx, s);
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int key = tx + 8 * j;
        const bool on = vis_pad[key] != 0 && j0 + key < rend[i];
        s[i][j] = on ? s[i][j] * p.scale : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      mx = max8(mx);
      const float mn = fmaxf(m[i], mx);  // -inf only if the row has seen nothing yet
      float psum = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float pr = s[i][j] == -INFINITY ? 0.0f : expf(s[i][j] - mn);
        Ps[(ty * RPT + i) * kPLd + tx + 8 * j] = pr;
        psum += pr;
      }
      psum = sum8(psum);
      const float corr = m[i] == -INFINITY ? 0.0f : expf(m[i] - mn);
      l[i] = l[i] * corr + psum;
#pragma unroll
      for (int c = 0; c < CPT; ++c) acc[i][c] *= corr;
      m[i] = mn;
    }
    __syncthreads();
    tile_accum<RPT, CPT>(acc, Ps, Vs, ld, D, ty, tx);
  }

#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    const int64_t t = ty * RPT + i;
    if (t >= nq) continue;
    const int64_t row = qrow0 + t;
#pragma unroll
    for (int c = 0; c < CPT; ++c) {
      const int d = tx + 8 * c;
      if (d < D) out[row * D + d] = from_f<T>(l[i] > 0.0f ? acc[i][c] / l[i] : 0.0f);
    }
    if (tx == 0 && lse != nullptr) lse[row] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
  }
}

// ---- backward ---------------------------------------------------------------------------------------------------

// delta[row] = sum_d gOut[row, d] * out[row, d], a warp per row.
template <typename T>
__global__ void attn_delta_kernel(float* __restrict__ delta, const T* __restrict__ g, const T* __restrict__ o, int64_t rows,
                                  int64_t D) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  float s = 0.0f;
  for (int64_t d = lane; d < D; d += 32) s = fmaf(to_f(g[row * D + d]), to_f(o[row * D + d]), s);
  s = warp_sum(s);
  if (lane == 0) delta[row] = s;
}

// dq for block (query tile, query head, b): dq_r = sum_j dS_rj k_j, dS = P (dP - delta) * scale,
// P = exp(q.k * scale - lse), dP = dO.v. Shared: Qs, dOs (kRows, ld), Ks, Vs (32, ld), dSs (kRows, 33).
template <typename T, int kD>
__global__ void __launch_bounds__(kTileThreads)
    attn_bwd_dq_kernel(AttnParams p, const T* __restrict__ g_out, const T* __restrict__ q, const T* __restrict__ k,
                       const T* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ delta,
                       T* __restrict__ dq) {
  constexpr int kRows = rows_for(kD), RPT = kRows / 16, CPT = kD / 8;
  extern __shared__ float smem[];
  __shared__ uint8_t vis_pad[kColTile];
  const int D = static_cast<int>(p.D), ld = D + 1;
  float* Qs = smem;
  float* dOs = Qs + kRows * ld;
  float* Ks = dOs + kRows * ld;
  float* Vs = Ks + kColTile * ld;
  float* dSs = Vs + kColTile * ld;
  const int tid = threadIdx.x, ty = tid >> 3, tx = tid & 7;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kRows, hq = blockIdx.y, b = blockIdx.z, kvh = hq / p.G;
  const int64_t nq = std::min<int64_t>(kRows, p.Tq - t0);
  const int64_t qrow0 = (b * p.Hq + hq) * p.Tq + t0;
  stage_rows(Qs, ld, q + qrow0 * D, nq, kRows, D);
  stage_rows(dOs, ld, g_out + qrow0 * D, nq, kRows, D);
  const int64_t kv_off = (b * p.Hkv + kvh) * p.S * D;
  const int64_t kend = key_end(p, t0 + nq - 1);

  float acc[RPT][CPT], rl[RPT], rd[RPT];
  int64_t rend[RPT];
#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    const int64_t t = ty * RPT + i;
    rl[i] = t < nq ? lse[qrow0 + t] : -INFINITY;
    rd[i] = t < nq ? delta[qrow0 + t] : 0.0f;
    rend[i] = t < nq && rl[i] != -INFINITY ? key_end(p, t0 + t) : 0;  // a row that saw nothing gets dq = 0
#pragma unroll
    for (int c = 0; c < CPT; ++c) acc[i][c] = 0.0f;
  }

  for (int64_t j0 = 0; j0 < kend; j0 += kColTile) {
    const int64_t nk = std::min<int64_t>(kColTile, kend - j0);
    __syncthreads();
    stage_rows(Ks, ld, k + kv_off + j0 * D, nk, kColTile, D);
    stage_rows(Vs, ld, v + kv_off + j0 * D, nk, kColTile, D);
    if (tid < kColTile) vis_pad[tid] = tid < nk && !padded(p, b, j0 + tid) ? 1 : 0;
    __syncthreads();
    float s[RPT][4], dp[RPT][4];
    tile_dots<RPT>(Qs, Ks, ld, D, ty, tx, s);
    tile_dots<RPT>(dOs, Vs, ld, D, ty, tx, dp);
#pragma unroll
    for (int i = 0; i < RPT; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int key = tx + 8 * j;
        const bool on = vis_pad[key] != 0 && j0 + key < rend[i];
        const float pr = on ? expf(s[i][j] * p.scale - rl[i]) : 0.0f;
        dSs[(ty * RPT + i) * kPLd + key] = on ? pr * (dp[i][j] - rd[i]) * p.scale : 0.0f;
      }
    __syncthreads();
    tile_accum<RPT, CPT>(acc, dSs, Ks, ld, D, ty, tx);
  }

#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    const int64_t t = ty * RPT + i;
    if (t >= nq) continue;
#pragma unroll
    for (int c = 0; c < CPT; ++c) {
      const int d = tx + 8 * c;
      if (d < D) dq[(qrow0 + t) * D + d] = from_f<T>(acc[i][c]);
    }
  }
}

// dk / dv for block (key tile of kRows keys, kv head, b), over every query row of the GQA group:
// dv_j = sum_r P_rj dO_r, dk_j = sum_r dS_rj q_r. Shared: Ks, Vs (kRows, ld), Qs, dOs (32, ld), Ps, dSs (kRows, 33).
template <typename T, int kD>
__global__ void __launch_bounds__(kTileThreads)
    attn_bwd_dkv_kernel(AttnParams p, const T* __restrict__ g_out, const T* __restrict__ q, const T* __restrict__ k,
                        const T* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ delta,
                        T* __restrict__ dk, T* __restrict__ dv) {
  constexpr int kRows = rows_for(kD), RPT = kRows / 16, CPT = kD / 8;
  extern __shared__ float smem[];
  __shared__ float s_lse[kColTile], s_delta[kColTile];
  const int D = static_cast<int>(p.D), ld = D + 1;
  float* Ks = smem;
  float* Vs = Ks + kRows * ld;
  float* Qs = Vs + kRows * ld;
  float* dOs = Qs + kColTile * ld;
  float* Ps = dOs + kColTile * ld;
  float* dSs = Ps + kRows * kPLd;
  const int tid = threadIdx.x, ty = tid >> 3, tx = tid & 7;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kRows, kvh = blockIdx.y, b = blockIdx.z;
  const int64_t nk = std::min<int64_t>(kRows, p.Tk - j0);
  const int64_t kv_off = (b * p.Hkv + kvh) * p.S * p.D;
  stage_rows(Ks, ld, k + kv_off + j0 * D, nk, kRows, D);
  stage_rows(Vs, ld, v + kv_off + j0 * D, nk, kRows, D);

  float adk[RPT][CPT], adv[RPT][CPT];
  bool kon[RPT];
#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    const int64_t key = j0 + ty * RPT + i;
    kon[i] = key < p.Tk && !padded(p, b, key);
#pragma unroll
    for (int c = 0; c < CPT; ++c) adk[i][c] = adv[i][c] = 0.0f;
  }
  // Causal: positions t with q_start + t < j0 see nothing of this tile.
  const int64_t tmin = p.causal ? std::max<int64_t>(0, j0 - p.q_start) : 0;

  for (int64_t g = 0; g < p.G; ++g) {
    const int64_t hq = kvh * p.G + g;
    for (int64_t t0 = tmin; t0 < p.Tq; t0 += kColTile) {
      const int64_t nr = std::min<int64_t>(kColTile, p.Tq - t0), row0 = (b * p.Hq + hq) * p.Tq + t0;
      __syncthreads();  // the previous tiles are consumed
      stage_rows(Qs, ld, q + row0 * D, nr, kColTile, D);
      stage_rows(dOs, ld, g_out + row0 * D, nr, kColTile, D);
      if (tid < kColTile) {
        s_lse[tid] = tid < nr ? lse[row0 + tid] : -INFINITY;
        s_delta[tid] = tid < nr ? delta[row0 + tid] : 0.0f;
      }
      __syncthreads();
      float s[RPT][4], dp[RPT][4];
      tile_dots<RPT>(Ks, Qs, ld, D, ty, tx, s);
      tile_dots<RPT>(Vs, dOs, ld, D, ty, tx, dp);
#pragma unroll
      for (int i = 0; i < RPT; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int rr = tx + 8 * j;
          const int64_t key = j0 + ty * RPT + i, t = t0 + rr;
          const float rl = s_lse[rr];
          const bool on = kon[i] && rl != -INFINITY && (!p.causal || key <= p.q_start + t);
          const float pr = on ? expf(s[i][j] * p.scale - rl) : 0.0f;
          Ps[(ty * RPT + i) * kPLd + rr] = pr;
          dSs[(ty * RPT + i) * kPLd + rr] = on ? pr * (dp[i][j] - s_delta[rr]) * p.scale : 0.0f;
        }
      __syncthreads();
      tile_accum<RPT, CPT>(adv, Ps, dOs, ld, D, ty, tx);
      tile_accum<RPT, CPT>(adk, dSs, Qs, ld, D, ty, tx);
    }
  }

#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    const int64_t kr = ty * RPT + i;
    if (kr >= nk) continue;
#pragma unroll
    for (int c = 0; c < CPT; ++c) {
      const int d = tx + 8 * c;
      if (d < D) {
        dk[kv_off + (j0 + kr) * D + d] = from_f<T>(adk[i][c]);
        dv[kv_off + (j0 + kr) * D + d] = from_f<T>(adv[i][c]);
      }
    }
  }
}

// ---- launch helpers -----------------------------------------------------------------------------------------------

// Calls f(std::integral_constant<int, kD>) for the smallest supported head-dim bound kD >= D.
template <typename F>
void dispatch_head_dim(int64_t D, F&& f) {
  if (D <= 64) f(std::integral_constant<int, 64>{});
  else if (D <= 128) f(std::integral_constant<int, 128>{});
  else f(std::integral_constant<int, 256>{});
}

// Launches a tile kernel with `smem_bytes` of dynamic shared memory (raising the kernel's limit when needed).
template <typename Kernel, typename... Args>
void launch_tile(Kernel kernel, dim3 grid, int64_t smem_bytes, cudaStream_t st, const char* op, Args... args) {
  if (smem_bytes > 48 * 1024) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes)), op);
  }
  kernel<<<grid, kTileThreads, static_cast<size_t>(smem_bytes), st>>>(args...);
  check_launch(op);
}

// Resident blocks per multiprocessor of a kernel launched with `threads` threads and `smem` bytes of dynamic shared
// memory (at least 1).
template <typename Kernel>
int blocks_per_sm(Kernel kernel, int threads, int64_t smem) {
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, static_cast<size_t>(smem)) != cudaSuccess) {
    cudaGetLastError();
    n = 1;
  }
  return n > 0 ? n : 1;
}

// Whether the decode kernel suits the call: few query rows per kv head.
bool use_decode(const AttnParams& p) { return p.G * p.Tq <= 2 * kDecRows; }

template <typename T, int kD>
void attention_forward(int device, const AttnParams& p, T* out, const T* q, const T* k, const T* v, float* lse) {
  cudaStream_t st = stream(device);
  const int64_t D = p.D;
  if (use_decode(p)) {
    constexpr int DPL = kD / 32;
    const int64_t R = p.G * p.Tq;
    const int RW = R <= 4 ? 4 : kDecRows;
    const int64_t groups = (R + RW - 1) / RW;
    const int64_t kmax = key_end(p, p.Tq - 1);  // the last position sees the most keys
    auto decode = RW == 4 ? attn_decode_kernel<T, DPL, 4> : attn_decode_kernel<T, DPL, kDecRows>;
    const int64_t smem = decode_smem_bytes(D, RW, DPL, sizeof(T));
    if (smem > 48 * 1024) {
      check_cuda(cudaFuncSetAttribute(decode, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)), "attention");
    }
    // Split the keys (at least one 32-key tile per warp) so that the blocks fill one wave of resident blocks: more
    // splits only add combine work.
    const int64_t base_blocks = p.B * p.Hkv * groups;
    // Occupancy of the last (kernel, shared memory) pair, cached: decode steps repeat the same call.
    thread_local const void* occ_kernel = nullptr;
    thread_local int64_t occ_smem = -1;
    thread_local int occ_blocks = 1;
    if (occ_kernel != reinterpret_cast<const void*>(decode) || occ_smem != smem) {
      occ_blocks = blocks_per_sm(decode, kDecWarps * 32, smem);
      occ_kernel = reinterpret_cast<const void*>(decode);
      occ_smem = smem;
    }
    const int64_t target = static_cast<int64_t>(nn_detail::sm_count(device)) * occ_blocks;
    const int64_t max_split = std::max<int64_t>(1, (kmax + kDecWarps * kDecTile - 1) / (kDecWarps * kDecTile));
    int64_t nsplit = std::max<int64_t>(1, std::min<int64_t>(target / base_blocks, max_split));
    int64_t chunk = kmax > 0 ? (kmax + nsplit - 1) / nsplit : 1;
    chunk = (chunk + kDecTile - 1) / kDecTile * kDecTile;
    if (kmax > 0) nsplit = (kmax + chunk - 1) / chunk;
    const bool kvec = (D * sizeof(T)) % 16 == 0 && reinterpret_cast<uintptr_t>(k) % 16 == 0;
    const bool vec = D % DPL == 0 && reinterpret_cast<uintptr_t>(v) % (DPL * sizeof(T)) == 0;
    const dim3 grid(static_cast<unsigned>(nsplit), static_cast<unsigned>(p.B * p.Hkv), static_cast<unsigned>(groups));
    if (nsplit == 1) {
      decode<<<grid, kDecWarps * 32, static_cast<size_t>(smem), st>>>(p, q, k, v, out, lse, 1, chunk, kvec, vec, nullptr,
                                                                      nullptr, nullptr);
      check_launch("attention");
      return;
    }
    const int64_t rows = p.B * p.Hq * p.Tq;
    // Partial states: pm, pl (rows, nsplit), pacc (rows, nsplit, D).
    Scratch part(device, rows * nsplit * (D + 2) * static_cast<int64_t>(sizeof(float)));
    float* pm = part.as<float>();
    float* pl = pm + rows * nsplit;
    float* pacc = pl + rows * nsplit;
    decode<<<grid, kDecWarps * 32, static_cast<size_t>(smem), st>>>(p, q, k, v, out, lse, static_cast<int>(nsplit), chunk,
                                                                    kvec, vec, pm, pl, pacc);
    check_launch("attention");
    const int threads = static_cast<int>(std::min<int64_t>(256, (D + 31) / 32 * 32));
    attn_combine_kernel<T><<<static_cast<unsigned>(rows), threads, 0, st>>>(pm, pl, pacc, static_cast<int>(nsplit), D, out,
                                                                             lse);
    check_launch("attention");
    return;
  }
  constexpr int kRows = fwd_rows_for(kD);
  const int64_t ld = D + 1;
  const int64_t smem = (kRows * ld + 2 * kColTile * ld + kRows * kPLd) * static_cast<int64_t>(sizeof(float));
  const dim3 grid(static_cast<unsigned>((p.Tq + kRows - 1) / kRows), static_cast<unsigned>(p.Hq), static_cast<unsigned>(p.B));
  launch_tile(attn_fwd_tile_kernel<T, kD>, grid, smem, st, "attention", p, q, k, v, out, lse);
}

template <typename T, int kD>
void attention_backward_impl(int device, const AttnParams& p, T* dq, T* dk, T* dv, const T* g_out, const T* q, const T* k,
                             const T* v, const T* out, const float* lse) {
  cudaStream_t st = stream(device);
  const int64_t D = p.D, rows = p.B * p.Hq * p.Tq;
  constexpr int kRows = rows_for(kD);
  const int64_t ld = D + 1;
  if (rows > 0) {
    Scratch delta(device, rows * static_cast<int64_t>(sizeof(float)));
    attn_delta_kernel<T><<<grid_for(rows, 4, 1LL << 30), 128, 0, st>>>(delta.as<float>(), g_out, out, rows, D);
    check_launch("attentionBackward");
    const int64_t smem_dq = (2 * kRows * ld + 2 * kColTile * ld + kRows * kPLd) * static_cast<int64_t>(sizeof(float));
    const dim3 grid_dq(static_cast<unsigned>((p.Tq + kRows - 1) / kRows), static_cast<unsigned>(p.Hq),
                       static_cast<unsigned>(p.B));
    launch_tile(attn_bwd_dq_kernel<T, kD>, grid_dq, smem_dq, st, "attentionBackward", p, g_out, q, k, v, lse,
                static_cast<const float*>(delta.as<float>()), dq);
    if (p.Tk > 0) {
      const int64_t smem_dkv =
          (2 * kRows * ld + 2 * kColTile * ld + 2 * kRows * kPLd) * static_cast<int64_t>(sizeof(float));
      const dim3 grid_dkv(static_cast<unsigned>((p.Tk + kRows - 1) / kRows), static_cast<unsigned>(p.Hkv),
                          static_cast<unsigned>(p.B));
      launch_tile(attn_bwd_dkv_kernel<T, kD>, grid_dkv, smem_dkv, st, "attentionBackward", p, g_out, q, k, v, lse,
                  static_cast<const float*>(delta.as<float>()), dk, dv);
    }
  }
  // Keys the queries never saw get zero gradient: all S rows when there are no query rows, else the cache rows
  // [Tk, S) of every (b, kv head).
  const int64_t from = rows > 0 ? p.Tk : 0;
  if (p.S > from && p.B * p.Hkv > 0) {
    const size_t es = sizeof(T), pitch = static_cast<size_t>(p.S * D) * es, width = static_cast<size_t>((p.S - from) * D) * es;
    const size_t height = static_cast<size_t>(p.B * p.Hkv);
    check_cuda(cudaMemset2DAsync(dk + from * D, pitch, 0, width, height, st), "attentionBackward (cudaMemset2DAsync)");
    check_cuda(cudaMemset2DAsync(dv + from * D, pitch, 0, width, height, st), "attentionBackward (cudaMemset2DAsync)");
  }
}

}  // namespace

void attention(int device, void* out, const void* q, const void* k, const void* v, DType dt, const cpu::AttentionShape& s,
               const uint8_t* mask, float* lse) {
  if (s.B <= 0 || s.Hq <= 0 || s.Tq <= 0 || s.D <= 0) return;
  const AttnParams p = make_params(s, mask);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    dispatch_head_dim(s.D, [&](auto kd) {
      attention_forward<T, decltype(kd)::value>(device, p, static_cast<T*>(out), static_cast<const T*>(q),
                                                static_cast<const T*>(k), static_cast<const T*>(v), lse);
    });
  });
}

void attention_backward(int device, void* dq, void* dk, void* dv, const void* g_out, const void* q, const void* k,
                        const void* v, const void* out, const float* lse, DType dt, const cpu::AttentionShape& s,
                        const uint8_t* mask) {
  if (s.B <= 0 || s.Hkv <= 0 || s.D <= 0) return;
  const AttnParams p = make_params(s, mask);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    dispatch_head_dim(s.D, [&](auto kd) {
      attention_backward_impl<T, decltype(kd)::value>(device, p, static_cast<T*>(dq), static_cast<T*>(dk), static_cast<T*>(dv),
                                                      static_cast<const T*>(g_out), static_cast<const T*>(q),
                                                      static_cast<const T*>(k), static_cast<const T*>(v),
                                                      static_cast<const T*>(out), lse);
    });
  });
}

}  // namespace lowbit::cuda::nn
