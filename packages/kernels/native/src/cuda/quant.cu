// CUDA blockwise quantizers of quant_kernels.h: NF4/FP4 quantize / dequantize, nested-absmax dequant, 8-bit blockwise
// quantize / dequantize. Byte- and bit-identical to cpu/quant.cc: absmax is an fmaxf reduction from -FLT_MAX (NaN
// skipped, padding never counted), r = cuda_reciprocal(absmax) (bitsandbytes' fast-math reciprocal, the same function
// and tables as the CPU, ../cuda_reciprocal.h), xs = __fmul_rn(x, r) (never contracted), the 4-bit codes by the same
// thresholds and the 8-bit codes by the CUDA binary search of spec §11.2. The library is compiled without fast math,
// so products keep subnormals as on the CPU.
//
// Work split: every thread owns 8 consecutive elements (one 16-byte load of 16-bit input, two of float32); a
// quantization block of bs elements is a group of bs / 8 threads (4 .. 512), reduced with warp shuffles inside a warp
// and through shared memory across warps. Vector loads / stores are used only where the pointers are aligned.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstring>
#include <string>

#include "../cuda_reciprocal.h"
#include "common.cuh"
#include "quant_kernels.h"

namespace lowbit::cuda::quant {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kPer = 8;  // elements per thread

// The reciprocal's correction tables (cuda_reciprocal.h); every thread of a group reads the same entry.
__constant__ uint8_t c_rcp_up[128] = {LOWBIT_RCP_UP_BYTES};
__constant__ uint8_t c_rcp_down[128] = {LOWBIT_RCP_DOWN_BYTES};

// Up to 16 floats passed by value as a kernel parameter (codebooks, thresholds), copied to shared memory on entry.
struct Table16 {
  float v[16];
};

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The CPU codebooks (cpu/quant.cc) are the one source of the 4-bit values.
Table16 lut_table(cpu::QuantType t) {
  Table16 r{};
  const float* p = cpu::lut4(t);
  for (int i = 0; i < 16; ++i) r.v[i] = p[i];
  return r;
}

// Decision thresholds (spec §3.2, §3.3) as fp32 bit patterns, identical to cpu/quant.cc: NF4 the 15 midpoints, FP4 the
// 7 CUDA source literals. Unused entries are never read.
Table16 threshold_table(cpu::QuantType t) {
  static const uint32_t nf4[15] = {0xbf591cd8u, 0xbf1c5270u, 0xbeeb8480u, 0xbeadea76u, 0xbe703cecu,
                                   0xbe0d38bcu, 0xbd3a7871u, 0x3d22faffu, 0x3df64862u, 0x3e5067e0u,
                                   0x3e9582d4u, 0x3ec753f9u, 0x3f006d04u, 0x3f248dafu, 0x3f5c89dau};
  static const uint32_t fp4[7] = {0x3b2aaab9u, 0x3db00000u, 0x3e555555u, 0x3e955555u, 0x3ed55556u, 0x3f155550u, 0x3f555555u};
  Table16 r{};
  if (t == cpu::QuantType::NF4) {
    for (int i = 0; i < 15; ++i) r.v[i] = bits_to_float(nf4[i]);
  } else {
    for (int i = 0; i < 7; ++i) r.v[i] = bits_to_float(fp4[i]);
  }
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

// ---- 8-element loads and stores (p + i must be 16-byte aligned) ----------------------------------------------------

__device__ __forceinline__ void load8(const float* p, float (&v)[kPer]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[kPer]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    v[2 * j] = __uint_as_float(w[j] << 16);  // little-endian: the lower half is the earlier element
    v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
  }
}
__device__ __forceinline__ void load8(const __half* p, float (&v)[kPer]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    __half2 h;
    std::memcpy(&h, &w[j], 4);
    const float2 f = __half22float2(h);
    v[2 * j] = f.x;
    v[2 * j + 1] = f.y;
  }
}

