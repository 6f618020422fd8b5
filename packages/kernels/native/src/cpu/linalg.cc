// CPU matmul (packed, cache-blocked, AVX2+FMA micro-kernel with a portable fallback chosen at run time), the fused
// 4-bit GEMM that decodes NF4/FP4 nibbles on the fly, and the LLM.int8 integer products.
//
// Layout of the float GEMM (BLIS style): for each (NC columns, KC depth) slab, B is packed into NR-wide panels
// (kc, NR) and A into MR-tall panels (kc, MR); a (MR x NR) register tile is accumulated over kc and added to C.
// Pool tasks are (MC rows x a group of B panels) tiles of C, so threads never write the same C element.
#include "linalg.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <vector>

#include "parallel.h"

#if defined(__x86_64__) || defined(__i386__)
#define LOWBIT_X86 1
#include <immintrin.h>
#define LOWBIT_AVX2 __attribute__((target("avx2,fma")))
#define LOWBIT_AVX2_F16C __attribute__((target("avx2,fma,f16c")))
#endif
#define LOWBIT_INLINE inline __attribute__((always_inline))

namespace lowbit::cpu {
namespace {

// ---- runtime dispatch and small utilities ----------------------------------------------------------------------------

// LOWBIT_CPU_ISA=generic (read once per process) forces the portable kernels, so they can be tested on AVX2 machines.
bool simd_allowed() {
  static const bool ok = [] {
    const char* isa = std::getenv("LOWBIT_CPU_ISA");
    return isa == nullptr || std::strcmp(isa, "generic") != 0;
  }();
  return ok;
}

bool cpu_avx2_fma() {
#ifdef LOWBIT_X86
  static const bool ok = simd_allowed() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}
bool cpu_f16c() {
#ifdef LOWBIT_X86
  static const bool ok = cpu_avx2_fma() && __builtin_cpu_supports("f16c");
  return ok;
#else
  return false;
#endif
}

// parallel_for whose body may throw (allocation inside a chunk): the first exception is rethrown on the caller.
template <typename F>
void parallel_for_rethrow(int64_t n, int64_t grain, F&& fn) {
  std::exception_ptr err;
  std::mutex mu;
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    try {
      fn(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu);
      if (!err) err = std::current_exception();
    }
  });
  if (err) std::rethrow_exception(err);
}

// A 64-byte-aligned float buffer (packed panels are loaded with aligned vector loads).
class AlignedFloats {
 public:
  explicit AlignedFloats(int64_t n) {
    size_t bytes = (static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float) + 63) / 64 * 64;
    p_ = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (p_ == nullptr) throw std::bad_alloc();
  }
  ~AlignedFloats() { std::free(p_); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  float* get() const { return p_; }

 private:
  float* p_ = nullptr;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Contiguous run of n elements of a compute-float dtype -> float32.
LOWBIT_INLINE void to_f32_body(const void* src, DType d, int64_t n, float* dst) {
  if (d == DType::Float32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  } else if (d == DType::BFloat16) {
    const uint16_t* s = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = bits_f32(static_cast<uint32_t>(s[i]) << 16);
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
  }
}
#ifdef LOWBIT_X86
LOWBIT_AVX2_F16C void to_f32_f16c(const uint16_t* s, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  for (; i < n; ++i) dst[i] = f16_to_f32(s[i]);
}
#endif
void to_f32(const void* src, DType d, int64_t n, float* dst) {
#ifdef LOWBIT_X86
  if (d == DType::Float16 && cpu_f16c()) {
    to_f32_f16c(static_cast<const uint16_t*>(src), n, dst);
    return;
  }
#endif
  to_f32_body(src, d, n, dst);
}

inline const void* elem_ptr(const void* base, DType d, int64_t i) {
  return static_cast<const uint8_t*>(base) + i * dtype_size(d);
}

// ---- float GEMM micro-kernels ---------------------------------------------------------------------------------------

constexpr int MR = 6;          // rows of the register tile
constexpr int NR = 16;         // columns of the register tile (two 8-float vectors)
constexpr int64_t KC = 256;    // depth of a packed slab: a (KC, NR) B panel is 16 KiB (L1)
constexpr int64_t MC = 120;    // rows per task: a (MC, KC) packed A block is 120 KiB (L2)
constexpr int64_t NC = 4096;   // columns per slab: the packed (KC, NC) B slab is 4 MiB (L3)
constexpr int64_t MBIG = 2040; // rows of A packed at once (multiple of MC)

using Ukernel = void (*)(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, int mr, int nr, float alpha,
                         float beta, bool first);

// C tile update from an accumulated (MR, NR) tile: the first K slab applies beta, later slabs add.
inline void store_tile(float* C, int64_t ldc, const float* acc, int mr, int nr, float alpha, float beta, bool first) {
  for (int i = 0; i < mr; ++i) {
    float* c = C + i * ldc;
    for (int j = 0; j < nr; ++j) {
      const float v = alpha * acc[i * NR + j];
      if (!first) c[j] += v;
      else c[j] = beta == 0.0f ? v : v + beta * c[j];
    }
  }
}

// Portable micro-kernel in GCC/Clang vector extensions: 4-float vectors (SSE on x86, NEON on ARM64, whose 32 vector
// registers hold the whole 6x16 tile).
typedef float v4f __attribute__((vector_size(16)));

void ukernel_generic(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, int mr, int nr, float alpha,
                     float beta, bool first) {
  v4f acc[MR][NR / 4];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR / 4; ++j) acc[i][j] = v4f{0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t k = 0; k < kc; ++k) {
    v4f b[NR / 4];
    std::memcpy(b, B + k * NR, sizeof(b));
    const float* a = A + k * MR;
    for (int i = 0; i < MR; ++i) {
      const v4f ai = v4f{a[i], a[i], a[i], a[i]};
      for (int j = 0; j < NR / 4; ++j) acc[i][j] += ai * b[j];
    }
  }
  float tile[MR * NR];
  std::memcpy(tile, acc, sizeof(tile));  // acc[i][j] holds tile row i, columns 4j .. 4j+3
  store_tile(C, ldc, tile, mr, nr, alpha, beta, first);
}

