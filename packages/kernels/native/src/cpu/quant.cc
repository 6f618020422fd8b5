// CPU implementations of the bitsandbytes quantizers (spec §3–§12): NF4/FP4, nested absmax, 8-bit blockwise, LLM.int8.
// Bit-exactness: every quantizer computes r = 1 / absmax once per block as bitsandbytes' CUDA build does
// (cuda_reciprocal: its rcp.approx emulated for 16-bit mantissas, IEEE otherwise) and then s = x * r as a
// separate IEEE float multiply (no fast-math). Nothing here is a multiply feeding an add except the
// nested-absmax dequant, whose two roundings are kept apart by a volatile store (so FMA contraction cannot merge them),
// and int8_mm_dequant, which calls fmaf explicitly as CUDA does.
#include "quant.h"

#include "../cuda_reciprocal.h"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "parallel.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace lowbit::cpu {
namespace {
constexpr uint8_t kRcpUp[128] = {LOWBIT_RCP_UP_BYTES};
constexpr uint8_t kRcpDown[128] = {LOWBIT_RCP_DOWN_BYTES};
// 1 / x with bitsandbytes' CUDA reciprocal (see cuda_reciprocal.h).
inline float rcp(float x) { return cuda_reciprocal(x, kRcpUp, kRcpDown); }
}  // namespace


// All tables are spelled as fp32 bit patterns (spec §2, §3), the one source of truth.
#define LB(u) bits_f32(u)
// NF4 values (spec §2.1) by code.
const float kNF4Lut[16] = {
    LB(0xbf800000u), LB(0xbf3239b1u), LB(0xbf066b30u), LB(0xbeca32a0u), LB(0xbe91a24du), LB(0xbe3d353fu),
    LB(0xbdba7871u), LB(0x00000000u), LB(0x3da2faffu), LB(0x3e24cae3u), LB(0x3e7c04ddu), LB(0x3ead033au),
    LB(0x3ee1a4b8u), LB(0x3f1007abu), LB(0x3f3913b3u), LB(0x3f800000u),
};
// FP4 values (spec §2.2) by code; code 8 is -0.0 as in the CUDA LUTs.
const float kFP4Lut[16] = {
    LB(0x00000000u), LB(0x3baaaaabu), LB(0x3f2aaaabu), LB(0x3f800000u), LB(0x3eaaaaabu), LB(0x3f000000u),
    LB(0x3e2aaaabu), LB(0x3e800000u), LB(0x80000000u), LB(0xbbaaaaabu), LB(0xbf2aaaabu), LB(0xbf800000u),
    LB(0xbeaaaaabu), LB(0xbf000000u), LB(0xbe2aaaabu), LB(0xbe800000u),
};

namespace {

// NF4 decision thresholds (spec §3.2): the fp32 midpoints of adjacent NF4 values.
const float kNF4Thr[15] = {
    LB(0xbf591cd8u), LB(0xbf1c5270u), LB(0xbeeb8480u), LB(0xbeadea76u), LB(0xbe703cecu), LB(0xbe0d38bcu),
    LB(0xbd3a7871u), LB(0x3d22faffu), LB(0x3df64862u), LB(0x3e5067e0u), LB(0x3e9582d4u), LB(0x3ec753f9u),
    LB(0x3f006d04u), LB(0x3f248dafu), LB(0x3f5c89dau),
};
// FP4 magnitude thresholds (spec §3.3): the CUDA source literals, not the midpoints (P10).
const float kFP4Thr[7] = {
    LB(0x3b2aaab9u), LB(0x3db00000u), LB(0x3e555555u), LB(0x3e955555u), LB(0x3ed55556u), LB(0x3f155550u), LB(0x3f555555u),
};
#undef LB

// Magnitude code by the number c of FP4 thresholds below |s| (spec §3.3 FP4_MAG_CODE = 0,1,6,7,4,5,2,3), written
// arithmetically so loops over it vectorize: bit 0 is c & 1, bits 2..1 are (4 - c/2) & 3.
inline uint32_t fp4_mag_code(uint32_t c) { return (((4u - (c >> 1)) & 3u) << 1) | (c & 1u); }

inline uint32_t nf4_code(float s, const float* thr) {
  uint32_t c = 0;
  for (int j = 0; j < 15; ++j) c += s > thr[j] ? 1u : 0u;  // NaN compares false: code 0
  return c;
}
inline uint32_t fp4_code(float s, const float* thr) {
  float m = std::fabs(s);
  uint32_t c = 0;
  for (int j = 0; j < 7; ++j) c += m > thr[j] ? 1u : 0u;  // NaN: c = 0, magnitude 000
  return (s < 0.0f ? 8u : 0u) | fp4_mag_code(c);          // -0.0 and NaN take sign 0
}

#if defined(__x86_64__) || defined(__i386__)
#define LOWBIT_QUANT_X86 1
// LOWBIT_CPU_ISA=generic (read once per process) forces the portable code, as in linalg.cc.
bool cpu_avx2() {
  static const bool ok = [] {
    const char* isa = std::getenv("LOWBIT_CPU_ISA");
    if (isa != nullptr && std::strcmp(isa, "generic") == 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  }();
  return ok;
}

// load_block for float16 input with F16C conversions.
__attribute__((target("avx2,f16c"))) void load_block_f16c(float* dst, const uint16_t* p, int64_t len) {
  int64_t i = 0;
  for (; i + 8 <= len; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i))));
  for (; i < len; ++i) dst[i] = f16_to_f32(p[i]);
}

