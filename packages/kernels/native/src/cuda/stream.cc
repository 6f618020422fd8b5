// Host side of common.cuh and the device-memory half of cuda_backend.h: one stream and one memory pool
// per device, CUDA error → typed lowbit errors, and the caching allocator. Storages, scratch and the
// cuBLAS workspace all come from the device's own stream-ordered pool (cudaMallocFromPoolAsync on
// stream(device)); its release threshold is "never", so memory once reserved stays with the pool and
// steady-state allocations need no cudaMalloc. Frees are stream-ordered too: a block is reused only after the work
// queued before its free has run, so freeing never waits for the GPU. In front of the pool sits a free-list
// cache by size class (one mutex, no driver call): a decode step's hundreds of small outputs and scratch
// buffers reuse the previous step's blocks (see DeviceState).
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "../napi_util.h"
#include "common.cuh"
#include "cuda_backend.h"

namespace lowbit::cuda {
namespace {

constexpr int kMaxDevices = 64;

// Blocks up to this size are kept for reuse when freed, up to kCacheCapBytes per device in all.
constexpr size_t kMaxCachedBlock = size_t{512} << 20;
constexpr size_t kCacheCapBytes = size_t{2} << 30;
// Requests up to this size are rounded up to kSmallRound bytes, so that nearby sizes share free lists.
constexpr size_t kSmallLimit = size_t{1} << 20;
constexpr size_t kSmallRound = 512;

struct DeviceState {
  std::mutex mu;
  std::atomic<cudaStream_t> stream{nullptr};
  std::atomic<cudaMemPool_t> pool{nullptr};
  // The free-list cache in front of the pool: an op's output freed by one step is handed to the next step's op
  // of the same size without a driver call (cudaMallocFromPoolAsync / cudaFreeAsync cost microseconds each, and a
  // decode step makes hundreds). Every use of a block is queued on the one stream of the device, so a block
  // handed out again is only touched by work queued after everything that used it before (as with the pool's
  // own stream-ordered reuse).
  std::mutex cache_mu;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;  // size class → cached blocks
  std::unordered_map<void*, size_t> live;                      // block → size class, for every block handed out
  size_t cached_bytes = 0;
};
std::array<DeviceState, kMaxDevices> g_devices;

void check_index(int device) {
  if (device < 0 || device >= kMaxDevices || device >= device_count()) {
    throw_error(ErrorKind::Device, "cuda:" + std::to_string(device) + " does not exist (" + std::to_string(device_count()) + " CUDA devices)");
  }
}

std::string format_bytes(int64_t bytes) {
  if (bytes < 0) return "an unknown amount";
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 6) {
    v /= 1024.0;
    ++u;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// Creates the stream and the pool of `device` (the device is current). Called under the device's mutex.
void init_device(int device, DeviceState& st) {
  if (st.stream.load() == nullptr) {
    // A blocking stream: it also orders with work on the legacy default stream.
    cudaStream_t s = nullptr;
    check_cuda(cudaStreamCreate(&s), "cudaStreamCreate");
    st.stream.store(s);
  }
  if (st.pool.load() == nullptr) {
    // lowbit's own pool (not the device's default one), so its statistics count lowbit's memory only.
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t p = nullptr;
    check_cuda(cudaMemPoolCreate(&p, &props), "cudaMemPoolCreate");
    // Keep freed memory cached instead of returning it to the driver at each synchronization.
    uint64_t threshold = UINT64_MAX;
    check_cuda(cudaMemPoolSetAttribute(p, cudaMemPoolAttrReleaseThreshold, &threshold), "cudaMemPoolSetAttribute");
    st.pool.store(p);
  }
}

DeviceState& ready(int device) {
  set_device(device);
  DeviceState& st = g_devices[static_cast<size_t>(device)];
  if (st.stream.load() == nullptr || st.pool.load() == nullptr) {
    std::lock_guard<std::mutex> lk(st.mu);
    init_device(device, st);
  }
  return st;
}

}  // namespace

namespace {
// The device this thread last made current through set_device (-1: unknown). Every op asks for its device's stream,
// and cudaSetDevice costs about a microsecond even when nothing changes, so repeats are skipped. Code that sets the
// device itself (runtime.cc's DeviceScope, free_bytes) puts the previous device back before returning.
thread_local int tl_current_device = -1;
}  // namespace

void set_device(int device) {
  if (device == tl_current_device) return;
  check_index(device);
  tl_current_device = -1;  // unknown until the call succeeds
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  tl_current_device = device;
}

[[noreturn]] void throw_cuda(cudaError_t err, const char* op) {
  cudaGetLastError();  // clear a non-sticky error so the device stays usable
  if (err == cudaErrorMemoryAllocation) {
    int device = 0;
    int64_t free_b = cudaGetDevice(&device) == cudaSuccess ? free_bytes(device) : -1;
    throw_oom(std::string(op) + ": out of device memory (" + cudaGetErrorName(err) + "; " + format_bytes(free_b) + " free)", -1, free_b);
  }
  throw_error(ErrorKind::Device, std::string(op) + ": " + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")");
}

[[noreturn]] void throw_argument_error(const std::string& message) { throw_error(ErrorKind::Argument, message); }
[[noreturn]] void throw_dtype_error(const std::string& message) { throw_error(ErrorKind::DType, message); }
[[noreturn]] void throw_shape_error(const std::string& message) { throw_error(ErrorKind::Shape, message); }
[[noreturn]] void throw_device_error(const std::string& message) { throw_error(ErrorKind::Device, message); }

cudaStream_t stream(int device) { return ready(device).stream.load(); }

cudaMemPool_t pool(int device) { return ready(device).pool.load(); }

namespace {

size_t size_class(int64_t bytes) {
  const auto b = static_cast<size_t>(bytes);
  return b <= kSmallLimit ? (b + kSmallRound - 1) / kSmallRound * kSmallRound : b;
}

// Returns every cached block of the device to the pool (stream-ordered frees). Caller holds st.cache_mu.
void flush_cache(DeviceState& st, cudaStream_t s) {
  for (auto& [size, blocks] : st.free_blocks) {
    for (void* p : blocks)
      if (cudaFreeAsync(p, s) != cudaSuccess) cudaGetLastError();
  }
  st.free_blocks.clear();
  st.cached_bytes = 0;
}

}  // namespace

void* pool_alloc(int device, int64_t bytes, const char* what) {
  DeviceState& st = ready(device);
  cudaStream_t s = st.stream.load();
  cudaMemPool_t p = st.pool.load();
  const size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lk(st.cache_mu);
  if (auto it = st.free_blocks.find(cls); it != st.free_blocks.end() && !it->second.empty()) {
    void* ptr = it->second.back();
    it->second.pop_back();
    st.cached_bytes -= cls;
    st.live.emplace(ptr, cls);
    return ptr;
  }
  void* ptr = nullptr;
  cudaError_t err = cudaMallocFromPoolAsync(&ptr, cls, p, s);
  if (err != cudaSuccess) {
    // The caches may hold enough memory in blocks of the wrong sizes: hand the free lists back to the pool, wait
    // for queued frees, return every unused block of the pool to the driver and try once more.
    cudaGetLastError();
    flush_cache(st, s);
    cudaStreamSynchronize(s);
    cudaGetLastError();
    cudaMemPoolTrimTo(p, 0);
    ptr = nullptr;
    err = cudaMallocFromPoolAsync(&ptr, cls, p, s);
  }
  if (err == cudaSuccess) {
    try {
      st.live.emplace(ptr, cls);
    } catch (...) {
      cudaFreeAsync(ptr, s);
      throw;
    }
    return ptr;
  }
  cudaGetLastError();  // allocation failures are not sticky: the device stays usable
  // A failed request can leave the pool holding memory it reserved on the way; give that back too, so
  // the reported free bytes are what the driver could really hand out.
  cudaMemPoolTrimTo(p, 0);
  cudaGetLastError();
  size_t free_b = 0, total_b = 0;
  const bool have_info = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
  if (!have_info) cudaGetLastError();
  // A request larger than the whole device can also come back as cudaErrorInvalidValue.
  if (err == cudaErrorMemoryAllocation || (have_info && static_cast<uint64_t>(bytes) > total_b)) {
    const int64_t free_i = have_info ? static_cast<int64_t>(free_b) : -1;
    throw_oom("Cannot allocate " + format_bytes(bytes) + " of " + what + " on cuda:" + std::to_string(device) + ": " + format_bytes(free_i) +
                  " free",
              bytes, free_i);
  }
  throw_cuda(err, "cudaMallocFromPoolAsync");
}

void pool_free(int device, void* ptr) noexcept {
  if (ptr == nullptr || device < 0 || device >= kMaxDevices) return;
  DeviceState& st = g_devices[static_cast<size_t>(device)];
  cudaStream_t s = st.stream.load();
  {
    std::lock_guard<std::mutex> lk(st.cache_mu);
    auto it = st.live.find(ptr);
    if (it != st.live.end()) {
      const size_t cls = it->second;
      st.live.erase(it);
      if (cls <= kMaxCachedBlock && st.cached_bytes + cls <= kCacheCapBytes) {
        try {
          st.free_blocks[cls].push_back(ptr);
          st.cached_bytes += cls;
          return;
        } catch (...) {
          // no memory for the list entry: free the block instead
        }
      }
    }
  }
  bool current = device == tl_current_device;
  if (!current) {
    current = cudaSetDevice(device) == cudaSuccess;
    tl_current_device = current ? device : -1;
  }
  if (!current || s == nullptr || cudaFreeAsync(ptr, s) != cudaSuccess) {
    cudaGetLastError();  // e.g. the runtime is already unloading at process exit: nothing left to free
  }
}

void* scratch_alloc(int device, int64_t bytes) { return pool_alloc(device, bytes, "scratch memory"); }

void scratch_free(int device, void* ptr) noexcept { pool_free(device, ptr); }

// ---- cuda_backend.h: device memory ---------------------------------------------------------------------

void* device_malloc(int device, int64_t bytes) { return pool_alloc(device, bytes > 0 ? bytes : 1, "device memory"); }

void device_free(int device, void* ptr) noexcept { pool_free(device, ptr); }

int64_t reserved_bytes(int device) {
  if (device < 0 || device >= kMaxDevices) return 0;
  cudaMemPool_t p = g_devices[static_cast<size_t>(device)].pool.load();
  if (p == nullptr) return 0;  // nothing was ever allocated on this device
  uint64_t v = 0;
  if (cudaMemPoolGetAttribute(p, cudaMemPoolAttrReservedMemCurrent, &v) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return static_cast<int64_t>(v);
}

}  // namespace lowbit::cuda
