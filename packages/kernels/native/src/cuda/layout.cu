// CUDA layout kernels (layout.h): `cast` between every pair of non-packed dtypes and N-d `copyStrided`.
// The conversions are bit-for-bit ports of the CPU ones in bind_core.cc (integer bit manipulation, no CUDA
// conversion intrinsics, whose NaN payloads and saturation differ), so both backends give identical bytes.
// Byte offsets are arbitrary: kernels use whole-element loads when both pointers are aligned to their
// element sizes and byte-wise loads otherwise.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "common.cuh"
#include "layout.h"

namespace lowbit::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint32_t fbits(float f) { return __float_as_uint(f); }
__device__ __forceinline__ float bitsf(uint32_t u) { return __uint_as_float(u); }

// ---- scalar conversions (mirrors of dtype.h and bind_core.cc) --------------------------------------------

__device__ __forceinline__ uint16_t d_f32_to_bf16(float f) {
  uint32_t u = fbits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
__device__ __forceinline__ float d_bf16_to_f32(uint16_t h) { return bitsf(static_cast<uint32_t>(h) << 16); }

__device__ __forceinline__ uint16_t d_f32_to_f16(float f) {
  uint32_t u = fbits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);                          // >= 65520 -> inf
  if (a < 0x38800000u) {                                                                       // subnormal or zero
    float v = __fmul_rn(bitsf(a), 16777216.0f);  // exact: scales by a power of two
    float r = rintf(v);                          // nearest even
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(r));
  }
  uint32_t m = a + 0xfffu + ((a >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((m - 0x38000000u) >> 13));
}
__device__ __forceinline__ float d_f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    float v = __fmul_rn(static_cast<float>(m), 5.9604644775390625e-8f);  // m * 2^-24, exact
    return bitsf(fbits(v) | sign);
  }
  if (e == 31) return bitsf(sign | 0x7f800000u | (m << 13));
  return bitsf(sign | ((e + 112u) << 23) | (m << 13));
}

// float32 -> float8_e4m3fn, saturating (torch 2.x tensor cast): |x| >= 448 and inf -> ±448, NaN -> 0x7f.
__device__ __forceinline__ uint8_t d_f32_to_e4m3fn(float f) {
  constexpr uint32_t kMaxFinite = 0x43e00000u;  // 448.0f
  constexpr uint32_t kDenormMask = 141u << 23;
  uint32_t bits = fbits(f);
  const uint32_t sign = bits & 0x80000000u;
  bits ^= sign;
  uint8_t result;
  if (bits > 0x7f800000u) {
    result = 0x7f;
  } else if (bits >= kMaxFinite) {
    result = 0x7e;
  } else if (bits < (121u << 23)) {
    bits = fbits(__fadd_rn(bitsf(bits), bitsf(kDenormMask)));  // FPU rounds the subnormal mantissa (RNE)
    result = static_cast<uint8_t>(bits - kDenormMask);
  } else {
    uint32_t mant_odd = (bits >> 20) & 1u;
    bits += (static_cast<uint32_t>(7 - 127) << 23) + 0x7ffffu;
    bits += mant_odd;
    result = static_cast<uint8_t>(bits >> 20);
  }
  return static_cast<uint8_t>(result | (sign >> 24));
}
__device__ __forceinline__ float d_e4m3fn_to_f32(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  const uint32_t exp = (b >> 3) & 0xfu, mant = b & 0x7u;
  if ((b & 0x7fu) == 0x7fu) return bitsf(sign | 0x7fc00000u);
  if (exp == 0) return bitsf(fbits(__fmul_rn(static_cast<float>(mant), 0.001953125f)) | sign);  // mant * 2^-9
  return bitsf(sign | ((exp + 120u) << 23) | (mant << 20));
}

