// Helpers shared by the nn_*.cc CPU kernels: converting runs of f32/f16/bf16 elements to and from float32
// scratch buffers, fixed-order lane sums and cascade summation, 8-lane vector types and the AVX2 dispatch.
// Internal to the CPU backend.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "../dtype.h"

// The build targets baseline x86-64 so the addon runs anywhere. The hottest loops (attention) are also compiled
// for AVX2 and picked at run time (LOWBIT_NN_DISPATCH): an explicit, always-inlined template body instantiated
// inside a target("avx2") wrapper. Without -ffast-math the compiler never reorders float operations, and AVX2
// alone brings no FMA to contract them, so both versions compute bit-identical results; only the vector width
// differs.
#if defined(__x86_64__) && !defined(__AVX2__) && (defined(__GNUC__) || defined(__clang__))
#define LOWBIT_NN_DISPATCH 1
#define LOWBIT_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define LOWBIT_NN_DISPATCH 0
#endif
#define LOWBIT_ALWAYS_INLINE inline __attribute__((always_inline))

namespace lowbit::cpu::nn {

// dst[0..n) = float(src[off..off+n)) for a contiguous run of a compute-float dtype.
inline void load_run(const void* src, DType dt, int64_t off, int64_t n, float* dst) {
  switch (dt) {
    case DType::Float16: {
      const uint16_t* p = static_cast<const uint16_t*>(src) + off;
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(p[i]);
      break;
    }
    case DType::BFloat16: {
      const uint16_t* p = static_cast<const uint16_t*>(src) + off;
      // bf16 -> f32 is a shift; written branch-free so the loop vectorizes.
      for (int64_t i = 0; i < n; ++i) {
        uint32_t u = static_cast<uint32_t>(p[i]) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        dst[i] = f;
      }
      break;
    }
    default:
      std::memcpy(dst, static_cast<const float*>(src) + off, static_cast<size_t>(n) * 4);
      break;
  }
}

// dst[off..off+n) = round(src[0..n)) for a contiguous run.
inline void store_run(void* dst, DType dt, int64_t off, int64_t n, const float* src) {
  switch (dt) {
    case DType::Float16: {
      uint16_t* p = static_cast<uint16_t*>(dst) + off;
      for (int64_t i = 0; i < n; ++i) p[i] = f32_to_f16(src[i]);
      break;
    }
    case DType::BFloat16: {
      uint16_t* p = static_cast<uint16_t*>(dst) + off;
      for (int64_t i = 0; i < n; ++i) p[i] = f32_to_bf16(src[i]);
      break;
    }
    default:
      std::memmove(static_cast<float*>(dst) + off, src, static_cast<size_t>(n) * 4);
      break;
  }
}

// Rounds v to dt and back (identity for float32): the value a store followed by a load would give.
inline float round_to(DType dt, float v) {
  switch (dt) {
    case DType::Float16: return f16_to_f32(f32_to_f16(v));
    case DType::BFloat16: return bf16_to_f32(f32_to_bf16(v));
    default: return v;
  }
}

// Pointer to a float32 view of a run: the data itself for float32, else `buf` filled by load_run.
inline const float* view_run(const void* src, DType dt, int64_t off, int64_t n, float* buf) {
  if (dt == DType::Float32) return static_cast<const float*>(src) + off;
  load_run(src, dt, off, n, buf);
  return buf;
}

// Sum of n floats in 8 lanes: lane l accumulates the elements i = l (mod 8) in order (a tail of fewer than 8
// continues at lane 0), then the lanes fold as ((0+4)+(1+5))+((2+6)+(3+7)). Plain arrays: the SLP vectorizer
// turns this into vector code without reassociating anything. Every lane-wise sum in the CPU kernels follows
// this exact order, so a value does not depend on which code path (or vector width) computed it.
inline float fold8(const float* a) { return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])); }

inline float sum_lanes(const float* p, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += p[i + l];
  for (int l = 0; i < n; ++i, ++l) acc[l] += p[i];
  return fold8(acc);
}

// Dot product of two float runs, lanes as in sum_lanes.
inline float dot_lanes(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  for (int l = 0; i < n; ++i, ++l) acc[l] += a[i] * b[i];
  return fold8(acc);
}

// ---- explicit 8-lane vectors for the hottest loops (attention) ----------------------------------------
// GCC / clang vector extensions with exact lane-wise arithmetic. Two representations of the same 8 lanes:
// Lanes256 (one AVX register, used inside functions compiled for AVX2) and Lanes128 (two SSE registers, the
// baseline: GCC spills 256-bit generic vectors without AVX). Code templated on the lane type computes identical
// results with either.
// (-Wpsabi: passing 256-bit vectors by value changes the ABI without AVX; these helpers are always inlined and
// never cross a call boundary.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

