// Helpers shared by the nn_*.cu CUDA kernels: dtype dispatch to a template, rounding to the storage dtype,
// per-row thread groups (a warp or a whole block) with their reductions, and the device-side index check whose result
// is copied back to the host. Internal to the CUDA nn kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace lowbit::cuda::nn_detail {

// Calls f(T{}) with T the element type of a compute-float dtype (float32 / float16 / bfloat16).
template <typename F>
void dispatch_float(DType dt, F&& f) {
  switch (dt) {
    case DType::Float16: f(__half{}); break;
    case DType::BFloat16: f(__nv_bfloat16{}); break;
    default: f(float{}); break;
  }
}

// The value a store to T followed by a load gives (identity for float).
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return to_f(from_f<T>(v));
}

// max that propagates NaN (torch.max).
__device__ __forceinline__ float nan_max(float a, float b) { return (a != a || b != b) ? __int_as_float(0x7fc00000) : fmaxf(a, b); }

// A group of threads that processes one row at a time: a warp (kWarp) or the whole block. `smem` needs 32 floats
// for block groups. Block groups loop uniformly, so their reductions may synchronize the block.
template <bool kWarp>
struct RowGroup;

template <>
struct RowGroup<true> {
  __device__ static int lane() { return threadIdx.x & 31; }
  __device__ static int size() { return 32; }
  __device__ static int64_t first() { return static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); }
  __device__ static int64_t stride() { return static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5); }
  __device__ static float sum(float v, float*) { return warp_sum(v); }
  __device__ static float max(float v, float*) { return warp_max(v); }
};

template <>
struct RowGroup<false> {
  __device__ static int lane() { return threadIdx.x; }
  __device__ static int size() { return blockDim.x; }
  __device__ static int64_t first() { return blockIdx.x; }
  __device__ static int64_t stride() { return gridDim.x; }
  __device__ static float sum(float v, float* smem) { return block_sum(v, smem); }
  __device__ static float max(float v, float* smem) { return block_max(v, smem); }
};

// Rows of `cols` elements up to this size get one warp each; longer rows one block of kRowBlockThreads.
constexpr int64_t kWarpRowMax = 1024;
constexpr int kRowBlockThreads = 512;
constexpr int kWarpRowsThreads = 256;  // block size of warp-per-row launches (8 rows per block)

// Launches kernel<true> (a warp per row) or kernel<false> (a block per row) over `rows` rows.
template <typename WarpKernel, typename BlockKernel, typename... Args>
void launch_rows(int device, int64_t rows, int64_t cols, WarpKernel warp_kernel, BlockKernel block_kernel, Args... args) {
  if (rows <= 0) return;
  cudaStream_t st = stream(device);
  if (cols <= kWarpRowMax) {
    const int64_t per_block = kWarpRowsThreads / 32;
    warp_kernel<<<grid_for(rows, static_cast<int>(per_block), 1 << 20), kWarpRowsThreads, 0, st>>>(args...);
  } else {
    block_kernel<<<static_cast<unsigned>(rows < (1 << 20) ? rows : (1 << 20)), kRowBlockThreads, 0, st>>>(args...);
  }
}

// Reads index i of an int32 / int64 array.
__device__ __forceinline__ int64_t read_index(const void* p, bool is64, int64_t i) {
  return is64 ? static_cast<const int64_t*>(p)[i] : static_cast<int64_t>(static_cast<const int32_t*>(p)[i]);
}

// Device-side result of an index check: the first bad position (kNoBadIndex when none) and a counter (the rows
// cross-entropy did not ignore). Lives in scratch memory; kernels update it with integer atomics only.
constexpr unsigned long long kNoBadIndex = ~0ull;
struct IndexCheck {
  unsigned long long first_bad;
  unsigned long long count;
};

// Scratch IndexCheck initialised to {kNoBadIndex, 0} on the stream.
class DeviceIndexCheck {
 public:
  explicit DeviceIndexCheck(int device) : device_(device), mem_(device, sizeof(IndexCheck)) {
    check_cuda(cudaMemsetAsync(ptr(), 0xff, sizeof(unsigned long long), stream(device)), "cudaMemsetAsync");
    check_cuda(cudaMemsetAsync(&ptr()->count, 0, sizeof(unsigned long long), stream(device)), "cudaMemsetAsync");
  }
  IndexCheck* ptr() const { return mem_.as<IndexCheck>(); }
  // Waits for the queued kernels and returns the result.
  IndexCheck read() const {
    IndexCheck h{};
    cudaStream_t st = stream(device_);
    check_cuda(cudaMemcpyAsync(&h, ptr(), sizeof h, cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync device to host");
    check_cuda(cudaStreamSynchronize(st), "cudaStreamSynchronize");
    return h;
  }

 private:
  int device_;
  Scratch mem_;
};

// ids[pos] read back from the device (to name a bad index in the error message).
inline int64_t fetch_index(int device, const void* ids, bool is64, int64_t pos) {
  cudaStream_t st = stream(device);
  int64_t v64 = 0;
  int32_t v32 = 0;
  const auto* base = static_cast<const uint8_t*>(ids) + pos * (is64 ? 8 : 4);
  check_cuda(cudaMemcpyAsync(is64 ? static_cast<void*>(&v64) : static_cast<void*>(&v32), base, is64 ? 8 : 4,
                             cudaMemcpyDeviceToHost, st),
             "cudaMemcpyAsync device to host");
  check_cuda(cudaStreamSynchronize(st), "cudaStreamSynchronize");
  return is64 ? v64 : v32;
}

using cuda::sm_count;  // common.cuh

}  // namespace lowbit::cuda::nn_detail