// float32 -> float8_e5m2 (IEEE-like: overflow -> inf, NaN -> 0x7f).
__device__ __forceinline__ uint8_t d_f32_to_e5m2(float f) {
  constexpr uint32_t kInf = 255u << 23;
  constexpr uint32_t kInfThreshold = 143u << 23;  // 65536.0f
  constexpr uint32_t kDenormMask = 134u << 23;
  uint32_t bits = fbits(f);
  const uint32_t sign = bits & 0x80000000u;
  bits ^= sign;
  uint8_t result;
  if (bits >= kInfThreshold) {
    result = bits > kInf ? 0x7f : 0x7c;
  } else if (bits < (113u << 23)) {
    bits = fbits(__fadd_rn(bitsf(bits), bitsf(kDenormMask)));
    result = static_cast<uint8_t>(bits - kDenormMask);
  } else {
    uint32_t mant_odd = (bits >> 21) & 1u;
    bits += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffffu;
    bits += mant_odd;
    result = static_cast<uint8_t>(bits >> 21);
  }
  return static_cast<uint8_t>(result | (sign >> 24));
}
__device__ __forceinline__ float d_e5m2_to_f32(uint8_t b) { return d_f16_to_f32(static_cast<uint16_t>(b) << 8); }

// int64 -> float32 rounded to odd, so a second rounding to a <= 22-bit significand is one correct RNE.
__device__ __forceinline__ float d_i64_to_f32_round_odd(int64_t v) {
  uint64_t m = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  float f;
  if (m < (uint64_t{1} << 24)) {
    f = static_cast<float>(m);
  } else {
    int k = (64 - __clzll(static_cast<long long>(m))) - 24;
    uint64_t q = m >> k;
    if ((m & ((uint64_t{1} << k) - 1)) != 0) q |= 1u;
    f = ldexpf(static_cast<float>(q), k);
  }
  return v < 0 ? -f : f;
}

