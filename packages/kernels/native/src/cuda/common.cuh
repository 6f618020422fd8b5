// Shared helpers for CUDA kernel files (.cu): the per-device stream every kernel launches on, error
// checks that throw lowbit's typed errors, device memory from the caching allocator (the device's own
// stream-ordered pool, which also backs storages), and small device-side utilities (16-bit float
// loads/stores in float32, warp/block reductions).
// Implemented in cuda/stream.cc (host side); everything else here is inline.
#pragma once
#include <cuda_runtime.h>
#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#include <strings.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../dtype.h"

namespace lowbit::cuda {

// The one stream of `device` (created on first use, with cudaSetDevice done). Every kernel and every
// copy of the addon is issued on it, so work on a device runs in program order.
cudaStream_t stream(int device);
// cudaSetDevice(device), throwing DeviceError on failure.
void set_device(int device);
// The memory pool of `device` that storages, scratch and the cuBLAS workspace come from (created on first
// use, with a release threshold of "never", so freed blocks stay cached for reuse instead of going back
// to the driver at each synchronization).
cudaMemPool_t pool(int device);
// Throws DeviceError "<op>: <cuda error string> (<name>)"; cudaErrorMemoryAllocation becomes
// OutOfMemoryError (requested bytes unknown: -1).
[[noreturn]] void throw_cuda(cudaError_t err, const char* op);
inline void check_cuda(cudaError_t err, const char* op) {
  if (err != cudaSuccess) throw_cuda(err, op);
}
// lowbit's typed errors for .cu files, which do not include the N-API headers (napi_util.h throw_error).
[[noreturn]] void throw_argument_error(const std::string& message);
[[noreturn]] void throw_dtype_error(const std::string& message);
[[noreturn]] void throw_shape_error(const std::string& message);
[[noreturn]] void throw_device_error(const std::string& message);
// Whether the environment turns a default-on switch off: `name` set to 0, false, off or no (any case).
inline bool env_switched_off(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return false;
  return std::strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 || strcasecmp(v, "off") == 0 || strcasecmp(v, "no") == 0;
}
// A device attribute of `device` (at least 1), read once per (attribute, device) and cached: launchers ask for the
// multiprocessor count or the shared-memory opt-in on every launch.
template <cudaDeviceAttr Attr>
int device_attribute(int device) {
  static std::atomic<int> cache[64] = {};
  const bool cached = device >= 0 && device < 64;
  if (cached) {
    const int v = cache[device].load(std::memory_order_relaxed);
    if (v > 0) return v;
  }
  int v = 0;
  check_cuda(cudaDeviceGetAttribute(&v, Attr, device), "cudaDeviceGetAttribute");
  if (v < 1) v = 1;
  if (cached) cache[device].store(v, std::memory_order_relaxed);
  return v;
}
inline int sm_count(int device) { return device_attribute<cudaDevAttrMultiProcessorCount>(device); }

// Checks the last launch (cudaGetLastError) and names the op.
inline void check_launch(const char* op) { check_cuda(cudaGetLastError(), op); }

// Device memory from the device's pool, ordered on stream(device): a block freed with pool_free is reused
// by later allocations without a driver call, and only once the work queued before the free is done.
// On failure the pool's unused cache is released and the allocation retried once; then OutOfMemoryError
// ("Cannot allocate <n> of <what> on cuda:N: <free> free", requested and free bytes). bytes > 0.
void* pool_alloc(int device, int64_t bytes, const char* what);
void pool_free(int device, void* ptr) noexcept;

// Temporary device memory for one kernel call (pool_alloc / pool_free). Throws OutOfMemoryError.
void* scratch_alloc(int device, int64_t bytes);
void scratch_free(int device, void* ptr) noexcept;

// RAII scratch buffer.
class Scratch {
 public:
  Scratch(int device, int64_t bytes) : device_(device), ptr_(bytes > 0 ? scratch_alloc(device, bytes) : nullptr) {}
  ~Scratch() {
    if (ptr_ != nullptr) scratch_free(device_, ptr_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  int device_;
  void* ptr_;
};

// Grid size for a grid-stride loop over n items with `threads` per block.
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 16) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<unsigned>(b < max_blocks ? b : max_blocks);
}

#ifdef __CUDACC__
// ---- device-side helpers (only in .cu files) -------------------------------------------------------
// Loads / stores one element of a compute-float dtype (float32 / float16 / bfloat16) as float32,
// round to nearest even on store. Call them qualified, cuda::load_f / cuda::store_f: argument-dependent
// lookup (DType lives in namespace lowbit) also finds the host-only lowbit::load_f of dtype.h, and an
// unqualified call is ambiguous.
__device__ __forceinline__ float load_f(const void* p, DType d, int64_t i) {
  switch (d) {
    case DType::Float16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::BFloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
__device__ __forceinline__ void store_f(void* p, DType d, int64_t i, float v) {
  switch (d) {
    case DType::Float16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    case DType::BFloat16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

// Typed element access for templated kernels: T is float, __half or __nv_bfloat16.
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Block-wide sum / max (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `smem` needs 32 floats.
__device__ __forceinline__ float block_sum(float v, float* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = (lane < nwarps) ? smem[lane] : 0.0f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = (lane < nwarps) ? smem[lane] : -INFINITY;
  return warp_max(v);
}
#endif  // __CUDACC__

}  // namespace lowbit::cuda