// block_absmax, 8 lanes: max_ps(|v|, m) returns m when |v| is NaN, so NaN is skipped exactly as the scalar form.
__attribute__((target("avx2"))) float block_absmax_avx2(const float* v, int64_t len) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_set1_ps(-FLT_MAX);
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(v + i), abs_mask), m);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float r = -FLT_MAX;
  for (int l = 0; l < 8; ++l) r = lanes[l] > r ? lanes[l] : r;
  for (; i < len; ++i) {
    const float a = std::fabs(v[i]);
    r = a > r ? a : r;
  }
  return r;
}

// codes[i] = code of fp32(v[i] * r) for i < len, 8 lanes at a time: the code is the count of thresholds below s
// (ordered compares, so NaN counts none), as nf4_code / fp4_code.
__attribute__((target("avx2"))) void block_codes4_avx2(const float* v, int64_t len, float r, QuantType t, uint8_t* codes) {
  const __m256 vr = _mm256_set1_ps(r);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  alignas(32) int32_t lanes[8];
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(v + i), vr);
    __m256i c = _mm256_setzero_si256();
    if (t == QuantType::NF4) {
      for (int j = 0; j < 15; ++j)
        c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(s, _mm256_set1_ps(kNF4Thr[j]), _CMP_GT_OQ)));
    } else {
      const __m256 m = _mm256_and_ps(s, abs_mask);
      for (int j = 0; j < 7; ++j)
        c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(m, _mm256_set1_ps(kFP4Thr[j]), _CMP_GT_OQ)));
      // magnitude code (((4 - c/2) & 3) << 1) | (c & 1), sign bit 8 for s < 0
      const __m256i hi = _mm256_slli_epi32(_mm256_and_si256(_mm256_sub_epi32(_mm256_set1_epi32(4), _mm256_srli_epi32(c, 1)),
                                                             _mm256_set1_epi32(3)), 1);
      const __m256i sign = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_LT_OQ)), _mm256_set1_epi32(8));
      c = _mm256_or_si256(_mm256_or_si256(hi, _mm256_and_si256(c, _mm256_set1_epi32(1))), sign);
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), c);
    for (int l = 0; l < 8; ++l) codes[i + l] = static_cast<uint8_t>(lanes[l]);
  }
  for (; i < len; ++i) {
    const float s = v[i] * r;
    codes[i] = static_cast<uint8_t>(t == QuantType::NF4 ? nf4_code(s, kNF4Thr) : fp4_code(s, kFP4Thr));
  }
}
#endif

// Converts `len` elements of x starting at element `start` to float32.
void load_block(float* dst, const void* x, DType dtype, int64_t start, int64_t len) {
  switch (dtype) {
    case DType::Float32:
      std::memcpy(dst, static_cast<const float*>(x) + start, static_cast<size_t>(len) * sizeof(float));
      break;
    case DType::Float16: {
      const uint16_t* p = static_cast<const uint16_t*>(x) + start;
#ifdef LOWBIT_QUANT_X86
      if (cpu_avx2()) {
        load_block_f16c(dst, p, len);
        break;
      }
#endif
      for (int64_t i = 0; i < len; ++i) dst[i] = f16_to_f32(p[i]);
      break;
    }
    default: {
      const uint16_t* p = static_cast<const uint16_t*>(x) + start;
      for (int64_t i = 0; i < len; ++i) dst[i] = bf16_to_f32(p[i]);
      break;
    }
  }
}