__device__ __forceinline__ void store8(float* p, const float (&v)[kPer]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  *reinterpret_cast<float4*>(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
}
template <typename T>
__device__ __forceinline__ void store8(T* p, const float (&v)[kPer]) {
  uint32_t w[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const T lo = from_f<T>(v[2 * j]), hi = from_f<T>(v[2 * j + 1]);
    uint16_t a, b;
    std::memcpy(&a, &lo, 2);
    std::memcpy(&b, &hi, 2);
    w[j] = static_cast<uint32_t>(a) | (static_cast<uint32_t>(b) << 16);
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// ---- codes ---------------------------------------------------------------------------------------------------------

// NF4: the number of thresholds below s (strict), as a 4-step search over the 15 sorted thresholds; NaN gives 0.
__device__ __forceinline__ uint32_t nf4_code(float s, const float* thr) {
  uint32_t c = 0;
  c += s > thr[c + 7] ? 8u : 0u;
  c += s > thr[c + 3] ? 4u : 0u;
  c += s > thr[c + 1] ? 2u : 0u;
  c += s > thr[c] ? 1u : 0u;
  return c;
}
// FP4: sign bit for s < 0 (so -0.0 and NaN are positive), magnitude code by the count c of thresholds below |s| mapped
// through FP4_MAG_CODE = 0,1,6,7,4,5,2,3, i.e. (((4 - c/2) & 3) << 1) | (c & 1) (as cpu/quant.cc).
__device__ __forceinline__ uint32_t fp4_code(float s, const float* thr) {
  const float m = fabsf(s);
  uint32_t c = 0;
  c += m > thr[c + 3] ? 4u : 0u;
  c += m > thr[c + 1] ? 2u : 0u;
  c += m > thr[c] ? 1u : 0u;
  const uint32_t mag = (((4u - (c >> 1)) & 3u) << 1) | (c & 1u);
  return (s < 0.0f ? 8u : 0u) | mag;
}
// 8-bit: the CUDA search of spec §11.2, literally (code in shared memory, sorted ascending). Exact midpoint ties stay
// on the even pivot; NaN walks down to code 0.
__device__ __forceinline__ uint32_t code8(float xs, const float* code) {
  int pivot = 127, lower = 0, upper = 255;
#pragma unroll
  for (int step = 64; step >= 1; step >>= 1) {
    if (xs > code[pivot]) {
      lower = pivot;
      pivot += step;
    } else {
      upper = pivot;
      pivot -= step;
    }
  }
  const float val = code[pivot];
  if (xs > val) {
    const float mid = __fmul_rn(__fadd_rn(code[upper], val), 0.5f);
    return static_cast<uint32_t>(xs > mid ? upper : pivot);
  }
  const float mid = __fmul_rn(__fadd_rn(code[lower], val), 0.5f);
  return static_cast<uint32_t>(xs < mid ? lower : pivot);
}

// ---- quantize ------------------------------------------------------------------------------------------------------

enum Kind : int { kNF4 = 0, kFP4 = 1, kEight = 2 };

// x (n,) -> out codes (4-bit packed (ceil(n/2),) or 8-bit (n,)) and absmax (n_blocks,). Block size 2^lg_bs; a group of
// 2^lg_group = bs / 8 threads per quantization block; blockDim.x = max(256, group). `table` holds the 4-bit thresholds,
// `code` (device, 256 floats) the 8-bit code. vec_in: x is 16-byte aligned; vec_out: out is aligned for a 4-byte
// (4-bit) or 8-byte (8-bit) store of one thread's codes.
template <typename T, int KIND>
__global__ void __launch_bounds__(512) quantize_kernel(uint8_t* __restrict__ out, float* __restrict__ absmax,
                                                       const T* __restrict__ x, int64_t n, int64_t n_blocks, int lg_bs,
                                                       int lg_group, bool vec_in, bool vec_out, Table16 table,
                                                       const float* __restrict__ code) {
  __shared__ float s_tab[256];  // 4-bit thresholds or the 8-bit code
  __shared__ float s_red[16];   // per-warp maxima of groups wider than a warp (<= 512 threads)
  if (KIND == kEight) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_tab[i] = code[i];
  } else if (threadIdx.x < 16) {
    s_tab[threadIdx.x] = table.v[threadIdx.x];
  }
  __syncthreads();
  const int group = 1 << lg_group;
  const int per_cta = blockDim.x >> lg_group;  // quantization blocks per CUDA block
  const int g = threadIdx.x >> lg_group, t = threadIdx.x & (group - 1);
  // Uniform loop: every thread of the CUDA block runs the same iterations (the reductions synchronize).
  for (int64_t b0 = static_cast<int64_t>(blockIdx.x) * per_cta; b0 < n_blocks; b0 += static_cast<int64_t>(gridDim.x) * per_cta) {
    const int64_t b = b0 + g;
    const int64_t i = (b << lg_bs) + static_cast<int64_t>(t) * kPer;  // this thread's first element
    const bool active = b < n_blocks && i < n;
    const int valid = active ? static_cast<int>(n - i < kPer ? n - i : kPer) : 0;
    float v[kPer];
    float am = -FLT_MAX;
    if (valid == kPer && vec_in) {
      load8(x + i, v);
    } else {
#pragma unroll
      for (int j = 0; j < kPer; ++j) v[j] = j < valid ? to_f(x[i + j]) : 0.0f;  // zero padding (only its code is used)
    }
#pragma unroll
    for (int j = 0; j < kPer; ++j)
      if (j < valid) am = fmaxf(am, fabsf(v[j]));  // fmaxf skips NaN
    // Groups of up to 32 threads are aligned lane ranges of one warp: xor butterflies stay inside them.
    for (int o = (group < 32 ? group : 32) >> 1; o > 0; o >>= 1) am = fmaxf(am, __shfl_xor_sync(kFull, am, o));
    if (group > 32) {
      __syncthreads();  // the previous iteration's reads of s_red are done
      if ((threadIdx.x & 31) == 0) s_red[threadIdx.x >> 5] = am;
      __syncthreads();
      const int wpg = group >> 5, w0 = g * wpg;
      am = s_red[w0];
      for (int k = 1; k < wpg; ++k) am = fmaxf(am, s_red[w0 + k]);
    }
    if (!active) continue;
    if (t == 0) absmax[b] = am;
    // +inf for an all-zero block, so 0 * r = NaN -> code 0 (spec P2)
    const float r = cuda_reciprocal(am, c_rcp_up, c_rcp_down);
    if (KIND == kEight) {
      uint32_t c[kPer];
#pragma unroll
      for (int j = 0; j < kPer; ++j) c[j] = code8(__fmul_rn(v[j], r), s_tab);
      uint8_t* dst = out + i;
      if (valid == kPer && vec_out) {
        *reinterpret_cast<uint2*>(dst) = make_uint2(c[0] | (c[1] << 8) | (c[2] << 16) | (c[3] << 24),
                                                    c[4] | (c[5] << 8) | (c[6] << 16) | (c[7] << 24));
      } else {
#pragma unroll
        for (int j = 0; j < kPer; ++j)  // constant indices keep c[] in registers
          if (j < valid) dst[j] = static_cast<uint8_t>(c[j]);
      }
    } else {
      uint32_t word = 0;  // byte k = code[2k] << 4 | code[2k+1]; the zero padding codes as fp32(0 * r) (odd n)
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const float s = __fmul_rn(v[j], r);
        const uint32_t c = KIND == kNF4 ? nf4_code(s, s_tab) : fp4_code(s, s_tab);
        word |= c << (8 * (j >> 1) + ((j & 1) ? 0 : 4));
      }
      uint8_t* dst = out + (i >> 1);
      if (valid == kPer && vec_out) {
        *reinterpret_cast<uint32_t*>(dst) = word;
      } else {
        const int nbytes = (valid + 1) >> 1;
#pragma unroll
        for (int k = 0; k < kPer / 2; ++k)
          if (k < nbytes) dst[k] = static_cast<uint8_t>(word >> (8 * k));
      }
    }
  }
}

template <int KIND>
void launch_quantize(int device, uint8_t* out, float* absmax, const void* x, DType dtype, int64_t n, int64_t bs,
                     const Table16& table, const float* code, const char* op) {
  if (n <= 0) return;
  const int64_t n_blocks = (n + bs - 1) / bs;
  const int lg_bs = log2_exact(bs);
  const int lg_group = lg_bs - 3;  // bs / 8 threads per block (bs >= 32)
  const int group = 1 << lg_group;
  const int threads = group > 256 ? group : 256;
  const int per_cta = threads / group;
  int64_t grid = (n_blocks + per_cta - 1) / per_cta;
  if (grid > (int64_t{1} << 20)) grid = int64_t{1} << 20;  // grid-stride beyond
  const bool vec_in = aligned(x, 16);
  const bool vec_out = aligned(out, KIND == kEight ? 8 : 4);
  cudaStream_t s = stream(device);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    quantize_kernel<T, KIND><<<static_cast<unsigned>(grid), threads, 0, s>>>(out, absmax, static_cast<const T*>(x), n, n_blocks,
                                                                              lg_bs, lg_group, vec_in, vec_out, table, code);
  });
  check_launch(op);
}

