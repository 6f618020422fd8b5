// Device-side index checks reported at the next synchronisation (plain C++, no CUDA headers): an op that must not
// wait for the GPU (a decode step's embedding of ids that live on the device) records its first out-of-range index
// in a per-thread, per-device record instead of copying a check result back at once; the record is copied to pinned
// host memory behind the op on the stream, and the host reads it the next time it waits for the device anyway (a
// device→host copy or synchronize on the same thread). Like torch's device-side asserts, but the error is a typed
// ArgumentError and the device stays usable.
#pragma once
#include <cstdint>

namespace lowbit::cuda {

// The ops that defer a check (they name the error).
enum class DeferredOp : int32_t { Embedding = 0 };

// One device's record (device memory). position == ~0 means "no error so far".
struct DeferredIndexError {
  unsigned long long position;  // flat index of the first bad id of the first failing call
  long long value;              // the id found there
  long long bound;              // the valid range was [0, bound)
  int32_t op;                   // DeferredOp
  int32_t pad;
};

// The calling thread's record for `device` (allocated and reset on first use; ordered on stream(device)).
DeferredIndexError* deferred_record(int device);
// Queues the copy of the record to pinned host memory on stream(device), after the checking kernels.
void deferred_commit(int device);
// After the host has waited for stream(device): throws ArgumentError naming the op, the index and the bound if a
// deferred check this thread queued failed since the last report, and resets the record. Cheap when nothing was
// committed.
void raise_deferred(int device);

}  // namespace lowbit::cuda
