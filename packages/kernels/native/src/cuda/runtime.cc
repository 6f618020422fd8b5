// cuda_backend.h on the CUDA runtime (cudart, linked statically; the driver is loaded by cudart at run
// time): device discovery with a one-sentence reason when CUDA is unusable, device properties, copies,
// fill and synchronize. Every copy and fill is queued on the device's one stream (common.cuh), so it is
// ordered with the kernels. Host→device copies go through per-device pinned staging buffers used in turn
// (double buffering with events) and return without waiting for the DMA; device→host waits on the
// stream, and then (like synchronize) reports a failed deferred device-side check (deferred_check.h). Device memory (the caching allocator) lives in cuda/stream.cc.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "../cpu/parallel.h"
#include "../napi_util.h"
#include "common.cuh"
#include "cuda_backend.h"
#include "deferred_check.h"
#include "launch.h"

namespace lowbit::cuda {
namespace {

// Copies below this size skip the staging buffers where that is safe (see each copy).
constexpr int64_t kStagingThreshold = int64_t{256} << 10;
// Two pinned buffers per device: the CPU fills one while the DMA engine drains the other.
constexpr int64_t kStagingBytes = int64_t{16} << 20;
// A buffer with less room than this (and less than the rest of the copy) is not worth filling.
constexpr int64_t kMinPiece = int64_t{1} << 20;
// Host memcpy into / out of the staging buffers is split over the CPU pool above this size.
constexpr int64_t kParallelCopyBytes = int64_t{2} << 20;
constexpr int kMaxDevices = 64;

std::string version_string(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

struct Probe {
  int count = 0;
  std::string reason;
};

const Probe& probe() {
  static Probe p;
  static std::once_flag once;
  std::call_once(once, [] {
    int driver = 0;
    cudaDriverGetVersion(&driver);  // 0 when libcuda.so could not be loaded
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the error so later calls start clean
      n = 0;
    }
    p.count = n;
    if (n > 0) return;
    if (driver == 0) {
      p.reason = "No NVIDIA driver was found (libcuda.so.1 could not be loaded), so no CUDA device can be used.";
    } else if (err == cudaErrorInsufficientDriver) {
      p.reason = "The NVIDIA driver supports CUDA " + version_string(driver) + " but this build needs CUDA " + version_string(CUDART_VERSION) +
                 "; update the driver.";
    } else if (err == cudaErrorNoDevice || err == cudaSuccess) {
      p.reason = "The NVIDIA driver (CUDA " + version_string(driver) + ") found no CUDA GPU (check CUDA_VISIBLE_DEVICES).";
    } else {
      p.reason = std::string("CUDA initialization failed: ") + cudaGetErrorString(err) + ".";
    }
  });
  return p;
}

[[noreturn]] void fail(const std::string& what, cudaError_t err) {
  cudaGetLastError();  // non-sticky errors are cleared; sticky ones keep failing later calls anyway
  throw_error(ErrorKind::Device, what + ": " + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")");
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(what, err);
}

// Makes `device` current for the scope and restores the caller's device.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (device < 0 || device >= probe().count) {
      throw_error(ErrorKind::Device, "Expected a CUDA device index below " + std::to_string(probe().count) + " but received " + std::to_string(device));
    }
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceScope() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

// Per-device pinned staging buffers (allocated on first use; leaked on purpose: freeing pinned memory
// after the driver unloads at exit crashes). done[b] is recorded on the device's stream after the last
// copy that reads or writes buffer b, so waiting on it frees the whole buffer.
struct Staging {
  std::mutex mu;
  uint8_t* buffers[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
  int64_t used[2] = {0, 0};  // bytes of buffer b handed to queued copies since it was last waited on
  int current = 0;
  bool tried = false;
  bool ok = false;
};
std::array<Staging*, kMaxDevices> g_staging{};
std::mutex g_staging_mu;

Staging& staging(int device) {
  std::lock_guard<std::mutex> lk(g_staging_mu);
  Staging*& s = g_staging[static_cast<size_t>(device)];
  if (s == nullptr) s = new Staging();
  return *s;
}

// Allocates the buffers and events on first use (the device is current). Called with st.mu held.
bool staging_ready(Staging& st) {
  if (!st.tried) {
    st.tried = true;
    void* b0 = nullptr;
    void* b1 = nullptr;
    st.ok = cudaMallocHost(&b0, kStagingBytes) == cudaSuccess && cudaMallocHost(&b1, kStagingBytes) == cudaSuccess &&
            cudaEventCreateWithFlags(&st.done[0], cudaEventDisableTiming) == cudaSuccess &&
            cudaEventCreateWithFlags(&st.done[1], cudaEventDisableTiming) == cudaSuccess;
    st.buffers[0] = static_cast<uint8_t*>(b0);
    st.buffers[1] = static_cast<uint8_t*>(b1);
    if (!st.ok) cudaGetLastError();  // no pinned memory: copies fall back to synchronous cudaMemcpyAsync
  }
  return st.ok;
}

// memcpy, split over the CPU pool when large (the staging copy is the host side of the pipeline).
void host_memcpy(void* dst, const void* src, int64_t bytes) {
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  if (bytes < kParallelCopyBytes) {
    std::memcpy(d, s, static_cast<size_t>(bytes));
    return;
  }
  cpu::parallel_for(bytes, kParallelCopyBytes / 2, [&](int64_t b, int64_t e) { std::memcpy(d + b, s + b, static_cast<size_t>(e - b)); });
}

}  // namespace

bool compiled() { return true; }
int device_count() { return probe().count; }
std::string unavailable_reason() { return probe().reason; }

DeviceProperties device_properties(int device) {
  DeviceScope scope(device);
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  DeviceProperties p;
  p.name = prop.name;
  p.total_bytes = static_cast<int64_t>(total_b);
  p.free_bytes = static_cast<int64_t>(free_b);
  p.multiprocessor_count = prop.multiProcessorCount;
  p.cc_major = prop.major;
  p.cc_minor = prop.minor;
  return p;
}

int64_t free_bytes(int device) {
  if (device < 0 || device >= probe().count) return -1;
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) return -1;
  cudaSetDevice(device);
  size_t free_b = 0, total_b = 0;
  cudaError_t err = cudaMemGetInfo(&free_b, &total_b);
  cudaSetDevice(previous);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return static_cast<int64_t>(free_b);
}