// ---- dequantize ----------------------------------------------------------------------------------------------------

// out (n,) = T(fp32(LUT[code] * absmax[i >> lg_bs])), 8 elements (4 packed bytes) per thread.
template <typename T>
__global__ void dequantize4_kernel(T* __restrict__ out, const uint8_t* __restrict__ packed, const float* __restrict__ absmax,
                                   int64_t n, int lg_bs, bool vec_in, bool vec_out, Table16 lut) {
  __shared__ float s_lut[16];
  if (threadIdx.x < 16) s_lut[threadIdx.x] = lut.v[threadIdx.x];
  __syncthreads();
  const int64_t chunks = (n + kPer - 1) / kPer;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = c * kPer;
    const int valid = static_cast<int>(n - i < kPer ? n - i : kPer);
    const float am = absmax[i >> lg_bs];  // 8 elements never straddle a block (bs >= 32)
    uint32_t w = 0;
    if (valid == kPer && vec_in) {
      w = __ldcs(reinterpret_cast<const unsigned int*>(packed + c * 4));
    } else {
#pragma unroll
      for (int k = 0; k < kPer / 2; ++k)
        if (k < (valid + 1) >> 1) w |= static_cast<uint32_t>(packed[c * 4 + k]) << (8 * k);
    }
    float v[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) v[j] = __fmul_rn(s_lut[(w >> (8 * (j >> 1) + ((j & 1) ? 0 : 4))) & 15u], am);
    if (valid == kPer && vec_out) {
      store8(out + i, v);
    } else {
#pragma unroll
      for (int j = 0; j < kPer; ++j)  // constant indices keep v[] in registers
        if (j < valid) out[i + j] = from_f<T>(v[j]);
    }
  }
}