#ifdef LOWBIT_X86
LOWBIT_AVX2 void ukernel_avx2(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, int mr, int nr, float alpha,
                              float beta, bool first) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
    __m256 a = _mm256_broadcast_ss(A + 0);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(A + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(A + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(A + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(A + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(A + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
    A += MR;
    B += NR;
  }
  const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (mr == MR && nr == NR) {
    const __m256 va = _mm256_set1_ps(alpha);
    const __m256 vb = _mm256_set1_ps(beta);
    for (int i = 0; i < MR; ++i) {
      float* c = C + i * ldc;
      for (int h = 0; h < 2; ++h) {
        const __m256 v = _mm256_mul_ps(va, acc[i][h]);
        if (!first) _mm256_storeu_ps(c + 8 * h, _mm256_add_ps(_mm256_loadu_ps(c + 8 * h), v));
        else if (beta == 0.0f) _mm256_storeu_ps(c + 8 * h, v);
        else _mm256_storeu_ps(c + 8 * h, _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8 * h), v));
      }
    }
    return;
  }
  alignas(32) float tmp[MR * NR];
  for (int i = 0; i < MR; ++i) {
    _mm256_store_ps(tmp + i * NR, acc[i][0]);
    _mm256_store_ps(tmp + i * NR + 8, acc[i][1]);
  }
  store_tile(C, ldc, tmp, mr, nr, alpha, beta, first);
}
#endif

Ukernel pick_ukernel() {
#ifdef LOWBIT_X86
  if (cpu_avx2_fma()) return ukernel_avx2;
#endif
  return ukernel_generic;
}

// C = beta * C (beta == 0 writes zeros), for K == 0.
void scale_c(float* C, int64_t ldc, int64_t M, int64_t N, float beta) {
  parallel_for(M, std::max<int64_t>(1, 16384 / N), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
  });
}

// ---- packing from strided f32/f16/bf16 ------------------------------------------------------------------------------

// panel (kc, NR) from up to NR row-major float rows (rows[r][k], k < kc); rows >= nrows are zero. Portable version.
void rows_to_panel_generic(const float* const* rows, int nrows, int64_t kc, float* panel) {
  for (int r = 0; r < NR; ++r) {
    if (r < nrows) {
      const float* src = rows[r];
      for (int64_t k = 0; k < kc; ++k) panel[k * NR + r] = src[k];
    } else {
      for (int64_t k = 0; k < kc; ++k) panel[k * NR + r] = 0.0f;
    }
  }
}

#ifdef LOWBIT_X86
// The same with 8x8 register transposes (two per group of 8 k), about 5x fewer operations than scalar scatters.
LOWBIT_AVX2 void rows_to_panel_avx2(const float* const* rows, int nrows, int64_t kc, float* panel) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    for (int h = 0; h < 2; ++h) {
      __m256 v[8];
      for (int i = 0; i < 8; ++i) v[i] = 8 * h + i < nrows ? _mm256_loadu_ps(rows[8 * h + i] + k) : _mm256_setzero_ps();
      const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
      const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
      const __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
      const __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      float* dst = panel + k * NR + 8 * h;
      _mm256_storeu_ps(dst + 0 * NR, _mm256_permute2f128_ps(u0, u4, 0x20));
      _mm256_storeu_ps(dst + 1 * NR, _mm256_permute2f128_ps(u1, u5, 0x20));
      _mm256_storeu_ps(dst + 2 * NR, _mm256_permute2f128_ps(u2, u6, 0x20));
      _mm256_storeu_ps(dst + 3 * NR, _mm256_permute2f128_ps(u3, u7, 0x20));
      _mm256_storeu_ps(dst + 4 * NR, _mm256_permute2f128_ps(u0, u4, 0x31));
      _mm256_storeu_ps(dst + 5 * NR, _mm256_permute2f128_ps(u1, u5, 0x31));
      _mm256_storeu_ps(dst + 6 * NR, _mm256_permute2f128_ps(u2, u6, 0x31));
      _mm256_storeu_ps(dst + 7 * NR, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
  }
  for (; k < kc; ++k)
    for (int r = 0; r < NR; ++r) panel[k * NR + r] = r < nrows ? rows[r][k] : 0.0f;
}
#endif

void rows_to_panel(const float* const* rows, int nrows, int64_t kc, float* panel) {
#ifdef LOWBIT_X86
  if (cpu_avx2_fma()) {
    rows_to_panel_avx2(rows, nrows, kc, panel);
    return;
  }
#endif
  rows_to_panel_generic(rows, nrows, kc, panel);
}

void pack_strided(const void* src, DType d, int64_t rs, int64_t ks, float* panel, int64_t r0, int64_t rows, int64_t width,
                  int64_t k0, int64_t kc) {
  if (ks == 1 && width == NR && kc <= KC) {
    // B stored (N, K): up to NR rows contiguous along k, transposed into the panel.
    const float* rows_ptr[NR];
    float tmp[NR * KC];
    for (int64_t r = 0; r < rows; ++r) {
      if (d == DType::Float32) {
        rows_ptr[r] = static_cast<const float*>(src) + (r0 + r) * rs + k0;
      } else {
        to_f32(elem_ptr(src, d, (r0 + r) * rs + k0), d, kc, tmp + r * KC);
        rows_ptr[r] = tmp + r * KC;
      }
    }
    rows_to_panel(rows_ptr, static_cast<int>(rows), kc, panel);
    return;
  }
  if (ks == 1) {
    // contiguous along k (A stored (M, K)): convert a row run, then scatter into the panel.
    float tmp[KC];
    for (int64_t k = 0; k < kc; k += KC) {
      const int64_t len = std::min(KC, kc - k);
      for (int64_t r = 0; r < rows; ++r) {
        to_f32(elem_ptr(src, d, (r0 + r) * rs + k0 + k), d, len, tmp);
        for (int64_t q = 0; q < len; ++q) panel[(k + q) * width + r] = tmp[q];
      }
    }
  } else if (rs == 1) {
    // contiguous along rows (A stored (K, M), B stored (K, N)): one converted run per k lands contiguous in the panel.
    for (int64_t k = 0; k < kc; ++k) to_f32(elem_ptr(src, d, (k0 + k) * ks + r0), d, rows, panel + k * width);
  } else {
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t r = 0; r < rows; ++r) panel[k * width + r] = load_f(src, d, (r0 + r) * rs + (k0 + k) * ks);
  }
  if (rows < width)
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t r = rows; r < width; ++r) panel[k * width + r] = 0.0f;
}

// ---- dot / axpy helpers for the small-M paths (bodies compiled twice: portable and AVX2+FMA) --------------------------

