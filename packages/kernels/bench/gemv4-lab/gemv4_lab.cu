// gemv4_lab.cu — standalone microbenchmark of the small-M NF4 (double-quant) GEMV kernels of native/src/cuda/gemm4bit.cu.
//
// No addon, no Node: builds random packed NF4 + double-quant states on the GPU (4 rotating copies per shape, > 50 MB of
// L2 together, so every timed call streams its weights from DRAM), checks the kernels against a reference kernel (one
// thread per output, float32 dequantized weights LUT[q] * fmaf(code[qa], absmax2[blk >> 8], offset), double sums) as
// max |err| / max |ref|, and times each over back-to-back launches with cudaEvents next to a 1 GiB device-to-device
// cudaMemcpy (copy bandwidth counted read + written, like bandwidthTest) and a plain streaming read of the packed
// weights (the ceiling of one 30 MB read per launch), measured in the same run.
// Kernels: gemm4bit.cu's former batch-1 kernel (gemv4_m1_kernel: LUT in a register read with shuffles, float32 FMAs,
// copied here as the baseline) and the tensor-core kernel gemm4bit.cu uses for 16-bit activations (gemv4_mma_kernel, the
// version before "split partial groups" and "x in registers", which gemm4bit.cu now has and which are the LAB variants
// kLabSplit / kLabXRegs here, plus the other LAB variants). Measured-and-rejected designs kept for re-measuring:
// gemv4_v16_kernel (16-byte loads, PRMT register decode), gemv4_async_kernel (cp.async ring), gemv4_il_kernel
// (interleaved chunks), gemv4_tma_kernel (TMA bulk copies / tensor-map boxes into a shared-memory ring, one producer
// warp), gemv4_diag_kernel (diagonal MMA: 256 contiguous bytes per warp load) and the stream_probe_kernel read
// ceilings (session 3; needs sm_90 and the driver's cuTensorMapEncodeTiled); session 4's PF / PDL template arguments of
// gemv4_mma_kernel (L2 bulk prefetch, programmatic dependent launch; `pf` mode) and gemv4_ks_kernel (K split over a
// thread-block cluster, x in registers; needs sm_90). Shapes (N, K) = (4096, 14336)
// and (14336, 4096), M = 1 (bf16 and f16), 4 and 16 (bf16); a correctness sweep over odd shapes, blocksizes 64..4096,
// FP4 and plain absmax runs first. See README.md for the build and run commands and the measured history.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda.h>
#include <cuda_runtime.h>
#include <cooperative_groups.h>
#include <cudaTypedefs.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#define CK(x)                                                                                 \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

namespace {

constexpr unsigned kFull = 0xffffffffu;
namespace cg = cooperative_groups;

// ---- shared pieces (as in gemm4bit.cu / common.cuh) ----------------------------------------------------------------------

struct Lut16 {
  float v[16];
};
const float kNF4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
                        -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
                        0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                        0.7229568362236023f, 1.0f};
const float kFP4[16] = {0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f,
                        -0.0f, -0.005208333333f, -0.66666667f, -1.0f, -0.33333333f, -0.5f, -0.16666667f, -0.25f};

struct WeightArgs {
  const uint8_t* packed;
  const float* absmax;
  const uint8_t* qabsmax;
  const float* nested_absmax;
  const float* nested_code;
  float offset;
  int lg_bs;
};

__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// ---- reference: one thread per output (m, n), float32 weights, double sums --------------------------------------------

template <typename T, bool NESTED>
__global__ void ref_kernel(float* out, const T* x, WeightArgs w, int64_t M, int64_t N, int64_t K, Lut16 lut) {
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= M * N) return;
  const int64_t m = id / N, n = id % N;
  double s = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t f = n * K + k;
    const uint32_t byte = w.packed[f >> 1];
    const uint32_t q = (f & 1) ? (byte & 15u) : (byte >> 4);
    const int64_t blk = f >> w.lg_bs;
    const float sc = NESTED ? __fmaf_rn(w.nested_code[w.qabsmax[blk]], w.nested_absmax[blk >> 8], w.offset) : w.absmax[blk];
    const float wv = __fmul_rn(lut.v[q], sc);
    s += static_cast<double>(to_f(x[m * K + k])) * static_cast<double>(wv);
  }
  out[id] = static_cast<float>(s);
}

// ---- baseline: gemm4bit.cu's shuffle-LUT batch-1 kernel (verbatim design) -------------------------------------------

constexpr int kM1Warps = 16;
constexpr int kM1Depth = 8;
constexpr int kUnroll = 4;

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
struct Chunk {
  uint4 wv[kUnroll];
  float a[kUnroll];
  uint32_t q[kUnroll];
};
template <typename T>
__device__ __forceinline__ void load_x_words(const T* p, uint32_t (&xw)[sizeof(T) * 8]) {
  const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int v = 0; v < static_cast<int>(sizeof(T)) * 2; ++v) {
    const uint4 u = __ldg(q + v);
    xw[4 * v] = u.x, xw[4 * v + 1] = u.y, xw[4 * v + 2] = u.z, xw[4 * v + 3] = u.w;
  }
}
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
  __shared__ float s_buf[2][kM1Depth][kM1Warps];
  if (NESTED) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
    __syncthreads();
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wpr = 1 << lg_wpr;
  const int fpi = kM1Warps >> lg_wpr;
  const int64_t items = (N + fpi - 1) / fpi;
  const int64_t g0 = blockIdx.x;
  if (g0 >= items) return;
  const int64_t mine = (items - g0 + gridDim.x - 1) / gridDim.x;
  const float lut_reg = lut.v[lane & 15];
  const int64_t kbase = static_cast<int64_t>(warp & (wpr - 1)) << 10;
  const int64_t k = kbase + lane * 32;
  const bool has_step = kbase < K;
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
        const int64_t blk = (n * K + k) >> w.lg_bs;
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
    const bool more = (c + 1) * kUnroll < mine;
    if (more) load(nxt, c + 1);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = c * kUnroll + u;
      if (i >= mine) break;
      const int64_t n = row_of(i);
      float part = 0.0f;
      if (has_step && n < N) {
        float wf[32];
        decode32(cur.wv[u], lut_reg, wf);
        if (lane_ok) part = dot_x<T>(xw, wf) * (NESTED ? __fmaf_rn(s_code[cur.q[u]], cur.a[u], w.offset) : cur.a[u]);
        part = warp_sum(part);
      }
      const int slot = static_cast<int>(i % kM1Depth);
      const int buf = static_cast<int>((i / kM1Depth) & 1);
      if (lane == 0) s_buf[buf][slot][warp] = part;
      if (slot == kM1Depth - 1 || i == mine - 1) {
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

// ---- gemv4_mma_kernel (as in gemm4bit.cu) --------------------------------------------------------------------------------
//
// W (N, K) is cut into tiles of 16 rows and 64-element chunks (one 32-byte sector per row). Per chunk a warp issues four
// mma.sync.m16n8k16 (A = 16 rows x 16 k of decoded weights in T, B = 16 k x 8 columns of x, float32 accumulators)
// and then scales the chunk's float32 sums by the (row, block) scale: bs >= 64 keeps every chunk inside one block.
// K is a reduction, so which physical k fills which MMA slot is free as long as A and B agree: lane (g = lane / 4,
// t = lane % 4) loads 8 bytes (k = 16 t .. 16 t + 15 of the chunk) of rows g and g + 8 and uses its bytes 2j, 2j + 1
// in MMA j; a byte becomes the T pair (LUT[hi], LUT[lo]) with one shared-memory load from a byte -> pair table
// replicated per bank ([byte][lane], 256-byte rows, address = one PRMT of the packed word and lane * 4), so the SIMT
// work per byte is one PRMT and one LDS. The matching x values (k = 16 t + 4 j .. + 3) are two 32-bit words.
// MB == 1: x is staged in shared memory once per CTA and every B column holds it (c0 / c2 are the outputs);
// MB == 8 / 16: column n of B is x row n (read through L1), one or two n-tiles of 8 rows.
// A CTA of kMW warps walks items (tpi = kMW / wpt tiles each; wpt warps split a tile's chunks, contiguous runs of cpw
// chunks), persistent. A warp's run of an item is done in groups of U chunks, straight-line code (no branch between
// the U chunks, so their load -> decode -> MMA chains overlap); the next group's loads (possibly of the next item) are
// issued before the current group is computed. The scale inputs of a group are loaded once per (row, chunk) by lane
// t = chunk % 4 and the scales passed on with shuffles. Per-warp sums of an item go through shared memory and are added
// in warp order (deterministic) every kDepth items.

constexpr int kMW = 16;  // warps per CTA
constexpr int kLutBytes = 256 * 64 * 4;

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
  static constexpr int NT = MB == 16 ? 2 : 1;     // n-tiles of 8 x rows
  static constexpr int kDepth = MB == 1 ? 8 : 2;  // items buffered between barriers
  static constexpr int kVals = MB == 1 ? 1 : MB;  // sums per (warp, row) in the item buffer
};

// Dynamic shared memory of the MMA kernel for (MB, K, element size).
inline size_t mma_smem_bytes(int MB, int64_t K, int es) {
  const int depth = MB == 1 ? 8 : 2, vals = MB == 1 ? 1 : MB;
  return static_cast<size_t>(kLutBytes) + (MB == 1 ? static_cast<size_t>(K) * es : 0) + 256 * 4 +
         static_cast<size_t>(2) * depth * kMW * 16 * vals * 4;
}

// One group of U chunks of rows g and g + 8 of a lane: packed bytes, and the scale inputs of the chunks this lane
// loads (chunk t + 4 v of the group; nested: absmax code q and absmax2 a; plain: absmax in a).
template <int U>
struct MGroup {
  static constexpr int SPL = (U + 3) / 4;
  uint2 wg[U], wh[U];
  uint32_t qg[SPL], qh[SPL];
  float ag[SPL], ah[SPL];
};

// Lab-only variants of the kernel (LAB): 0 = as in gemm4bit.cu; read-only = the loads and the bookkeeping without the
// decode and the MMAs (the ceiling of this load structure); x in registers (the x fragments of the warp's run, when a
// group is the whole run) instead of shared memory; split = a partial group decodes only the chunks that count.
constexpr int kLabReadOnly = 1, kLabXRegs = 2, kLabSplit = 3, kLabBare = 4, kLabNoScale = 5, kLabXGlobal = 6;  // 4: read-only, no prologue; 5: 4 without scale loads;
// 6 (session 4): split, with x fragments read through L1 (__ldg) per unit instead of staged in shared memory
// Session 5 flags, OR-ed onto the variant: kLabIl = warp kw takes the whole groups kw, kw + wpt, ... of a row (so at
// each step the warps of a tile read wpt consecutive 128-byte lines of every row); kLabRing3 = three group buffers,
// two groups' loads in flight while one is computed.
constexpr int kLabIl = 16, kLabRing3 = 32;

// L2 prefetch (session 4): PF > 0 = warp 0 of the CTA asks the L2 for the packed bytes (and absmax codes) of its
// items PF ahead of the load side with cp.async.bulk.prefetch.L2 (one instruction per 4 KB piece; the first PF items
// at the start), so DRAM sees whole contiguous items (16 rows x K / 2 bytes) while the tile walk reads from L2.
// PDL = launched with programmatic stream serialization: the kernel lets the next launch start at once
// (griddepcontrol.launch_dependents), issues its prefetches and builds its table, and waits for the previous grid
// (griddepcontrol.wait) before it reads x, the weights or the codes or writes out; the prefetches only warm the L2,
// which stays coherent, so they need no ordering.
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
}
__device__ __forceinline__ void pdl_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

