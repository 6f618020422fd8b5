// CUDA layout kernels (layout.h): `cast` between every pair of non-packed dtypes and N-d `copyStrided`.
// The conversions are the CPU's own (convert.h, compiled for the device: integer bit manipulation, no CUDA
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

// The scalar conversions and Elem traits (to_f32 / from_f32 / to_i64 / from_i64) are the host-and-device
// functions of ../convert.h, the same code the CPU cast runs.

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