// sum x[i] * y[i] with 16 independent partial sums (the compiler vectorizes the fixed inner loop).
LOWBIT_INLINE float dot_body(const float* x, const float* y, int64_t n) {
  float lanes[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) lanes[j] += x[i + j] * y[i + j];
  float s = 0.0f;
  for (; i < n; ++i) s += x[i] * y[i];
  for (int j = 0; j < 16; ++j) s += lanes[j];
  return s;
}
LOWBIT_INLINE void axpy_body(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}
float dot_generic(const float* x, const float* y, int64_t n) { return dot_body(x, y, n); }
void axpy_generic(float* y, float a, const float* x, int64_t n) { axpy_body(y, a, x, n); }
#ifdef LOWBIT_X86
LOWBIT_AVX2 float dot_avx2(const float* x, const float* y, int64_t n) { return dot_body(x, y, n); }
LOWBIT_AVX2 void axpy_avx2(float* y, float a, const float* x, int64_t n) { axpy_body(y, a, x, n); }
#endif
using DotFn = float (*)(const float*, const float*, int64_t);
using AxpyFn = void (*)(float*, float, const float*, int64_t);
DotFn pick_dot() {
#ifdef LOWBIT_X86
  if (cpu_avx2_fma()) return dot_avx2;
#endif
  return dot_generic;
}
AxpyFn pick_axpy() {
#ifdef LOWBIT_X86
  if (cpu_avx2_fma()) return axpy_avx2;
#endif
  return axpy_generic;
}

// acc (M, N) = xa (M, K) @ op(B) for small M: streams B once (B (N, K) by dot products, B (K, N) by row axpys).
void small_m_product(float* acc, const float* xa, const void* b, DType d, int64_t M, int64_t N, int64_t K, bool trans_b) {
  constexpr int64_t kPiece = 1024;
  if (trans_b) {
    const DotFn dot = pick_dot();
    parallel_for(N, std::max<int64_t>(1, 8192 / std::max<int64_t>(K, 1)), [&](int64_t n0, int64_t n1) {
      float tmp[kPiece];
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t m = 0; m < M; ++m) acc[m * N + n] = 0.0f;
        for (int64_t k = 0; k < K; k += kPiece) {
          const int64_t len = std::min(kPiece, K - k);
          const float* row;
          if (d == DType::Float32) {
            row = static_cast<const float*>(b) + n * K + k;
          } else {
            to_f32(elem_ptr(b, d, n * K + k), d, len, tmp);
            row = tmp;
          }
          for (int64_t m = 0; m < M; ++m) acc[m * N + n] += dot(xa + m * K + k, row, len);
        }
      }
    });
  } else {
    const AxpyFn axpy = pick_axpy();
    constexpr int64_t kCols = 512;
    parallel_for(ceil_div(N, kCols), 1, [&](int64_t c0, int64_t c1) {
      float tmp[kCols];
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t j0 = c * kCols, w = std::min(kCols, N - j0);
        for (int64_t m = 0; m < M; ++m) std::fill(acc + m * N + j0, acc + m * N + j0 + w, 0.0f);
        for (int64_t k = 0; k < K; ++k) {
          const float* row;
          if (d == DType::Float32) {
            row = static_cast<const float*>(b) + k * N + j0;
          } else {
            to_f32(elem_ptr(b, d, k * N + j0), d, w, tmp);
            row = tmp;
          }
          for (int64_t m = 0; m < M; ++m) axpy(acc + m * N + j0, xa[m * K + k], row, w);
        }
      }
    });
  }
}

// out[i] = T(alpha * acc[i] + beta * out[i]) (beta == 0: out is not read).
void epilogue(void* out, DType od, const float* acc, int64_t count, float alpha, float beta) {
  parallel_for(count, 32768, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float v = alpha * acc[i];
      if (beta != 0.0f) v += beta * load_f(out, od, i);
      store_f(out, od, i, v);
    }
  });
}

constexpr int64_t kSmallM = 4;  // matmuls with M <= this stream B directly instead of packing it

// One batch item of matmul.
void matmul_one(void* out, DType od, const void* a, const void* b, DType d, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
                float alpha, float beta) {
  if (M <= kSmallM && K > 0) {
    std::vector<float> xa(static_cast<size_t>(M * K));
    if (!ta) {
      to_f32(a, d, M * K, xa.data());
    } else {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t m = 0; m < M; ++m) xa[static_cast<size_t>(m * K + k)] = load_f(a, d, k * M + m);
    }
    std::vector<float> acc(static_cast<size_t>(M * N));
    small_m_product(acc.data(), xa.data(), b, d, M, N, K, tb);
    epilogue(out, od, acc.data(), M * N, alpha, beta);
    return;
  }
  const PackFn pa = ta ? strided_packer(a, d, 1, M) : strided_packer(a, d, K, 1);
  const PackFn pb = tb ? strided_packer(b, d, K, 1) : strided_packer(b, d, 1, N);
  if (od == DType::Float32) {
    gemm_packed(static_cast<float*>(out), N, M, N, K, pa, pb, alpha, beta);
    return;
  }
  std::vector<float> ws(static_cast<size_t>(M * N));
  gemm_packed(ws.data(), N, M, N, K, pa, pb, 1.0f, 0.0f);
  epilogue(out, od, ws.data(), M * N, alpha, beta);
}

// ---- 4-bit decoding ----------------------------------------------------------------------------------------------------

// Scale of absmax block `blk`: plain absmax, or the fused nested dequant fmaf(code[q], absmax2[blk >> 8], offset).
inline float block_scale(const Weight4bit& w, int64_t blk) {
  if (w.qabsmax != nullptr) return std::fma(w.nested_code[w.qabsmax[blk]], w.nested_absmax[blk >> 8], w.offset);
  return w.absmax[blk];
}
inline uint32_t code_at(const uint8_t* packed, int64_t e) {
  const uint8_t byte = packed[e >> 1];
  return (e & 1) ? (byte & 15u) : (byte >> 4);
}
inline int log2_exact(int64_t v) {
  int l = 0;
  while ((int64_t{1} << l) < v) ++l;
  return l;
}

