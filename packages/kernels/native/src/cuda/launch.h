// Kernel launchers implemented in fill.cu, called by runtime.cc (host code compiled by the C++ compiler).
#pragma once
#include <cstdint>

namespace lowbit::cuda {

// Writes `count` copies of the elem_bytes-byte pattern at dst on `stream` (a cudaStream_t; callers pass
// stream(device)). Returns the cudaError_t of the launch as an int (0 = success).
int launch_fill(void* dst, const void* pattern, int elem_bytes, int64_t count, void* stream);
// Queues one thread that spins on the global timer for `nanoseconds` (cuda::sleep). Returns the launch's cudaError_t.
int launch_spin(int64_t nanoseconds, void* stream);

}  // namespace lowbit::cuda
