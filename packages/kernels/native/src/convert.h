// Scalar dtype conversions shared by the CPU backend and the CUDA kernels (compiled as host and device
// functions under nvcc): float32 <-> float16 / bfloat16 / float8 (e4m3fn, e5m2) with round to nearest even,
// int64 -> float with one rounding, float -> int with truncation and saturation, and the per-dtype element
// traits `cast` is built from. One definition means every backend writes the same bytes (@lowbit/dtypes'
// float.ts defines the same rules in TypeScript). Integer bit manipulation only: no conversion intrinsics,
// whose NaN payloads and saturation differ between platforms; products and sums that must round once are
// written with mul_rn / add_rn so no FMA contraction can merge them.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#ifndef LOWBIT_HD
#if defined(__CUDACC__)
#define LOWBIT_HD __host__ __device__ __forceinline__
#else
#define LOWBIT_HD inline
#endif
#endif

// Included by dtype.h once DType is complete; include dtype.h, not this file.

namespace lowbit {

LOWBIT_HD uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
LOWBIT_HD float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// a * b and a + b rounded once (never contracted into an FMA).
LOWBIT_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
LOWBIT_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// float32 -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN with its sign.
LOWBIT_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
LOWBIT_HD float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

// float32 -> IEEE binary16 bits, round to nearest even, subnormals and overflow to inf exact.
LOWBIT_HD uint16_t f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);                          // >= 65520 -> inf
  if (a < 0x38800000u) {                                                                       // subnormal or zero
    // value * 2^24 (exact: a power of two) rounded to nearest even is the subnormal mantissa.
    const float r = rintf(mul_rn(bits_f32(a), 16777216.0f));
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(r));
  }
  uint32_t m = a + 0xfffu + ((a >> 13) & 1u);  // round the mantissa to 10 bits
  return static_cast<uint16_t>(sign | ((m - 0x38000000u) >> 13));
}
LOWBIT_HD float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) return bits_f32(f32_bits(mul_rn(static_cast<float>(m), 5.9604644775390625e-8f)) | sign);  // m * 2^-24, exact
  if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

// float32 -> float8_e4m3fn as torch 2.x's Tensor.to(torch.float8_e4m3fn) does (checked against torch
// 2.13): the format has no infinity, so finite values >= 448 in magnitude and +-inf saturate to +-448
// (0x7e); NaN gives NaN 0x7f with the input's sign. Everything else rounds to nearest even, subnormals
// included. (c10's scalar fp8e4m3fn_from_fp32_value returns NaN on overflow instead; the tensor cast,
// which users see, saturates. @lowbit/dtypes encodes the same way.)
LOWBIT_HD uint8_t f32_to_e4m3fn(float f) {
  constexpr uint32_t kMaxFinite = UINT32_C(0x43e00000);  // 448.0f
  constexpr uint32_t kDenormMask = UINT32_C(141) << 23;
  uint32_t bits = f32_bits(f);
  const uint32_t sign = bits & 0x80000000u;
  bits ^= sign;
  uint8_t result;
  if (bits > 0x7f800000u) {
    result = 0x7f;
  } else if (bits >= kMaxFinite) {
    result = 0x7e;
  } else if (bits < (UINT32_C(121) << 23)) {
    // Below the smallest normal (2^-6): adding 2^14, whose float32 ulp 2^-9 is the e4m3fn subnormal
    // quantum, makes the FPU round the subnormal mantissa to nearest even.
    bits = f32_bits(add_rn(bits_f32(bits), bits_f32(kDenormMask)));
    result = static_cast<uint8_t>(bits - kDenormMask);
  } else {
    uint32_t mant_odd = (bits >> 20) & 1u;
    bits += (static_cast<uint32_t>(7 - 127) << 23) + 0x7ffffu;
    bits += mant_odd;
    result = static_cast<uint8_t>(bits >> 20);
  }
  return static_cast<uint8_t>(result | (sign >> 24));
}
LOWBIT_HD float e4m3fn_to_f32(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  const uint32_t exp = (b >> 3) & 0xfu, mant = b & 0x7u;
  if ((b & 0x7fu) == 0x7fu) return bits_f32(sign | 0x7fc00000u);
  if (exp == 0) return bits_f32(f32_bits(mul_rn(static_cast<float>(mant), 0.001953125f)) | sign);  // mant * 2^-9
  return bits_f32(sign | ((exp + 120u) << 23) | (mant << 20));
}

// float32 -> float8_e5m2 (IEEE-like: overflow gives inf, NaN gives 0x7f). c10 fp8e5m2_from_fp32_value.
LOWBIT_HD uint8_t f32_to_e5m2(float f) {
  constexpr uint32_t kInf = UINT32_C(255) << 23;
  constexpr uint32_t kInfThreshold = UINT32_C(143) << 23;  // 65536.0f
  constexpr uint32_t kDenormMask = UINT32_C(134) << 23;
  uint32_t bits = f32_bits(f);
  const uint32_t sign = bits & 0x80000000u;
  bits ^= sign;
  uint8_t result;
  if (bits >= kInfThreshold) {
    result = bits > kInf ? 0x7f : 0x7c;
  } else if (bits < (UINT32_C(113) << 23)) {
    // Below 2^-14: adding 2^7 (float32 ulp 2^-16 = the e5m2 subnormal quantum) rounds to nearest even.
    bits = f32_bits(add_rn(bits_f32(bits), bits_f32(kDenormMask)));
    result = static_cast<uint8_t>(bits - kDenormMask);
  } else {
    uint32_t mant_odd = (bits >> 21) & 1u;
    bits += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffffu;
    bits += mant_odd;
    result = static_cast<uint8_t>(bits >> 21);
  }
  return static_cast<uint8_t>(result | (sign >> 24));
}
// e5m2 is the high byte of an IEEE binary16.
LOWBIT_HD float e5m2_to_f32(uint8_t b) { return f16_to_f32(static_cast<uint16_t>(b << 8)); }