void* host_pinned_malloc(int64_t bytes) noexcept {
  if (probe().count == 0) return nullptr;
  void* p = nullptr;
  if (cudaMallocHost(&p, static_cast<size_t>(bytes)) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return p;
}

void host_pinned_free(void* ptr) noexcept {
  if (ptr != nullptr && cudaFreeHost(ptr) != cudaSuccess) cudaGetLastError();
}

void copy_host_to_device(int device, void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0) return;
  cudaStream_t s = stream(device);
  Staging& st = staging(device);
  std::lock_guard<std::mutex> lock(st.mu);
  if (!staging_ready(st)) {
    // Without pinned memory the copy is made synchronous, so `src` may be reused on return whatever it is.
    check(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, s), "cudaMemcpyAsync host to device");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    return;
  }
  // Even small copies are staged: `src` may itself be pinned memory the caller reuses at once, which a
  // direct cudaMemcpyAsync would still be reading.
  auto* d = static_cast<uint8_t*>(dst);
  const auto* h = static_cast<const uint8_t*>(src);
  for (int64_t done = 0; done < bytes;) {
    const int64_t rest = bytes - done;
    int b = st.current;
    int64_t room = kStagingBytes - st.used[b];
    if (room < std::min(rest, kMinPiece)) {
      // Switch buffers: wait until every queued copy out of the other one has run.
      b = 1 - b;
      check(cudaEventSynchronize(st.done[b]), "cudaEventSynchronize");
      st.used[b] = 0;
      st.current = b;
      room = kStagingBytes;
    }
    const int64_t n = std::min(room, rest);
    uint8_t* piece = st.buffers[b] + st.used[b];
    host_memcpy(piece, h + done, n);
    check(cudaMemcpyAsync(d + done, piece, static_cast<size_t>(n), cudaMemcpyHostToDevice, s), "cudaMemcpyAsync host to device");
    check(cudaEventRecord(st.done[b], s), "cudaEventRecord");
    st.used[b] = std::min(kStagingBytes, (st.used[b] + n + 255) / 256 * 256);  // next piece 256-byte aligned
    done += n;
  }
}

void copy_device_to_host(int device, void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0) return;
  cudaStream_t s = stream(device);
  Staging& st = staging(device);
  std::lock_guard<std::mutex> lock(st.mu);
  if (bytes < kStagingThreshold || !staging_ready(st)) {
    check(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync device to host");
    check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    raise_deferred(device);
    return;
  }
  // Pipelined through both buffers: piece i is DMA'd into buffer i % 2 while piece i - 1 is copied out.
  for (int b = 0; b < 2; ++b) {
    check(cudaEventSynchronize(st.done[b]), "cudaEventSynchronize");  // host→device copies still reading it
    st.used[b] = 0;
  }
  auto* h = static_cast<uint8_t*>(dst);
  const auto* d = static_cast<const uint8_t*>(src);
  const int64_t pieces = (bytes + kStagingBytes - 1) / kStagingBytes;
  auto piece_size = [&](int64_t i) { return std::min(kStagingBytes, bytes - i * kStagingBytes); };
  for (int64_t i = 0; i <= pieces; ++i) {
    if (i < pieces) {
      const int b = static_cast<int>(i % 2);
      check(cudaMemcpyAsync(st.buffers[b], d + i * kStagingBytes, static_cast<size_t>(piece_size(i)), cudaMemcpyDeviceToHost, s),
            "cudaMemcpyAsync device to host");
      check(cudaEventRecord(st.done[b], s), "cudaEventRecord");
    }
    if (i > 0) {
      const int b = static_cast<int>((i - 1) % 2);
      check(cudaEventSynchronize(st.done[b]), "cudaEventSynchronize");
      host_memcpy(h + (i - 1) * kStagingBytes, st.buffers[b], piece_size(i - 1));
    }
  }
  raise_deferred(device);  // the last event follows everything queued before the copy
}