// max |v| over the block with NaN skipped, starting at -FLT_MAX (the CUDA fmaxf reduction, spec §5).
float block_absmax(const float* v, int64_t len) {
  float m = -FLT_MAX;
  for (int64_t i = 0; i < len; ++i) {
    float a = std::fabs(v[i]);
    m = a > m ? a : m;  // a NaN `a` compares false and is skipped
  }
  return m;
}


// block_absmax through the AVX2 version where the CPU has it (the result is identical: max is exact).
float absmax_of(const float* v, int64_t len) {
#ifdef LOWBIT_QUANT_X86
  if (cpu_avx2()) return block_absmax_avx2(v, len);
#endif
  return block_absmax(v, len);
}

// Stores one float as `d` at element index i of out.
inline void store_as(void* out, DType d, int64_t i, float v) { store_f(out, d, i, v); }

// Keeps `v` rounded to float32 as its own value: a volatile round trip the compiler cannot fuse into an FMA.
inline float materialize(float v) {
  volatile float t = v;
  return t;
}

// Blocks per parallel chunk so a chunk holds about 32K elements.
inline int64_t block_grain(int64_t bs) { return std::max<int64_t>(1, 32768 / bs); }

}  // namespace

uint8_t quantize4_code(float s, QuantType t) {
  return static_cast<uint8_t>(t == QuantType::NF4 ? nf4_code(s, kNF4Thr) : fp4_code(s, kFP4Thr));
}

bool valid_blocksize4(int64_t bs) { return bs >= 32 && bs <= 4096 && (bs & (bs - 1)) == 0; }
bool valid_blocksize8(int64_t bs) { return bs >= 64 && bs <= 4096 && (bs & (bs - 1)) == 0; }

void quantize4bit(uint8_t* packed, float* absmax, const void* x, DType dtype, int64_t n, int64_t blocksize, QuantType t) {
  if (n <= 0) return;
  const int64_t bs = blocksize;
  const int64_t nb = (n + bs - 1) / bs;
#ifdef LOWBIT_QUANT_X86
  const bool avx2 = cpu_avx2();
#endif
  parallel_for(nb, block_grain(bs), [&](int64_t b0, int64_t b1) {
    float buf[4096];
    uint8_t codes[4096];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = b * bs;  // even: bs >= 32, so every block starts on a byte
      const int64_t len = std::min(bs, n - start);
      load_block(buf, x, dtype, start, len);
      const float am = absmax_of(buf, len);
      absmax[b] = am;
      const float r = rcp(am);  // +inf for an all-zero block: 0 * inf = NaN -> code 0 (spec P2)
#ifdef LOWBIT_QUANT_X86
      if (avx2) {
        block_codes4_avx2(buf, len, r, t, codes);
      } else
#endif
      if (t == QuantType::NF4) {
        for (int64_t i = 0; i < len; ++i) {
          const float s = buf[i] * r;
          codes[i] = static_cast<uint8_t>(nf4_code(s, kNF4Thr));
        }
      } else {
        for (int64_t i = 0; i < len; ++i) {
          const float s = buf[i] * r;
          codes[i] = static_cast<uint8_t>(fp4_code(s, kFP4Thr));
        }
      }
      uint8_t* dst = packed + start / 2;
      const int64_t pairs = len / 2;
      for (int64_t j = 0; j < pairs; ++j) dst[j] = static_cast<uint8_t>((codes[2 * j] << 4) | codes[2 * j + 1]);
      if (len & 1) {
        // Odd n: the missing element is a zero-padded load, coded as fp32(0 * r): code(0.0) normally, but NaN -> 0
        // for an all-zero block (r = +inf), exactly as the CUDA kernel and @lowbit/dtypes.
        const float pad_scaled = 0.0f * r;
        dst[pairs] = static_cast<uint8_t>((codes[len - 1] << 4) | quantize4_code(pad_scaled, t));
      }
    }
  });
}