template <typename T, int MB, bool NESTED, int U, int LABF = 0, int PF = 0, bool PDL = false>
__global__ void __launch_bounds__(kMW * 32, 1)
    gemv4_mma_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w, const T* __restrict__ bias, int64_t M, int64_t N,
                     int64_t K, int lg_wpt, int cpw, Lut16 lut) {
  using Cfg = MmaCfg<MB>;
  constexpr int LAB = LABF & 15;                  // the base variant
  constexpr bool IL = (LABF & kLabIl) != 0;       // session 5: interleaved whole groups
  constexpr bool R3 = (LABF & kLabRing3) != 0;    // session 5: three group buffers (two groups ahead)
  constexpr int NT = Cfg::NT, D = Cfg::kDepth, V = Cfg::kVals, SPL = MGroup<U>::SPL;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* s_lut = smem;                                      // [256 bytes][64 words]; words 0..31 used
  T* s_x = reinterpret_cast<T*>(smem + kLutBytes);                  // MB == 1: x (K,)
  float* s_code = reinterpret_cast<float*>(smem + kLutBytes + (MB == 1 ? K * static_cast<int64_t>(sizeof(T)) : 0));
  float* s_buf = s_code + 256;                                      // [2][D][kMW][16][V]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int wpt = 1 << lg_wpt, tpi = kMW >> lg_wpt, ti = warp >> lg_wpt, kw = warp & (wpt - 1);
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
  auto group_start = [&](int q) {
    if constexpr (IL) return (kw + q * wpt) * U;  // whole groups: C % (wpt * U) == 0
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
    lpg = w.packed + rg * rowbytes + t * 8;
    lph = w.packed + rh * rowbytes + t * 8;
    lfg = rg * C;
    lfh = rh * C;
  };
  auto load = [&](MGroup<U>& b, int q) {
    const int cl = group_start(q);
    const uint8_t* pg = lpg + cl * 32;
    const uint8_t* ph = lph + cl * 32;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      b.wg[u] = ld_w8(pg + u * 32);
      b.wh[u] = ld_w8(ph + u * 32);
    }
#pragma unroll
    for (int v = 0; v < SPL; ++v) {
      const int uu = t + 4 * v;
      if (LAB != kLabNoScale && uu < U) {
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

  // lab (PF > 0): warp 0 prefetches item i of this CTA (its rows' packed bytes and absmax codes) into the L2.
  auto prefetch_item = [&](int i) {
    if (PF == 0 || PF == -1 || PF <= -3 || warp != 0 || i >= mine) return;
    const int64_t r0 = static_cast<int64_t>(g0 + i * static_cast<int>(gridDim.x)) * tpi * 16;
    const int64_t rows = N - r0 < tpi * 16 ? N - r0 : tpi * 16;
    const uint8_t* base = w.packed + r0 * rowbytes;
    const int64_t bytes = rows * rowbytes;  // a multiple of 32
    for (int64_t off = static_cast<int64_t>(lane) * 4096; off < bytes; off += 32 * 4096)
      prefetch_l2(base + off, static_cast<uint32_t>(bytes - off < 4096 ? bytes - off : 4096));
    if (NESTED && lane == 0) {  // codes of blocks [b0, b1), whole aligned 16-byte pieces only
      const int64_t b0 = (((r0 * C) >> lg_cpb) + 15) & ~int64_t{15}, b1 = (((r0 + rows) * C) >> lg_cpb) & ~int64_t{15};
      if (b1 > b0) prefetch_l2(w.qabsmax + b0, static_cast<uint32_t>(b1 - b0));
    }
  };
  if constexpr (PDL) pdl_launch_dependents();
  if constexpr (PF < 0) {  // only the lines of this lane's first group (rows g and g + 8), with prefetch.global.L2
    set_item(0);
    const int cl = group_start(0);
    asm volatile("prefetch.global.L2 [%0];" ::"l"(lpg + cl * 32));
    asm volatile("prefetch.global.L2 [%0];" ::"l"(lph + cl * 32));
  }
  if constexpr (PF > 0) {
#pragma unroll 1
    for (int i = 0; i < PF; ++i) prefetch_item(i);
  }
  if constexpr (PF == -2) prefetch_item(0);  // only the whole first item, before the wait
  if constexpr (PF <= -3) {  // the lines of this lane's first -PF - 1 groups, with prefetch.global.L2, before the wait
    int qi = 0, qq = 0;
    set_item(0);
#pragma unroll 1
    for (int k = 0; k < -PF - 1 && qi < mine; ++k) {
      const int cl = group_start(qq);
      asm volatile("prefetch.global.L2 [%0];" ::"l"(lpg + cl * 32));
      asm volatile("prefetch.global.L2 [%0];" ::"l"(lph + cl * 32));
      if (++qq == G) {
        qq = 0;
        if (++qi < mine) set_item(qi);
      }
    }
    set_item(0);
  }
  if constexpr (PDL) {  // build the table before waiting: it depends on nothing the previous grid writes
    const uint32_t hi = pack_pair<T>(0.0f, lut.v[warp & 15]) & 0xffff0000u;
    uint32_t* tw = reinterpret_cast<uint32_t*>(s_lut);
#pragma unroll
    for (int i = 0; i < 16; ++i) tw[((warp & 15) + 16 * i) * 64 + lane] = hi | (pack_pair<T>(lut.v[i], 0.0f) & 0xffffu);
    pdl_wait();
  }

  // The first group's loads go out before the tables are filled, so they are in flight meanwhile.
  MGroup<U> cur, nxt;
  int li = 0;
  int lq = 0;
  set_item(0);
  load(cur, 0);
  if (++lq == G) {
    lq = 0, ++li, set_item(li);
    if constexpr (PF > 0) prefetch_item(li + PF - 1);
  }

  // Byte -> pair table: thread (warp w, lane l) writes bytes b = w + 16 i, whose pairs are (LUT[i], LUT[w]).
  if (!PDL && LAB != kLabBare && LAB != kLabNoScale) {
    const uint32_t hi = pack_pair<T>(0.0f, lut.v[warp & 15]) & 0xffff0000u;
    uint32_t* tw = reinterpret_cast<uint32_t*>(s_lut);
#pragma unroll
    for (int i = 0; i < 16; ++i) tw[((warp & 15) + 16 * i) * 64 + lane] = hi | (pack_pair<T>(lut.v[i], 0.0f) & 0xffffu);
  }
  if (NESTED)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
  if constexpr (MB == 1 && LAB != kLabBare && LAB != kLabNoScale && LAB != kLabXGlobal) {
    const uint4* xs = reinterpret_cast<const uint4*>(x);
    uint4* xd = reinterpret_cast<uint4*>(s_x);
    const int nx = static_cast<int>(K * static_cast<int64_t>(sizeof(T)) / 16);
    for (int base = 0; base < nx; base += 4 * blockDim.x) {  // four loads in flight per thread
      uint4 v[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int idx = base + a * blockDim.x + threadIdx.x;
        if (idx < nx) v[a] = __ldg(xs + idx);
      }
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int idx = base + a * blockDim.x + threadIdx.x;
        if (idx < nx) xd[idx] = v[a];
      }
    }
  }
  __syncthreads();

  const uint32_t lane4 = static_cast<uint32_t>(lane) * 4;
  // lab (kLabXRegs, needs G == 1): the warp's x fragments of its whole run held in registers
  uint32_t xr[LAB == kLabXRegs ? U : 1][8];
  if constexpr (LAB == kLabXRegs) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = group_start(0) + u;
      const uint4* xp = reinterpret_cast<const uint4*>(s_x + c * 64 + t * 16);
      const uint4 xa = xp[0], xb = xp[1];
      xr[u][0] = xa.x, xr[u][1] = xa.y, xr[u][2] = xa.z, xr[u][3] = xa.w, xr[u][4] = xb.x, xr[u][5] = xb.y, xr[u][6] = xb.z, xr[u][7] = xb.w;
    }
  }
  float acc[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  int ci = 0;
  int cq = 0;
  auto load_next = [&](MGroup<U>& b) {
    load(b, lq);
    if (++lq == G) {
      lq = 0, ++li, set_item(li);
      if constexpr (PF > 0) prefetch_item(li + PF - 1);
    }
  };
  // Group s of this warp, held in cur.
  auto compute = [&](const MGroup<U>& cur) {
    // the scales of the chunks this lane loaded
    float sg[SPL], sh[SPL];
#pragma unroll
    for (int v = 0; v < SPL; ++v) {
      sg[v] = NESTED ? __fmaf_rn(s_code[cur.qg[v]], cur.ag[v], w.offset) : cur.ag[v];
      sh[v] = NESTED ? __fmaf_rn(s_code[cur.qh[v]], cur.ah[v], w.offset) : cur.ah[v];
    }
    const int cl = group_start(cq);
    const int lo = IL ? 0 : run0 + cq * U - cl;
    const int hi = IL ? U : run1 - cl;  // may be <= 0 or > U: only lo <= u < hi counts
    // Unit u of the group: decode, MMAs, and (when it counts) the scaled sums added to acc.
    auto unit = [&](int u, bool counts) {
      const int src = (lane & ~3) | (u & 3);
      const float su = __shfl_sync(kFull, sg[u >> 2], src), sv = __shfl_sync(kFull, sh[u >> 2], src);
      if constexpr (LAB == kLabReadOnly || LAB == kLabBare || LAB == kLabNoScale) {
        if (counts) acc[0][0] += __uint_as_float((cur.wg[u].x ^ cur.wh[u].y ^ cur.wg[u].y ^ cur.wh[u].x) & 0x3f8fffffu) * su * sv;
        return;
      }
      const int c = cl + u;
      uint32_t pg[8], ph[8];
      decode8(s_lut, lane4, cur.wg[u], pg);
      decode8(s_lut, lane4, cur.wh[u], ph);
      float d[NT][4];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        uint32_t xw[8];
        if constexpr (MB == 1 && LAB == kLabXRegs) {
#pragma unroll
          for (int q = 0; q < 8; ++q) xw[q] = xr[u][q];
        } else if constexpr (MB == 1 && LAB == kLabXGlobal) {
          const uint4* xp = reinterpret_cast<const uint4*>(x + c * 64 + t * 16);
          const uint4 xa = __ldg(xp), xb = __ldg(xp + 1);
          xw[0] = xa.x, xw[1] = xa.y, xw[2] = xa.z, xw[3] = xa.w, xw[4] = xb.x, xw[5] = xb.y, xw[6] = xb.z, xw[7] = xb.w;
        } else if constexpr (MB == 1) {
          const uint4* xp = reinterpret_cast<const uint4*>(s_x + c * 64 + t * 16);
          const uint4 xa = xp[0], xb = xp[1];
          xw[0] = xa.x, xw[1] = xa.y, xw[2] = xa.z, xw[3] = xa.w, xw[4] = xb.x, xw[5] = xb.y, xw[6] = xb.z, xw[7] = xb.w;
        } else {
          const int m = n * 8 + g;
          if (m < M) {
            const uint4* xp = reinterpret_cast<const uint4*>(x + m * K + c * 64 + t * 16);
            const uint4 xa = __ldg(xp), xb = __ldg(xp + 1);
            xw[0] = xa.x, xw[1] = xa.y, xw[2] = xa.z, xw[3] = xa.w, xw[4] = xb.x, xw[5] = xb.y, xw[6] = xb.z, xw[7] = xb.w;
          } else {
#pragma unroll
            for (int q = 0; q < 8; ++q) xw[q] = 0u;
          }
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
    if ((LAB != kLabSplit && LAB != kLabXGlobal) || (lo <= 0 && hi >= U)) {
#pragma unroll
      for (int u = 0; u < U; ++u) unit(u, u >= lo && u < hi);  // straight-line: the U units' chains overlap
    } else {
#pragma unroll
      for (int u = 0; u < U; ++u)  // lab: a partial group decodes only the chunks that count
        if (u >= lo && u < hi) unit(u, true);
    }
    if (cq == G - 1) {  // block-uniform: item ci is done for every warp
      const int slot = static_cast<int>(ci % D);
      const int bsel = static_cast<int>((ci / D) & 1);
      float* sb = s_buf + ((bsel * D + slot) * kMW + warp) * 16 * V;
      if constexpr (MB == 1) {
        if (t == 0) sb[g] = acc[0][0], sb[g + 8] = acc[0][2];
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
            const float* p = s_buf + ((bsel * D + dd) * kMW + tl * wpt) * 16 * V + rv;
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
  };
  if constexpr (!R3) {
    for (int s = 0; s < total; ++s) {
      const bool more = s + 1 < total;  // block-uniform
      if (more) load_next(nxt);
      compute(cur);
      if (!more) break;
      cur = nxt;
    }
  } else {  // ring of three: group s computes from buffer s % 3 while groups s + 1 and s + 2 are in flight
    MGroup<U> nx2;
    if (total > 1) load_next(nxt);
    for (int s = 0; s < total; s += 3) {
      if (s + 2 < total) load_next(nx2);
      compute(cur);
      if (s + 1 >= total) break;
      if (s + 3 < total) load_next(cur);
      compute(nxt);
      if (s + 2 >= total) break;
      if (s + 4 < total) load_next(nxt);
      compute(nx2);
    }
  }
}

// ---- ks: K split over a thread-block cluster (session 4; MB == 1, nested) -------------------------------------------------
//
// A cluster of kKP CTAs takes a 16-row tile at a time; CTA rank r owns K part r (CP = C / kKP chunks), and warp w < GP of
// it one group of U = 4 chunks of that part, so every warp keeps its x fragments in registers for the whole kernel
// (K = 14336: 56 chunks per part, 14 of 16 warps busy). The cluster walks tiles cid, cid + ncl, ...; each CTA keeps the
// per-warp sums of its tiles in shared memory, adds them in warp order, and after one cluster barrier the 4 parts of
// each output are added in rank order through distributed shared memory (deterministic); a second barrier keeps every
// CTA's shared memory alive until the others have read it. Launched with PDL like gemv4_mma_kernel.
constexpr int kKP = 4;

template <typename T>
__global__ void __launch_bounds__(kMW * 32, 1)
    gemv4_ks_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w, int64_t N, int64_t K, int mine_max, Lut16 lut) {
  constexpr int U = 4;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* s_lut = smem;
  float* s_code = reinterpret_cast<float*>(smem + kLutBytes);
  float* s_part = s_code + 256;                    // [mine][kMW][16]
  float* s_sum = s_part + mine_max * kMW * 16;     // [mine][16]
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int C = static_cast<int>(K >> 6), CP = C / kKP, GP = CP / U;
  const int ntiles = static_cast<int>((N + 15) >> 4);
  const int cid = blockIdx.x / kKP, ncl = gridDim.x / kKP;
  const int mine = cid < ntiles ? (ntiles - cid + ncl - 1) / ncl : 0;
  const bool active = warp < GP;  // warp-uniform
  const int c0 = rank * CP + (active ? warp : 0) * U;
  const int64_t rowbytes = K >> 1;
  const int lg_cpb = w.lg_bs - 6;
  const int nlast = static_cast<int>(N - 1);
  auto rows_of = [&](int i, int64_t& rg, int64_t& rh) {
    const int r = (cid + i * ncl) * 16 + g;
    rg = r < nlast ? r : nlast;
    rh = r + 8 < nlast ? r + 8 : nlast;
  };
  pdl_launch_dependents();
  if (active && mine > 0) {
    int64_t rg, rh;
    rows_of(0, rg, rh);
    asm volatile("prefetch.global.L2 [%0];" ::"l"(w.packed + rg * rowbytes + c0 * 32));
    asm volatile("prefetch.global.L2 [%0];" ::"l"(w.packed + rh * rowbytes + c0 * 32));
  }
  {
    const uint32_t hi = pack_pair<T>(0.0f, lut.v[warp & 15]) & 0xffff0000u;
    uint32_t* tw = reinterpret_cast<uint32_t*>(s_lut);
#pragma unroll
    for (int i = 0; i < 16; ++i) tw[((warp & 15) + 16 * i) * 64 + lane] = hi | (pack_pair<T>(lut.v[i], 0.0f) & 0xffffu);
  }
  pdl_wait();

  auto load = [&](MGroup<U>& b, int i) {
    int64_t rg, rh;
    rows_of(i, rg, rh);
    const uint8_t* pg = w.packed + rg * rowbytes + c0 * 32 + t * 8;
    const uint8_t* ph = w.packed + rh * rowbytes + c0 * 32 + t * 8;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      b.wg[u] = ld_w8(pg + u * 32);
      b.wh[u] = ld_w8(ph + u * 32);
    }
    const int64_t bg = (rg * C + c0 + t) >> lg_cpb, bh = (rh * C + c0 + t) >> lg_cpb;
    b.qg[0] = w.qabsmax[bg];
    b.qh[0] = w.qabsmax[bh];
    b.ag[0] = __ldg(w.nested_absmax + (bg >> 8));
    b.ah[0] = __ldg(w.nested_absmax + (bh >> 8));
  };
  MGroup<U> cur, nxt;
  if (active && mine > 0) load(cur, 0);
  for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
  uint32_t xr[U][8];
  if (active) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint4* xp = reinterpret_cast<const uint4*>(x + (c0 + u) * 64 + t * 16);
      const uint4 xa = __ldg(xp), xb = __ldg(xp + 1);
      xr[u][0] = xa.x, xr[u][1] = xa.y, xr[u][2] = xa.z, xr[u][3] = xa.w, xr[u][4] = xb.x, xr[u][5] = xb.y, xr[u][6] = xb.z, xr[u][7] = xb.w;
    }
  }
  __syncthreads();
  const uint32_t lane4 = static_cast<uint32_t>(lane) * 4;
  if (active) {
    for (int i = 0; i < mine; ++i) {
      if (i + 1 < mine) load(nxt, i + 1);
      const float sg = __fmaf_rn(s_code[cur.qg[0]], cur.ag[0], w.offset), sh = __fmaf_rn(s_code[cur.qh[0]], cur.ah[0], w.offset);
      float a0 = 0.0f, a2 = 0.0f;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int src = (lane & ~3) | u;
        const float su = __shfl_sync(kFull, sg, src), sv = __shfl_sync(kFull, sh, src);
        uint32_t pg[8], ph[8];
        decode8(s_lut, lane4, cur.wg[u], pg);
        decode8(s_lut, lane4, cur.wh[u], ph);
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int q = 0; q < 4; ++q) mma16816<T>(d, pg[2 * q], ph[2 * q], pg[2 * q + 1], ph[2 * q + 1], xr[u][2 * q], xr[u][2 * q + 1]);
        a0 = fmaf(d[0], su, a0);
        a2 = fmaf(d[2], sv, a2);
      }
      if (t == 0) s_part[(i * kMW + warp) * 16 + g] = a0, s_part[(i * kMW + warp) * 16 + g + 8] = a2;
      cur = nxt;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < mine * 16; e += blockDim.x) {  // this CTA's part of each output, in warp order
    const int i = e >> 4, r = e & 15;
    float sum = 0.0f;
    for (int q = 0; q < GP; ++q) sum += s_part[(i * kMW + q) * 16 + r];
    s_sum[e] = sum;
  }
  cluster.sync();
  for (int e = rank + kKP * static_cast<int>(threadIdx.x); e < mine * 16; e += kKP * static_cast<int>(blockDim.x)) {
    const int i = e >> 4, r = e & 15;
    const int64_t n = static_cast<int64_t>(cid + i * ncl) * 16 + r;
    float sum = 0.0f;
#pragma unroll
    for (int q = 0; q < kKP; ++q) sum += cluster.map_shared_rank(s_sum, q)[e];
    if (n < N) out[n] = from_f<T>(sum);
  }
  cluster.sync();
}

// ---- v16: 16-byte weight loads (MB == 1, K % 128 == 0) --------------------------------------------------------------------
//
// A unit is 16 rows x 128 k (64 bytes per row). Lane (g, t) loads 16 contiguous bytes (k = 32 t .. 32 t + 31 of the
// unit) of rows g and g + 8 with one LDG.128 each, so a warp's load covers 8 rows x 64 contiguous bytes (twice the bytes
// per instruction of the 8-byte layout). Byte i of a lane's 16 is k-slot pair i: MMA j (8 per unit) takes pairs 2j, 2j + 1
// of rows g / g + 8 as a0 / a2 and a1 / a3, and x words 2j, 2j + 1 of the lane's 32 x values as b0 / b1. The 4 lanes of a
// row span 128 k, two 64-blocks when bs == 64: B column 0 holds x masked to the lanes of the first block (t = 0, 1),
// column 2 x masked to the second (t = 2, 3) (bs >= 128: column 0 holds all of it), so lane t = 0 / 1 gets the unit's
// sums of its block in c0 (row g) and c2 (row g + 8) and scales them by its own block scale; the two lanes' sums are added
// at the end of an item. x reaches only the lanes that feed a nonzero column (g == column), the others read a zero area.
// DEC: 0 = byte -> pair table in shared memory (one LDS per pair), 1 = in registers with PRMTs (no LDS), 2 = row g from
// the table, row g + 8 with PRMTs. XREG: the warp's x fragments (G == 1) in registers. RO: loads only (ceiling).
template <int U>
struct VGroup {
  uint4 wg[U], wh[U];
  uint32_t qg[U], qh[U];
  float ag[U], ah[U];
};