// dst[0 .. kc) = W(n, k0 .. k0 + kc) as fp32(LUT[code] * scale): portable version.
void decode_range_generic(const Weight4bit& w, int64_t n, int64_t K, int64_t k0, int64_t kc, float* dst) {
  const float* lut = lut4(w.type);
  const int lg = log2_exact(w.blocksize);
  int64_t e = n * K + k0;
  const int64_t end = e + kc;
  float* o = dst;
  while (e < end) {
    const int64_t blk = e >> lg;
    const int64_t se = std::min(end, (blk + 1) << lg);
    const float s = block_scale(w, blk);
    float slut[16];
    for (int j = 0; j < 16; ++j) slut[j] = lut[j] * s;
    int64_t i = e;
    if (i & 1) *o++ = slut[code_at(w.packed, i++)];
    for (; i + 2 <= se; i += 2) {
      const uint8_t p = w.packed[i >> 1];
      *o++ = slut[p >> 4];
      *o++ = slut[p & 15];
    }
    if (i < se) *o++ = slut[code_at(w.packed, i)];
    e = se;
  }
}

#ifdef LOWBIT_X86
struct BytePlaneLut;
const BytePlaneLut* nf4_planes();
const BytePlaneLut* fp4_planes();
// Eight consecutive weights from 4 packed bytes at p (element order: high nibble of byte 0 first). Each lane shifts
// its nibble down (the low 3 bits index an 8-entry half of the scaled LUT) and its bit 3 up to bit 31 (selects the half).
LOWBIT_AVX2 LOWBIT_INLINE __m256 decode8(const uint8_t* p, __m256 lo, __m256 hi, __m256i shr, __m256i shl) {
  uint32_t u;
  std::memcpy(&u, p, 4);
  const __m256i v = _mm256_set1_epi32(static_cast<int>(u));
  const __m256i idx = _mm256_srlv_epi32(v, shr);
  const __m256i sel = _mm256_sllv_epi32(v, shl);
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), _mm256_castsi256_ps(sel));
}
LOWBIT_AVX2 LOWBIT_INLINE __m256i decode_shr() { return _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24); }
LOWBIT_AVX2 LOWBIT_INLINE __m256i decode_shl() { return _mm256_setr_epi32(24, 28, 16, 20, 8, 12, 0, 4); }
LOWBIT_AVX2 LOWBIT_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

LOWBIT_AVX2 void decode_range_avx2(const Weight4bit& w, int64_t n, int64_t K, int64_t k0, int64_t kc, float* dst) {
  const float* lut = lut4(w.type);
  const __m256 lut_lo = _mm256_loadu_ps(lut), lut_hi = _mm256_loadu_ps(lut + 8);
  const __m256i shr = decode_shr(), shl = decode_shl();
  const int lg = log2_exact(w.blocksize);
  int64_t e = n * K + k0;
  const int64_t end = e + kc;
  float* o = dst;
  while (e < end) {
    const int64_t blk = e >> lg;
    const int64_t se = std::min(end, (blk + 1) << lg);
    const float s = block_scale(w, blk);
    const __m256 vs = _mm256_set1_ps(s);
    const __m256 lo = _mm256_mul_ps(lut_lo, vs), hi = _mm256_mul_ps(lut_hi, vs);
    int64_t i = e;
    if (i & 1) *o++ = lut[code_at(w.packed, i++)] * s;
    for (; i + 8 <= se; i += 8, o += 8) _mm256_storeu_ps(o, decode8(w.packed + (i >> 1), lo, hi, shr, shl));
    for (; i < se; ++i) *o++ = lut[code_at(w.packed, i)] * s;
    e = se;
  }
}

// res[m] = sum_{k0 <= k < k1} x[m0 + m, k] * W(n, k) for MB rows of x (M, K) float32: one pass over that part of
// W's row n.
template <int MB>
LOWBIT_AVX2 void gemv4_row_avx2(const Weight4bit& w, int lg, const float* x, int64_t K, int64_t m0, int64_t n, int64_t k0,
                                int64_t k1, float* res) {
  constexpr int U = MB == 1 ? 4 : 2;  // 8-float groups per step: enough independent FMA chains
  const float* lut = lut4(w.type);
  const __m256 lut_lo = _mm256_loadu_ps(lut), lut_hi = _mm256_loadu_ps(lut + 8);
  const __m256i shr = decode_shr(), shl = decode_shl();
  __m256 acc[MB][U];
  float tail[MB];
  for (int m = 0; m < MB; ++m) {
    tail[m] = 0.0f;
    for (int u = 0; u < U; ++u) acc[m][u] = _mm256_setzero_ps();
  }
  const float* xr[MB];
  for (int m = 0; m < MB; ++m) xr[m] = x + (m0 + m) * K;
  const int64_t base = n * K, end = base + k1;
  int64_t e = base + k0;
  while (e < end) {
    const int64_t blk = e >> lg;
    const int64_t se = std::min(end, (blk + 1) << lg);
    const float s = block_scale(w, blk);
    const __m256 vs = _mm256_set1_ps(s);
    const __m256 lo = _mm256_mul_ps(lut_lo, vs), hi = _mm256_mul_ps(lut_hi, vs);
    int64_t i = e;
    if ((i & 1) == 0) {
      for (; i + 8 * U <= se; i += 8 * U) {
        const uint8_t* p = w.packed + (i >> 1);
        const int64_t xo = i - base;
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) {
          const __m256 wv = decode8(p + 4 * u, lo, hi, shr, shl);
#pragma GCC unroll 4
          for (int m = 0; m < MB; ++m) acc[m][u] = _mm256_fmadd_ps(_mm256_loadu_ps(xr[m] + xo + 8 * u), wv, acc[m][u]);
        }
      }
    }
    for (; i < se; ++i) {
      const float wv = lut[code_at(w.packed, i)] * s;
      for (int m = 0; m < MB; ++m) tail[m] += xr[m][i - base] * wv;
    }
    e = se;
  }
  for (int m = 0; m < MB; ++m) {
    __m256 t = acc[m][0];
    for (int u = 1; u < U; ++u) t = _mm256_add_ps(t, acc[m][u]);
    res[m] = hsum(t) + tail[m];
  }
}
// Byte-plane decoding (K % 32 == 0): 16 packed bytes give 32 weights with 4 vpshufb lookups (byte j of every LUT value)
// and two levels of unpacks, fewer shuffle uops than the per-8 permutes above. Lane 0 of the code vector holds the
// low nibbles (odd elements), lane 1 the high nibbles (even elements), so the 32 weights come out in a fixed
// permuted order; x is permuted once per call to match (kBytePlaneOrder), which keeps the dot products unchanged.
struct BytePlaneLut {
  alignas(16) uint8_t planes[4][16];  // planes[j][c] = byte j of the fp32 LUT value of code c
  explicit BytePlaneLut(const float* lut) {
    for (int c = 0; c < 16; ++c) {
      const uint32_t u = f32_bits(lut[c]);
      for (int j = 0; j < 4; ++j) planes[j][c] = static_cast<uint8_t>(u >> (8 * j));
    }
  }
};
// Element (within a 32-element chunk) produced at output position q * 8 + l of decode32_bp.
struct BytePlaneOrder {
  int8_t elem[32];
  BytePlaneOrder() {
    for (int q = 0; q < 4; ++q)
      for (int l = 0; l < 8; ++l) {
        const int byte = (q >> 1) * 8 + (q & 1) * 4 + (l & 3);  // unpack{lo,hi}_epi8 then unpack{lo,hi}_epi16
        elem[q * 8 + l] = static_cast<int8_t>(2 * byte + (l < 4 ? 1 : 0));
      }
  }
};
const BytePlaneOrder kBytePlaneOrder;

