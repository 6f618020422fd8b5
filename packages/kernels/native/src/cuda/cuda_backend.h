// The CUDA device plug-in as plain C++ (no CUDA headers): device discovery, device memory (the caching
// allocator), copies, fill and synchronize. Implemented by cuda/runtime.cc, cuda/stream.cc and cuda/fill.cu
// when the build compiled CUDA (LOWBIT_WITH_CUDA), and by cuda/unavailable.cc otherwise, so the rest of the
// addon never #ifdefs. Errors are thrown as lowbit exceptions (DeviceError / OutOfMemoryError) with
// one-sentence messages. Everything that touches device memory is queued on the device's one stream
// (common.cuh `stream(device)`), so the addon's work on a device runs in program order.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace lowbit::cuda {

// Whether this build compiled the CUDA sources.
bool compiled();
// Usable devices; 0 when not compiled, no driver or no GPU. Probed once, then cached.
int device_count();
// Why CUDA is unusable (one sentence), or "" when at least one device works.
std::string unavailable_reason();

struct DeviceProperties {
  std::string name;
  int64_t total_bytes = 0;
  int64_t free_bytes = 0;
  int multiprocessor_count = 0;
  int cc_major = 0;
  int cc_minor = 0;
};
DeviceProperties device_properties(int device);
// Free bytes on the device according to the driver (used in OutOfMemoryError); -1 if unknown.
int64_t free_bytes(int device);

// Device memory from the device's caching allocator (a stream-ordered pool that keeps freed blocks).
// malloc throws OutOfMemoryError with the requested and free bytes on failure, after releasing the cache
// and retrying once (the failed call leaves the device usable). free never throws and never waits: the
// block is reused only after the work already queued on the device's stream.
void* device_malloc(int device, int64_t bytes);
void device_free(int device, void* ptr) noexcept;
// Bytes the allocator holds from the driver (live blocks, cached free blocks, scratch); 0 before the
// device's first allocation.
int64_t reserved_bytes(int device);

// Pinned (page-locked) host memory; returns nullptr on failure (or when no device exists).
void* host_pinned_malloc(int64_t bytes) noexcept;
void host_pinned_free(void* ptr) noexcept;

// Copies, queued on the device's stream.
// host→device: the source is copied into pinned staging buffers (two, used in turn: the CPU fills one
// while the DMA engine drains the other) and the call returns once `src` may be reused, without waiting
// for the DMA to finish.
void copy_host_to_device(int device, void* dst, const void* src, int64_t bytes);
// device→host: waits for the stream (and so for every kernel queued before) and the copy.
void copy_device_to_host(int device, void* dst, const void* src, int64_t bytes);
// device→device, asynchronous; overlapping ranges on one device are allowed (memmove semantics). Between
// two devices the copy is ordered after the work queued on both.
void copy_device_to_device(int dst_device, void* dst, int src_device, const void* src, int64_t bytes);

// Writes `count` copies of the `elem_bytes`-byte pattern (1, 2, 4 or 8) at dst (asynchronous).
void fill(int device, void* dst, const void* pattern, int elem_bytes, int64_t count);
// Waits until every operation queued on the device has finished; reports an asynchronous kernel error.
void synchronize(int device);
// Milliseconds of device time between two timing events recorded on the device's stream before and after `work`
// (which queues operations), like torch.cuda.Event(enable_timing=True) pairs. Waits for the second event.
double elapsed_ms(int device, const std::function<void()>& work);
// Queues a kernel that keeps the stream busy for `microseconds` (like torch.cuda._sleep): benchmarks queue their
// launches behind it, so the device time between two events is the work's own, not the host's launch rate.
void sleep(int device, int64_t microseconds);

}  // namespace lowbit::cuda
