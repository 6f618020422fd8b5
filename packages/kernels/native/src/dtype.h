// Native mirror of @lowbit/dtypes' dtype table (ids are a contract: packages/dtypes/src/table.ts),
// the scalar conversions of convert.h, and float32 load / store helpers used by every CPU kernel.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>

namespace lowbit {

enum class DType : int32_t {
  Float32 = 0,
  Float16 = 1,
  BFloat16 = 2,
  Float8E4M3FN = 3,
  Float8E5M2 = 4,
  Int8 = 5,
  UInt8 = 6,
  Int16 = 7,
  Int32 = 8,
  Int64 = 9,
  Bool = 10,
  NF4 = 11,
  FP4 = 12,
};
constexpr int32_t kDTypeCount = 13;
static_assert(static_cast<int32_t>(DType::FP4) + 1 == kDTypeCount, "dtype ids must be dense");

// Bytes per element; 0 for the packed 4-bit formats (use packed sizes instead).
constexpr int64_t dtype_size(DType d) {
  switch (d) {
    case DType::Float32: case DType::Int32: return 4;
    case DType::Float16: case DType::BFloat16: case DType::Int16: return 2;
    case DType::Float8E4M3FN: case DType::Float8E5M2: case DType::Int8: case DType::UInt8: case DType::Bool: return 1;
    case DType::Int64: return 8;
    case DType::NF4: case DType::FP4: return 0;
  }
  return 0;
}
constexpr const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Float8E4M3FN: return "float8_e4m3fn";
    case DType::Float8E5M2: return "float8_e5m2";
    case DType::Int8: return "int8";
    case DType::UInt8: return "uint8";
    case DType::Int16: return "int16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::Bool: return "bool";
    case DType::NF4: return "nf4";
    case DType::FP4: return "fp4";
  }
  return "?";
}
constexpr bool is_float16ish(DType d) { return d == DType::Float16 || d == DType::BFloat16; }
// The float dtypes kernels compute in: float32, float16, bfloat16.
constexpr bool is_compute_float(DType d) { return d == DType::Float32 || is_float16ish(d); }

}  // namespace lowbit

// Scalar conversions (host and device), shared with the CUDA kernels.
#include "convert.h"  // NOLINT(build/include_order): needs DType complete

namespace lowbit {

// Load / store one element of a compute-float dtype as float32.
inline float load_f(const void* p, DType d, int64_t i) {
  switch (d) {
    case DType::Float16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::BFloat16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
inline void store_f(void* p, DType d, int64_t i, float v) {
  switch (d) {
    case DType::Float16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
    case DType::BFloat16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

}  // namespace lowbit