struct Lanes256 {
  using V = v8f;
  static V zero() { return V{0, 0, 0, 0, 0, 0, 0, 0}; }
  static V load(const float* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(float* p, const V& v) { std::memcpy(p, &v, sizeof v); }
  static V splat(float x) { return V{x, x, x, x, x, x, x, x}; }
};

struct Lanes128 {
  struct V {
    v4f lo, hi;
    friend V operator+(V a, V b) { return V{a.lo + b.lo, a.hi + b.hi}; }
    friend V operator*(V a, V b) { return V{a.lo * b.lo, a.hi * b.hi}; }
    V& operator+=(V b) {
      lo += b.lo;
      hi += b.hi;
      return *this;
    }
  };
  static V zero() { return V{v4f{0, 0, 0, 0}, v4f{0, 0, 0, 0}}; }
  static V load(const float* p) {
    V v;
    std::memcpy(&v.lo, p, sizeof v.lo);
    std::memcpy(&v.hi, p + 4, sizeof v.hi);
    return v;
  }
  static void store(float* p, V v) {
    std::memcpy(p, &v.lo, sizeof v.lo);
    std::memcpy(p + 4, &v.hi, sizeof v.hi);
  }
  static V splat(float x) { return V{v4f{x, x, x, x}, v4f{x, x, x, x}}; }
};

// The lanes of code compiled for the build's own target.
#if defined(__AVX2__)
using BaseLanes = Lanes256;
#else
using BaseLanes = Lanes128;
#endif

#if LOWBIT_NN_DISPATCH
// Whether to run the AVX2 code: the CPU supports it and LOWBIT_CPU_BASELINE is not set to 1 (that variable forces
// the baseline code, to compare both paths; checked once per process).
inline bool cpu_has_avx2() {
  static const bool yes = [] {
    const char* force = std::getenv("LOWBIT_CPU_BASELINE");
    if (force != nullptr && std::strcmp(force, "1") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}
#endif

// Cascade summation of a stream of partial sums (one scalar or one vector of `width` lanes per push):
// partials merge like a binary counter, so the rounding error grows with log(count), not count.
class Cascade {
 public:
  explicit Cascade(int64_t width) : width_(width), carry_(static_cast<size_t>(width)) {}
  // Adds `v` (width floats) as the next partial.
  void push(const float* v) {
    float* carry = carry_.data();
    for (int64_t i = 0; i < width_; ++i) carry[i] = v[i];
    int k = 0;
    while ((count_ >> k) & 1u) {
      const float* lv = &levels_[static_cast<size_t>(k) * width_];
      for (int64_t i = 0; i < width_; ++i) carry[i] += lv[i];
      ++k;
    }
    if (levels_.size() < static_cast<size_t>(k + 1) * width_) levels_.resize(static_cast<size_t>(k + 1) * width_);
    std::memcpy(&levels_[static_cast<size_t>(k) * width_], carry, static_cast<size_t>(width_) * 4);
    ++count_;
  }
  // out[0..width) = total of everything pushed (zeros if nothing was).
  void total(float* out) const {
    for (int64_t i = 0; i < width_; ++i) out[i] = 0.0f;
    for (int k = 0; (count_ >> k) != 0; ++k) {
      if (((count_ >> k) & 1u) == 0) continue;
      const float* lv = &levels_[static_cast<size_t>(k) * width_];
      for (int64_t i = 0; i < width_; ++i) out[i] += lv[i];
    }
  }

 private:
  int64_t width_;
  uint64_t count_ = 0;
  std::vector<float> carry_;
  std::vector<float> levels_;  // level k holds the sum of 2^k partials when bit k of count_ is set
};

// Sum of a contiguous run of n elements of dt: 256-element chunks summed in lanes, chunks cascaded.
inline float sum_run(const void* src, DType dt, int64_t off, int64_t n) {
  constexpr int64_t kChunk = 256;
  float buf[kChunk];
  if (n <= kChunk) return sum_lanes(view_run(src, dt, off, n, buf), n);
  Cascade c(1);
  for (int64_t i = 0; i < n; i += kChunk) {
    int64_t len = n - i < kChunk ? n - i : kChunk;
    float s = sum_lanes(view_run(src, dt, off + i, len, buf), len);
    c.push(&s);
  }
  float t;
  c.total(&t);
  return t;
}

// Sum of n float32 values in memory: 256-element chunks in lanes, chunks cascaded.
inline float sum_floats(const float* p, int64_t n) {
  constexpr int64_t kChunk = 256;
  if (n <= kChunk) return sum_lanes(p, n);
  Cascade c(1);
  for (int64_t i = 0; i < n; i += kChunk) {
    float s = sum_lanes(p + i, n - i < kChunk ? n - i : kChunk);
    c.push(&s);
  }
  float t;
  c.total(&t);
  return t;
}

// Dot product of two float32 runs: 256-element chunks in lanes, chunks cascaded.
inline float dot_floats(const float* a, const float* b, int64_t n) {
  constexpr int64_t kChunk = 256;
  if (n <= kChunk) return dot_lanes(a, b, n);
  Cascade c(1);
  for (int64_t i = 0; i < n; i += kChunk) {
    float s = dot_lanes(a + i, b + i, n - i < kChunk ? n - i : kChunk);
    c.push(&s);
  }
  float t;
  c.total(&t);
  return t;
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace lowbit::cpu::nn