void dequantize4bit(void* out, DType out_dtype, const uint8_t* packed, const float* absmax, int64_t n, int64_t blocksize,
                    QuantType t) {
  if (n <= 0) return;
  const int64_t bs = blocksize;
  const int64_t nb = (n + bs - 1) / bs;
  const float* lut = lut4(t);
  parallel_for(nb, block_grain(bs), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = b * bs;
      const int64_t len = std::min(bs, n - start);
      const float am = absmax[b];
      const uint8_t* src = packed + start / 2;
      const int64_t pairs = len / 2;
      if (out_dtype == DType::Float32) {
        float scaled[16];
        for (int j = 0; j < 16; ++j) scaled[j] = lut[j] * am;
        float* o = static_cast<float*>(out) + start;
        for (int64_t j = 0; j < pairs; ++j) {
          const uint8_t p = src[j];
          o[2 * j] = scaled[p >> 4];
          o[2 * j + 1] = scaled[p & 15];
        }
        if (len & 1) o[len - 1] = scaled[src[pairs] >> 4];
      } else {
        // fp16/bf16: the 16 rounded values of this block, then a lookup per element.
        uint16_t scaled[16];
        for (int j = 0; j < 16; ++j) {
          const float v = lut[j] * am;
          scaled[j] = out_dtype == DType::Float16 ? f32_to_f16(v) : f32_to_bf16(v);
        }
        uint16_t* o = static_cast<uint16_t*>(out) + start;
        for (int64_t j = 0; j < pairs; ++j) {
          const uint8_t p = src[j];
          o[2 * j] = scaled[p >> 4];
          o[2 * j + 1] = scaled[p & 15];
        }
        if (len & 1) o[len - 1] = scaled[src[pairs] >> 4];
      }
    }
  });
}

void dequantize_nested_absmax(float* out, const uint8_t* qabsmax, const float* nested_absmax, const float* code, float offset,
                              int64_t n_blocks, int64_t nested_blocksize) {
  parallel_for(n_blocks, 65536, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float scaled = materialize(code[qabsmax[i]] * nested_absmax[i / nested_blocksize]);  // first rounding
      out[i] = scaled + offset;                                                                   // second rounding
    }
  });
}

namespace {

// CUDA's search (spec §11.2) only visits the odd-indexed codes 1, 3, ..., 253 (a perfect 7-level tree over them) and,
// for a sorted code, ends on the even pivot p = 2 * #(odd codes < xs) with bounds lower = max(p - 1, 0) and
// upper = p + 1. So a branch-free lower bound over those 127 values, stored contiguously, replaces the dependent
// index arithmetic of the literal form; the final midpoint comparisons are CUDA's. (Checked equal to the literal
// search on millions of inputs, duplicates, exact midpoints and NaN included.)
struct OddCodes {
  float v[128];
  explicit OddCodes(const float* code) {
    for (int i = 0; i < 127; ++i) v[i] = code[2 * i + 1];
    v[127] = code[255];
  }
};

inline int32_t even_pivot(const OddCodes& odd, float xs) {
  int32_t base = 0;
  // base += half when xs > odd[base + half - 1] (NaN never is), as a mask so the compiler emits no branch.
  for (int32_t half = 64; half >= 1; half >>= 1) base += half & -static_cast<int32_t>(xs > odd.v[base + half - 1]);
  return 2 * base;
}

inline uint8_t finish_code8(float xs, const float* code, int32_t p) {
  const float val = code[p];
  if (xs > val) {
    const float mid = (code[p + 1] + val) * 0.5f;
    return static_cast<uint8_t>(xs > mid ? p + 1 : p);
  }
  const int32_t lower = p > 0 ? p - 1 : 0;
  const float mid = (code[lower] + val) * 0.5f;
  return static_cast<uint8_t>(xs < mid ? lower : p);  // exact ties stay on the even pivot
}

}  // namespace

uint8_t quantize8_code(float xs, const float* code) {
  const OddCodes odd(code);
  return finish_code8(xs, code, even_pivot(odd, xs));
}

void quantize_blockwise8(uint8_t* codes, float* absmax, const void* x, DType dtype, int64_t n, int64_t blocksize,
                         const float* code) {
  if (n <= 0) return;
  const int64_t bs = blocksize;
  const int64_t nb = (n + bs - 1) / bs;
  const OddCodes odd(code);
  parallel_for(nb, std::max<int64_t>(1, 8192 / bs), [&](int64_t b0, int64_t b1) {
    float buf[4096];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = b * bs;
      const int64_t len = std::min(bs, n - start);
      load_block(buf, x, dtype, start, len);
      const float am = absmax_of(buf, len);
      absmax[b] = am;
      const float r = rcp(am);
      // Four independent searches per step keep the core busy while each one waits on its loads.
      int64_t i = 0;
      for (; i + 4 <= len; i += 4) {
        float s[4];
        int32_t p[4];
        for (int j = 0; j < 4; ++j) s[j] = buf[i + j] * r;
        for (int j = 0; j < 4; ++j) p[j] = even_pivot(odd, s[j]);
        for (int j = 0; j < 4; ++j) codes[start + i + j] = finish_code8(s[j], code, p[j]);
      }
      for (; i < len; ++i) {
        const float s = buf[i] * r;
        codes[start + i] = finish_code8(s, code, even_pivot(odd, s));
      }
    }
  });
}