inline size_t v16_smem_bytes(int64_t K, int es, bool lut) {
  return (lut ? static_cast<size_t>(kLutBytes) : 0) + static_cast<size_t>(K) * es + 64 + 256 * 4 + static_cast<size_t>(2) * 8 * kMW * 16 * 4;
}

// The 4 pairs of the 4 bytes of w from register tables: tl / th = low / high bytes of the 16 LUT values in T.
__device__ __forceinline__ void decode4_prmt(uint32_t w, const uint32_t (&tl)[4], const uint32_t (&th)[4], uint32_t* p) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint32_t s = h ? (w >> 16) : w;
    const uint32_t s7 = s & 0x7777u;                          // nibble & 7: entry within a half-table
    const uint32_t sel2 = ((s >> 1) & 0x4444u) | 0x3210u;      // nibble bit 3: which half-table
    const uint32_t lo = __byte_perm(__byte_perm(tl[0], tl[1], s7), __byte_perm(tl[2], tl[3], s7), sel2);
    const uint32_t hi = __byte_perm(__byte_perm(th[0], th[1], s7), __byte_perm(th[2], th[3], s7), sel2);
    // lo / hi bytes: [lo0, hi0, lo1, hi1] nibbles of the 2 bytes; pair = (LUT[hi nibble], LUT[lo nibble])
    p[2 * h] = __byte_perm(lo, hi, 0x4051u);
    p[2 * h + 1] = __byte_perm(lo, hi, 0x6273u);
  }
}
__device__ __forceinline__ void decode16_lds(const unsigned char* s_lut, uint32_t lane4, uint4 wv, uint32_t (&p)[16]) {
  const uint32_t ws[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int b = 0; b < 4; ++b) p[4 * i + b] = *reinterpret_cast<const uint32_t*>(s_lut + __byte_perm(ws[i], lane4, 0x5504u | (b << 4)));
}
__device__ __forceinline__ void decode16_prmt(const uint32_t (&tl)[4], const uint32_t (&th)[4], uint4 wv, uint32_t (&p)[16]) {
  decode4_prmt(wv.x, tl, th, p);
  decode4_prmt(wv.y, tl, th, p + 4);
  decode4_prmt(wv.z, tl, th, p + 8);
  decode4_prmt(wv.w, tl, th, p + 12);
}

template <typename T, bool NESTED, int U, int DEC, bool XREG, bool RO>
__global__ void __launch_bounds__(kMW * 32, 1)
    gemv4_v16_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w, const T* __restrict__ bias, int64_t N, int64_t K,
                     int lg_wpt, int cpw, Lut16 lut) {
  constexpr int D = 8;
  constexpr int LB = DEC == 1 ? 0 : kLutBytes;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* s_lut = smem;
  T* s_x = reinterpret_cast<T*>(smem + LB);  // x (K,), then 32 zeros
  float* s_code = reinterpret_cast<float*>(smem + LB + K * static_cast<int64_t>(sizeof(T)) + 64);
  float* s_buf = s_code + 256;  // [2][D][kMW][16]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int wpt = 1 << lg_wpt, tpi = kMW >> lg_wpt, ti = warp >> lg_wpt, kw = warp & (wpt - 1);
  const int C2 = static_cast<int>(K >> 7);  // units per row (>= U)
  const int ntiles = static_cast<int>((N + 15) >> 4);
  const int items = (ntiles + tpi - 1) / tpi;
  const int g0 = blockIdx.x;
  if (g0 >= items) return;
  const int mine = (items - g0 + static_cast<int>(gridDim.x) - 1) / static_cast<int>(gridDim.x);
  const int G = (cpw + U - 1) / U;
  const int total = mine * G;
  const int64_t rowbytes = K >> 1;
  const int run0 = kw * cpw;
  const int run1 = run0 + cpw < C2 ? run0 + cpw : C2;
  auto group_start = [&](int q) {
    const int cs = run0 + q * U;
    return cs < C2 - U ? cs : C2 - U;
  };
  const uint8_t* lpg = nullptr;
  const uint8_t* lph = nullptr;
  int64_t lfg = 0, lfh = 0;  // flat k of this lane's first scale element in rows g, g + 8
  const int nlast = static_cast<int>(N - 1);
  auto set_item = [&](int i) {
    const int r = ((g0 + i * static_cast<int>(gridDim.x)) * tpi + ti) * 16 + g;
    const int64_t rg = r < nlast ? r : nlast, rh = r + 8 < nlast ? r + 8 : nlast;
    lpg = w.packed + rg * rowbytes + t * 16;
    lph = w.packed + rh * rowbytes + t * 16;
    lfg = rg * K + ((t & 1) << 6);
    lfh = rh * K + ((t & 1) << 6);
  };
  auto load = [&](VGroup<U>& b, int q) {
    const int cl = group_start(q);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      b.wg[u] = __ldcs(reinterpret_cast<const uint4*>(lpg + (cl + u) * 64));
      b.wh[u] = __ldcs(reinterpret_cast<const uint4*>(lph + (cl + u) * 64));
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t bg = (lfg + (static_cast<int64_t>(cl + u) << 7)) >> w.lg_bs, bh = (lfh + (static_cast<int64_t>(cl + u) << 7)) >> w.lg_bs;
      if (NESTED) {
        b.qg[u] = w.qabsmax[bg];
        b.qh[u] = w.qabsmax[bh];
        b.ag[u] = __ldg(w.nested_absmax + (bg >> 8));
        b.ah[u] = __ldg(w.nested_absmax + (bh >> 8));
      } else {
        b.qg[u] = b.qh[u] = 0u;
        b.ag[u] = __ldg(w.absmax + bg);
        b.ah[u] = __ldg(w.absmax + bh);
      }
    }
  };
  VGroup<U> cur, nxt;
  int li = 0, lq = 0;
  set_item(0);
  load(cur, 0);
  if (++lq == G) lq = 0, ++li, set_item(li);

  if constexpr (DEC != 1) {
    const uint32_t hi = pack_pair<T>(0.0f, lut.v[warp & 15]) & 0xffff0000u;
    uint32_t* tw = reinterpret_cast<uint32_t*>(s_lut);
#pragma unroll
    for (int i = 0; i < 16; ++i) tw[((warp & 15) + 16 * i) * 64 + lane] = hi | (pack_pair<T>(lut.v[i], 0.0f) & 0xffffu);
  }
  if (NESTED)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
  {
    const uint4* xs = reinterpret_cast<const uint4*>(x);
    uint4* xd = reinterpret_cast<uint4*>(s_x);
    const int nx = static_cast<int>(K * static_cast<int64_t>(sizeof(T)) / 16);
    for (int base = 0; base < nx; base += 4 * blockDim.x) {
      uint4 v[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int idx = base + a * blockDim.x + threadIdx.x;
        if (idx < nx) v[a] = __ldg(xs + idx);
      }
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int idx = base + a * blockDim.x + threadIdx.x;
        if (idx < nx) xd[idx] = v[a];
      }
    }
    if (threadIdx.x < 4) xd[nx + threadIdx.x] = make_uint4(0u, 0u, 0u, 0u);
  }
  __syncthreads();

  // register tables (DEC 1 / 2): low and high bytes of the 16 LUT values in T
  uint32_t tl[4], th[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t p01 = pack_pair<T>(lut.v[4 * i], lut.v[4 * i + 1]), p23 = pack_pair<T>(lut.v[4 * i + 2], lut.v[4 * i + 3]);
    tl[i] = __byte_perm(p01, p23, 0x6420u);
    th[i] = __byte_perm(p01, p23, 0x7531u);
  }
  const uint32_t lane4 = static_cast<uint32_t>(lane) * 4;
  const bool xon = w.lg_bs == 6 ? g == 2 * (t >> 1) : g == 0;  // this lane feeds B column g
  const int xoff = xon ? t * 32 : static_cast<int>(K);           // elements; + unit * 128 when xon
  const int xstep = xon ? 128 : 0;
  uint32_t xr[XREG ? U : 1][16];
  if constexpr (XREG) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint4* xp = reinterpret_cast<const uint4*>(s_x + xoff + (group_start(0) + u) * xstep);
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const uint4 a = xp[v];
        xr[u][4 * v] = a.x, xr[u][4 * v + 1] = a.y, xr[u][4 * v + 2] = a.z, xr[u][4 * v + 3] = a.w;
      }
    }
  }
  float accg = 0.0f, acch = 0.0f;
  int ci = 0, cq = 0;
  for (int s = 0; s < total; ++s) {
    const bool more = s + 1 < total;
    if (more) {
      load(nxt, lq);
      if (++lq == G) lq = 0, ++li, set_item(li);
    }
    const int cl = group_start(cq);
    const int lo = run0 + cq * U - cl;
    const int hi = run1 - cl;
    auto unit = [&](int u) {
      const float su = NESTED ? __fmaf_rn(s_code[cur.qg[u]], cur.ag[u], w.offset) : cur.ag[u];
      const float sv = NESTED ? __fmaf_rn(s_code[cur.qh[u]], cur.ah[u], w.offset) : cur.ah[u];
      if constexpr (RO) {
        accg += __uint_as_float((cur.wg[u].x ^ cur.wh[u].y ^ cur.wg[u].z ^ cur.wh[u].w ^ cur.wg[u].y ^ cur.wh[u].x ^ cur.wg[u].w ^ cur.wh[u].z) & 0x3f8fffffu) * su * sv;
        return;
      }
      uint32_t pg[16], ph[16];
      if constexpr (DEC == 1) decode16_prmt(tl, th, cur.wg[u], pg);
      else decode16_lds(s_lut, lane4, cur.wg[u], pg);
      if constexpr (DEC == 0) decode16_lds(s_lut, lane4, cur.wh[u], ph);
      else decode16_prmt(tl, th, cur.wh[u], ph);
      uint32_t xw[16];
      if constexpr (XREG) {
#pragma unroll
        for (int q = 0; q < 16; ++q) xw[q] = xr[u][q];
      } else {
        const uint4* xp = reinterpret_cast<const uint4*>(s_x + xoff + (cl + u) * xstep);
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          const uint4 a = xp[v];
          xw[4 * v] = a.x, xw[4 * v + 1] = a.y, xw[4 * v + 2] = a.z, xw[4 * v + 3] = a.w;
        }
      }
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int j = 0; j < 8; ++j) mma16816<T>(d, pg[2 * j], ph[2 * j], pg[2 * j + 1], ph[2 * j + 1], xw[2 * j], xw[2 * j + 1]);
      accg = fmaf(d[0], su, accg);
      acch = fmaf(d[2], sv, acch);
    };
    if (lo <= 0 && hi >= U) {
#pragma unroll
      for (int u = 0; u < U; ++u) unit(u);
    } else {
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (u >= lo && u < hi) unit(u);
    }
    if (cq == G - 1) {
      const int slot = ci % D, bsel = (ci / D) & 1;
      float* sb = s_buf + ((bsel * D + slot) * kMW + warp) * 16;
      const float og = __shfl_down_sync(kFull, accg, 1), oh = __shfl_down_sync(kFull, acch, 1);  // lane t + 1's block
      if (t == 0) sb[g] = accg + og, sb[g + 8] = acch + oh;
      accg = acch = 0.0f;
      if (slot == D - 1 || ci == mine - 1) {
        __syncthreads();
        const int first = ci - slot;
        const int per = tpi * 16;
        for (int e = threadIdx.x; e < (slot + 1) * per; e += blockDim.x) {
          const int dd = e / per, rem = e - dd * per;
          const int tl2 = rem >> 4, r = rem & 15;
          const int64_t n = (static_cast<int64_t>(g0 + (first + dd) * static_cast<int>(gridDim.x)) * tpi + tl2) * 16 + r;
          if (n < N) {
            const float* p = s_buf + ((bsel * D + dd) * kMW + tl2 * wpt) * 16 + r;
            float sum = 0.0f;
            for (int q = 0; q < wpt; ++q) sum += p[q * 16];
            out[n] = from_f<T>(sum + (bias != nullptr ? to_f(bias[n]) : 0.0f));
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

// ---- async: the v16 unit layout with the weights and scales staged through a per-warp cp.async ring --------------------
//
// The same units, lanes and MMAs as gemv4_v16_kernel, but a warp walks its units one at a time with S - 1 units of copies
// in flight (cp.async.cg 16 B for the weights, 4 B for the scale inputs of lanes t < 2), so more bytes stay in flight
// than the register double buffer allows. Each lane reads back only what it copied itself (no warp sync needed).
constexpr int kAsyncStage = 1280;  // bytes per (warp, stage): weights [2 rows][32 lanes][16] + q words [2][16] + a [2][16]
constexpr int kAsyncDepth = 4;     // items buffered between barriers

inline size_t async_smem_bytes(int64_t K, int es, int S) {
  return static_cast<size_t>(kLutBytes) + static_cast<size_t>(K) * es + 64 + 256 * 4 + static_cast<size_t>(2) * kAsyncDepth * kMW * 16 * 4 +
         static_cast<size_t>(kMW) * S * kAsyncStage;
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(dst))), "l"(src));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(dst))), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

