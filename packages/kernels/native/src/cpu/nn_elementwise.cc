// CPU elementwise kernels: unary ops and their derivatives, broadcasting binary ops. Elements are converted
// to float32 in blocks, transformed, and rounded back once (torch's formulas for every op).
#include <algorithm>
#include <cmath>

#include "nn.h"
#include "nn_internal.h"
#include "parallel.h"

namespace lowbit::cpu {
namespace {

using nn::load_run;
using nn::store_run;

constexpr int64_t kBlock = 1024;  // elements converted per scratch block

constexpr float kSqrt1_2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;            // 1 / sqrt(2 pi)
constexpr float kGeluTanhBeta = 0.79788456080286535588f;          // sqrt(2 / pi)
constexpr float kGeluTanhKappa = 0.044715f;

// Cheap ops move memory; transcendental ones are compute bound and want smaller chunks.
bool is_cheap(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: case UnaryOp::Abs: case UnaryOp::Relu: case UnaryOp::Scale:
    case UnaryOp::AddScalar: case UnaryOp::Square: return true;
    default: return false;
  }
}

// Runs f over blocks of [0, n): f(block_start, len, scratch...) with scratch buffers of kBlock floats.
template <typename F>
void for_blocks(int64_t n, bool cheap, F f) {
  int64_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(blocks, cheap ? 64 : 8, [&](int64_t b0, int64_t b1) {
    float x[kBlock], y[kBlock];
    for (int64_t b = b0; b < b1; ++b) {
      int64_t i0 = b * kBlock;
      f(i0, std::min(kBlock, n - i0), x, y);
    }
  });
}

template <typename Op>
void map1(void* out, const void* x, DType dt, int64_t n, bool cheap, Op op) {
  for_blocks(n, cheap, [&](int64_t i0, int64_t len, float* bx, float*) {
    load_run(x, dt, i0, len, bx);
    for (int64_t i = 0; i < len; ++i) bx[i] = op(bx[i]);
    store_run(out, dt, i0, len, bx);
  });
}

// d(x, g) -> gx for every element.
template <typename Op>
void map2(void* gx, const void* gy, const void* x, DType dt, int64_t n, bool cheap, Op op) {
  for_blocks(n, cheap, [&](int64_t i0, int64_t len, float* bx, float* bg) {
    load_run(x, dt, i0, len, bx);
    load_run(gy, dt, i0, len, bg);
    for (int64_t i = 0; i < len; ++i) bx[i] = op(bx[i], bg[i]);
    store_run(gx, dt, i0, len, bx);
  });
}

// torch's pow(Tensor, Scalar) special-cases these exponents (exact squares, sqrt instead of powf).
float pow_scalar(float x, float a) {
  if (a == 2.0f) return x * x;
  if (a == 0.5f) return std::sqrt(x);
  if (a == 3.0f) return x * x * x;
  if (a == -0.5f) return 1.0f / std::sqrt(x);
  if (a == -1.0f) return 1.0f / x;
  if (a == -2.0f) return 1.0f / (x * x);
  if (a == 1.0f) return x;
  if (a == 0.0f) return 1.0f;
  return std::pow(x, a);
}

}  // namespace

void unary(UnaryOp op, void* out, const void* x, DType dt, int64_t n, float alpha) {
  bool cheap = is_cheap(op);
  switch (op) {
    case UnaryOp::Neg: return map1(out, x, dt, n, cheap, [](float v) { return -v; });
    case UnaryOp::Exp: return map1(out, x, dt, n, cheap, [](float v) { return std::exp(v); });
    case UnaryOp::Log: return map1(out, x, dt, n, cheap, [](float v) { return std::log(v); });
    case UnaryOp::Sqrt: return map1(out, x, dt, n, cheap, [](float v) { return std::sqrt(v); });
    case UnaryOp::Rsqrt: return map1(out, x, dt, n, cheap, [](float v) { return 1.0f / std::sqrt(v); });
    case UnaryOp::Abs: return map1(out, x, dt, n, cheap, [](float v) { return std::fabs(v); });
    case UnaryOp::Silu: return map1(out, x, dt, n, cheap, [](float v) { return v / (1.0f + std::exp(-v)); });
    case UnaryOp::Gelu:
      return map1(out, x, dt, n, cheap, [](float v) { return 0.5f * v * (1.0f + std::erf(v * kSqrt1_2)); });
    case UnaryOp::GeluTanh:
      return map1(out, x, dt, n, cheap, [](float v) {
        return 0.5f * v * (1.0f + std::tanh(kGeluTanhBeta * (v + kGeluTanhKappa * v * v * v)));
      });
    // x < 0 ? 0 : x keeps NaN (torch.relu propagates it).
    case UnaryOp::Relu: return map1(out, x, dt, n, cheap, [](float v) { return v < 0.0f ? 0.0f : v; });
    case UnaryOp::Sigmoid: return map1(out, x, dt, n, cheap, [](float v) { return 1.0f / (1.0f + std::exp(-v)); });
    case UnaryOp::Tanh: return map1(out, x, dt, n, cheap, [](float v) { return std::tanh(v); });
    case UnaryOp::Scale: return map1(out, x, dt, n, cheap, [alpha](float v) { return alpha * v; });
    case UnaryOp::AddScalar: return map1(out, x, dt, n, cheap, [alpha](float v) { return v + alpha; });
    case UnaryOp::PowScalar: return map1(out, x, dt, n, cheap, [alpha](float v) { return pow_scalar(v, alpha); });
    case UnaryOp::Square: return map1(out, x, dt, n, cheap, [](float v) { return v * v; });
  }
}