// out (n,) = T(fp32(code[q] * absmax[i >> lg_bs])), 8 codes per thread.
template <typename T>
__global__ void dequantize8_kernel(T* __restrict__ out, const uint8_t* __restrict__ codes, const float* __restrict__ absmax,
                                   const float* __restrict__ code, int64_t n, int lg_bs, bool vec_in, bool vec_out) {
  __shared__ float s_code[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) s_code[i] = code[i];
  __syncthreads();
  const int64_t chunks = (n + kPer - 1) / kPer;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = c * kPer;
    const int valid = static_cast<int>(n - i < kPer ? n - i : kPer);
    const float am = absmax[i >> lg_bs];  // bs >= 64
    uint32_t q[kPer];
    if (valid == kPer && vec_in) {
      const uint2 u = __ldcs(reinterpret_cast<const uint2*>(codes + i));
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        q[j] = (u.x >> (8 * j)) & 255u;
        q[j + 4] = (u.y >> (8 * j)) & 255u;
      }
    } else {
#pragma unroll
      for (int j = 0; j < kPer; ++j) q[j] = j < valid ? codes[i + j] : 0u;
    }
    float v[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) v[j] = __fmul_rn(s_code[q[j]], am);
    if (valid == kPer && vec_out) {
      store8(out + i, v);
    } else {
#pragma unroll
      for (int j = 0; j < kPer; ++j)  // constant indices keep v[] in registers
        if (j < valid) out[i + j] = from_f<T>(v[j]);
    }
  }
}