// x (M, K) in any compute dtype -> float32 (M, K) with every 32-element chunk permuted to the byte-plane order.
void permute_x_byteplane(const void* x, DType d, int64_t M, int64_t K, float* dst) {
  parallel_for(M, 1, [&](int64_t m0, int64_t m1) {
    float tmp[32];
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t k = 0; k < K; k += 32) {
        to_f32(elem_ptr(x, d, m * K + k), d, 32, tmp);
        for (int i = 0; i < 32; ++i) dst[m * K + k + i] = tmp[kBytePlaneOrder.elem[i]];
      }
  });
}

// The unscaled LUT values of 32 codes (16 packed bytes at p), in the byte-plane order.
LOWBIT_AVX2 LOWBIT_INLINE void decode32_bp_lut(const uint8_t* p, const __m256i t[4], __m256i low4, __m256 w[4]) {
  const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i c = _mm256_and_si256(_mm256_blend_epi32(v, _mm256_srli_epi16(v, 4), 0xF0), low4);
  const __m256i b0 = _mm256_shuffle_epi8(t[0], c), b1 = _mm256_shuffle_epi8(t[1], c);
  const __m256i b2 = _mm256_shuffle_epi8(t[2], c), b3 = _mm256_shuffle_epi8(t[3], c);
  const __m256i l01 = _mm256_unpacklo_epi8(b0, b1), h01 = _mm256_unpackhi_epi8(b0, b1);
  const __m256i l23 = _mm256_unpacklo_epi8(b2, b3), h23 = _mm256_unpackhi_epi8(b2, b3);
  w[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(l01, l23));
  w[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(l01, l23));
  w[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(h01, h23));
  w[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(h01, h23));
}
// fp32(LUT[code] * scale): the dequantized weights, exactly as dequantize4bit produces them.
LOWBIT_AVX2 LOWBIT_INLINE void decode32_bp(const uint8_t* p, const __m256i t[4], __m256i low4, __m256 s, __m256 w[4]) {
  decode32_bp_lut(p, t, low4, w);
  for (int q = 0; q < 4; ++q) w[q] = _mm256_mul_ps(w[q], s);
}

const BytePlaneLut* nf4_planes() {
  static const BytePlaneLut t(kNF4Lut);
  return &t;
}
const BytePlaneLut* fp4_planes() {
  static const BytePlaneLut t(kFP4Lut);
  return &t;
}

// gemv4_row_bp_avx2 for one x row: per absmax block, sum x * LUT[code] in 4 chains and add scale * that sum to the
// totals (one FMA per chain and block instead of a multiply per weight; the matvec is decode-bound).
LOWBIT_AVX2 void gemv4_row_bp1_avx2(const Weight4bit& w, int lg, const float* xp, int64_t K, int64_t m0, int64_t n, int64_t k0,
                                    int64_t k1, float* res) {
  const BytePlaneLut& bpl = w.type == QuantType::NF4 ? *nf4_planes() : *fp4_planes();
  __m256i t[4];
  for (int j = 0; j < 4; ++j)
    t[j] = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(bpl.planes[j])));
  const __m256i low4 = _mm256_set1_epi8(15);
  // Two running totals (four would spill: the LUT planes, the block sums and the totals share 16 registers).
  __m256 tot[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  const float* xr = xp + m0 * K;
  const int64_t base = n * K, end = base + k1;
  int64_t e = base + k0;
  const int64_t bs = int64_t{1} << lg;
  if ((e & (bs - 1)) == 0 && (end & (bs - 1)) == 0) {
    // Whole blocks (the usual case, K % blocksize == 0): a fixed number of 32-weight chunks per block.
    const int64_t chunks = bs / 32;
    const uint8_t* p = w.packed + (e >> 1);
    const float* xc = xr + k0;
    for (int64_t blk = e >> lg, last = end >> lg; blk < last; ++blk) {
      const __m256 s = _mm256_set1_ps(block_scale(w, blk));
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int64_t c = 0; c < chunks; ++c, p += 16, xc += 32) {
        __m256 wv[4];
        decode32_bp_lut(p, t, low4, wv);
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) acc[q] = _mm256_fmadd_ps(_mm256_loadu_ps(xc + 8 * q), wv[q], acc[q]);
      }
      tot[0] = _mm256_fmadd_ps(_mm256_add_ps(acc[0], acc[2]), s, tot[0]);
      tot[1] = _mm256_fmadd_ps(_mm256_add_ps(acc[1], acc[3]), s, tot[1]);
    }
    e = end;
  }
  while (e < end) {
    const int64_t blk = e >> lg;
    const int64_t se = std::min(end, (blk + 1) << lg);
    const __m256 s = _mm256_set1_ps(block_scale(w, blk));
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (; e < se; e += 32) {
      __m256 wv[4];
      decode32_bp_lut(w.packed + (e >> 1), t, low4, wv);
      const float* xc = xr + (e - base);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) acc[q] = _mm256_fmadd_ps(_mm256_loadu_ps(xc + 8 * q), wv[q], acc[q]);
    }
    tot[0] = _mm256_fmadd_ps(_mm256_add_ps(acc[0], acc[2]), s, tot[0]);
    tot[1] = _mm256_fmadd_ps(_mm256_add_ps(acc[1], acc[3]), s, tot[1]);
  }
  res[0] = hsum(_mm256_add_ps(tot[0], tot[1]));
}