void unary_backward(UnaryOp op, void* gx, const void* gy, const void* x, DType dt, int64_t n, float alpha) {
  bool cheap = is_cheap(op);
  switch (op) {
    case UnaryOp::Neg: return map2(gx, gy, x, dt, n, cheap, [](float, float g) { return -g; });
    case UnaryOp::Exp: return map2(gx, gy, x, dt, n, cheap, [](float v, float g) { return g * std::exp(v); });
    case UnaryOp::Log: return map2(gx, gy, x, dt, n, cheap, [](float v, float g) { return g / v; });
    case UnaryOp::Sqrt:
      return map2(gx, gy, x, dt, n, cheap, [](float v, float g) { return g / (2.0f * std::sqrt(v)); });
    case UnaryOp::Rsqrt:
      return map2(gx, gy, x, dt, n, cheap, [](float v, float g) {
        float r = 1.0f / std::sqrt(v);
        return -0.5f * g * r * r * r;
      });
    case UnaryOp::Abs:
      return map2(gx, gy, x, dt, n, cheap, [](float v, float g) {
        return v > 0.0f ? g : (v < 0.0f ? -g : 0.0f * g);  // sign(0) = 0
      });
    case UnaryOp::Silu:
      return map2(gx, gy, x, dt, n, cheap, [](float v, float g) {
        float s = 1.0f / (1.0f + std::exp(-v));
        return g * s * (1.0f + v * (1.0f - s));
      });
    case UnaryOp::Gelu:
      return map2(gx, gy, x, dt, n, cheap, [](float v, float g) {
        float cdf = 0.5f * (1.0f + std::erf(v * kSqrt1_2));
        float pdf = kInvSqrt2Pi * std::exp(-0.5f * v * v);
        return g * (cdf + v * pdf);
      });
    case UnaryOp::GeluTanh:
      // torch's GeluBackward (approximate="tanh").
      return map2(gx, gy, x, dt, n, cheap, [](float v, float g) {
        float v2 = v * v;
        float t = std::tanh(kGeluTanhBeta * (v + kGeluTanhKappa * v2 * v));
        float left = 0.5f * v, right = 1.0f + t;
        float dleft = 0.5f * right;
        float dright = left * (1.0f - t * t) * kGeluTanhBeta * (1.0f + 3.0f * kGeluTanhKappa * v2);
        return g * (dleft + dright);
      });
    case UnaryOp::Relu: return map2(gx, gy, x, dt, n, cheap, [](float v, float g) { return v > 0.0f ? g : 0.0f; });
    case UnaryOp::Sigmoid:
      return map2(gx, gy, x, dt, n, cheap, [](float v, float g) {
        float s = 1.0f / (1.0f + std::exp(-v));
        return g * s * (1.0f - s);
      });
    case UnaryOp::Tanh:
      return map2(gx, gy, x, dt, n, cheap, [](float v, float g) {
        float t = std::tanh(v);
        return g * (1.0f - t * t);
      });
    case UnaryOp::Scale: return map2(gx, gy, x, dt, n, cheap, [alpha](float, float g) { return alpha * g; });
    case UnaryOp::AddScalar: return map2(gx, gy, x, dt, n, cheap, [](float, float g) { return g; });
    case UnaryOp::PowScalar:
      // torch pow_backward: 0 for exponent 0, else g * a * x^(a-1).
      return map2(gx, gy, x, dt, n, cheap, [alpha](float v, float g) {
        return alpha == 0.0f ? 0.0f : g * alpha * pow_scalar(v, alpha - 1.0f);
      });
    case UnaryOp::Square: return map2(gx, gy, x, dt, n, cheap, [](float v, float g) { return 2.0f * v * g; });
  }
}

// ---- binary ---------------------------------------------------------------------------------------