// out (nb,) = fp32(fp32(code[q] * nested[i >> lg]) + offset): two roundings that must not fuse into an FMA.
__global__ void nested_absmax_kernel(float* __restrict__ out, const uint8_t* __restrict__ q, const float* __restrict__ nested,
                                     const float* __restrict__ code, float offset, int64_t nb, int lg) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < nb; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __fadd_rn(__fmul_rn(__ldg(code + q[i]), nested[i >> lg]), offset);
  }
}

constexpr int kThreads = 256;

}  // namespace

void quantize4bit(int device, uint8_t* packed, float* absmax, const void* x, DType dtype, int64_t n, int64_t blocksize,
                  cpu::QuantType type) {
  const Table16 thr = threshold_table(type);
  if (type == cpu::QuantType::NF4) launch_quantize<kNF4>(device, packed, absmax, x, dtype, n, blocksize, thr, nullptr, "quantize4bit");
  else launch_quantize<kFP4>(device, packed, absmax, x, dtype, n, blocksize, thr, nullptr, "quantize4bit");
}

void quantize_blockwise8(int device, uint8_t* codes, float* absmax, const void* x, DType dtype, int64_t n, int64_t blocksize,
                         const float* code) {
  launch_quantize<kEight>(device, codes, absmax, x, dtype, n, blocksize, Table16{}, code, "quantizeBlockwise8");
}

void dequantize4bit(int device, void* out, DType out_dtype, const uint8_t* packed, const float* absmax, int64_t n,
                    int64_t blocksize, cpu::QuantType type) {
  if (n <= 0) return;
  cudaStream_t s = stream(device);
  const Table16 lut = lut_table(type);
  const unsigned grid = grid_for((n + kPer - 1) / kPer, kThreads);
  const bool vec_in = aligned(packed, 4), vec_out = aligned(out, 16);
  dispatch_float(out_dtype, [&](auto tag) {
    using T = decltype(tag);
    dequantize4_kernel<T><<<grid, kThreads, 0, s>>>(static_cast<T*>(out), packed, absmax, n, log2_exact(blocksize), vec_in,
                                                    vec_out, lut);
  });
  check_launch("dequantize4bit");
}

void dequantize_blockwise8(int device, void* out, DType out_dtype, const uint8_t* codes, const float* absmax, const float* code,
                           int64_t n, int64_t blocksize) {
  if (n <= 0) return;
  cudaStream_t s = stream(device);
  const unsigned grid = grid_for((n + kPer - 1) / kPer, kThreads);
  const bool vec_in = aligned(codes, 8), vec_out = aligned(out, 16);
  dispatch_float(out_dtype, [&](auto tag) {
    using T = decltype(tag);
    dequantize8_kernel<T><<<grid, kThreads, 0, s>>>(static_cast<T*>(out), codes, absmax, code, n, log2_exact(blocksize), vec_in,
                                                    vec_out);
  });
  check_launch("dequantizeBlockwise8");
}

void dequantize_nested_absmax(int device, float* out, const uint8_t* qabsmax, const float* nested_absmax, const float* code,
                              float offset, int64_t n_blocks, int64_t nested_blocksize) {
  if (n_blocks <= 0) return;
  cudaStream_t s = stream(device);
  nested_absmax_kernel<<<grid_for(n_blocks, kThreads), kThreads, 0, s>>>(out, qabsmax, nested_absmax, code, offset, n_blocks,
                                                                          log2_exact(nested_blocksize));
  check_launch("dequantizeNestedAbsmax");
}

}  // namespace lowbit::cuda::quant
