// CUDA elementwise kernels: unary ops and their derivatives, broadcasting binary ops (torch's formulas, as
// cpu/nn_elementwise.cc). Each element is loaded as float32, transformed, and rounded once on store.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "common.cuh"
#include "nn_common.cuh"
#include "nn_kernels.h"

namespace lowbit::cuda::nn {
namespace {

using cpu::BinaryOp;
using cpu::UnaryOp;
using nn_detail::dispatch_float;

constexpr int kThreads = 256;
constexpr float kSqrt1_2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;    // 1 / sqrt(2 pi)
constexpr float kGeluTanhBeta = 0.79788456080286535588f;  // sqrt(2 / pi)
constexpr float kGeluTanhKappa = 0.044715f;

// torch's pow(Tensor, Scalar) special cases (exact squares, sqrt instead of powf).
__device__ __forceinline__ float pow_scalar(float x, float a) {
  if (a == 2.0f) return x * x;
  if (a == 0.5f) return sqrtf(x);
  if (a == 3.0f) return x * x * x;
  if (a == -0.5f) return 1.0f / sqrtf(x);
  if (a == -1.0f) return 1.0f / x;
  if (a == -2.0f) return 1.0f / (x * x);
  if (a == 1.0f) return x;
  if (a == 0.0f) return 1.0f;
  return powf(x, a);
}

// The op is uniform over the grid, so the switch does not diverge.
__device__ __forceinline__ float apply_unary(UnaryOp op, float v, float alpha) {
  switch (op) {
    case UnaryOp::Neg: return -v;
    case UnaryOp::Exp: return expf(v);
    case UnaryOp::Log: return logf(v);
    case UnaryOp::Sqrt: return sqrtf(v);
    case UnaryOp::Rsqrt: return 1.0f / sqrtf(v);
    case UnaryOp::Abs: return fabsf(v);
    case UnaryOp::Silu: return v / (1.0f + expf(-v));
    case UnaryOp::Gelu: return 0.5f * v * (1.0f + erff(v * kSqrt1_2));
    case UnaryOp::GeluTanh: return 0.5f * v * (1.0f + tanhf(kGeluTanhBeta * (v + kGeluTanhKappa * v * v * v)));
    case UnaryOp::Relu: return v < 0.0f ? 0.0f : v;  // keeps NaN
    case UnaryOp::Sigmoid: return 1.0f / (1.0f + expf(-v));
    case UnaryOp::Tanh: return tanhf(v);
    case UnaryOp::Scale: return alpha * v;
    case UnaryOp::AddScalar: return v + alpha;
    case UnaryOp::PowScalar: return pow_scalar(v, alpha);
    case UnaryOp::Square: return v * v;
  }
  return v;
}

// gy * d op(x)/dx.
__device__ __forceinline__ float apply_unary_backward(UnaryOp op, float v, float g, float alpha) {
  switch (op) {
    case UnaryOp::Neg: return -g;
    case UnaryOp::Exp: return g * expf(v);
    case UnaryOp::Log: return g / v;
    case UnaryOp::Sqrt: return g / (2.0f * sqrtf(v));
    case UnaryOp::Rsqrt: {
      const float r = 1.0f / sqrtf(v);
      return -0.5f * g * r * r * r;
    }
    case UnaryOp::Abs: return v > 0.0f ? g : (v < 0.0f ? -g : 0.0f * g);  // sign(0) = 0
    case UnaryOp::Silu: {
      const float s = 1.0f / (1.0f + expf(-v));
      return g * s * (1.0f + v * (1.0f - s));
    }
    case UnaryOp::Gelu: {
      const float cdf = 0.5f * (1.0f + erff(v * kSqrt1_2));
      const float pdf = kInvSqrt2Pi * expf(-0.5f * v * v);
      return g * (cdf + v * pdf);
    }
    case UnaryOp::GeluTanh: {  // torch's GeluBackward (approximate="tanh")
      const float v2 = v * v;
      const float t = tanhf(kGeluTanhBeta * (v + kGeluTanhKappa * v2 * v));
      const float left = 0.5f * v, right = 1.0f + t;
      const float dleft = 0.5f * right;
      const float dright = left * (1.0f - t * t) * kGeluTanhBeta * (1.0f + 3.0f * kGeluTanhKappa * v2);
      return g * (dleft + dright);
    }
    case UnaryOp::Relu: return v > 0.0f ? g : 0.0f;
    case UnaryOp::Sigmoid: {
      const float s = 1.0f / (1.0f + expf(-v));
      return g * s * (1.0f - s);
    }
    case UnaryOp::Tanh: {
      const float t = tanhf(v);
      return g * (1.0f - t * t);
    }
    case UnaryOp::Scale: return alpha * g;
    case UnaryOp::AddScalar: return g;
    case UnaryOp::PowScalar: return alpha == 0.0f ? 0.0f : g * alpha * pow_scalar(v, alpha - 1.0f);
    case UnaryOp::Square: return 2.0f * v * g;
  }
  return g;
}

// 16 bytes of elements, for vectorised loads / stores.
template <typename T>
union Pack {
  static constexpr int N = 16 / sizeof(T);
  uint4 u;
  T e[N];
};

// Whether every pointer is 16-byte aligned (the packed path; the tail of n % N elements is done one by one).
inline bool aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Grid-stride over packs [0, n / N) when `vec`, then over the remaining elements one at a time.
template <typename T, typename PackFn, typename ElemFn>
__device__ __forceinline__ void for_each_packed(int64_t n, bool vec, PackFn pack_fn, ElemFn elem_fn) {
  constexpr int N = Pack<T>::N;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i0 = 0;
  if (vec) {
    const int64_t packs = n / N;
    for (int64_t v = tid; v < packs; v += stride) pack_fn(v);
    i0 = packs * N;
  }
  for (int64_t i = i0 + tid; i < n; i += stride) elem_fn(i);
}

template <typename T>
__global__ void unary_kernel(UnaryOp op, T* out, const T* x, int64_t n, float alpha, bool vec) {
  for_each_packed<T>(
      n, vec,
      [&](int64_t v) {
        Pack<T> a;
        a.u = reinterpret_cast<const uint4*>(x)[v];
#pragma unroll
        for (int k = 0; k < Pack<T>::N; ++k) a.e[k] = from_f<T>(apply_unary(op, to_f(a.e[k]), alpha));
        reinterpret_cast<uint4*>(out)[v] = a.u;
      },
      [&](int64_t i) { out[i] = from_f<T>(apply_unary(op, to_f(x[i]), alpha)); });
}

template <typename T>
__global__ void unary_backward_kernel(UnaryOp op, T* gx, const T* gy, const T* x, int64_t n, float alpha, bool vec) {
  for_each_packed<T>(
      n, vec,
      [&](int64_t v) {
        Pack<T> a, g;
        a.u = reinterpret_cast<const uint4*>(x)[v];
        g.u = reinterpret_cast<const uint4*>(gy)[v];
#pragma unroll
        for (int k = 0; k < Pack<T>::N; ++k) a.e[k] = from_f<T>(apply_unary_backward(op, to_f(a.e[k]), to_f(g.e[k]), alpha));
        reinterpret_cast<uint4*>(gx)[v] = a.u;
      },
      [&](int64_t i) { gx[i] = from_f<T>(apply_unary_backward(op, to_f(x[i]), to_f(gy[i]), alpha)); });
}

// ---- binary ---------------------------------------------------------------------------------------------

constexpr int kMaxDims = 16;

// Collapsed broadcast layout (passed by value): out is contiguous over shape[0..nd).
struct BinaryLayout {
  int nd;
  int64_t shape[kMaxDims];
  int64_t as[kMaxDims];
  int64_t bs[kMaxDims];
};

__device__ __forceinline__ float apply_binary(BinaryOp op, float x, float y) {
  switch (op) {
    case BinaryOp::Add: return x + y;
    case BinaryOp::Sub: return x - y;
    case BinaryOp::Mul: return x * y;
    case BinaryOp::Div: return x / y;
    case BinaryOp::Maximum: return x != x ? x : (y != y ? y : (x > y ? x : y));  // NaN propagates
    case BinaryOp::Minimum: return x != x ? x : (y != y ? y : (x < y ? x : y));
  }
  return x;
}

// Fast path: a, b and out all contiguous over the same numel.
template <typename T>
__global__ void binary_contiguous_kernel(BinaryOp op, T* out, const T* a, const T* b, int64_t n, bool vec) {
  for_each_packed<T>(
      n, vec,
      [&](int64_t v) {
        Pack<T> x, y;
        x.u = reinterpret_cast<const uint4*>(a)[v];
        y.u = reinterpret_cast<const uint4*>(b)[v];
#pragma unroll
        for (int k = 0; k < Pack<T>::N; ++k) x.e[k] = from_f<T>(apply_binary(op, to_f(x.e[k]), to_f(y.e[k])));
        reinterpret_cast<uint4*>(out)[v] = x.u;
      },
      [&](int64_t i) { out[i] = from_f<T>(apply_binary(op, to_f(a[i]), to_f(b[i]))); });
}

// General path: the output index is split into coordinates (innermost first) to find a's and b's offsets.
template <typename T>
__global__ void binary_strided_kernel(BinaryOp op, T* out, const T* a, const T* b, BinaryLayout l, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    int64_t r = i, ao = 0, bo = 0;
    for (int d = l.nd - 1; d >= 0; --d) {
      const int64_t idx = r % l.shape[d];
      r /= l.shape[d];
      ao += idx * l.as[d];
      bo += idx * l.bs[d];
    }
    out[i] = from_f<T>(apply_binary(op, to_f(a[ao]), to_f(b[bo])));
  }
}

}  // namespace