// gemv4_row for 2..4 x rows (one row: gemv4_row_bp1_avx2), K % 32 == 0 with x permuted by permute_x_byteplane and
// k0, k1 multiples of 32 (or K): every segment is whole 32-element chunks. The weights are decoded once and scaled
// (fp32(LUT * scale)) for all rows.
template <int MB>
LOWBIT_AVX2 void gemv4_row_bp_avx2(const Weight4bit& w, int lg, const float* xp, int64_t K, int64_t m0, int64_t n, int64_t k0,
                                   int64_t k1, float* res) {
  const BytePlaneLut& bpl = w.type == QuantType::NF4 ? *nf4_planes() : *fp4_planes();
  __m256i t[4];
  for (int j = 0; j < 4; ++j)
    t[j] = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(bpl.planes[j])));
  const __m256i low4 = _mm256_set1_epi8(15);
  constexpr int U = 2;  // two accumulators per row: each takes 2 of the 4 dependent FMAs per 32-weight chunk
  __m256 acc[MB][U];
  for (int m = 0; m < MB; ++m)
    for (int u = 0; u < U; ++u) acc[m][u] = _mm256_setzero_ps();
  const float* xr[MB];
  for (int m = 0; m < MB; ++m) xr[m] = xp + (m0 + m) * K;
  const int64_t base = n * K, end = base + k1;
  for (int64_t e = base + k0; e < end;) {
    const int64_t blk = e >> lg;
    const int64_t se = std::min(end, (blk + 1) << lg);
    const __m256 s = _mm256_set1_ps(block_scale(w, blk));
    for (; e < se; e += 32) {
      __m256 wv[4];
      decode32_bp(w.packed + (e >> 1), t, low4, s, wv);
      const int64_t xo = e - base;
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q)
#pragma GCC unroll 4
        for (int m = 0; m < MB; ++m)
          acc[m][q % U] = _mm256_fmadd_ps(_mm256_loadu_ps(xr[m] + xo + 8 * q), wv[q], acc[m][q % U]);
    }
  }
  for (int m = 0; m < MB; ++m) {
    __m256 v = acc[m][0];
    for (int u = 1; u < U; ++u) v = _mm256_add_ps(v, acc[m][u]);
    res[m] = hsum(v);
  }
}
#endif

// Portable version of gemv4_row: decode a piece of the row, then dot it with each x row.
template <int MB>
void gemv4_row_generic(const Weight4bit& w, int lg, const float* x, int64_t K, int64_t m0, int64_t n, int64_t k0, int64_t k1,
                       float* res) {
  (void)lg;
  constexpr int64_t kPiece = 512;
  float wbuf[kPiece];
  for (int m = 0; m < MB; ++m) res[m] = 0.0f;
  for (int64_t k = k0; k < k1; k += kPiece) {
    const int64_t len = std::min(kPiece, k1 - k);
    decode_range_generic(w, n, K, k, len, wbuf);
    for (int m = 0; m < MB; ++m) res[m] += dot_generic(x + (m0 + m) * K + k, wbuf, len);
  }
}

using Gemv4Fn = void (*)(const Weight4bit&, int, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*);
using DecodeFn = void (*)(const Weight4bit&, int64_t, int64_t, int64_t, int64_t, float*);

constexpr int64_t kGemv4MaxM = 16;  // gemm4bit with M <= this streams W once per row group; above, it packs and tiles
constexpr int64_t kGemv4XBytes = 192 * 1024;  // the x slice (M rows x a K chunk, float32) kept in L2 while W streams
constexpr int64_t kGemv4Rows = 64;            // W rows per K-chunk sweep (their partial sums stay on the stack)

}  // namespace

// ---- public: packed GEMM engine ------------------------------------------------------------------------------------

PackFn strided_packer(const void* src, DType dtype, int64_t row_stride, int64_t k_stride) {
  return [=](float* panel, int64_t r0, int64_t rows, int64_t width, int64_t k0, int64_t kc) {
    pack_strided(src, dtype, row_stride, k_stride, panel, r0, rows, width, k0, kc);
  };
}

void gemm_packed(float* C, int64_t ldc, int64_t M, int64_t N, int64_t K, const PackFn& pack_a, const PackFn& pack_b,
                 float alpha, float beta) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scale_c(C, ldc, M, N, beta);
    return;
  }
  const Ukernel kern = pick_ukernel();
  const int64_t nc_max = std::min(N, NC), kc_max = std::min(K, KC), mb_max = std::min(M, MBIG);
  AlignedFloats bp(round_up(nc_max, NR) * kc_max);
  AlignedFloats ap(round_up(mb_max, MR) * kc_max);
  const int64_t threads = num_threads();
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    const int64_t npan = ceil_div(nc, NR);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const bool first = pc == 0;
      float* const Bp = bp.get();
      parallel_for(npan, 4, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) pack_b(Bp + p * NR * kc, jc + p * NR, std::min<int64_t>(NR, nc - p * NR), NR, pc, kc);
      });
      for (int64_t ic0 = 0; ic0 < M; ic0 += MBIG) {
        const int64_t mb = std::min(MBIG, M - ic0);
        const int64_t mpan = ceil_div(mb, MR);
        float* const Ap = ap.get();
        parallel_for(mpan, 8, [&](int64_t p0, int64_t p1) {
          for (int64_t p = p0; p < p1; ++p)
            pack_a(Ap + p * MR * kc, ic0 + p * MR, std::min<int64_t>(MR, mb - p * MR), MR, pc, kc);
        });
        // Tasks: (MC rows) x (a group of B panels), enough of them to keep every pool thread busy.
        const int64_t n_mblk = ceil_div(mb, MC);
        int64_t n_nblk = std::min(npan, std::max<int64_t>(1, ceil_div(4 * threads, n_mblk)));
        const int64_t per = ceil_div(npan, n_nblk);
        n_nblk = ceil_div(npan, per);
        parallel_for(n_mblk * n_nblk, 1, [&](int64_t t0, int64_t t1) {
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t im = t / n_nblk, jn = t % n_nblk;
            const int64_t i_begin = im * MC, i_end = std::min(mb, i_begin + MC);
            const int64_t p_begin = jn * per, p_end = std::min(npan, p_begin + per);
            for (int64_t p = p_begin; p < p_end; ++p) {
              const int64_t j = p * NR;
              const int nr = static_cast<int>(std::min<int64_t>(NR, nc - j));
              const float* B = Bp + p * NR * kc;
              for (int64_t i = i_begin; i < i_end; i += MR) {
                const int mr = static_cast<int>(std::min<int64_t>(MR, mb - i));
                kern(kc, Ap + (i / MR) * MR * kc, B, C + (ic0 + i) * ldc + jc + j, ldc, mr, nr, alpha, beta, first);
              }
            }
          }
        });
      }
    }
  }
}