// Float -> integer: truncate toward zero, NaN -> 0, saturate out of range.
template <typename T>
__device__ __forceinline__ T d_f32_to_int(float v) {
  if (isnan(v)) return 0;
  const double d = trunc(static_cast<double>(v));
  if (d <= static_cast<double>(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
  if (d >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  return static_cast<T>(d);
}

// ---- per-dtype element traits ------------------------------------------------------------------------------
template <DType D> struct Elem;
template <> struct Elem<DType::Float32> { using T = float; static constexpr bool kFloat = true; };
template <> struct Elem<DType::Float16> { using T = uint16_t; static constexpr bool kFloat = true; };
template <> struct Elem<DType::BFloat16> { using T = uint16_t; static constexpr bool kFloat = true; };
template <> struct Elem<DType::Float8E4M3FN> { using T = uint8_t; static constexpr bool kFloat = true; };
template <> struct Elem<DType::Float8E5M2> { using T = uint8_t; static constexpr bool kFloat = true; };
template <> struct Elem<DType::Int8> { using T = int8_t; static constexpr bool kFloat = false; };
template <> struct Elem<DType::UInt8> { using T = uint8_t; static constexpr bool kFloat = false; };
template <> struct Elem<DType::Int16> { using T = int16_t; static constexpr bool kFloat = false; };
template <> struct Elem<DType::Int32> { using T = int32_t; static constexpr bool kFloat = false; };
template <> struct Elem<DType::Int64> { using T = int64_t; static constexpr bool kFloat = false; };
template <> struct Elem<DType::Bool> { using T = uint8_t; static constexpr bool kFloat = false; };

template <DType S>
__device__ __forceinline__ float to_f32(typename Elem<S>::T x) {
  if constexpr (S == DType::Float32) return x;
  else if constexpr (S == DType::Float16) return d_f16_to_f32(x);
  else if constexpr (S == DType::BFloat16) return d_bf16_to_f32(x);
  else if constexpr (S == DType::Float8E4M3FN) return d_e4m3fn_to_f32(x);
  else return d_e5m2_to_f32(x);
}

template <DType S>
__device__ __forceinline__ int64_t to_i64(typename Elem<S>::T x) {
  if constexpr (S == DType::Bool) return x != 0 ? 1 : 0;
  else return static_cast<int64_t>(x);
}

template <DType D>
__device__ __forceinline__ typename Elem<D>::T from_f32(float v) {
  if constexpr (D == DType::Float32) return v;
  else if constexpr (D == DType::Float16) return d_f32_to_f16(v);
  else if constexpr (D == DType::BFloat16) return d_f32_to_bf16(v);
  else if constexpr (D == DType::Float8E4M3FN) return d_f32_to_e4m3fn(v);
  else if constexpr (D == DType::Float8E5M2) return d_f32_to_e5m2(v);
  else if constexpr (D == DType::Bool) return v != 0.0f ? 1 : 0;  // NaN is true, as in torch
  else return d_f32_to_int<typename Elem<D>::T>(v);
}

template <DType D>
__device__ __forceinline__ typename Elem<D>::T from_i64(int64_t v) {
  using T = typename Elem<D>::T;
  if constexpr (D == DType::Float32) return __ll2float_rn(v);  // one RNE rounding
  else if constexpr (Elem<D>::kFloat) return from_f32<D>(d_i64_to_f32_round_odd(v));
  else if constexpr (D == DType::Bool) return v != 0 ? 1 : 0;
  else return static_cast<T>(static_cast<std::make_unsigned_t<T>>(static_cast<uint64_t>(v)));  // wraps
}

// ---- element access at any byte offset ---------------------------------------------------------------------

// One element of T at byte address p; byte-wise when `aligned` is false (arbitrary storage offsets).
template <typename T>
__device__ __forceinline__ T load_elem(const uint8_t* p, bool aligned) {
  if (aligned) return *reinterpret_cast<const T*>(p);
  uint64_t v = 0;
#pragma unroll
  for (int k = 0; k < static_cast<int>(sizeof(T)); ++k) v |= static_cast<uint64_t>(p[k]) << (8 * k);
  T out;
  memcpy(&out, &v, sizeof(T));  // little-endian: the low sizeof(T) bytes of v
  return out;
}
template <typename T>
__device__ __forceinline__ void store_elem(uint8_t* p, T x, bool aligned) {
  if (aligned) {
    *reinterpret_cast<T*>(p) = x;
    return;
  }
  uint64_t v = 0;
  memcpy(&v, &x, sizeof(T));
#pragma unroll
  for (int k = 0; k < static_cast<int>(sizeof(T)); ++k) p[k] = static_cast<uint8_t>(v >> (8 * k));
}

template <DType S, DType D>
__global__ void cast_kernel(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src, int64_t n, bool aligned) {
  using TS = typename Elem<S>::T;
  using TD = typename Elem<D>::T;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const TS x = load_elem<TS>(src + i * static_cast<int64_t>(sizeof(TS)), aligned);
    TD y;
    if constexpr (Elem<S>::kFloat) y = from_f32<D>(to_f32<S>(x));
    else y = from_i64<D>(to_i64<S>(x));
    store_elem<TD>(dst + i * static_cast<int64_t>(sizeof(TD)), y, aligned);
  }
}

// In-place casts (dst == src, equal element sizes) must not use __restrict__ pointers.
template <DType S, DType D>
__global__ void cast_inplace_kernel(uint8_t* data, int64_t n, bool aligned) {
  using TS = typename Elem<S>::T;
  using TD = typename Elem<D>::T;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const TS x = load_elem<TS>(data + i * static_cast<int64_t>(sizeof(TS)), aligned);
    TD y;
    if constexpr (Elem<S>::kFloat) y = from_f32<D>(to_f32<S>(x));
    else y = from_i64<D>(to_i64<S>(x));
    store_elem<TD>(data + i * static_cast<int64_t>(sizeof(TD)), y, aligned);
  }
}

template <DType S, DType D>
void launch_cast(uint8_t* dst, const uint8_t* src, int64_t n, cudaStream_t s) {
  using TS = typename Elem<S>::T;
  using TD = typename Elem<D>::T;
  const bool aligned = reinterpret_cast<uintptr_t>(src) % sizeof(TS) == 0 && reinterpret_cast<uintptr_t>(dst) % sizeof(TD) == 0;
  if (dst == src) {
    cast_inplace_kernel<S, D><<<grid_for(n, kThreads), kThreads, 0, s>>>(dst, n, aligned);
  } else {
    cast_kernel<S, D><<<grid_for(n, kThreads), kThreads, 0, s>>>(dst, src, n, aligned);
  }
}

#define LOWBIT_CAST_DTYPES(X) \
  X(Float32) X(Float16) X(BFloat16) X(Float8E4M3FN) X(Float8E5M2) X(Int8) X(UInt8) X(Int16) X(Int32) X(Int64) X(Bool)

template <DType S>
void cast_to(DType d, uint8_t* dst, const uint8_t* src, int64_t n, cudaStream_t s) {
  switch (d) {
#define LOWBIT_CASE(name) \
  case DType::name: return launch_cast<S, DType::name>(dst, src, n, s);
    LOWBIT_CAST_DTYPES(LOWBIT_CASE)
#undef LOWBIT_CASE
    default: break;
  }
  throw_dtype_error(std::string("Expected a non-packed dtype for dstDtype but received ") + dtype_name(d));
}

// ---- strided copies -----------------------------------------------------------------------------------------

// Dims handled by one launch; more dims are split on the host (a launch per index of the leading ones).
constexpr int kMaxDims = 12;

template <typename Idx>
struct StridedArgs {
  int nd;
  Idx shape[kMaxDims];
  int64_t dst_st[kMaxDims];
  int64_t src_st[kMaxDims];
};

// An element of N bytes with byte alignment: copies of it are byte loads and stores.
template <int N>
struct Bytes {
  uint8_t b[N];
};

// dst[idx] = src[idx] over the shape, element i of the flat row-major index space per thread.
template <typename T, typename Idx>
__global__ void strided_kernel(T* dst, const T* src, StridedArgs<Idx> a, Idx n) {
  const Idx stride = static_cast<Idx>(gridDim.x) * blockDim.x;
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    Idx rem = i;
    int64_t doff = 0, soff = 0;
    for (int k = a.nd - 1; k >= 0; --k) {
      const Idx idx = rem % a.shape[k];
      rem /= a.shape[k];
      doff += static_cast<int64_t>(idx) * a.dst_st[k];
      soff += static_cast<int64_t>(idx) * a.src_st[k];
    }
    dst[doff] = src[soff];
  }
}