template <typename T, bool NESTED, int S, bool XREG, bool RO>
__global__ void __launch_bounds__(kMW * 32, 1)
    gemv4_async_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w, const T* __restrict__ bias, int64_t N, int64_t K,
                       int lg_wpt, int cpw, Lut16 lut) {
  constexpr int D = kAsyncDepth;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* s_lut = smem;
  T* s_x = reinterpret_cast<T*>(smem + kLutBytes);
  float* s_code = reinterpret_cast<float*>(smem + kLutBytes + K * static_cast<int64_t>(sizeof(T)) + 64);
  float* s_buf = s_code + 256;  // [2][D][kMW][16]
  unsigned char* ring = reinterpret_cast<unsigned char*>(s_buf + 2 * D * kMW * 16);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int wpt = 1 << lg_wpt, tpi = kMW >> lg_wpt, ti = warp >> lg_wpt, kw = warp & (wpt - 1);
  const int C2 = static_cast<int>(K >> 7);
  const int ntiles = static_cast<int>((N + 15) >> 4);
  const int items = (ntiles + tpi - 1) / tpi;
  const int g0 = blockIdx.x;
  if (g0 >= items) return;
  const int mine = (items - g0 + static_cast<int>(gridDim.x) - 1) / static_cast<int>(gridDim.x);
  const int total = mine * cpw;  // unit slots of every warp (block-uniform)
  const int64_t rowbytes = K >> 1;
  const int run0 = kw * cpw;
  const int nu = (run0 + cpw < C2 ? run0 + cpw : C2) - run0;  // units of this warp's run (may be <= 0)
  const int nlast = static_cast<int>(N - 1);
  const int64_t nblocks = (N * K) >> w.lg_bs;
  unsigned char* wring = ring + warp * S * kAsyncStage;
  const int sidx = g * 2 + (t & 1);  // scale slot of lanes t < 2

  // Copies of unit slot j (item j / cpw, unit j % cpw of the run) into stage j % S; always one commit group.
  int ii = 0, ir = 0;  // unit slot being issued, as (item, unit)
  auto issue_next = [&]() {
    if (ii < mine) {
      if (ir < nu) {
        const int r = ((g0 + ii * static_cast<int>(gridDim.x)) * tpi + ti) * 16 + g;
        const int64_t rg = r < nlast ? r : nlast, rh = r + 8 < nlast ? r + 8 : nlast;
        const int c2 = run0 + ir;
        unsigned char* st = wring + ((ii * cpw + ir) % S) * kAsyncStage;
        cp_async16(st + lane * 16, w.packed + rg * rowbytes + c2 * 64 + t * 16);
        cp_async16(st + 512 + lane * 16, w.packed + rh * rowbytes + c2 * 64 + t * 16);
        if (t < 2) {
          const int64_t bg = (rg * K + c2 * 128 + t * 64) >> w.lg_bs, bh = (rh * K + c2 * 128 + t * 64) >> w.lg_bs;
          uint32_t* sq = reinterpret_cast<uint32_t*>(st + 1024);
          float* sa = reinterpret_cast<float*>(st + 1152);
          if (NESTED) {
            const int64_t wg4 = bg & ~int64_t{3}, wh4 = bh & ~int64_t{3};
            if (wg4 + 4 <= nblocks) cp_async4(sq + sidx, w.qabsmax + wg4);
            else sq[sidx] = static_cast<uint32_t>(w.qabsmax[bg]) << (8 * (bg & 3));
            if (wh4 + 4 <= nblocks) cp_async4(sq + 16 + sidx, w.qabsmax + wh4);
            else sq[16 + sidx] = static_cast<uint32_t>(w.qabsmax[bh]) << (8 * (bh & 3));
            cp_async4(sa + sidx, w.nested_absmax + (bg >> 8));
            cp_async4(sa + 16 + sidx, w.nested_absmax + (bh >> 8));
          } else {
            cp_async4(sa + sidx, w.absmax + bg);
            cp_async4(sa + 16 + sidx, w.absmax + bh);
          }
        }
      }
      if (++ir == cpw) ir = 0, ++ii;
    }
    cp_async_commit();
  };
#pragma unroll
  for (int p = 0; p < S - 1; ++p) issue_next();

  {
    const uint32_t hi = pack_pair<T>(0.0f, lut.v[warp & 15]) & 0xffff0000u;
    uint32_t* tw = reinterpret_cast<uint32_t*>(s_lut);
#pragma unroll
    for (int i = 0; i < 16; ++i) tw[((warp & 15) + 16 * i) * 64 + lane] = hi | (pack_pair<T>(lut.v[i], 0.0f) & 0xffffu);
  }
  if (NESTED)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
  {
    const uint4* xs = reinterpret_cast<const uint4*>(x);
    uint4* xd = reinterpret_cast<uint4*>(s_x);
    const int nx = static_cast<int>(K * static_cast<int64_t>(sizeof(T)) / 16);
    for (int base = 0; base < nx; base += 4 * blockDim.x) {
      uint4 v[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int idx = base + a * blockDim.x + threadIdx.x;
        if (idx < nx) v[a] = __ldg(xs + idx);
      }
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int idx = base + a * blockDim.x + threadIdx.x;
        if (idx < nx) xd[idx] = v[a];
      }
    }
    if (threadIdx.x < 4) xd[nx + threadIdx.x] = make_uint4(0u, 0u, 0u, 0u);
  }
  __syncthreads();

  const uint32_t lane4 = static_cast<uint32_t>(lane) * 4;
  const bool xon = w.lg_bs == 6 ? g == 2 * (t >> 1) : g == 0;
  const int xoff = xon ? t * 32 : static_cast<int>(K);
  const int xstep = xon ? 128 : 0;
  uint32_t xr[XREG ? 2 : 1][16];  // XREG: cpw <= 2
  if constexpr (XREG) {
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int c = run0 + (u < nu ? u : 0);
      const uint4* xp = reinterpret_cast<const uint4*>(s_x + xoff + (c < C2 ? c : 0) * xstep);
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const uint4 a = xp[v];
        xr[u][4 * v] = a.x, xr[u][4 * v + 1] = a.y, xr[u][4 * v + 2] = a.z, xr[u][4 * v + 3] = a.w;
      }
    }
  }
  float accg = 0.0f, acch = 0.0f;
  int ci = 0, cr = 0;  // unit slot being computed, as (item, unit)
  for (int j = 0; j < total; ++j) {
    issue_next();
    cp_async_wait<S - 1>();
    if (cr < nu) {  // warp-uniform
      const unsigned char* st = wring + (j % S) * kAsyncStage;
      const uint4 wg = *reinterpret_cast<const uint4*>(st + lane * 16), wh = *reinterpret_cast<const uint4*>(st + 512 + lane * 16);
      float su = 0.0f, sv = 0.0f;
      if (t < 2) {
        const float* sa = reinterpret_cast<const float*>(st + 1152);
        if (NESTED) {
          const uint32_t* sq = reinterpret_cast<const uint32_t*>(st + 1024);
          const int c2 = run0 + cr;
          const int r = ((g0 + ci * static_cast<int>(gridDim.x)) * tpi + ti) * 16 + g;
          const int64_t rg = r < nlast ? r : nlast, rh = r + 8 < nlast ? r + 8 : nlast;
          const int64_t bg = (rg * K + c2 * 128 + t * 64) >> w.lg_bs, bh = (rh * K + c2 * 128 + t * 64) >> w.lg_bs;
          const uint32_t qg = (sq[sidx] >> (8 * (bg & 3))) & 0xffu, qh = (sq[16 + sidx] >> (8 * (bh & 3))) & 0xffu;
          su = __fmaf_rn(s_code[qg], sa[sidx], w.offset);
          sv = __fmaf_rn(s_code[qh], sa[16 + sidx], w.offset);
        } else {
          su = sa[sidx];
          sv = sa[16 + sidx];
        }
      }
      if constexpr (RO) {
        accg += __uint_as_float((wg.x ^ wh.y ^ wg.z ^ wh.w ^ wg.y ^ wh.x ^ wg.w ^ wh.z) & 0x3f8fffffu) * su * sv;
      } else {
        uint32_t pg[16], ph[16];
        decode16_lds(s_lut, lane4, wg, pg);
        decode16_lds(s_lut, lane4, wh, ph);
        uint32_t xw[16];
        if constexpr (XREG) {
#pragma unroll
          for (int q = 0; q < 16; ++q) xw[q] = cr == 0 ? xr[0][q] : xr[1][q];
        } else {
          const uint4* xp = reinterpret_cast<const uint4*>(s_x + xoff + (run0 + cr) * xstep);
#pragma unroll
          for (int v = 0; v < 4; ++v) {
            const uint4 a = xp[v];
            xw[4 * v] = a.x, xw[4 * v + 1] = a.y, xw[4 * v + 2] = a.z, xw[4 * v + 3] = a.w;
          }
        }
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) mma16816<T>(d, pg[2 * jj], ph[2 * jj], pg[2 * jj + 1], ph[2 * jj + 1], xw[2 * jj], xw[2 * jj + 1]);
        accg = fmaf(d[0], su, accg);
        acch = fmaf(d[2], sv, acch);
      }
    }
    if (cr == cpw - 1) {  // block-uniform: item ci done
      const int slot = ci % D, bsel = (ci / D) & 1;
      float* sb = s_buf + ((bsel * D + slot) * kMW + warp) * 16;
      const float og = __shfl_down_sync(kFull, accg, 1), oh = __shfl_down_sync(kFull, acch, 1);
      if (t == 0) sb[g] = accg + og, sb[g + 8] = acch + oh;
      accg = acch = 0.0f;
      if (slot == D - 1 || ci == mine - 1) {
        __syncthreads();
        const int first = ci - slot;
        const int per = tpi * 16;
        for (int e = threadIdx.x; e < (slot + 1) * per; e += blockDim.x) {
          const int dd = e / per, rem = e - dd * per;
          const int tl2 = rem >> 4, r = rem & 15;
          const int64_t n = (static_cast<int64_t>(g0 + (first + dd) * static_cast<int>(gridDim.x)) * tpi + tl2) * 16 + r;
          if (n < N) {
            const float* p = s_buf + ((bsel * D + dd) * kMW + tl2 * wpt) * 16 + r;
            float sum = 0.0f;
            for (int q = 0; q < wpt; ++q) sum += p[q * 16];
            out[n] = from_f<T>(sum + (bias != nullptr ? to_f(bias[n]) : 0.0f));
          }
        }
      }
      ++ci;
      cr = 0;
    } else {
      ++cr;
    }
  }
  cp_async_wait<0>();
}

// ---- gemv4_il_kernel: interleaved chunks (lab; measured slower, not in gemm4bit.cu) -----------------------------------
//
// gemm4bit.cu's kernel (split partial groups, x in registers when a warp's chunks are one group, U = 2 for MB == 16)
// with one change: warp kw of a tile takes chunks kw, kw + wpt, ... instead of a contiguous run, so at every step the
// tile's warps read wpt consecutive chunks of each row (tried for DRAM locality).

template <typename T, int MB, bool NESTED, int U, bool XREG>
__global__ void __launch_bounds__(kMW * 32, 1)
    gemv4_il_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w, const T* __restrict__ bias, int64_t M, int64_t N,
                     int64_t K, int lg_wpt, int cpw, Lut16 lut) {
  using Cfg = MmaCfg<MB>;
  constexpr int NT = Cfg::NT, D = Cfg::kDepth, V = Cfg::kVals, SPL = MGroup<U>::SPL;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* s_lut = smem;                                      // [256 bytes][64 words]; words 0..31 used
  T* s_x = reinterpret_cast<T*>(smem + kLutBytes);                  // MB == 1: x (K,)
  float* s_code = reinterpret_cast<float*>(smem + kLutBytes + (MB == 1 ? K * static_cast<int64_t>(sizeof(T)) : 0));
  float* s_buf = s_code + 256;                                      // [2][D][kMW][16][V]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int wpt = 1 << lg_wpt, tpi = kMW >> lg_wpt, ti = warp >> lg_wpt, kw = warp & (wpt - 1);
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
  // This warp's chunks of a row are kw, kw + wpt, kw + 2 wpt, ... (cpw of them, those < C exist): interleaved, so at
  // every step the wpt warps of a tile read wpt consecutive chunks of each row (DRAM locality; contiguous runs per warp
  // measured slower at K = 14336). Unit u of group q is chunk kw + (q U + u) wpt; a unit counts iff its chunk < C
  // (warp-uniform), and the loads of one that does not read chunk C - 1 instead (inside the row).
  auto chunk_of = [&](int q, int u) { return kw + ((q * U + u) << lg_wpt); };
  const int cstep = 32 << lg_wpt;  // bytes between a warp's consecutive chunks

  // Load side: rows g and g + 8 of the item being loaded (clamped to N - 1: those sums are never stored).
  const uint8_t* lpg = nullptr;
  const uint8_t* lph = nullptr;
  int64_t lfg = 0, lfh = 0;  // flat chunk index of the rows' first chunk
  const int nlast = static_cast<int>(N - 1);
  auto set_item = [&](int i) {
    const int r = ((g0 + i * static_cast<int>(gridDim.x)) * tpi + ti) * 16 + g;
    const int64_t rg = r < nlast ? r : nlast, rh = r + 8 < nlast ? r + 8 : nlast;
    lpg = w.packed + rg * rowbytes + t * 8;
    lph = w.packed + rh * rowbytes + t * 8;
    lfg = rg * C;
    lfh = rh * C;
  };
  auto load = [&](MGroup<U>& b, int q) {
    const int c0 = chunk_of(q, 0);
    if (c0 + (U - 1) * wpt < C) {  // warp-uniform: every unit exists
      const uint8_t* pg = lpg + c0 * 32;
      const uint8_t* ph = lph + c0 * 32;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        b.wg[u] = ld_w8(pg + u * cstep);
        b.wh[u] = ld_w8(ph + u * cstep);
      }
    } else {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + u * wpt < C ? c0 + u * wpt : C - 1;
        b.wg[u] = ld_w8(lpg + c * 32);
        b.wh[u] = ld_w8(lph + c * 32);
      }
    }