// ---- public: matmul ------------------------------------------------------------------------------------------------

void matmul(void* out, DType out_dtype, const void* a, const void* b, DType dtype, int64_t batch, int64_t M, int64_t N,
            int64_t K, bool trans_a, bool trans_b, int64_t stride_a, int64_t stride_b, int64_t stride_out, float alpha,
            float beta) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  auto item = [&](int64_t i) {
    matmul_one(static_cast<uint8_t*>(out) + i * stride_out * dtype_size(out_dtype), out_dtype, elem_ptr(a, dtype, i * stride_a),
               elem_ptr(b, dtype, i * stride_b), dtype, M, N, K, trans_a, trans_b, alpha, beta);
  };
  // Many small products: one item per task (the item's own parallel_for calls then run inline).
  const bool per_item_parallel = batch > 1 && (M * N * std::max<int64_t>(K, 1) <= (int64_t{1} << 21) || batch >= 4 * num_threads());
  if (per_item_parallel) {
    parallel_for_rethrow(batch, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0; i < b1; ++i) item(i);
    });
  } else {
    for (int64_t i = 0; i < batch; ++i) item(i);
  }
}

// ---- public: gemm4bit ----------------------------------------------------------------------------------------------

void gemm4bit(void* out, const void* x, DType dtype, const Weight4bit& w, int64_t M, int64_t N, int64_t K, const void* bias) {
  if (M <= 0 || N <= 0) return;
  const int lg = log2_exact(w.blocksize);
  auto bias_at = [&](int64_t n) { return bias != nullptr ? load_f(bias, dtype, n) : 0.0f; };
  if (K <= 0) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) store_f(out, dtype, m * N + n, bias_at(n));
    return;
  }
  const bool avx2 = cpu_avx2_fma();
  if (M <= kGemv4MaxM) {
    // x as float32 (M, K); W is streamed once, row by row, each row reused from L1 for every group of 4 x rows.
    std::vector<float> xbuf;
    const float* xf = static_cast<const float*>(x);
    Gemv4Fn fns[5] = {nullptr, gemv4_row_generic<1>, gemv4_row_generic<2>, gemv4_row_generic<3>, gemv4_row_generic<4>};
#ifdef LOWBIT_X86
    const bool byteplane = avx2 && K % 32 == 0;
    if (byteplane) {
      xbuf.resize(static_cast<size_t>(M * K));
      permute_x_byteplane(x, dtype, M, K, xbuf.data());
      xf = xbuf.data();
      fns[1] = gemv4_row_bp1_avx2;
      fns[2] = gemv4_row_bp_avx2<2>;
      fns[3] = gemv4_row_bp_avx2<3>;
      fns[4] = gemv4_row_bp_avx2<4>;
    } else if (avx2) {
      fns[1] = gemv4_row_avx2<1>;
      fns[2] = gemv4_row_avx2<2>;
      fns[3] = gemv4_row_avx2<3>;
      fns[4] = gemv4_row_avx2<4>;
    }
#endif
    if (xf == static_cast<const float*>(x) && dtype != DType::Float32) {
      xbuf.resize(static_cast<size_t>(M * K));
      to_f32(x, dtype, M * K, xbuf.data());
      xf = xbuf.data();
    }
    // With many x rows and a long K, x does not fit in L2: sweep K in chunks (multiples of 32 so the byte-plane order
    // holds) over blocks of kGemv4Rows weight rows, adding partial sums.
    int64_t kchunk = K;
#ifdef LOWBIT_X86
    if (byteplane && M * K * 4 > kGemv4XBytes) kchunk = std::max<int64_t>(32, kGemv4XBytes / (M * 4) / 32 * 32);
#endif
    parallel_for(N, std::max<int64_t>(1, 16384 / K), [&](int64_t n0, int64_t n1) {
      float res[4];
      float acc[kGemv4MaxM * kGemv4Rows];
      for (int64_t r0 = n0; r0 < n1; r0 += kGemv4Rows) {
        const int64_t r1 = std::min(n1, r0 + kGemv4Rows);
        std::fill(acc, acc + M * kGemv4Rows, 0.0f);
        for (int64_t k0 = 0; k0 < K; k0 += kchunk) {
          const int64_t k1 = std::min(K, k0 + kchunk);
          for (int64_t n = r0; n < r1; ++n)
            for (int64_t m0 = 0; m0 < M; m0 += 4) {
              const int mb = static_cast<int>(std::min<int64_t>(4, M - m0));
              fns[mb](w, lg, xf, K, m0, n, k0, k1, res);
              for (int m = 0; m < mb; ++m) acc[(m0 + m) * kGemv4Rows + (n - r0)] += res[m];
            }
        }
        for (int64_t n = r0; n < r1; ++n) {
          const float bn = bias_at(n);
          for (int64_t m = 0; m < M; ++m) store_f(out, dtype, m * N + n, acc[m * kGemv4Rows + (n - r0)] + bn);
        }
      }
    });
    return;
  }
  // Larger M: the float GEMM with B panels decoded from the nibbles (each weight decoded once per K slab).
  DecodeFn decode = decode_range_generic;
#ifdef LOWBIT_X86
  if (avx2) decode = decode_range_avx2;
#endif
  const PackFn pa = strided_packer(x, dtype, K, 1);
  const PackFn pb = [&](float* panel, int64_t r0, int64_t rows, int64_t width, int64_t k0, int64_t kc) {
    // gemm_packed asks for B panels of width NR and depth kc <= KC: decode the rows, then transpose them in.
    (void)width;
    float tmp[NR * KC];
    const float* rows_ptr[NR];
    for (int64_t r = 0; r < rows; ++r) {
      decode(w, r0 + r, K, k0, kc, tmp + r * KC);
      rows_ptr[r] = tmp + r * KC;
    }
    rows_to_panel(rows_ptr, static_cast<int>(rows), kc, panel);
  };
  std::vector<float> ws;
  float* C = static_cast<float*>(out);
  if (dtype != DType::Float32) {
    ws.resize(static_cast<size_t>(M * N));
    C = ws.data();
  }
  gemm_packed(C, N, M, N, K, pa, pb, 1.0f, 0.0f);
  if (dtype != DType::Float32 || bias != nullptr) {
    parallel_for(M, std::max<int64_t>(1, 16384 / N), [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m)
        for (int64_t n = 0; n < N; ++n) store_f(out, dtype, m * N + n, C[m * N + n] + bias_at(n));
    });
  }
}

