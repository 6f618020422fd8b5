// CUDA fill kernel: `count` copies of a 1/2/4/8-byte pattern. Aligned destinations store whole elements; a destination
// not aligned to the element size (byte offsets are arbitrary) is written byte by byte. Also the stream-holding spin
// kernel of cuda::sleep.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "launch.h"

namespace lowbit::cuda {
namespace {

template <typename T>
__global__ void fill_kernel(T* __restrict__ dst, T value, int64_t count) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) dst[i] = value;
}

// Byte i of the output is pattern[i % elem_bytes].
__global__ void fill_bytes_kernel(uint8_t* __restrict__ dst, uint64_t pattern, int elem_bytes, int64_t bytes) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < bytes; i += stride) {
    dst[i] = static_cast<uint8_t>(pattern >> (8 * (i % elem_bytes)));
  }
}

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);  // grid-stride loops cover the rest
}

template <typename T>
int launch_typed(void* dst, const void* pattern, int64_t count, cudaStream_t stream) {
  T value;
  std::memcpy(&value, pattern, sizeof(T));
  fill_kernel<T><<<blocks_for(count), kThreads, 0, stream>>>(static_cast<T*>(dst), value, count);
  return static_cast<int>(cudaGetLastError());
}

// Spins until the global nanosecond timer has advanced by `ns` (one thread; used to hold a stream).
__global__ void spin_kernel(uint64_t ns) {
  uint64_t start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}

}  // namespace

int launch_spin(int64_t nanoseconds, void* stream_ptr) {
  spin_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream_ptr)>>>(static_cast<uint64_t>(nanoseconds > 0 ? nanoseconds : 0));
  return static_cast<int>(cudaGetLastError());
}

int launch_fill(void* dst, const void* pattern, int elem_bytes, int64_t count, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (count <= 0) return 0;
  const auto* p = static_cast<const uint8_t*>(pattern);
  bool uniform = true;
  for (int k = 1; k < elem_bytes; ++k) uniform = uniform && p[k] == p[0];
  if (uniform) return static_cast<int>(cudaMemsetAsync(dst, p[0], static_cast<size_t>(count) * elem_bytes, stream));
  if (reinterpret_cast<uintptr_t>(dst) % elem_bytes == 0) {
    switch (elem_bytes) {
      case 2: return launch_typed<uint16_t>(dst, pattern, count, stream);
      case 4: return launch_typed<uint32_t>(dst, pattern, count, stream);
      case 8: return launch_typed<uint64_t>(dst, pattern, count, stream);
      default: break;
    }
  }
  uint64_t packed = 0;
  std::memcpy(&packed, pattern, static_cast<size_t>(elem_bytes));
  const int64_t bytes = count * elem_bytes;
  fill_bytes_kernel<<<blocks_for(bytes), kThreads, 0, stream>>>(static_cast<uint8_t*>(dst), packed, elem_bytes, bytes);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace lowbit::cuda