#pragma unroll
    for (int v = 0; v < SPL; ++v) {
      const int uu = t + 4 * v;
      if (uu < U) {
        const int cu = c0 + uu * wpt < C ? c0 + uu * wpt : C - 1;
        const int64_t bg = (lfg + cu) >> lg_cpb, bh = (lfh + cu) >> lg_cpb;
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

  // The first group's loads go out before the tables are filled, so they are in flight meanwhile.
  MGroup<U> cur, nxt;
  int li = 0;
  int lq = 0;
  set_item(0);
  load(cur, 0);
  if (++lq == G) lq = 0, ++li, set_item(li);

  // Byte -> pair table: thread (warp w, lane l) writes bytes b = w + 16 i, whose pairs are (LUT[i], LUT[w]).
  {
    const uint32_t hi = pack_pair<T>(0.0f, lut.v[warp & 15]) & 0xffff0000u;
    uint32_t* tw = reinterpret_cast<uint32_t*>(s_lut);
#pragma unroll
    for (int i = 0; i < 16; ++i) tw[((warp & 15) + 16 * i) * 64 + lane] = hi | (pack_pair<T>(lut.v[i], 0.0f) & 0xffffu);
  }
  if (NESTED)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
  if constexpr (MB == 1) {
    const uint4* xs = reinterpret_cast<const uint4*>(x);
    uint4* xd = reinterpret_cast<uint4*>(s_x);
    const int nx = static_cast<int>(K * static_cast<int64_t>(sizeof(T)) / 16);
    for (int base = 0; base < nx; base += 4 * blockDim.x) {  // four loads in flight per thread
      uint4 v[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int idx = base + a * blockDim.x + threadIdx.x;
        if (idx < nx) v[a] = __ldg(xs + idx);
      }
#pragma unroll
      for (int a = 0; a < 4; ++a) {
        const int idx = base + a * blockDim.x + threadIdx.x;
        if (idx < nx) xd[idx] = v[a];
      }
    }
  }
  __syncthreads();

  const uint32_t lane4 = static_cast<uint32_t>(lane) * 4;
  // XREG (MB == 1, the warp's run is one group: G == 1): its x fragments are loaded once, here, instead of two LDS.128
  // per chunk (every item of the CTA uses the same run of x).
  uint32_t xr[XREG ? U : 1][8];
  if constexpr (XREG) {
    static_assert(MB == 1, "x in registers needs MB == 1");
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = chunk_of(0, u) < C ? chunk_of(0, u) : C - 1;
      const uint4* xp = reinterpret_cast<const uint4*>(s_x + c * 64 + t * 16);
      const uint4 xa = xp[0], xb = xp[1];
      xr[u][0] = xa.x, xr[u][1] = xa.y, xr[u][2] = xa.z, xr[u][3] = xa.w, xr[u][4] = xb.x, xr[u][5] = xb.y, xr[u][6] = xb.z, xr[u][7] = xb.w;
    }
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
    const int c0 = chunk_of(cq, 0);
    const int live = c0 < C ? (C - 1 - c0) / wpt + 1 : 0;  // units of this group that count: u < live
    // Unit u of the group: decode, MMAs, and (when it counts) the scaled sums added to acc.
    auto unit = [&](int u, bool counts) {
      const int src = (lane & ~3) | (u & 3);
      const float su = __shfl_sync(kFull, sg[u >> 2], src), sv = __shfl_sync(kFull, sh[u >> 2], src);
      const int c = c0 + u * wpt;
      uint32_t pg[8], ph[8];
      decode8(s_lut, lane4, cur.wg[u], pg);
      decode8(s_lut, lane4, cur.wh[u], ph);
      float d[NT][4];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        uint32_t xw[8];
        if constexpr (XREG) {
#pragma unroll
          for (int q = 0; q < 8; ++q) xw[q] = xr[u][q];
        } else if constexpr (MB == 1) {
          const uint4* xp = reinterpret_cast<const uint4*>(s_x + c * 64 + t * 16);
          const uint4 xa = xp[0], xb = xp[1];
          xw[0] = xa.x, xw[1] = xa.y, xw[2] = xa.z, xw[3] = xa.w, xw[4] = xb.x, xw[5] = xb.y, xw[6] = xb.z, xw[7] = xb.w;
        } else {
          const int m = n * 8 + g;
          if (m < M) {
            const uint4* xp = reinterpret_cast<const uint4*>(x + m * K + c * 64 + t * 16);
            const uint4 xa = __ldg(xp), xb = __ldg(xp + 1);
            xw[0] = xa.x, xw[1] = xa.y, xw[2] = xa.z, xw[3] = xa.w, xw[4] = xb.x, xw[5] = xb.y, xw[6] = xb.z, xw[7] = xb.w;
          } else {
#pragma unroll
            for (int q = 0; q < 8; ++q) xw[q] = 0u;
          }
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
    if (live >= U) {  // warp-uniform: a full group, straight-line so the U units' chains overlap
#pragma unroll
      for (int u = 0; u < U; ++u) unit(u, true);
    } else {  // a partial group (the end of a run): skip the units that do not count (K = 14336: 2 of 4)
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (u < live) unit(u, true);
    }
    if (cq == G - 1) {  // block-uniform: item ci is done for every warp
      const int slot = static_cast<int>(ci % D);
      const int bsel = static_cast<int>((ci / D) & 1);
      float* sb = s_buf + ((bsel * D + slot) * kMW + warp) * 16 * V;
      if constexpr (MB == 1) {
        if (t == 0) sb[g] = acc[0][0], sb[g + 8] = acc[0][2];
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
            const float* p = s_buf + ((bsel * D + dd) * kMW + tl * wpt) * 16 * V + rv;
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

// ---- host -----------------------------------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t hash32(uint64_t i, uint32_t seed) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull + seed * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint32_t>((z ^ (z >> 31)) >> 32);
}
__global__ void fill_bytes(uint8_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = static_cast<uint8_t>(hash32(i, seed));
}
__global__ void fill_uniform(float* p, int64_t n, uint32_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = lo + (hi - lo) * (hash32(i, seed) * (1.0f / 4294967296.0f));
}
template <typename T>
__global__ void fill_normal(T* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float u1 = (hash32(2 * i, seed) + 1.0f) * (1.0f / 4294967296.0f), u2 = hash32(2 * i + 1, seed) * (1.0f / 4294967296.0f);
    p[i] = from_f<T>(sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
  }
}
template <typename T>
__global__ void to_float(float* o, const T* p, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    o[i] = to_f(p[i]);
}

// Lab ceiling: a plain coalesced streaming read of n16 16-byte words (grid-stride, 4 loads in flight per thread).
__global__ void __launch_bounds__(512) stream_read_kernel(const uint4* __restrict__ p, int64_t n16, uint32_t* sink) {
  uint32_t a = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n16; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = i + j * stride < n16 ? __ldcs(p + i + j * stride) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
    for (int j = 0; j < 4; ++j) a ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
  }
  if (a == 0x12345678u) sink[0] = a;
}

// Lab probes of what a streaming read needs: LOADS loads of VEC bytes in flight per thread; BLOCKED: each CTA reads one
// contiguous range (otherwise grid-stride over the whole buffer).
template <int LOADS, int VEC, bool BLOCKED>
__global__ void __launch_bounds__(512) stream_probe_kernel(const uint8_t* __restrict__ p, int64_t n, uint32_t* sink) {
  using V = typename std::conditional<VEC == 16, uint4, uint2>::type;
  const int64_t nv = n / VEC;
  int64_t begin = 0, end = nv, first = threadIdx.x, stride = blockDim.x;
  if (BLOCKED) {
    begin = nv * blockIdx.x / gridDim.x, end = nv * (blockIdx.x + 1) / gridDim.x;
  } else {
    first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  }
  const V* q = reinterpret_cast<const V*>(p);
  uint32_t a = 0;
  for (int64_t i = begin + first; i < end; i += LOADS * stride) {
    V v[LOADS];
#pragma unroll
    for (int j = 0; j < LOADS; ++j) {
      if (i + j * stride < end) v[j] = __ldcs(q + i + j * stride);
      else std::memset(&v[j], 0, sizeof(V));
    }
#pragma unroll
    for (int j = 0; j < LOADS; ++j) {
      const uint32_t* u = reinterpret_cast<const uint32_t*>(&v[j]);
      for (int e = 0; e < VEC / 4; ++e) a ^= u[e];
    }
  }
  if (a == 0x12345678u) sink[0] = a;
}

// `narrowq` mode: absmax codes in 200..203, as in real double-quantized weights (blocks of one tensor have similar
// absmax, so their 8-bit codes cluster), instead of uniform random bytes.
bool g_narrow_codes = false;
__global__ void narrow_codes(uint8_t* q, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    q[i] = static_cast<uint8_t>(200 + (q[i] & 3));
}

struct State {
  uint8_t* packed = nullptr;
  uint8_t* q = nullptr;       // nested: absmax codes
  float* absmax = nullptr;    // plain: absmax
  float* nested = nullptr;    // absmax2 (nb / 256)
  float* code = nullptr;      // 256 sorted values
  int64_t bytes = 0;          // packed + absmax codes (or absmax) + nested absmax read per call
};

bool g_pool = false;  // LAB_POOL=1: weights from the stream-ordered pool (cudaMallocAsync), as the addon allocates

State make_state(int64_t N, int64_t K, int bs, bool nested, uint32_t seed) {
  State s;
  const int64_t nk = N * K, nb = (nk + bs - 1) / bs;
  if (g_pool) CK(cudaMallocAsync(reinterpret_cast<void**>(&s.packed), nk / 2, 0));
  else CK(cudaMalloc(&s.packed, nk / 2));
  fill_bytes<<<1024, 256>>>(s.packed, nk / 2, seed);
  if (nested) {
    CK(cudaMalloc(&s.q, nb));
    fill_bytes<<<1024, 256>>>(s.q, nb, seed + 1);
    if (g_narrow_codes) narrow_codes<<<1024, 256>>>(s.q, nb);
    const int64_t n2 = (nb + 255) / 256;
    CK(cudaMalloc(&s.nested, n2 * 4));
    fill_uniform<<<64, 256>>>(s.nested, n2, seed + 2, 0.005f, 0.03f);
    std::vector<float> code(256);
    for (int i = 0; i < 256; ++i) code[i] = -1.0f + 2.0f * i / 255.0f;
    CK(cudaMalloc(&s.code, 256 * 4));
    CK(cudaMemcpy(s.code, code.data(), 1024, cudaMemcpyHostToDevice));
    s.bytes = nk / 2 + nb + n2 * 4;
  } else {
    CK(cudaMalloc(&s.absmax, nb * 4));
    fill_uniform<<<1024, 256>>>(s.absmax, nb, seed + 1, 0.01f, 0.05f);
    s.bytes = nk / 2 + nb * 4;
  }
  CK(cudaGetLastError());
  return s;
}
void free_state(State& s) {
  if (g_pool) cudaFreeAsync(s.packed, 0), s.packed = nullptr;
  cudaFree(s.packed), cudaFree(s.q), cudaFree(s.absmax), cudaFree(s.nested), cudaFree(s.code);
}
WeightArgs args_of(const State& s, int bs) {
  int lg = 0;
  while ((1 << lg) < bs) ++lg;
  return WeightArgs{s.packed, s.absmax, s.q, s.nested, s.code, 0.031f, lg};
}

int g_sms = 0;
bool g_prof = false;  // few timed launches (under a profiler)
bool g_pf = false;    // `pf` mode: the L2-prefetch / PDL variants only
double g_copy_bw = 0.0;  // GB/s read + written

template <typename T, bool NESTED>
void launch_old(cudaStream_t st, T* out, const T* x, const WeightArgs& w, int64_t N, int64_t K, const Lut16& lut) {
  const int64_t steps = (K + 1023) / 1024;
  int lg = 0;
  while ((int64_t{1} << lg) < steps) ++lg;
  const int64_t per_item = kM1Warps >> lg, items = (N + per_item - 1) / per_item;
  const int64_t gx = items < g_sms ? items : g_sms;
  gemv4_m1_kernel<T, NESTED><<<static_cast<unsigned>(gx), kM1Warps * 32, 0, st>>>(out, x, w, nullptr, N, K, lg, lut);
}

// Warps per tile. target 0: gemm4bit.cu's rule, as many (up to kMW) as leave each warp at least 4 chunks of a row
// (16 for both benchmark shapes); target > 0: the fewest that leave each warp at most `target` chunks (a second
// configuration for the correctness sweep).
int mma_lg_wpt(int64_t C, int target) {
  int lg = 4;
  if (target > 0) {
    lg = 0;
    while (lg < 4 && (C + (1 << lg) - 1) / (1 << lg) > target) ++lg;
  } else {
    while (lg > 0 && (C >> lg) < 4) --lg;
  }
  return lg;
}

template <typename T, int MB, bool NESTED, int U, int LAB = 0, int PF = 0, bool PDL = false>
void launch_mma(cudaStream_t st, T* out, const T* x, const WeightArgs& w, int64_t M, int64_t N, int64_t K, const Lut16& lut, int target) {
  const int64_t C = K / 64;
  if (C < U) {
    std::fprintf(stderr, "launch_mma: K %lld < 64 * U\n", (long long)K);
    std::exit(1);
  }
  const int lg = mma_lg_wpt(C, target);
  const int cpw = static_cast<int>((C + (1 << lg) - 1) >> lg);
  const int64_t tpi = kMW >> lg, items = ((N + 15) / 16 + tpi - 1) / tpi;
  const size_t smem = mma_smem_bytes(MB, K, sizeof(T));
  auto kernel = gemv4_mma_kernel<T, MB, NESTED, U, LAB, PF, PDL>;
  static bool attr = false;
  if (!attr) {
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    attr = true;
  }
  const int64_t gx = items < g_sms ? items : g_sms;
  if constexpr (PDL) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(gx));
    cfg.blockDim = dim3(kMW * 32);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    const T* bias = nullptr;
    CK(cudaLaunchKernelEx(&cfg, kernel, out, x, w, bias, M, N, K, lg, cpw, lut));
  } else {
    kernel<<<static_cast<unsigned>(gx), kMW * 32, smem, st>>>(out, x, w, nullptr, M, N, K, lg, cpw, lut);
  }
}

// ks launch (K = 14336-like shapes: C % (4 kKP) == 0, C / kKP / 4 <= kMW): clusters of kKP CTAs, as many as fit at once.
template <typename T>
bool launch_ks(cudaStream_t st, T* out, const T* x, const WeightArgs& w, int64_t N, int64_t K, const Lut16& lut) {
  const int64_t C = K / 64;
  if (C % (kKP * 4) != 0 || C / kKP / 4 > kMW) return false;
  auto kernel = gemv4_ks_kernel<T>;
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute at[2];
  at[0].id = cudaLaunchAttributeClusterDimension;
  at[0].val.clusterDim.x = kKP, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
  at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at;
  cfg.numAttrs = 2;
  cfg.blockDim = dim3(kMW * 32);
  cfg.stream = st;
  static int ncl = 0;
  if (ncl == 0) {
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    cfg.gridDim = dim3(kKP * 64);
    cfg.dynamicSmemBytes = kLutBytes + 1024 + 16 * (kMW + 1) * 16 * 4;
    CK(cudaOccupancyMaxActiveClusters(&ncl, kernel, &cfg));
    std::printf("  ks: %d clusters of %d CTAs at once\n", ncl, kKP);
  }
  const int64_t ntiles = (N + 15) / 16, nc = ntiles < ncl ? ntiles : ncl;
  const int mine_max = static_cast<int>((ntiles + nc - 1) / nc);
  cfg.gridDim = dim3(static_cast<unsigned>(kKP * nc));
  cfg.dynamicSmemBytes = kLutBytes + 1024 + static_cast<size_t>(mine_max) * (kMW + 1) * 16 * 4;
  CK(cudaLaunchKernelEx(&cfg, kernel, out, x, w, N, K, mine_max, lut));
  return true;
}

// v16 launch: lg < 0 picks as many warps per tile (up to kMW) as leave each warp at least U units; XREG needs the
// warp's run to be one group (cpw <= U). Returns false when the shape does not fit.
template <typename T, bool NESTED, int U, int DEC, bool XREG = false, bool RO = false>
bool launch_v16(cudaStream_t st, T* out, const T* x, const WeightArgs& w, int64_t N, int64_t K, const Lut16& lut, int lg = -1) {
  if (K % 128 != 0) return false;
  const int64_t C2 = K / 128;
  if (C2 < U) return false;
  if (lg < 0) {
    lg = 4;
    while (lg > 0 && (C2 >> lg) < U) --lg;
  }
  const int cpw = static_cast<int>((C2 + (1 << lg) - 1) >> lg);
  if (XREG && cpw > U) return false;
  const int64_t tpi = kMW >> lg, items = ((N + 15) / 16 + tpi - 1) / tpi;
  const size_t smem = v16_smem_bytes(K, sizeof(T), DEC != 1);
  static bool attr = false;
  if (!attr) {
    CK(cudaFuncSetAttribute(gemv4_v16_kernel<T, NESTED, U, DEC, XREG, RO>, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    attr = true;
  }
  const int64_t gx = items < g_sms ? items : g_sms;
  gemv4_v16_kernel<T, NESTED, U, DEC, XREG, RO><<<static_cast<unsigned>(gx), kMW * 32, smem, st>>>(out, x, w, nullptr, N, K, lg, cpw, lut);
  return true;
}

// async launch: lg < 0 picks as many warps per tile (up to kMW) as leave each warp at least 2 units.
template <typename T, bool NESTED, int S, bool XREG = false, bool RO = false>
bool launch_async(cudaStream_t st, T* out, const T* x, const WeightArgs& w, int64_t N, int64_t K, const Lut16& lut, int lg = -1) {
  if (K % 128 != 0) return false;
  const int64_t C2 = K / 128;
  if (lg < 0) {
    lg = 4;
    while (lg > 0 && (C2 >> lg) < 2) --lg;
  }
  const int cpw = static_cast<int>((C2 + (1 << lg) - 1) >> lg);
  if (XREG && cpw > 2) return false;
  const int64_t tpi = kMW >> lg, items = ((N + 15) / 16 + tpi - 1) / tpi;
  const size_t smem = async_smem_bytes(K, sizeof(T), S);
  if (smem > 227 * 1024) return false;
  static bool attr = false;
  if (!attr) {
    CK(cudaFuncSetAttribute(gemv4_async_kernel<T, NESTED, S, XREG, RO>, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
    attr = true;
  }
  const int64_t gx = items < g_sms ? items : g_sms;
  gemv4_async_kernel<T, NESTED, S, XREG, RO><<<static_cast<unsigned>(gx), kMW * 32, smem, st>>>(out, x, w, nullptr, N, K, lg, cpw, lut);
  return true;
}

// gemm4bit.cu's launch rule applied to gemv4_il_kernel (U = 2 for MB == 16 unless given; XREG when a warp's chunks are one group).
template <typename T, int MB, bool NESTED, int U = (MB == 16 ? 2 : 4)>
void launch_il(cudaStream_t st, T* out, const T* x, const WeightArgs& w, int64_t M, int64_t N, int64_t K, const Lut16& lut, int target) {
  const int64_t C = K / 64;
  const int lg = mma_lg_wpt(C, target);
  const int cpw = static_cast<int>((C + (1 << lg) - 1) >> lg);
  const int64_t tpi = kMW >> lg, items = ((N + 15) / 16 + tpi - 1) / tpi;
  const size_t smem = mma_smem_bytes(MB, K, sizeof(T));
  const bool xreg = MB == 1 && cpw <= U;
  auto kernel = xreg ? gemv4_il_kernel<T, MB, NESTED, U, MB == 1> : gemv4_il_kernel<T, MB, NESTED, U, false>;
  static bool attr[2] = {false, false};
  if (!attr[xreg]) {
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    attr[xreg] = true;
  }
  const int64_t gx = items < g_sms ? items : g_sms;
  kernel<<<static_cast<unsigned>(gx), kMW * 32, smem, st>>>(out, x, w, nullptr, M, N, K, lg, cpw, lut);
}

template <typename T>
const char* tname() {
  return std::is_same<T, __half>::value ? "f16" : std::is_same<T, float>::value ? "f32" : "bf16";
}

// max |a - r| / max |r| of n outputs (a in T on the device, r float32 on the device).
template <typename T>
double rel_err(const T* a_dev, const float* r_dev, int64_t n) {
  float* af;
  CK(cudaMalloc(&af, n * 4));
  to_float<T><<<256, 256>>>(af, a_dev, n);
  std::vector<float> a(n), r(n);
  CK(cudaMemcpy(a.data(), af, n * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(r.data(), r_dev, n * 4, cudaMemcpyDeviceToHost));
  cudaFree(af);
  double e = 0.0, m = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - r[i]);
    e = d > e || d != d ? d : e;
    m = std::fabs(r[i]) > m ? std::fabs(r[i]) : m;
  }
  return m > 0 ? e / m : e;
}

template <typename F>
float time_us(F&& f, int iters) {
  for (int i = 0; i < 20; ++i) f(i);
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaEventRecord(a));
  for (int i = 0; i < iters; ++i) f(i);
  CK(cudaEventRecord(b));
  CK(cudaEventSynchronize(b));
  CK(cudaGetLastError());
  float ms = 0.0f;
  CK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a), cudaEventDestroy(b);
  return ms * 1e3f / iters;
}

// ---- TMA variant: bulk copies into a shared-memory ring, one producer warp, W consumer warps ------------------------------
//
// The packed bytes reach shared memory through cp.async.bulk (the TMA engine, 1-D copies of one row piece each), so
// the SM's load/store path only carries the shared-memory reads of the decode. A CTA (one per SM) takes a contiguous
// range of 16-row tiles; a tile is cut into slices of KS bytes per row (a "unit": 16 rows x KS bytes = one TMA stage).
// Unit u of the CTA goes to consumer warp u % W, into that warp's ring slot (u / W) % SPW; full / empty mbarriers per
// slot. A consumer computes 16 row sums of its unit (the v4 decode and MMA, its bytes read from the stage with LDS.64 at
// a row stride of KS + 32 bytes: conflict-free), writes them to a partial buffer and counts the tile's units; the warp
// that completes a tile adds the tile's slices in slice order (deterministic) and stores the 16 outputs.

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t a = smem_u32(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(a), "r"(parity)
        : "memory");
  } while (!done);
}
template <bool HINT>
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t policy) {
  if constexpr (HINT) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar)), "l"(policy)
                 : "memory");
  } else {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
  }
}

