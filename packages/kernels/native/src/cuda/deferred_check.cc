// Per-thread, per-device records of deferred index checks (deferred_check.h): device record + pinned host mirror,
// allocated on first use and kept for the life of the process (a few bytes per thread and device). Per thread, because
// the error belongs to the JS thread that queued the op: Node worker threads share the device and its stream, and one
// worker's bad id must not surface in another's download.
#include "deferred_check.h"

#include <cuda_runtime_api.h>

#include <array>
#include <string>

#include "common.cuh"

namespace lowbit::cuda {
namespace {

constexpr int kMaxDevices = 64;

struct Slot {
  DeferredIndexError* record = nullptr;  // device memory
  DeferredIndexError* mirror = nullptr;  // pinned host memory, written by the queued copies
  bool pending = false;                  // a copy was queued since the last raise_deferred
};
thread_local std::array<Slot, kMaxDevices> tl_slots;

Slot& slot(int device) {
  if (device < 0 || device >= kMaxDevices) throw_device_error("deferred check: cuda:" + std::to_string(device) + " is not a device index");
  return tl_slots[static_cast<size_t>(device)];
}

const char* op_name(int32_t op) { return op == static_cast<int32_t>(DeferredOp::Embedding) ? "embedding" : "a deferred index check"; }

}  // namespace

DeferredIndexError* deferred_record(int device) {
  Slot& s = slot(device);
  if (s.record == nullptr) {
    cudaStream_t st = stream(device);  // makes the device current
    void* host = nullptr;
    check_cuda(cudaMallocHost(&host, sizeof(DeferredIndexError)), "cudaMallocHost (deferred check)");
    void* dev = nullptr;
    cudaError_t err = cudaMalloc(&dev, sizeof(DeferredIndexError));
    if (err != cudaSuccess) {
      cudaFreeHost(host);
      throw_cuda(err, "cudaMalloc (deferred check)");
    }
    s.mirror = static_cast<DeferredIndexError*>(host);
    s.mirror->position = ~0ull;
    check_cuda(cudaMemsetAsync(dev, 0xff, sizeof(DeferredIndexError), st), "cudaMemsetAsync (deferred check)");
    s.record = static_cast<DeferredIndexError*>(dev);
  }
  return s.record;
}

void deferred_commit(int device) {
  DeferredIndexError* rec = deferred_record(device);
  Slot& s = slot(device);
  check_cuda(cudaMemcpyAsync(s.mirror, rec, sizeof(DeferredIndexError), cudaMemcpyDeviceToHost, stream(device)),
             "cudaMemcpyAsync (deferred check)");
  s.pending = true;
}

void raise_deferred(int device) {
  if (device < 0 || device >= kMaxDevices) return;
  Slot& s = tl_slots[static_cast<size_t>(device)];
  if (!s.pending) return;
  s.pending = false;
  const DeferredIndexError e = *s.mirror;  // the stream was waited for: the queued copies have landed
  if (e.position == ~0ull) return;
  s.mirror->position = ~0ull;
  // Reset the device record behind everything queued so far, so later calls are checked afresh.
  check_cuda(cudaMemsetAsync(s.record, 0xff, sizeof(DeferredIndexError), stream(device)), "cudaMemsetAsync (deferred check)");
  throw_argument_error(std::string("Expected an id in [0, ") + std::to_string(e.bound) + ") for " + op_name(e.op) + "'s ids[" +
                       std::to_string(e.position) + "] on cuda:" + std::to_string(device) + " but received " + std::to_string(e.value) +
                       " (checked on the device and reported at this synchronisation; the rows of bad ids were written as zeros)");
}

}  // namespace lowbit::cuda
