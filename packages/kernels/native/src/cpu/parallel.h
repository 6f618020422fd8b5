// The CPU thread pool: parallel_for over [0, n) in contiguous chunks, sized to the machine's cores.
// Kernels call it for work above a grain size; small work runs inline on the calling thread.
#pragma once
#include <cstdint>
#include <functional>

namespace lowbit::cpu {

// Number of worker threads (including the caller). Defaults to hardware_concurrency().
int num_threads();
void set_num_threads(int n);

// Runs fn(begin, end) over disjoint chunks covering [0, n). Chunks are at least `grain` long;
// with one thread or n <= grain it runs fn(0, n) inline. Blocks until all chunks finish.
// Nested calls from inside a chunk run inline. fn must not throw.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace lowbit::cpu