// One box of a 3-D tensor map (bytes: 128-byte segment, segment, row) into shared memory (128-byte swizzle).
__device__ __forceinline__ void tensor_g2s(void* dst, const CUtensorMap* map, int seg, int row, uint64_t* bar) {
  asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(smem_u32(dst)),
               "l"(reinterpret_cast<uint64_t>(map)), "r"(0), "r"(seg), "r"(row), "r"(smem_u32(bar))
               : "memory");
}

struct TmaCfg {
  int KS;   // bytes per row of a unit (multiple of 128, divides K / 2)
  int SPW;  // ring slots per consumer warp
};

template <int W>
inline size_t tma_smem_bytes(int64_t K, int es, TmaCfg c, int mode) {
  const int slices = static_cast<int>(K / 2 / c.KS), S = W * c.SPW, PS = S + W + slices, TC = S + W + 2;
  return static_cast<size_t>(kLutBytes) + static_cast<size_t>(K) * es + 256 * 4 + static_cast<size_t>(PS) * 16 * 4 + static_cast<size_t>(TC) * 4 +
         static_cast<size_t>(2 * S) * 8 + static_cast<size_t>(S) * 16 * (c.KS + (mode == 0 ? 32 : 0)) + 1024;
}

// NCH = chunks (64 elements = 32 bytes per row) per unit = KS / 32.
// MODE 0: one 1-D bulk copy per row piece, row stride KS + 32; 1: one 3-D tensor-map box (16 rows x KS bytes, 128-byte
// swizzle) per unit, row stride KS; 2: one 1-D copy of the whole 16-row tile (KS = K / 2, read-only lab ceiling).
template <typename T, bool NESTED, int W, int NCH, bool RO, bool HINT, int MODE>
__global__ void __launch_bounds__((W + 1) * 32, 1)
    gemv4_tma_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w, int N, int K, int SPW, Lut16 lut,
                     const __grid_constant__ CUtensorMap tmap) {
  constexpr int KS = NCH * 32, RS = MODE == 0 ? KS + 32 : KS, SPL = NCH / 4 > 0 ? NCH / 4 : 1;
  static_assert(MODE != 1 || KS == 256, "the swizzled read is conflict-free for 2 segments per row");
  extern __shared__ __align__(16) unsigned char smem[];
  const int rowbytes = K >> 1, slices = rowbytes / KS, C = K >> 6;
  const int S = W * SPW, PS = S + W + slices, TC = S + W + 2;
  unsigned char* s_lut = smem;
  T* s_x = reinterpret_cast<T*>(smem + kLutBytes);
  float* s_code = reinterpret_cast<float*>(smem + kLutBytes + static_cast<size_t>(K) * sizeof(T));
  float* s_part = s_code + 256;                                 // [PS][16]
  int* s_cnt = reinterpret_cast<int*>(s_part + PS * 16);        // [TC]
  uint64_t* s_bar = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(s_cnt + TC) + 7) & ~uintptr_t{7});  // full[S], empty[S]
  unsigned char* ring = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(s_bar + 2 * S) + 1023) & ~uintptr_t{1023});
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int ntiles = (N + 15) >> 4;
  const int tb = static_cast<int>(static_cast<int64_t>(blockIdx.x) * ntiles / gridDim.x);
  const int te = static_cast<int>(static_cast<int64_t>(blockIdx.x + 1) * ntiles / gridDim.x);
  const int nu = (te - tb) * slices;
  if (threadIdx.x == 0) {
    for (int i = 0; i < S; ++i) mbar_init(s_bar + i, 1), mbar_init(s_bar + S + i, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  for (int i = threadIdx.x; i < TC; i += blockDim.x) s_cnt[i] = 0;
  __syncthreads();

  if (warp == W) {  // producer
    uint64_t policy = 0;
    if constexpr (HINT) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    for (int u = 0; u < nu; ++u) {
      const int r = u / W, slot = (u % W) * SPW + r % SPW;
      mbar_wait(s_bar + S + slot, ((r / SPW) & 1) ^ 1);
      if (lane == 0) mbar_expect_tx(s_bar + slot, 16 * KS);
      __syncwarp();
      if (MODE == 1 && lane == 0) {
        const int it = u / slices, s = u - it * slices;
        tensor_g2s(ring + static_cast<size_t>(slot) * 16 * RS, &tmap, s * (KS / 128), (tb + it) * 16, s_bar + slot);
      } else if (MODE == 2 && lane == 0) {
        bulk_g2s<HINT>(ring + static_cast<size_t>(slot) * 16 * RS, w.packed + static_cast<int64_t>(tb + u) * 16 * rowbytes, 16 * KS, s_bar + slot, policy);
      } else if (MODE == 0 && lane < 16) {
        const int it = u / slices, s = u - it * slices;
        int row = (tb + it) * 16 + lane;
        row = row < N ? row : N - 1;
        bulk_g2s<HINT>(ring + static_cast<size_t>(slot) * 16 * RS + lane * RS, w.packed + static_cast<int64_t>(row) * rowbytes + s * KS, KS,
                       s_bar + slot, policy);
      }
    }
    return;
  }

  // consumers: tables, x, then their units
  {
    uint32_t* tw = reinterpret_cast<uint32_t*>(s_lut);
    for (int b = warp; b < 16; b += W)
#pragma unroll
      for (int i = 0; i < 16; ++i) tw[(b + 16 * i) * 64 + lane] = (pack_pair<T>(0.0f, lut.v[b]) & 0xffff0000u) | (pack_pair<T>(lut.v[i], 0.0f) & 0xffffu);
  }
  if (NESTED)
    for (int i = threadIdx.x; i < 256; i += W * 32) s_code[i] = w.nested_code[i];
  {
    const uint4* xs = reinterpret_cast<const uint4*>(x);
    uint4* xd = reinterpret_cast<uint4*>(s_x);
    const int nx = K * static_cast<int>(sizeof(T)) / 16;
    for (int i = threadIdx.x; i < nx; i += W * 32) xd[i] = __ldg(xs + i);
  }
  asm volatile("bar.sync 1, %0;" ::"r"(W * 32) : "memory");

  const uint32_t lane4 = static_cast<uint32_t>(lane) * 4;
  const int lg_cpb = w.lg_bs - 6;
  // scale inputs of unit u for this lane: chunks t + 4 v of rows g and g + 8
  uint32_t qg[SPL], qh[SPL], nqg[SPL], nqh[SPL];
  float ag[SPL], ah[SPL], nag[SPL], nah[SPL];
  auto load_scales = [&](int u, uint32_t(&q0)[SPL], uint32_t(&q1)[SPL], float(&a0)[SPL], float(&a1)[SPL]) {
    const int it = u / slices, s = u - it * slices;
    const int r0 = (tb + it) * 16 + g, rg = r0 < N ? r0 : N - 1, rh = r0 + 8 < N ? r0 + 8 : N - 1;
#pragma unroll
    for (int v = 0; v < SPL; ++v) {
      const int c = s * NCH + t + 4 * v;
      const int64_t bg = (static_cast<int64_t>(rg) * C + c) >> lg_cpb, bh = (static_cast<int64_t>(rh) * C + c) >> lg_cpb;
      if (NESTED) {
        q0[v] = w.qabsmax[bg];
        q1[v] = w.qabsmax[bh];
        a0[v] = __ldg(w.nested_absmax + (bg >> 8));
        a1[v] = __ldg(w.nested_absmax + (bh >> 8));
      } else {
        q0[v] = q1[v] = 0u;
        a0[v] = __ldg(w.absmax + bg);
        a1[v] = __ldg(w.absmax + bh);
      }
    }
  };
  if (warp < nu) load_scales(warp, qg, qh, ag, ah);
  for (int u = warp; u < nu; u += W) {
    const int r = u / W, slot = warp * SPW + r % SPW;
    const int it = u / slices, s = u - it * slices;
    if (u + W < nu) load_scales(u + W, nqg, nqh, nag, nah);
    float sg[SPL], sh[SPL];
#pragma unroll
    for (int v = 0; v < SPL; ++v) {
      sg[v] = NESTED ? __fmaf_rn(s_code[qg[v]], ag[v], w.offset) : ag[v];
      sh[v] = NESTED ? __fmaf_rn(s_code[qh[v]], ah[v], w.offset) : ah[v];
    }
    mbar_wait(s_bar + slot, (r / SPW) & 1);
    const unsigned char* st = ring + static_cast<size_t>(slot) * 16 * RS + (MODE == 1 ? 0 : g * RS + t * 8);
    float a0 = 0.0f, a2 = 0.0f;
    if constexpr (!RO) {
#pragma unroll 1
      for (int c4 = 0; c4 < NCH; c4 += 4) {  // groups of 4 chunks; the group's scales sit in sg[0] / sh[0]
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int c = c4 + j;
          uint2 wg, wh;
          if constexpr (MODE == 1) {  // line L = row * 2 + segment; 16-byte unit u of the line sits at u ^ (L % 8)
            const int L = g * 2 + (c >> 2), u = ((c & 3) << 1) | (t >> 1);
            const int off = L * 128 + ((u ^ (L & 7)) << 4) + ((t & 1) << 3);
            wg = *reinterpret_cast<const uint2*>(st + off);
            wh = *reinterpret_cast<const uint2*>(st + off + 16 * 128);
          } else {
            wg = *reinterpret_cast<const uint2*>(st + c * 32);
            wh = *reinterpret_cast<const uint2*>(st + 8 * RS + c * 32);
          }
          uint32_t pg[8], ph[8];
          decode8(s_lut, lane4, wg, pg);
          decode8(s_lut, lane4, wh, ph);
          const uint4* xp = reinterpret_cast<const uint4*>(s_x + (s * NCH + c) * 64 + t * 16);
          const uint4 xa = xp[0], xb = xp[1];
          float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          mma16816<T>(d, pg[0], ph[0], pg[1], ph[1], xa.x, xa.y);
          mma16816<T>(d, pg[2], ph[2], pg[3], ph[3], xa.z, xa.w);
          mma16816<T>(d, pg[4], ph[4], pg[5], ph[5], xb.x, xb.y);
          mma16816<T>(d, pg[6], ph[6], pg[7], ph[7], xb.z, xb.w);
          const int src = (lane & ~3) | j;
          a0 = fmaf(d[0], __shfl_sync(kFull, sg[0], src), a0);
          a2 = fmaf(d[2], __shfl_sync(kFull, sh[0], src), a2);
        }
#pragma unroll
        for (int v = 0; v + 1 < SPL; ++v) sg[v] = sg[v + 1], sh[v] = sh[v + 1];
      }
    } else {
      a0 = to_f(*reinterpret_cast<const T*>(st)) * sg[0];
      a2 = sh[0];
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(s_bar + S + slot);  // the stage's bytes are in registers: the slot may refill
    // partial sums of this unit, then count the tile's units; the last one adds them in slice order
    float* pp = s_part + (u % PS) * 16;
    if (t == 0) pp[g] = a0, pp[g + 8] = a2;
    __syncwarp();
    int done = 0;
    if (lane == 0) {
      __threadfence_block();
      done = atomicAdd(s_cnt + (tb + it) % TC, 1) == slices - 1;
    }
    done = __shfl_sync(kFull, done, 0);
    if (done) {
      __threadfence_block();
      const int row = (tb + it) * 16 + (lane & 15);
      const int u0 = it * slices;
      if (lane < 16) {
        float sum = 0.0f;
        for (int q = 0; q < slices; ++q) sum += reinterpret_cast<volatile float*>(s_part)[((u0 + q) % PS) * 16 + lane];
        if (row < N) out[row] = from_f<T>(sum);
      }
      if (lane == 0) s_cnt[(tb + it) % TC] = 0;
    }
#pragma unroll
    for (int v = 0; v < SPL; ++v) qg[v] = nqg[v], qh[v] = nqh[v], ag[v] = nag[v], ah[v] = nah[v];
  }
}

PFN_cuTensorMapEncodeTiled_v12000 g_encode = nullptr;

template <typename T, bool NESTED, int W, int NCH, bool RO = false, bool HINT = false, int MODE = 0>
bool launch_tma(cudaStream_t st, T* out, const T* x, const WeightArgs& w, int64_t N, int64_t K, const Lut16& lut, int SPW) {
  const TmaCfg c{NCH * 32, SPW};
  if ((K / 2) % c.KS != 0 || (MODE == 2 && c.KS != K / 2)) return false;
  const size_t smem = tma_smem_bytes<W>(K, sizeof(T), c, MODE);
  if (smem > 227 * 1024) return false;
  static bool attr = false;
  if (!attr) {
    CK(cudaFuncSetAttribute(gemv4_tma_kernel<T, NESTED, W, NCH, RO, HINT, MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
    attr = true;
  }
  CUtensorMap map{};
  if (MODE == 1) {
    if (g_encode == nullptr) {
      cudaDriverEntryPointQueryResult q;
      CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", reinterpret_cast<void**>(&g_encode), 12000, cudaEnableDefault, &q));
    }
    const cuuint64_t dims[3] = {128, static_cast<cuuint64_t>(K / 256), static_cast<cuuint64_t>(N)};
    const cuuint64_t strides[2] = {128, static_cast<cuuint64_t>(K / 2)};
    const cuuint32_t box[3] = {128, static_cast<cuuint32_t>(c.KS / 128), 16}, es[3] = {1, 1, 1};
    const CUresult r = g_encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, const_cast<uint8_t*>(w.packed), dims, strides, box, es,
                                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
      std::fprintf(stderr, "cuTensorMapEncodeTiled: %d\n", static_cast<int>(r));
      std::exit(1);
    }
  }
  const int64_t tiles = (N + 15) / 16;
  const int64_t gx = tiles < g_sms ? tiles : g_sms;
  gemv4_tma_kernel<T, NESTED, W, NCH, RO, HINT, MODE><<<static_cast<unsigned>(gx), (W + 1) * 32, smem, st>>>(
      out, x, w, static_cast<int>(N), static_cast<int>(K), SPW, lut, map);
  return true;
}

// ---- diagonal variant (M = 1): each load instruction reads 256 contiguous bytes of one row ------------------------------
//
// The MMA's 8 B columns carry 8 different x chunks: A rows g / g + 8 are rows r0 / r1 (a pair of weight rows) at chunk
// c0 + g, B column g is x at chunk c0 + g, so D[g][g] = r0 . x over chunk c0 + g and D[g + 8][g] the same for r1 (the
// other 112 products are not used). Lane (g, t) reads bytes 8 t .. 8 t + 7 of chunk c0 + g of both rows: one LDG.64 of
// the warp covers 8 consecutive chunks = 256 contiguous bytes of a row (the walk of a plain streaming read), and
// the diagonal lanes (t = g / 2) scale their two sums by their own chunk's scales (no shuffles). A warp walks one row
// pair over half of K in groups of U chunk-groups (8 chunks each); 16 warps = 8 pairs x 2 halves cover a 16-row tile.
// x: swizzled in shared memory (chunk c's 16-byte unit u at u ^ (c & 7): the 8 chunks of a load are conflict-free), or
// in registers when a warp's half of K is one group (XREG, K <= 4096).
constexpr int kDW = 16;

template <typename T, bool NESTED, bool XREG, bool RO, int U>
__global__ void __launch_bounds__(kDW * 32, 1)
    gemv4_diag_kernel(T* __restrict__ out, const T* __restrict__ x, WeightArgs w, int N, int K, Lut16 lut) {
  constexpr int D = 8;  // tiles buffered between barriers
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* s_lut = smem;
  uint4* s_x = reinterpret_cast<uint4*>(smem + kLutBytes);
  float* s_code = reinterpret_cast<float*>(smem + kLutBytes + static_cast<size_t>(K) * 2);
  float* s_part = s_code + 256;  // [2][D][2 halves][16 rows]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int p = warp & 7, h = warp >> 3;
  const int C = K >> 6, NG = (C + 7) >> 3, G2 = (NG + 1) >> 1;
  const int cg0 = h * G2, cg1 = (cg0 + G2 < NG ? cg0 + G2 : NG), nh = cg1 - cg0;  // this warp's chunk-groups
  const int ntiles = (N + 15) >> 4, g0 = blockIdx.x;
  if (g0 >= ntiles) return;
  const int mine = (ntiles - g0 + static_cast<int>(gridDim.x) - 1) / static_cast<int>(gridDim.x);
  const int G = (nh + U - 1) / U, total = mine * G;
  const int64_t rowbytes = K >> 1;
  const int lg_cpb = w.lg_bs - 6;
  const bool diag = t == (g >> 1);

  struct Grp {
    uint2 wa[U], wb[U];
    uint32_t qa[U], qb[U];
    float aa[U], ab[U];
  };
  auto group_start = [&](int q) {
    const int cs = cg0 + q * U;
    return cs + U <= cg1 ? cs : (cg1 - U > cg0 ? cg1 - U : cg0);
  };
  int lrow = 0;  // row r0 of the tile being loaded
  auto set_item = [&](int i) { lrow = (g0 + i * static_cast<int>(gridDim.x)) * 16 + 2 * p; };
  auto load = [&](Grp& b, int q) {
    const int cl = group_start(q);
    const int ra = lrow < N ? lrow : N - 1, rb = lrow + 1 < N ? lrow + 1 : N - 1;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      int c = (cl + u) * 8 + g;
      c = c < C ? c : C - 1;
      b.wa[u] = ld_w8(w.packed + ra * rowbytes + c * 32 + t * 8);
      b.wb[u] = ld_w8(w.packed + rb * rowbytes + c * 32 + t * 8);
      const int64_t ba = (static_cast<int64_t>(ra) * C + c) >> lg_cpb, bb = (static_cast<int64_t>(rb) * C + c) >> lg_cpb;
      if (NESTED) {
        b.qa[u] = w.qabsmax[ba];
        b.qb[u] = w.qabsmax[bb];
        b.aa[u] = __ldg(w.nested_absmax + (ba >> 8));
        b.ab[u] = __ldg(w.nested_absmax + (bb >> 8));
      } else {
        b.qa[u] = b.qb[u] = 0u;
        b.aa[u] = __ldg(w.absmax + ba);
        b.ab[u] = __ldg(w.absmax + bb);
      }
    }
  };

  Grp cur, nxt;
  int li = 0, lq = 0;
  set_item(0);
  load(cur, 0);
  if (++lq == G) lq = 0, ++li, set_item(li);

  {
    uint32_t* tw = reinterpret_cast<uint32_t*>(s_lut);
    const uint32_t hi = pack_pair<T>(0.0f, lut.v[warp & 15]) & 0xffff0000u;
#pragma unroll
    for (int i = 0; i < 16; ++i) tw[((warp & 15) + 16 * i) * 64 + lane] = hi | (pack_pair<T>(lut.v[i], 0.0f) & 0xffffu);
  }
  if (NESTED)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = w.nested_code[i];
  {
    const uint4* xs = reinterpret_cast<const uint4*>(x);
    const int nx = K / 8;  // 16-byte units (8 per chunk)
    for (int i = threadIdx.x; i < nx; i += blockDim.x) {
      const int c = i >> 3, u = i & 7;
      s_x[c * 8 + (u ^ (c & 7))] = __ldg(xs + i);
    }
  }
  __syncthreads();

  const uint32_t lane4 = static_cast<uint32_t>(lane) * 4;
  auto xfrag = [&](int cg, uint32_t(&xw)[8]) {
    int c = cg * 8 + g;
    c = c < C ? c : C - 1;
    const uint4 xa = s_x[c * 8 + ((2 * t) ^ (c & 7))], xb = s_x[c * 8 + ((2 * t + 1) ^ (c & 7))];
    xw[0] = xa.x, xw[1] = xa.y, xw[2] = xa.z, xw[3] = xa.w, xw[4] = xb.x, xw[5] = xb.y, xw[6] = xb.z, xw[7] = xb.w;
  };
  uint32_t xr[XREG ? U : 1][8];
  if constexpr (XREG) {
#pragma unroll
    for (int u = 0; u < U; ++u) xfrag(group_start(0) + u, xr[u]);
  }
  float acc0 = 0.0f, acc1 = 0.0f;
  int ci = 0, cq = 0;
  for (int s = 0; s < total; ++s) {
    const bool more = s + 1 < total;
    if (more) {
      load(nxt, lq);
      if (++lq == G) lq = 0, ++li, set_item(li);
    }
    const int cl = group_start(cq);
    const int lo = cg0 + cq * U - cl, hi = cg1 - cl;  // unit u counts iff lo <= u < hi
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (u < lo || u >= hi) continue;  // warp-uniform
      const int c = (cl + u) * 8 + g;
      if constexpr (RO) {
        if (diag && c < C) acc0 += __uint_as_float((cur.wa[u].x ^ cur.wb[u].y) & 0x3f8fffffu) * __fmaf_rn(s_code[cur.qa[u]], cur.aa[u], w.offset);
        continue;
      }
      uint32_t pa[8], pb[8];
      decode8(s_lut, lane4, cur.wa[u], pa);
      decode8(s_lut, lane4, cur.wb[u], pb);
      uint32_t xw[8];
      if constexpr (XREG) {
#pragma unroll
        for (int q = 0; q < 8; ++q) xw[q] = xr[u][q];
      } else {
        xfrag(cl + u, xw);
      }
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int q = 0; q < 4; ++q) mma16816<T>(d, pa[2 * q], pb[2 * q], pa[2 * q + 1], pb[2 * q + 1], xw[2 * q], xw[2 * q + 1]);
      if (diag && c < C) {
        const float sa = NESTED ? __fmaf_rn(s_code[cur.qa[u]], cur.aa[u], w.offset) : cur.aa[u];
        const float sb = NESTED ? __fmaf_rn(s_code[cur.qb[u]], cur.ab[u], w.offset) : cur.ab[u];
        acc0 = fmaf((g & 1) ? d[1] : d[0], sa, acc0);
        acc1 = fmaf((g & 1) ? d[3] : d[2], sb, acc1);
      }
    }
    if (cq == G - 1) {  // tile ci done for this warp: its two row sums (over the 8 diagonal lanes) to the buffer
      float v0 = acc0, v1 = acc1;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v0 += __shfl_xor_sync(kFull, v0, o), v1 += __shfl_xor_sync(kFull, v1, o);
      const int slot = ci % D, bsel = (ci / D) & 1;
      float* sb = s_part + ((bsel * D + slot) * 2 + h) * 16;
      if (lane == 0) sb[2 * p] = v0, sb[2 * p + 1] = v1;
      acc0 = acc1 = 0.0f;
      if (slot == D - 1 || ci == mine - 1) {  // block-uniform
        __syncthreads();
        const int first = ci - slot;
        for (int e = threadIdx.x; e < (slot + 1) * 16; e += blockDim.x) {
          const int dd = e >> 4, r = e & 15;
          const int n = (g0 + (first + dd) * static_cast<int>(gridDim.x)) * 16 + r;
          const float* pp = s_part + ((bsel * D + dd) * 2) * 16 + r;
          if (n < N) out[n] = from_f<T>(pp[0] + pp[16]);
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

template <typename T, bool NESTED, bool XREG = false, bool RO = false, int U = 4>
bool launch_diag(cudaStream_t st, T* out, const T* x, const WeightArgs& w, int64_t N, int64_t K, const Lut16& lut) {
  const int64_t C = K / 64, NG = (C + 7) / 8, G2 = (NG + 1) / 2;
  if (K % 64 != 0 || NG < 2 || (XREG && G2 > U)) return false;
  const size_t smem = kLutBytes + K * 2 + 256 * 4 + 2 * 8 * 2 * 16 * 4;
  static bool attr = false;
  if (!attr) {
    CK(cudaFuncSetAttribute(gemv4_diag_kernel<T, NESTED, XREG, RO, U>, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
    attr = true;
  }
  const int64_t tiles = (N + 15) / 16;
  const int64_t gx = tiles < g_sms ? tiles : g_sms;
  gemv4_diag_kernel<T, NESTED, XREG, RO, U><<<static_cast<unsigned>(gx), kDW * 32, smem, st>>>(out, x, w, static_cast<int>(N),
                                                                                             static_cast<int>(K), lut);
  return true;
}

constexpr int kCopies = 4;

// One benchmark shape: 4 weight copies, the reference on copy 0, then every candidate (error + time).
template <typename T>
void bench_shape(int64_t M, int64_t N, int64_t K, bool timing, bool old_too) {
  const int bs = 64;
  State st[kCopies];
  for (int c = 0; c < kCopies; ++c) st[c] = make_state(N, K, bs, true, 100 + 17 * c + static_cast<uint32_t>(N));
  T *x, *out;
  float* ref;
  CK(cudaMalloc(&x, M * K * sizeof(T)));
  CK(cudaMalloc(&out, M * N * sizeof(T)));
  CK(cudaMalloc(&ref, M * N * 4));
  fill_normal<T><<<256, 256>>>(x, M * K, 7);
  Lut16 lut;
  std::memcpy(lut.v, kNF4, sizeof lut.v);
  const WeightArgs w0 = args_of(st[0], bs);
  ref_kernel<T, true><<<static_cast<unsigned>((M * N + 127) / 128), 128>>>(ref, x, w0, M, N, K, lut);
  CK(cudaDeviceSynchronize());
  const int iters = g_prof ? 5 : M == 1 ? 500 : 200;
  auto report = [&](const char* name, auto&& launch) {
    CK(cudaMemset(out, 0xff, M * N * sizeof(T)));
    launch(0);
    CK(cudaDeviceSynchronize());
    const double err = rel_err<T>(out, ref, M * N);
    if (!timing) {
      std::printf("  %-4s M %2lld N %5lld K %5lld %-34s err %.2e\n", tname<T>(), (long long)M, (long long)N, (long long)K, name, err);
      return;
    }
    const float us = time_us([&](int i) { launch(i % kCopies); }, iters);
    const double gbs = st[0].bytes / (us * 1e-6) / 1e9;
    std::printf("  %-4s M %2lld N %5lld K %5lld %-34s err %.2e  %7.2f us  %6.0f GB/s  %3.0f%% of copy\n", tname<T>(), (long long)M,
                (long long)N, (long long)K, name, err, us, gbs, 100.0 * gbs / g_copy_bw);
  };
  cudaStream_t s0 = 0;
  if (g_pf && M == 1) {  // `pf` mode (session 4): L2 bulk prefetch of whole items, and PDL launches
    const bool split = K / 64 % (16 * 4) != 0, xregs = K / 64 == 16 * 4;
    {
      uint32_t* sink;
      CK(cudaMalloc(&sink, 4));
      const float t = time_us([&](int i) { stream_probe_kernel<4, 16, false><<<g_sms, 512>>>(st[i % kCopies].packed, N * K / 2, sink); }, iters);
      const double g = N * K / 2 / (t * 1e-6) / 1e9;
      std::printf("  %-4s M %2lld N %5lld K %5lld %-34s                %7.2f us  %6.0f GB/s  %3.0f%% of copy\n", tname<T>(), (long long)M,
                  (long long)N, (long long)K, "probe 1 CTA/SM L4 V16 stride", t, g, 100.0 * g / g_copy_bw);
      cudaFree(sink);
    }
#define LAB_PF_ROW(LABV, NAME)                                                                                                       \
  report(NAME " pf0", [&](int c) { launch_mma<T, 1, true, 4, LABV>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });                 \
  report(NAME " pf0 pdl", [&](int c) { launch_mma<T, 1, true, 4, LABV, 0, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });   \
  report(NAME " pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, LABV, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); }); \
  report(NAME " pf item0 pdl", [&](int c) { launch_mma<T, 1, true, 4, LABV, -2, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); })
    LAB_PF_ROW(kLabReadOnly, "mma read-only");
    if (split) {
      LAB_PF_ROW(kLabSplit, "mma split");
    } else {
      LAB_PF_ROW(0, "mma");
    }
    if (K / 64 % (kKP * 4) == 0 && K / 64 / kKP / 4 <= kMW && K / 64 / kKP / 4 >= 8)
      report("ks cluster of 4, x in registers, pdl", [&](int c) { launch_ks<T>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    if (split) {  // K = 14336: full groups only (no split code in the kernel), by 8 warps per tile or U = 2
      report("mma wpt8 pf0 pdl", [&](int c) { launch_mma<T, 1, true, 4, 0, 0, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma wpt8 pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, 0, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma wpt8 pf item0 pdl", [&](int c) { launch_mma<T, 1, true, 4, 0, -2, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma wpt8 pf 2 groups pdl", [&](int c) { launch_mma<T, 1, true, 4, 0, -3, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma wpt8 pf 4 groups pdl", [&](int c) { launch_mma<T, 1, true, 4, 0, -5, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma wpt8 pf 7 groups pdl", [&](int c) { launch_mma<T, 1, true, 4, 0, -8, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma U2 pf0 pdl", [&](int c) { launch_mma<T, 1, true, 2, 0, 0, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
      report("mma U2 pf first pdl", [&](int c) { launch_mma<T, 1, true, 2, 0, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
      report("mma wpt8 il read-only pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabReadOnly | kLabIl, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma wpt8 il pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabIl, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma wpt8 ring3 pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabRing3, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma wpt8 il ring3 pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabIl | kLabRing3, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma wpt8 read-only ring3 pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabReadOnly | kLabRing3, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
      report("mma split wpt8 pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabSplit, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 28); });
    } else {
      report("mma split pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabSplit, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    }
    if (xregs) {
      LAB_PF_ROW(kLabXRegs, "mma xregs");
      report("mma xregs ring3 pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabXRegs | kLabRing3, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
      report("mma read-only ring3 pf first pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabReadOnly | kLabRing3, -1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
      report("mma xregs pf 2 groups pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabXRegs, -3, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
      report("mma xregs pf 3 groups pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabXRegs, -4, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
      report("mma xregs pf 7 groups pdl", [&](int c) { launch_mma<T, 1, true, 4, kLabXRegs, -8, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    }
#undef LAB_PF_ROW
    for (auto& s : st) free_state(s);
    cudaFree(x), cudaFree(out), cudaFree(ref);
    return;
  }
  if (M == 1 && old_too) {
    uint32_t* sink;
    CK(cudaMalloc(&sink, 4));
    const int64_t n16 = N * K / 32;
    const float us = time_us([&](int i) { stream_read_kernel<<<g_sms * 4, 512>>>(reinterpret_cast<const uint4*>(st[i % kCopies].packed), n16, sink); }, iters);
    const double gbs = n16 * 16 / (us * 1e-6) / 1e9;
    std::printf("  %-4s M %2lld N %5lld K %5lld %-34s                %7.2f us  %6.0f GB/s  %3.0f%% of copy\n", tname<T>(), (long long)M,
                (long long)N, (long long)K, "stream read of packed (ceiling)", us, gbs, 100.0 * gbs / g_copy_bw);
    auto probe = [&](const char* name, auto kern, int ctas_per_sm) {
      const float t = time_us([&](int i) { kern<<<g_sms * ctas_per_sm, 512>>>(st[i % kCopies].packed, N * K / 2, sink); }, iters);
      const double g = N * K / 2 / (t * 1e-6) / 1e9;
      std::printf("  %-4s M %2lld N %5lld K %5lld %-34s                %7.2f us  %6.0f GB/s  %3.0f%% of copy\n", tname<T>(), (long long)M,
                  (long long)N, (long long)K, name, t, g, 100.0 * g / g_copy_bw);
    };
    probe("probe 1 CTA/SM L4 V16 stride", stream_probe_kernel<4, 16, false>, 1);
    probe("probe 1 CTA/SM L16 V16 stride", stream_probe_kernel<16, 16, false>, 1);
    probe("probe 1 CTA/SM L8 V8 stride", stream_probe_kernel<8, 8, false>, 1);
    probe("probe 4 CTA/SM L4 V16 blocked", stream_probe_kernel<4, 16, true>, 4);
    probe("probe 1 CTA/SM L4 V16 blocked", stream_probe_kernel<4, 16, true>, 1);
    probe("probe 1 CTA/SM L16 V16 blocked", stream_probe_kernel<16, 16, true>, 1);
    probe("probe 2 CTA/SM L4 V8 stride", stream_probe_kernel<4, 8, false>, 2);
    probe("probe 4 CTA/SM L1 V16 stride", stream_probe_kernel<1, 16, false>, 4);
    probe("probe 4 CTA/SM L2 V8 stride", stream_probe_kernel<2, 8, false>, 4);
    cudaFree(sink);
    report("diag U4 read-only", [&](int c) { launch_diag<T, true, false, true>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    report("diag U4", [&](int c) { launch_diag<T, true>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    report("diag U2", [&](int c) { launch_diag<T, true, false, false, 2>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    if (K <= 4096) report("diag U4 x in registers", [&](int c) { launch_diag<T, true, true>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    report("mma read-only, no prologue", [&](int c) { launch_mma<T, 1, true, 4, kLabBare>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    report("mma read-only, no prologue/scales", [&](int c) { launch_mma<T, 1, true, 4, kLabNoScale>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    report("mma read-only (no decode/MMA)", [&](int c) { launch_mma<T, 1, true, 4, kLabReadOnly>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
  }
  if (M == 1 && old_too) report("old m1 (shfl LUT, fp32 FMA)", [&](int c) { launch_old<T, true>(s0, out, x, args_of(st[c], bs), N, K, lut); });
  if (M == 1) {
    report("mma U4 (no split)", [&](int c) { launch_mma<T, 1, true, 4>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    if (K / 64 % (16 * 4) != 0)
      report("mma U4 split partial groups", [&](int c) { launch_mma<T, 1, true, 4, kLabSplit>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    if (K / 64 == 16 * 4)
      report("mma U4 x in registers", [&](int c) { launch_mma<T, 1, true, 4, kLabXRegs>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    for (const int spw : {1, 2, 4}) {
      char name[64];
      std::snprintf(name, sizeof name, "tma map W8 KS256 SPW%d read-only", spw);
      report(name, [&](int c) { launch_tma<T, true, 8, 8, true, false, 1>(s0, out, x, args_of(st[c], bs), N, K, lut, spw); });
      std::snprintf(name, sizeof name, "tma map W8 KS256 SPW%d", spw);
      report(name, [&](int c) { launch_tma<T, true, 8, 8, false, false, 1>(s0, out, x, args_of(st[c], bs), N, K, lut, spw); });
    }
    report("tma map W12 KS256 SPW2", [&](int c) { launch_tma<T, true, 12, 8, false, false, 1>(s0, out, x, args_of(st[c], bs), N, K, lut, 2); });
    report("tma map W16 KS256 SPW1", [&](int c) { launch_tma<T, true, 16, 8, false, false, 1>(s0, out, x, args_of(st[c], bs), N, K, lut, 1); });
    report("tma map W4 KS256 SPW4", [&](int c) { launch_tma<T, true, 4, 8, false, false, 1>(s0, out, x, args_of(st[c], bs), N, K, lut, 4); });
    report("tma row W8 KS512 SPW1", [&](int c) { launch_tma<T, true, 8, 16>(s0, out, x, args_of(st[c], bs), N, K, lut, 1); });
    if (K == 4096) {
      report("tma tile W4 SPW1 read-only", [&](int c) { launch_tma<T, true, 4, 64, true, false, 2>(s0, out, x, args_of(st[c], bs), N, K, lut, 1); });
      report("tma tile W2 SPW2 read-only", [&](int c) { launch_tma<T, true, 2, 64, true, false, 2>(s0, out, x, args_of(st[c], bs), N, K, lut, 2); });
    }
    report("mma interleaved chunks (+xregs)", [&](int c) { launch_il<T, 1, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    if (old_too) {
      report("v16 U2 read-only", [&](int c) { launch_v16<T, true, 2, 0, false, true>(s0, out, x, args_of(st[c], bs), N, K, lut); });
      report("async S4 read-only", [&](int c) { launch_async<T, true, 4, false, true>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    }
    report("v16 U2 lds", [&](int c) { launch_v16<T, true, 2, 0>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    report("v16 U2 prmt", [&](int c) { launch_v16<T, true, 2, 1>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    report("v16 U2 half", [&](int c) { launch_v16<T, true, 2, 2>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    report("async S4", [&](int c) { launch_async<T, true, 4>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    if (K / 128 <= 16 * 2) report("v16 U2 half xreg", [&](int c) { launch_v16<T, true, 2, 2, true>(s0, out, x, args_of(st[c], bs), N, K, lut); });
    else report("v16 U2 lds wpt8", [&](int c) { launch_v16<T, true, 2, 0>(s0, out, x, args_of(st[c], bs), N, K, lut, 3); });
  } else if (M <= 8) {
    report("mma MB8 U4 (gemm4bit.cu)", [&](int c) { launch_mma<T, 8, true, 4>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    report("mma MB8 U4 interleaved chunks", [&](int c) { launch_il<T, 8, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
  } else {
    report("mma MB16 U4 (gemm4bit.cu)", [&](int c) { launch_mma<T, 16, true, 4>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    report("mma MB16 U2", [&](int c) { launch_mma<T, 16, true, 2>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    report("mma MB16 U2 interleaved chunks", [&](int c) { launch_il<T, 16, true>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
    report("mma MB16 U4 interleaved chunks", [&](int c) { launch_il<T, 16, true, 4>(s0, out, x, args_of(st[c], bs), M, N, K, lut, 0); });
  }
  for (auto& s : st) free_state(s);
  cudaFree(x), cudaFree(out), cudaFree(ref);
}

// Correctness of the MMA kernel on odd shapes, blocksizes, FP4, plain absmax (one copy, no timing).
template <typename T, int MB>
void check_case(int64_t M, int64_t N, int64_t K, int bs, bool nested, bool fp4, int target, double& worst) {
  State s = make_state(N, K, bs, nested, 5 + static_cast<uint32_t>(N + K));
  T *x, *out;
  float* ref;
  CK(cudaMalloc(&x, M * K * sizeof(T)));
  CK(cudaMalloc(&out, M * N * sizeof(T)));
  CK(cudaMalloc(&ref, M * N * 4));
  fill_normal<T><<<256, 256>>>(x, M * K, 9);
  Lut16 lut;
  std::memcpy(lut.v, fp4 ? kFP4 : kNF4, sizeof lut.v);
  const WeightArgs w = args_of(s, bs);
  if (nested) ref_kernel<T, true><<<static_cast<unsigned>((M * N + 127) / 128), 128>>>(ref, x, w, M, N, K, lut);
  else ref_kernel<T, false><<<static_cast<unsigned>((M * N + 127) / 128), 128>>>(ref, x, w, M, N, K, lut);
  CK(cudaMemset(out, 0xff, M * N * sizeof(T)));
  const int64_t C = K / 64;
  if (nested && C >= 4 && MB == 1 && target == 8) launch_mma<T, MB, true, 4, kLabSplit>(0, out, x, w, M, N, K, lut, target);
  else if (nested && C >= 4) launch_mma<T, MB, true, 4>(0, out, x, w, M, N, K, lut, target);
  else if (nested && C >= 2) launch_mma<T, MB, true, 2>(0, out, x, w, M, N, K, lut, target);
  else if (nested) launch_mma<T, MB, true, 1>(0, out, x, w, M, N, K, lut, target);
  else if (C >= 4) launch_mma<T, MB, false, 4>(0, out, x, w, M, N, K, lut, target);
  else launch_mma<T, MB, false, 1>(0, out, x, w, M, N, K, lut, target);
  CK(cudaDeviceSynchronize());
  const double e = rel_err<T>(out, ref, M * N);
  worst = e > worst || e != e ? e : worst;
  if (!(e <= (std::is_same<T, __half>::value ? 4e-3 : 1.6e-2)))
    std::printf("  FAIL %s MB %d M %lld N %lld K %lld bs %d %s%s target %d: err %.2e\n", tname<T>(), MB, (long long)M, (long long)N,
                (long long)K, bs, fp4 ? "fp4" : "nf4", nested ? "+dq" : "", target, e);
  if (C >= 4) {  // the interleaved-chunks variant
    CK(cudaMemset(out, 0xff, M * N * sizeof(T)));
    if (nested) launch_il<T, MB, true>(0, out, x, w, M, N, K, lut, target);
    else launch_il<T, MB, false>(0, out, x, w, M, N, K, lut, target);
    CK(cudaDeviceSynchronize());
    const double e2 = rel_err<T>(out, ref, M * N);
    worst = e2 > worst || e2 != e2 ? e2 : worst;
    if (!(e2 <= (std::is_same<T, __half>::value ? 4e-3 : 1.6e-2)))
      std::printf("  FAIL interleaved %s MB %d M %lld N %lld K %lld bs %d %s%s target %d: err %.2e\n", tname<T>(), MB, (long long)M, (long long)N,
                  (long long)K, bs, fp4 ? "fp4" : "nf4", nested ? "+dq" : "", target, e2);
  }
  free_state(s);
  cudaFree(x), cudaFree(out), cudaFree(ref);
}

// Correctness of the v16 variants (M = 1) on one shape; returns the worst error over them (-1: none ran).
template <typename T>
double check_v16(int64_t N, int64_t K, int bs, bool nested, bool fp4) {
  State s = make_state(N, K, bs, nested, 11 + static_cast<uint32_t>(N + K));
  T *x, *out;
  float* ref;
  CK(cudaMalloc(&x, K * sizeof(T)));
  CK(cudaMalloc(&out, N * sizeof(T)));
  CK(cudaMalloc(&ref, N * 4));
  fill_normal<T><<<256, 256>>>(x, K, 9);
  Lut16 lut;
  std::memcpy(lut.v, fp4 ? kFP4 : kNF4, sizeof lut.v);
  const WeightArgs w = args_of(s, bs);
  if (nested) ref_kernel<T, true><<<static_cast<unsigned>((N + 127) / 128), 128>>>(ref, x, w, 1, N, K, lut);
  else ref_kernel<T, false><<<static_cast<unsigned>((N + 127) / 128), 128>>>(ref, x, w, 1, N, K, lut);
  double worst = -1.0;
  auto one = [&](const char* name, auto&& launch) {
    CK(cudaMemset(out, 0xff, N * sizeof(T)));
    if (!launch()) return;
    CK(cudaDeviceSynchronize());
    const double e = rel_err<T>(out, ref, N);
    worst = e > worst || e != e ? e : worst;
    if (!(e <= (std::is_same<T, __half>::value ? 4e-3 : 1.6e-2)))
      std::printf("  FAIL v16 %s %s N %lld K %lld bs %d %s%s: err %.2e\n", name, tname<T>(), (long long)N, (long long)K, bs,
                  fp4 ? "fp4" : "nf4", nested ? "+dq" : "", e);
  };
  for (int lg : {-1, 0, 2}) {
    if (nested) {
      one("U2 lds", [&] { return launch_v16<T, true, 2, 0>(0, out, x, w, N, K, lut, lg); });
      one("U2 prmt", [&] { return launch_v16<T, true, 2, 1>(0, out, x, w, N, K, lut, lg); });
      one("U2 half", [&] { return launch_v16<T, true, 2, 2>(0, out, x, w, N, K, lut, lg); });
      one("U4 half", [&] { return launch_v16<T, true, 4, 2>(0, out, x, w, N, K, lut, lg); });
      one("U2 half xreg", [&] { return launch_v16<T, true, 2, 2, true>(0, out, x, w, N, K, lut, lg); });
      one("U2 prmt xreg", [&] { return launch_v16<T, true, 2, 1, true>(0, out, x, w, N, K, lut, lg); });
    } else {
      one("U2 lds", [&] { return launch_v16<T, false, 2, 0>(0, out, x, w, N, K, lut, lg); });
      one("U2 prmt", [&] { return launch_v16<T, false, 2, 1>(0, out, x, w, N, K, lut, lg); });
      one("U2 half", [&] { return launch_v16<T, false, 2, 2>(0, out, x, w, N, K, lut, lg); });
      one("U2 half xreg", [&] { return launch_v16<T, false, 2, 2, true>(0, out, x, w, N, K, lut, lg); });
    }
    if (nested) {
      one("async S4", [&] { return launch_async<T, true, 4>(0, out, x, w, N, K, lut, lg); });
      one("async S5", [&] { return launch_async<T, true, 5>(0, out, x, w, N, K, lut, lg); });
      one("async S4 xreg", [&] { return launch_async<T, true, 4, true>(0, out, x, w, N, K, lut, lg); });
    } else {
      one("async S4", [&] { return launch_async<T, false, 4>(0, out, x, w, N, K, lut, lg); });
      one("async S4 xreg", [&] { return launch_async<T, false, 4, true>(0, out, x, w, N, K, lut, lg); });
    }
  }
  free_state(s);
  cudaFree(x), cudaFree(out), cudaFree(ref);
  return worst;
}

template <typename T>
void check_all() {
  double worst = 0.0;
  const int64_t shapes[][3] = {{21, 14336, 64}, {256, 1024, 64}, {100, 2048, 128}, {40, 3072, 4096}, {48, 1088, 64},
                               {9, 64, 64},     {37, 4160, 256}, {130, 192, 64},   {1000, 512, 64}};
  for (const auto& sh : shapes) {
    for (int nested = 0; nested < 2; ++nested) {
      for (int target : {0, 8}) {
        const bool fp4 = (sh[0] & 1) != 0;
        check_case<T, 1>(1, sh[0], sh[1], static_cast<int>(sh[2]), nested != 0, fp4, target, worst);
        check_case<T, 8>(3, sh[0], sh[1], static_cast<int>(sh[2]), nested != 0, !fp4, target, worst);
        check_case<T, 16>(13, sh[0], sh[1], static_cast<int>(sh[2]), nested != 0, fp4, target, worst);
      }
    }
  }
  std::printf("  %s odd shapes / bs / fp4 / plain absmax, MB 1/8/16: worst rel err %.2e\n", tname<T>(), worst);
  double wv = -1.0;
  const int64_t vshapes[][3] = {{21, 14336, 64}, {256, 1024, 64}, {100, 2048, 128}, {40, 3072, 4096}, {37, 384, 64},
                                {1000, 512, 64}, {17, 640, 128}, {300, 4096, 256}, {9, 256, 64}};
  for (const auto& sh : vshapes)
    for (int nested = 0; nested < 2; ++nested) {
      const double e = check_v16<T>(sh[0], sh[1], static_cast<int>(sh[2]), nested != 0, ((sh[0] + nested) & 1) != 0);
      wv = e > wv || e != e ? e : wv;
    }
  std::printf("  %s v16 variants, odd shapes / bs / fp4 / plain absmax: worst rel err %.2e\n", tname<T>(), wv);
}

__global__ void empty_kernel() {}



}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "quick") == 0;
  const bool prof = argc > 1 && std::strcmp(argv[1], "prof") == 0;  // for ncu: one shape, few launches, no copy
  g_narrow_codes = argc > 2 && std::strcmp(argv[2], "narrowq") == 0;  // e.g. `quick narrowq`
  g_pf = argc > 1 && std::strcmp(argv[1], "pf") == 0;               // L2 prefetch / PDL variants, bf16 M = 1
  g_pool = std::getenv("LAB_POOL") != nullptr && std::strcmp(std::getenv("LAB_POOL"), "1") == 0;
  if (g_pool) {  // keep freed pool memory, as the addon's allocator does
    cudaMemPool_t pool;
    CK(cudaDeviceGetDefaultMemPool(&pool, 0));
    uint64_t keep = UINT64_MAX;
    CK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    std::printf("weights from the stream-ordered pool\n");
  }

  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, 0));
  g_sms = p.multiProcessorCount;
  std::printf("%s, %d SMs\n", p.name, g_sms);
  if (prof) {  // each `pf` variant launched once per shape (checked, not timed): for ncu -k regex:gemv4_mma
    g_copy_bw = 1.0;
    g_prof = true;
    g_pf = true;
    bench_shape<__nv_bfloat16>(1, 4096, 14336, false, true);
    bench_shape<__nv_bfloat16>(1, 14336, 4096, false, true);
    return 0;
  }
  {
    const size_t n = size_t{1} << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    const float us = time_us([&](int) { CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice)); }, 10);
    g_copy_bw = 2.0 * n / (us * 1e-6) / 1e9;
    std::printf("copy 1 GiB D2D: %.1f us, %.0f GB/s read + written\n", us, g_copy_bw);
    cudaFree(a), cudaFree(b);
    std::printf("empty kernel back to back: %.2f us\n", time_us([&](int) { empty_kernel<<<132, 512>>>(); }, 2000));
  }
  if (!g_pf) {
    std::printf("correctness (MMA kernel vs reference):\n");
    check_all<__nv_bfloat16>();
    check_all<__half>();
  }
  std::printf("benchmarks (NF4 + double quant, bs 64, %d rotating copies):\n", kCopies);
  for (const auto nk : {std::pair<int64_t, int64_t>{4096, 14336}, std::pair<int64_t, int64_t>{14336, 4096}}) {
    bench_shape<__nv_bfloat16>(1, nk.first, nk.second, true, true);
    if (!quick && !g_pf) {
      bench_shape<__half>(1, nk.first, nk.second, true, true);
      bench_shape<__nv_bfloat16>(4, nk.first, nk.second, true, false);
      bench_shape<__nv_bfloat16>(16, nk.first, nk.second, true, false);
    }
  }
  return 0;
}