void dequantize_blockwise8(void* out, DType out_dtype, const uint8_t* codes, const float* absmax, const float* code, int64_t n,
                           int64_t blocksize) {
  if (n <= 0) return;
  const int64_t bs = blocksize;
  const int64_t nb = (n + bs - 1) / bs;
  parallel_for(nb, block_grain(bs), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = b * bs;
      const int64_t len = std::min(bs, n - start);
      const float am = absmax[b];
      for (int64_t i = start; i < start + len; ++i) store_as(out, out_dtype, i, code[codes[i]] * am);
    }
  });
}

std::vector<int32_t> int8_vectorwise_quant(int8_t* CB, float* SCB, const void* x, DType dtype, int64_t rows, int64_t cols,
                                           double threshold) {
  std::vector<int32_t> outlier_cols;
  if (rows <= 0 || cols <= 0) return outlier_cols;
  const bool split = threshold > 0.0;
  // One flag per column, set (relaxed, idempotent) by any row that has an outlier there.
  std::vector<std::atomic<uint8_t>> is_outlier(split ? static_cast<size_t>(cols) : 0);
  for (auto& f : is_outlier) f.store(0, std::memory_order_relaxed);
  const int64_t grain = std::max<int64_t>(1, 16384 / cols);
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = r * cols;
      float am = 0.0f;
      for (int64_t c = 0; c < cols; ++c) {
        const float a = std::fabs(load_f(x, dtype, base + c));
        if (split && static_cast<double>(a) >= threshold) {  // compared in double, as @lowbit/dtypes
          is_outlier[static_cast<size_t>(c)].store(1, std::memory_order_relaxed);
          continue;
        }
        am = a > am ? a : am;  // NaN skipped
      }
      SCB[r] = am;
      const float scale = 127.0f * rcp(am);  // __fdividef(127, am); +inf for an all-zero row (then 0 * inf = NaN -> 0)
      int8_t* q = CB + base;
      for (int64_t c = 0; c < cols; ++c) {
        const float v = load_f(x, dtype, base + c);
        if (split && static_cast<double>(std::fabs(v)) >= threshold) {
          q[c] = 0;
          continue;
        }
        float s = v * scale;
        if (std::isnan(s)) s = 0.0f;
        s = std::nearbyint(std::min(127.0f, std::max(-127.0f, s)));  // round half to even (default rounding mode)
        q[c] = static_cast<int8_t>(s);
      }
    }
  });
  if (!split) return outlier_cols;
  for (int64_t c = 0; c < cols; ++c)
    if (is_outlier[static_cast<size_t>(c)].load(std::memory_order_relaxed)) outlier_cols.push_back(static_cast<int32_t>(c));
  if (rows > 1 && !outlier_cols.empty()) {
    parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int32_t c : outlier_cols) CB[r * cols + c] = 0;
    });
  }
  return outlier_cols;
}

void int8_mm_dequant(void* out, DType out_dtype, const int32_t* C, const float* row_stats, const float* col_stats,
                     const void* bias, int64_t M, int64_t N) {
  if (M <= 0 || N <= 0) return;
  const bool fused_bias = bias != nullptr && out_dtype == DType::Float16;
  parallel_for(M, std::max<int64_t>(1, 16384 / N), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float rs = row_stats[r];
      for (int64_t c = 0; c < N; ++c) {
        const int64_t i = r * N + c;
        const float prod = static_cast<float>(C[i]) * rs;  // (C * row) * col, left to right (spec §12.4)
        const float p = prod * col_stats[c];
        const float b = fused_bias ? load_f(bias, DType::Float16, c) : 0.0f;
        uint16_t h = f32_to_f16(std::fma(p, kMmDequantScale, b));
        if (bias != nullptr && !fused_bias) {
          // upstream: out.add_(bias) on the fp16 result, computed in float32 and rounded back to fp16.
          h = f32_to_f16(f16_to_f32(h) + load_f(bias, out_dtype, c));
        }
        store_f(out, out_dtype, i, f16_to_f32(h));
      }
    }
  });
}

}  // namespace lowbit::cpu