// ---- public: LLM.int8 ----------------------------------------------------------------------------------------------

namespace {

// out[i, j] for RA rows of A and RB rows of B over the full K (int16 pair products summed into int32 lanes).
template <int RA, int RB>
LOWBIT_INLINE void int8_tile_generic(const int8_t* a, const int8_t* b, int32_t* out, int64_t N, int64_t K, int64_t i, int64_t j) {
  for (int r = 0; r < RA; ++r)
    for (int q = 0; q < RB; ++q) {
      const int8_t* x = a + (i + r) * K;
      const int8_t* y = b + (j + q) * K;
      uint32_t s = 0;  // wrapping accumulation: int32 overflow is defined (two's complement) this way
      for (int64_t k = 0; k < K; ++k) s += static_cast<uint32_t>(static_cast<int32_t>(x[k]) * static_cast<int32_t>(y[k]));
      out[(i + r) * N + j + q] = static_cast<int32_t>(s);
    }
}

#ifdef LOWBIT_X86
template <int RA, int RB>
LOWBIT_AVX2 void int8_tile_avx2(const int8_t* a, const int8_t* b, int32_t* out, int64_t N, int64_t K, int64_t i, int64_t j) {
  __m256i acc[RA][RB];
  for (int r = 0; r < RA; ++r)
    for (int q = 0; q < RB; ++q) acc[r][q] = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256i va[RA], vb[RB];
    for (int r = 0; r < RA; ++r)
      va[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + (i + r) * K + k)));
    for (int q = 0; q < RB; ++q)
      vb[q] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + (j + q) * K + k)));
    // |a*b| <= 2^14, so each int16 pair sum of vpmaddwd fits int32 exactly.
    for (int r = 0; r < RA; ++r)
      for (int q = 0; q < RB; ++q) acc[r][q] = _mm256_add_epi32(acc[r][q], _mm256_madd_epi16(va[r], vb[q]));
  }
  for (int r = 0; r < RA; ++r)
    for (int q = 0; q < RB; ++q) {
      alignas(32) int32_t lanes[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[r][q]);
      uint32_t s = 0;
      for (int l = 0; l < 8; ++l) s += static_cast<uint32_t>(lanes[l]);
      const int8_t* x = a + (i + r) * K;
      const int8_t* y = b + (j + q) * K;
      for (int64_t kk = k; kk < K; ++kk) s += static_cast<uint32_t>(static_cast<int32_t>(x[kk]) * static_cast<int32_t>(y[kk]));
      out[(i + r) * N + j + q] = static_cast<int32_t>(s);
    }
}
#endif

template <int RA, int RB>
void int8_tile(bool avx2, const int8_t* a, const int8_t* b, int32_t* out, int64_t N, int64_t K, int64_t i, int64_t j) {
#ifdef LOWBIT_X86
  if (avx2) {
    int8_tile_avx2<RA, RB>(a, b, out, N, K, i, j);
    return;
  }
#endif
  (void)avx2;
  int8_tile_generic<RA, RB>(a, b, out, N, K, i, j);
}

template <int RA>
void int8_tile_rb(int rb, bool avx2, const int8_t* a, const int8_t* b, int32_t* out, int64_t N, int64_t K, int64_t i, int64_t j) {
  switch (rb) {
    case 4: int8_tile<RA, 4>(avx2, a, b, out, N, K, i, j); break;
    case 3: int8_tile<RA, 3>(avx2, a, b, out, N, K, i, j); break;
    case 2: int8_tile<RA, 2>(avx2, a, b, out, N, K, i, j); break;
    default: int8_tile<RA, 1>(avx2, a, b, out, N, K, i, j); break;
  }
}

}  // namespace

void int8_matmul(int32_t* out, const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0) return;
  const bool avx2 = cpu_avx2_fma();
  // (32 x 32) output tiles: the 32 rows of A and of B (32*K bytes each) stay in L2 while the tile is computed.
  constexpr int64_t T = 32;
  const int64_t tm = ceil_div(M, T), tn = ceil_div(N, T);
  parallel_for(tm * tn, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = (t / tn) * T, j0 = (t % tn) * T;
      const int64_t i1 = std::min(M, i0 + T), j1 = std::min(N, j0 + T);
      for (int64_t i = i0; i < i1; i += 2)
        for (int64_t j = j0; j < j1; j += 4) {
          const int rb = static_cast<int>(std::min<int64_t>(4, j1 - j));
          if (i + 2 <= i1) int8_tile_rb<2>(rb, avx2, a, b, out, N, K, i, j);
          else int8_tile_rb<1>(rb, avx2, a, b, out, N, K, i, j);
        }
    }
  });
}

void int8_outlier_matmul_add(void* out, const void* x, DType dtype, const int8_t* CB, const float* SCB, const int32_t* cols,
                             int64_t n_cols, int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0 || n_cols <= 0) return;
  // Gather the outlier columns: xs (M, n_cols) and the dequantized weights ws (N, n_cols).
  std::vector<float> xs(static_cast<size_t>(M * n_cols)), ws(static_cast<size_t>(N * n_cols));
  constexpr float kInv127 = 7.874015718698502e-3f;  // fp32 0x3c010204, upstream's (CB * SCB) * (1/127)
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < n_cols; ++j) xs[static_cast<size_t>(m * n_cols + j)] = load_f(x, dtype, m * K + cols[j]);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < n_cols; ++j) {
      const float scaled = static_cast<float>(CB[n * K + cols[j]]) * SCB[n];
      ws[static_cast<size_t>(n * n_cols + j)] = scaled * kInv127;
    }
  const DotFn dot = pick_dot();
  parallel_for(M * N, std::max<int64_t>(1, 65536 / n_cols), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t m = i / N, n = i % N;
      const float s = dot(xs.data() + m * n_cols, ws.data() + n * n_cols, n_cols);
      store_f(out, dtype, i, load_f(out, dtype, i) + s);
    }
  });
}

}  // namespace lowbit::cpu