namespace {

constexpr int kMaxDims = 16;
constexpr int64_t kBinChunk = 2048;  // inner elements per task piece

template <typename Op>
void binary_impl(void* out, const void* a, const int64_t* as_in, const void* b, const int64_t* bs_in, DType dt,
                 const int64_t* shape_in, int ndim, Op op) {
  // Drop size-1 dims and merge dims that are contiguous with their inner neighbour in both inputs
  // (out is contiguous, so it always merges): fewer, longer inner loops.
  int64_t shape[kMaxDims], as[kMaxDims], bs[kMaxDims];
  int nd = 0;
  int64_t numel = 1;
  for (int i = 0; i < ndim; ++i) {
    numel *= shape_in[i];
    if (shape_in[i] == 1) continue;
    if (nd > 0 && as[nd - 1] == as_in[i] * shape_in[i] && bs[nd - 1] == bs_in[i] * shape_in[i]) {
      shape[nd - 1] *= shape_in[i];
      as[nd - 1] = as_in[i];
      bs[nd - 1] = bs_in[i];
      continue;
    }
    shape[nd] = shape_in[i];
    as[nd] = as_in[i];
    bs[nd] = bs_in[i];
    ++nd;
  }
  if (numel == 0) return;
  if (nd == 0) {  // a single element
    shape[0] = 1;
    as[0] = bs[0] = 0;
    nd = 1;
  }
  const int64_t inner = shape[nd - 1], ais = as[nd - 1], bis = bs[nd - 1];
  const int64_t rows = numel / inner;
  const int64_t pieces = (inner + kBinChunk - 1) / kBinChunk;
  const int64_t tasks = rows * pieces;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::min(inner, kBinChunk));

  // Loads `len` elements at element offset `off` with element stride `st` as float32.
  auto gather = [dt](const void* src, int64_t off, int64_t st, int64_t len, float* buf) -> const float* {
    if (st == 1) return nn::view_run(src, dt, off, len, buf);
    if (st == 0) {
      float v = load_f(src, dt, off);
      for (int64_t i = 0; i < len; ++i) buf[i] = v;
      return buf;
    }
    for (int64_t i = 0; i < len; ++i) buf[i] = load_f(src, dt, off + i * st);
    return buf;
  };

  parallel_for(tasks, grain, [&](int64_t t0, int64_t t1) {
    float ba[kBinChunk], bb[kBinChunk], bo[kBinChunk];
    for (int64_t t = t0; t < t1; ++t) {
      int64_t row = t / pieces, piece = t % pieces;
      int64_t aoff = 0, boff = 0, r = row;
      for (int d = nd - 2; d >= 0; --d) {
        int64_t idx = r % shape[d];
        r /= shape[d];
        aoff += idx * as[d];
        boff += idx * bs[d];
      }
      int64_t i0 = piece * kBinChunk, len = std::min(kBinChunk, inner - i0);
      const float* pa = gather(a, aoff + i0 * ais, ais, len, ba);
      const float* pb = gather(b, boff + i0 * bis, bis, len, bb);
      int64_t ooff = row * inner + i0;
      float* po = dt == DType::Float32 ? static_cast<float*>(out) + ooff : bo;
      for (int64_t i = 0; i < len; ++i) po[i] = op(pa[i], pb[i]);
      if (dt != DType::Float32) store_run(out, dt, ooff, len, bo);
    }
  });
}

}  // namespace

void binary(BinaryOp op, void* out, const void* a, const int64_t* a_strides, const void* b, const int64_t* b_strides,
            DType dt, const int64_t* shape, int ndim) {
  switch (op) {
    case BinaryOp::Add:
      return binary_impl(out, a, a_strides, b, b_strides, dt, shape, ndim, [](float x, float y) { return x + y; });
    case BinaryOp::Sub:
      return binary_impl(out, a, a_strides, b, b_strides, dt, shape, ndim, [](float x, float y) { return x - y; });
    case BinaryOp::Mul:
      return binary_impl(out, a, a_strides, b, b_strides, dt, shape, ndim, [](float x, float y) { return x * y; });
    case BinaryOp::Div:
      return binary_impl(out, a, a_strides, b, b_strides, dt, shape, ndim, [](float x, float y) { return x / y; });
    case BinaryOp::Maximum:
      return binary_impl(out, a, a_strides, b, b_strides, dt, shape, ndim, [](float x, float y) {
        return x != x ? x : (y != y ? y : (x > y ? x : y));
      });
    case BinaryOp::Minimum:
      return binary_impl(out, a, a_strides, b, b_strides, dt, shape, ndim, [](float x, float y) {
        return x != x ? x : (y != y ? y : (x < y ? x : y));
      });
  }
}

}  // namespace lowbit::cpu