void unary(int device, cpu::UnaryOp op, void* out, const void* x, DType dt, int64_t n, float alpha) {
  if (n <= 0) return;
  cudaStream_t st = stream(device);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = aligned16({out, x});
    unary_kernel<T><<<grid_for(vec ? n / Pack<T>::N + 1 : n, kThreads), kThreads, 0, st>>>(op, static_cast<T*>(out),
                                                                                          static_cast<const T*>(x), n, alpha, vec);
  });
  check_launch("unary");
}

void unary_backward(int device, cpu::UnaryOp op, void* gx, const void* gy, const void* x, DType dt, int64_t n, float alpha) {
  if (n <= 0) return;
  cudaStream_t st = stream(device);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = aligned16({gx, gy, x});
    unary_backward_kernel<T><<<grid_for(vec ? n / Pack<T>::N + 1 : n, kThreads), kThreads, 0, st>>>(
        op, static_cast<T*>(gx), static_cast<const T*>(gy), static_cast<const T*>(x), n, alpha, vec);
  });
  check_launch("unaryBackward");
}

void binary(int device, cpu::BinaryOp op, void* out, const void* a, const int64_t* a_strides, const void* b,
            const int64_t* b_strides, DType dt, const int64_t* shape, int ndim) {
  // Drop size-1 dims and merge dims contiguous with their inner neighbour in both inputs (as the CPU kernel).
  BinaryLayout l{};
  int64_t numel = 1;
  for (int i = 0; i < ndim; ++i) {
    numel *= shape[i];
    if (shape[i] == 1) continue;
    if (l.nd > 0 && l.as[l.nd - 1] == a_strides[i] * shape[i] && l.bs[l.nd - 1] == b_strides[i] * shape[i]) {
      l.shape[l.nd - 1] *= shape[i];
      l.as[l.nd - 1] = a_strides[i];
      l.bs[l.nd - 1] = b_strides[i];
      continue;
    }
    l.shape[l.nd] = shape[i];
    l.as[l.nd] = a_strides[i];
    l.bs[l.nd] = b_strides[i];
    ++l.nd;
  }
  if (numel <= 0) return;
  if (l.nd == 0) {  // a single element
    l.nd = 1;
    l.shape[0] = 1;
    l.as[0] = l.bs[0] = 0;
  }
  const bool contiguous = l.nd == 1 && l.as[0] == 1 && l.bs[0] == 1;
  cudaStream_t st = stream(device);
  dispatch_float(dt, [&](auto tag) {
    using T = decltype(tag);
    if (contiguous) {
      const bool vec = aligned16({out, a, b});
      binary_contiguous_kernel<T><<<grid_for(vec ? numel / Pack<T>::N + 1 : numel, kThreads), kThreads, 0, st>>>(
          op, static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), numel, vec);
    } else {
      binary_strided_kernel<T><<<grid_for(numel, kThreads), kThreads, 0, st>>>(
          op, static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), l, numel);
    }
  });
  check_launch("binary");
}

}  // namespace lowbit::cuda::nn