// int64 -> float32 rounded to odd (truncate, then set the last bit if anything was dropped). A second
// rounding of that to a format with <= 22 significand bits equals one correct RNE rounding, so integer
// sources reach float16 / bfloat16 / float8 with a single rounding.
LOWBIT_HD float i64_to_f32_round_odd(int64_t v) {
  uint64_t m = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  float f;
  if (m < (UINT64_C(1) << 24)) {
    f = static_cast<float>(m);
  } else {
#if defined(__CUDA_ARCH__)
    int k = (64 - __clzll(static_cast<long long>(m))) - 24;
#else
    int k = (64 - __builtin_clzll(m)) - 24;
#endif
    uint64_t q = m >> k;
    if ((m & ((UINT64_C(1) << k) - 1)) != 0) q |= 1u;
    f = ldexpf(static_cast<float>(q), k);
  }
  return v < 0 ? -f : f;
}

// Float -> integer: truncate toward zero, NaN -> 0, out of range saturates (defined, unlike a C cast).
template <typename T>
LOWBIT_HD T f32_to_int(float v) {
  if (v != v) return 0;  // NaN
  const double d = trunc(static_cast<double>(v));
  if (d <= static_cast<double>(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
  if (d >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  return static_cast<T>(d);
}

// ---- per-dtype element traits (what `cast` converts between) ---------------------------------------------
template <DType D> struct Elem;
template <> struct Elem<DType::Float32> { using T = float; static constexpr bool kFloat = true; };
template <> struct Elem<DType::Float16> { using T = uint16_t; static constexpr bool kFloat = true; };
template <> struct Elem<DType::BFloat16> { using T = uint16_t; static constexpr bool kFloat = true; };
template <> struct Elem<DType::Float8E4M3FN> { using T = uint8_t; static constexpr bool kFloat = true; };
template <> struct Elem<DType::Float8E5M2> { using T = uint8_t; static constexpr bool kFloat = true; };
template <> struct Elem<DType::Int8> { using T = int8_t; static constexpr bool kFloat = false; };
template <> struct Elem<DType::UInt8> { using T = uint8_t; static constexpr bool kFloat = false; };
template <> struct Elem<DType::Int16> { using T = int16_t; static constexpr bool kFloat = false; };
template <> struct Elem<DType::Int32> { using T = int32_t; static constexpr bool kFloat = false; };
template <> struct Elem<DType::Int64> { using T = int64_t; static constexpr bool kFloat = false; };
template <> struct Elem<DType::Bool> { using T = uint8_t; static constexpr bool kFloat = false; };

template <DType S>
LOWBIT_HD float to_f32(typename Elem<S>::T x) {
  if constexpr (S == DType::Float32) return x;
  else if constexpr (S == DType::Float16) return f16_to_f32(x);
  else if constexpr (S == DType::BFloat16) return bf16_to_f32(x);
  else if constexpr (S == DType::Float8E4M3FN) return e4m3fn_to_f32(x);
  else return e5m2_to_f32(x);
}

template <DType S>
LOWBIT_HD int64_t to_i64(typename Elem<S>::T x) {
  if constexpr (S == DType::Bool) return x != 0 ? 1 : 0;
  else return static_cast<int64_t>(x);
}

template <DType D>
LOWBIT_HD typename Elem<D>::T from_f32(float v) {
  if constexpr (D == DType::Float32) return v;
  else if constexpr (D == DType::Float16) return f32_to_f16(v);
  else if constexpr (D == DType::BFloat16) return f32_to_bf16(v);
  else if constexpr (D == DType::Float8E4M3FN) return f32_to_e4m3fn(v);
  else if constexpr (D == DType::Float8E5M2) return f32_to_e5m2(v);
  else if constexpr (D == DType::Bool) return v != 0.0f ? 1 : 0;  // NaN is true, as in torch
  else return f32_to_int<typename Elem<D>::T>(v);
}

template <DType D>
LOWBIT_HD typename Elem<D>::T from_i64(int64_t v) {
  using T = typename Elem<D>::T;
  if constexpr (D == DType::Float32) return static_cast<float>(v);  // one RNE rounding
  else if constexpr (Elem<D>::kFloat) return from_f32<D>(i64_to_f32_round_odd(v));
  else if constexpr (D == DType::Bool) return v != 0 ? 1 : 0;
  else return static_cast<T>(static_cast<std::make_unsigned_t<T>>(static_cast<uint64_t>(v)));  // wraps, as torch
}

}  // namespace lowbit