void copy_device_to_device(int dst_device, void* dst, int src_device, const void* src, int64_t bytes) {
  if (bytes <= 0) return;
  const auto* s8 = static_cast<const uint8_t*>(src);
  auto* d8 = static_cast<uint8_t*>(dst);
  if (dst_device == src_device) {
    cudaStream_t s = stream(dst_device);
    if (d8 == s8) return;
    if (d8 < s8 + bytes && s8 < d8 + bytes) {
      // cudaMemcpy does not allow overlapping ranges: go through a temporary block of the pool.
      Scratch tmp(dst_device, bytes);
      check(cudaMemcpyAsync(tmp.as<void>(), src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync device to device");
      check(cudaMemcpyAsync(dst, tmp.as<void>(), static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync device to device");
      return;
    }
    check(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync device to device");
    return;
  }
  // Between devices: the copy runs on the destination's stream after the work queued on the source's,
  // and later work on the source's stream (a free of src, say) waits for the copy.
  cudaStream_t ss = stream(src_device);
  cudaEvent_t src_ready = nullptr, copied = nullptr;
  check(cudaEventCreateWithFlags(&src_ready, cudaEventDisableTiming), "cudaEventCreate");
  cudaError_t err = cudaEventRecord(src_ready, ss);
  cudaStream_t ds = stream(dst_device);
  if (err == cudaSuccess) err = cudaStreamWaitEvent(ds, src_ready, 0);
  if (err == cudaSuccess) err = cudaMemcpyPeerAsync(dst, dst_device, src, src_device, static_cast<size_t>(bytes), ds);
  if (err == cudaSuccess) err = cudaEventCreateWithFlags(&copied, cudaEventDisableTiming);
  if (err == cudaSuccess) err = cudaEventRecord(copied, ds);
  if (err == cudaSuccess) err = cudaStreamWaitEvent(ss, copied, 0);
  cudaEventDestroy(src_ready);  // released once the recorded work completes
  if (copied != nullptr) cudaEventDestroy(copied);
  if (err != cudaSuccess) fail("copy from cuda:" + std::to_string(src_device) + " to cuda:" + std::to_string(dst_device) + " failed", err);
}

void fill(int device, void* dst, const void* pattern, int elem_bytes, int64_t count) {
  if (count <= 0) return;
  int err = launch_fill(dst, pattern, elem_bytes, count, stream(device));
  if (err != 0) fail("fill on cuda:" + std::to_string(device) + " failed", static_cast<cudaError_t>(err));
}

void synchronize(int device) {
  stream(device);  // makes the device current
  check(cudaDeviceSynchronize(), ("cudaDeviceSynchronize on cuda:" + std::to_string(device)).c_str());
  raise_deferred(device);
}

double elapsed_ms(int device, const std::function<void()>& work) {
  cudaStream_t s = stream(device);
  struct Events {  // destroyed on every path, also when `work` throws
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (start != nullptr) cudaEventDestroy(start);
      if (stop != nullptr) cudaEventDestroy(stop);
    }
  } ev;
  check(cudaEventCreate(&ev.start), "cudaEventCreate");
  check(cudaEventCreate(&ev.stop), "cudaEventCreate");
  check(cudaEventRecord(ev.start, s), "cudaEventRecord");
  work();
  set_device(device);  // `work` may have made another device current
  check(cudaEventRecord(ev.stop, s), "cudaEventRecord");
  check(cudaEventSynchronize(ev.stop), "cudaEventSynchronize");
  float ms = 0.0f;
  check(cudaEventElapsedTime(&ms, ev.start, ev.stop), "cudaEventElapsedTime");
  raise_deferred(device);
  return ms;
}

void sleep(int device, int64_t microseconds) {
  const int err = launch_spin(microseconds * 1000, stream(device));
  if (err != 0) fail("sleep on cuda:" + std::to_string(device) + " failed", static_cast<cudaError_t>(err));
}

}  // namespace lowbit::cuda
