// CUDA layout kernels as plain C++ (no CUDA headers): dtype conversion (`cast`) and N-d strided copies
// (`copyStrided`), bit-identical to the CPU versions in bind_core.cc. Implemented in cuda/layout.cu;
// cuda/unavailable.cc defines throwing versions for builds without CUDA. Both are asynchronous (queued on
// stream(device)); pointers are device pointers at any byte offset, already range-checked by the caller.
#pragma once
#include <cstdint>
#include <vector>

#include "../dtype.h"

namespace lowbit::cuda {

// dst[i] = convert(src[i]) for i < numel, the CPU cast's semantics: float → float round to nearest even
// (float8_e4m3fn saturates to ±448, float8_e5m2 overflows to inf), float → int truncates toward zero and
// saturates (NaN → 0), int → int wraps, int → float rounds once, bool is x != 0. Non-packed dtypes only.
// dst == src (identical ranges) converts in place; other overlaps must be refused by the caller.
// dst_dtype == src_dtype is a plain device copy.
void cast(int device, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t numel);

// dst[idx] = src[idx] over `shape`, strides in elements (>= 0; src strides may be 0 to broadcast),
// elements of `elem_bytes` (1, 2, 4 or 8) bytes. Dims should already be merged where possible (any number
// of dims works). `overlap`: the two extents share bytes (same storage), so src is first gathered into a
// temporary buffer and no read sees a write.
void copy_strided(int device, void* dst, const std::vector<int64_t>& dst_strides, const void* src,
                  const std::vector<int64_t>& src_strides, int64_t elem_bytes, const std::vector<int64_t>& shape, bool overlap);

}  // namespace lowbit::cuda