template <typename T, typename Idx>
void launch_strided_typed(void* dst, const void* src, const int64_t* shape, const int64_t* dst_st, const int64_t* src_st, int nd, int64_t n,
                          cudaStream_t s) {
  StridedArgs<Idx> a{};
  a.nd = nd;
  for (int k = 0; k < nd; ++k) {
    a.shape[k] = static_cast<Idx>(shape[k]);
    a.dst_st[k] = dst_st[k];
    a.src_st[k] = src_st[k];
  }
  strided_kernel<T, Idx><<<grid_for(n, kThreads), kThreads, 0, s>>>(static_cast<T*>(dst), static_cast<const T*>(src), a, static_cast<Idx>(n));
  check_launch("copyStrided");
}

// One launch over `nd` <= kMaxDims dims (strides in elements of `esize` bytes).
void launch_strided(void* dst, const void* src, int64_t esize, const int64_t* shape, const int64_t* dst_st, const int64_t* src_st, int nd,
                    cudaStream_t s) {
  int64_t n = 1;
  for (int k = 0; k < nd; ++k) n *= shape[k];
  if (n == 0) return;
  if (nd == 1 && dst_st[0] == 1 && src_st[0] == 1) {
    check_cuda(cudaMemcpyAsync(dst, src, static_cast<size_t>(n * esize), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
    return;
  }
  const bool aligned = reinterpret_cast<uintptr_t>(dst) % static_cast<uintptr_t>(esize) == 0 &&
                       reinterpret_cast<uintptr_t>(src) % static_cast<uintptr_t>(esize) == 0;
  // 32-bit index math (much cheaper division) whenever the index space fits.
  const bool small = n <= static_cast<int64_t>(UINT32_MAX) - 1024LL * 65535 * 16;
#define LOWBIT_LAUNCH(T)                                                                   \
  do {                                                                                     \
    if (small) launch_strided_typed<T, uint32_t>(dst, src, shape, dst_st, src_st, nd, n, s); \
    else launch_strided_typed<T, uint64_t>(dst, src, shape, dst_st, src_st, nd, n, s);       \
  } while (0)
  switch (esize) {
    case 1: LOWBIT_LAUNCH(uint8_t); break;
    case 2: if (aligned) LOWBIT_LAUNCH(uint16_t); else LOWBIT_LAUNCH(Bytes<2>); break;
    case 4: if (aligned) LOWBIT_LAUNCH(uint32_t); else LOWBIT_LAUNCH(Bytes<4>); break;
    case 8: if (aligned) LOWBIT_LAUNCH(uint64_t); else LOWBIT_LAUNCH(Bytes<8>); break;
    default: throw_argument_error("Expected an element size of 1, 2, 4 or 8 bytes for copyStrided but received " + std::to_string(esize));
  }
#undef LOWBIT_LAUNCH
}

// Any number of dims: the leading dims beyond kMaxDims are walked on the host.
void strided_any(uint8_t* dst, const uint8_t* src, int64_t esize, const std::vector<int64_t>& shape, const std::vector<int64_t>& dst_st,
                 const std::vector<int64_t>& src_st, cudaStream_t s) {
  const int nd = static_cast<int>(shape.size());
  if (nd <= kMaxDims) {
    launch_strided(dst, src, esize, shape.data(), dst_st.data(), src_st.data(), nd, s);
    return;
  }
  const int outer = nd - kMaxDims;
  int64_t count = 1;
  for (int k = 0; k < outer; ++k) count *= shape[static_cast<size_t>(k)];
  for (int64_t r = 0; r < count; ++r) {
    int64_t rem = r, doff = 0, soff = 0;
    for (int k = outer - 1; k >= 0; --k) {
      const int64_t idx = rem % shape[static_cast<size_t>(k)];
      rem /= shape[static_cast<size_t>(k)];
      doff += idx * dst_st[static_cast<size_t>(k)];
      soff += idx * src_st[static_cast<size_t>(k)];
    }
    launch_strided(dst + doff * esize, src + soff * esize, esize, shape.data() + outer, dst_st.data() + outer, src_st.data() + outer, kMaxDims, s);
  }
}

}  // namespace

void cast(int device, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t numel) {
  if (numel <= 0) return;
  cudaStream_t s = stream(device);
  if (dst_dtype == src_dtype) {
    const int64_t bytes = numel * dtype_size(dst_dtype);
    if (dst == src) return;
    const auto* s8 = static_cast<const uint8_t*>(src);
    auto* d8 = static_cast<uint8_t*>(dst);
    if (d8 < s8 + bytes && s8 < d8 + bytes) {
      Scratch tmp(device, bytes);  // overlapping ranges: memmove through a temporary
      check_cuda(cudaMemcpyAsync(tmp.as<void>(), src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
      check_cuda(cudaMemcpyAsync(dst, tmp.as<void>(), static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
    } else {
      check_cuda(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
    }
    return;
  }
  auto* d8 = static_cast<uint8_t*>(dst);
  const auto* s8 = static_cast<const uint8_t*>(src);
  switch (src_dtype) {
#define LOWBIT_CASE(name)                                 \
  case DType::name:                                       \
    cast_to<DType::name>(dst_dtype, d8, s8, numel, s);    \
    break;
    LOWBIT_CAST_DTYPES(LOWBIT_CASE)
#undef LOWBIT_CASE
    default:
      throw_dtype_error(std::string("Expected a non-packed dtype for srcDtype but received ") + dtype_name(src_dtype));
  }
  check_launch("cast");
}

void copy_strided(int device, void* dst, const std::vector<int64_t>& dst_strides, const void* src, const std::vector<int64_t>& src_strides,
                  int64_t elem_bytes, const std::vector<int64_t>& shape, bool overlap) {
  if (shape.size() != dst_strides.size() || shape.size() != src_strides.size()) {
    throw_shape_error("Expected dstStrides and srcStrides with one entry per dim of shape for copyStrided");
  }
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;  // the caller checked the product
  if (numel == 0) return;
  cudaStream_t s = stream(device);
  auto* d8 = static_cast<uint8_t*>(dst);
  const auto* s8 = static_cast<const uint8_t*>(src);
  if (shape.empty()) {  // a 0-d tensor: one element
    check_cuda(cudaMemcpyAsync(dst, src, static_cast<size_t>(elem_bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
    return;
  }
  if (!overlap) {
    strided_any(d8, s8, elem_bytes, shape, dst_strides, src_strides, s);
    return;
  }
  // Same storage, overlapping extents: gather src into a contiguous temporary, then scatter it.
  Scratch tmp(device, numel * elem_bytes);
  std::vector<int64_t> contiguous(shape.size());
  int64_t st = 1;
  for (size_t k = shape.size(); k-- > 0;) {
    contiguous[k] = st;
    st *= shape[k];
  }
  strided_any(tmp.as<uint8_t>(), s8, elem_bytes, shape, contiguous, src_strides, s);
  strided_any(d8, tmp.as<uint8_t>(), elem_bytes, shape, dst_strides, contiguous, s);
}

}  // namespace lowbit::cuda
