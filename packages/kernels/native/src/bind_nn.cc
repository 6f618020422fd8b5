// N-API bindings of the neural-network kernels (binding.ts: unary ... adamw). Each function reads and checks
// every argument (types, dtypes, the exact byte extent of every tensor, writability, one device) and then calls
// the CPU kernel of cpu/nn.h, or for storages on CUDA the launcher of cuda/nn_kernels.h (builds with CUDA only).
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu/nn.h"
#include "napi_util.h"
#if LOWBIT_WITH_CUDA
#include "cuda/nn_kernels.h"
#endif

namespace lowbit {
namespace {

constexpr int64_t kMaxSafe = 9007199254740991;  // Number.MAX_SAFE_INTEGER

void check_float(DType d, const char* name) { check_dtype(d, {DType::Float32, DType::Float16, DType::BFloat16}, name); }
void check_index_dtype(DType d, const char* name) { check_dtype(d, {DType::Int32, DType::Int64}, name); }

// The data pointer must be aligned to the element size (storages are 64-byte aligned, so this is a check on
// the byte offset).
void check_aligned(const TensorArg& t, int64_t elem) {
  if (elem > 1 && reinterpret_cast<uintptr_t>(t.data) % static_cast<uintptr_t>(elem) != 0) {
    throw_error(ErrorKind::Argument, "Expected a byte offset that is a multiple of " + std::to_string(elem) + " for " +
                                         t.name + "Offset but received an offset that is not");
  }
}

// `numel` elements of `dt` from t.data lie inside the storage, aligned.
void check_extent(const TensorArg& t, int64_t numel, DType dt) {
  check_bytes(t, checked_mul(numel, dtype_size(dt), t.name));
  check_aligned(t, dtype_size(dt));
}

// Input check plus writability.
void check_output(const TensorArg& t, int64_t numel, DType dt) {
  check_extent(t, numel, dt);
  check_writable(t);
}

// The one device of an op's storages. A CUDA device only exists in builds with CUDA (parse_device refuses it
// otherwise); the DeviceError below is a second line of defence.
Device op_device(std::initializer_list<const TensorArg*> ts, const char* op) {
  Device d = check_same_device(ts);
#if !LOWBIT_WITH_CUDA
  if (d.type != DeviceType::CPU) {
    throw_error(ErrorKind::Device, std::string(op) + " on cuda needs a build of @lowbit/kernels with CUDA");
  }
#endif
  return d;
}

int64_t mul3(int64_t a, int64_t b, int64_t c, const char* what) { return checked_mul(checked_mul(a, b, what), c, what); }
int64_t mul4(int64_t a, int64_t b, int64_t c, int64_t d, const char* what) {
  return checked_mul(mul3(a, b, c, what), d, what);
}

float arg_float(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return static_cast<float>(arg_number(info, i, name));
}

// A finite number (ArgumentError otherwise).
double arg_finite(const Napi::CallbackInfo& info, size_t i, const char* name) {
  double v = arg_number(info, i, name);
  if (!std::isfinite(v)) {
    throw_error(ErrorKind::Argument, std::string("Expected a finite number for ") + name + " but received " + std::to_string(v));
  }
  return v;
}

// An index value read by a kernel, with its position, for the out-of-range message.
std::string index_name(const char* name, int64_t pos) { return std::string(name) + "[" + std::to_string(pos) + "]"; }

template <typename F>
void define(Napi::Env env, Napi::Object exports, const char* name, F&& fn) {
  exports.Set(name, Napi::Function::New(env, std::forward<F>(fn), name));
}

// ---- elementwise ------------------------------------------------------------------------------------

// unary(op, out, outOffset, x, xOffset, dtype, numel, alpha)
Napi::Value Unary(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto op = static_cast<cpu::UnaryOp>(arg_int(info, 0, "op", 0, cpu::kUnaryOpCount - 1));
    TensorArg out = arg_tensor(info, 1, "out");
    TensorArg x = arg_tensor(info, 3, "x");
    DType dt = arg_dtype(info, 5, "dtype");
    int64_t n = arg_int(info, 6, "numel");
    float alpha = arg_float(info, 7, "alpha");
    check_float(dt, "dtype");
    [[maybe_unused]] Device dev = op_device({&out, &x}, "unary");
    check_output(out, n, dt);
    check_extent(x, n, dt);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::unary(dev.index, op, out.data, x.data, dt, n, alpha);
      return info.Env().Undefined();
    }
#endif
    cpu::unary(op, out.data, x.data, dt, n, alpha);
    return info.Env().Undefined();
  });
}

// unaryBackward(op, gx, gxOffset, gy, gyOffset, x, xOffset, dtype, numel, alpha)
Napi::Value UnaryBackward(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto op = static_cast<cpu::UnaryOp>(arg_int(info, 0, "op", 0, cpu::kUnaryOpCount - 1));
    TensorArg gx = arg_tensor(info, 1, "gx");
    TensorArg gy = arg_tensor(info, 3, "gy");
    TensorArg x = arg_tensor(info, 5, "x");
    DType dt = arg_dtype(info, 7, "dtype");
    int64_t n = arg_int(info, 8, "numel");
    float alpha = arg_float(info, 9, "alpha");
    check_float(dt, "dtype");
    [[maybe_unused]] Device dev = op_device({&gx, &gy, &x}, "unaryBackward");
    check_output(gx, n, dt);
    check_extent(gy, n, dt);
    check_extent(x, n, dt);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::unary_backward(dev.index, op, gx.data, gy.data, x.data, dt, n, alpha);
      return info.Env().Undefined();
    }
#endif
    cpu::unary_backward(op, gx.data, gy.data, x.data, dt, n, alpha);
    return info.Env().Undefined();
  });
}

// Elements spanned by a strided view of `shape`: 0 when empty, else 1 + the largest reachable offset
// (strides are non-negative).
int64_t strided_span(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, const char* name) {
  int64_t last = 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) return 0;
    last += checked_mul(shape[i] - 1, strides[i], name);
    if (last > kMaxSafe) {
      throw_error(ErrorKind::Argument, std::string("Expected strides whose largest offset is below 2^53 for ") + name +
                                           " but received ones reaching " + std::to_string(last));
    }
  }
  return last + 1;
}

// binary(op, out, outOffset, a, aOffset, aStrides, b, bOffset, bStrides, dtype, shape)
Napi::Value Binary(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto op = static_cast<cpu::BinaryOp>(arg_int(info, 0, "op", 0, cpu::kBinaryOpCount - 1));
    TensorArg out = arg_tensor(info, 1, "out");
    TensorArg a = arg_tensor(info, 3, "a");
    std::vector<int64_t> as = arg_int_array(info, 5, "aStrides", 0);
    TensorArg b = arg_tensor(info, 6, "b");
    std::vector<int64_t> bs = arg_int_array(info, 8, "bStrides", 0);
    DType dt = arg_dtype(info, 9, "dtype");
    std::vector<int64_t> shape = arg_int_array(info, 10, "shape", 0);
    check_float(dt, "dtype");
    if (shape.size() > 16) {
      throw_error(ErrorKind::Shape, "Expected at most 16 dimensions for shape but received " + std::to_string(shape.size()));
    }
    if (as.size() != shape.size() || bs.size() != shape.size()) {
      throw_error(ErrorKind::Shape, "Expected aStrides and bStrides of length " + std::to_string(shape.size()) +
                                        " (the length of shape) but received " + std::to_string(as.size()) + " and " +
                                        std::to_string(bs.size()));
    }
    [[maybe_unused]] Device dev = op_device({&out, &a, &b}, "binary");
    int64_t numel = 1;
    for (int64_t d : shape) numel = checked_mul(numel, d, "shape");
    check_output(out, numel, dt);
    check_extent(a, strided_span(shape, as, "a"), dt);
    check_extent(b, strided_span(shape, bs, "b"), dt);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::binary(dev.index, op, out.data, a.data, as.data(), b.data, bs.data(), dt, shape.data(),
                       static_cast<int>(shape.size()));
      return info.Env().Undefined();
    }
#endif
    cpu::binary(op, out.data, a.data, as.data(), b.data, bs.data(), dt, shape.data(), static_cast<int>(shape.size()));
    return info.Env().Undefined();
  });
}

// ---- reductions and normalisation -------------------------------------------------------------------

// reduce(op, out, outOffset, x, xOffset, dtype, outer, n, inner)
Napi::Value Reduce(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto op = static_cast<cpu::ReduceOp>(arg_int(info, 0, "op", 0, cpu::kReduceOpCount - 1));
    TensorArg out = arg_tensor(info, 1, "out");
    TensorArg x = arg_tensor(info, 3, "x");
    DType dt = arg_dtype(info, 5, "dtype");
    int64_t outer = arg_int(info, 6, "outer");
    int64_t n = arg_int(info, 7, "n");
    int64_t inner = arg_int(info, 8, "inner");
    check_float(dt, "dtype");
    if (op == cpu::ReduceOp::Max && n == 0 && outer * inner != 0) {
      throw_error(ErrorKind::Shape, "Expected n >= 1 for a max reduction but received n = 0");
    }
    [[maybe_unused]] Device dev = op_device({&out, &x}, "reduce");
    check_output(out, checked_mul(outer, inner, "outer * inner"), dt);
    check_extent(x, mul3(outer, n, inner, "outer * n * inner"), dt);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::reduce(dev.index, op, out.data, x.data, dt, outer, n, inner);
      return info.Env().Undefined();
    }
#endif
    cpu::reduce(op, out.data, x.data, dt, outer, n, inner);
    return info.Env().Undefined();
  });
}

// argmax(out, outOffset, x, xOffset, dtype, rows, cols)
Napi::Value Argmax(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg out = arg_tensor(info, 0, "out");
    TensorArg x = arg_tensor(info, 2, "x");
    DType dt = arg_dtype(info, 4, "dtype");
    int64_t rows = arg_int(info, 5, "rows");
    int64_t cols = arg_int(info, 6, "cols", rows > 0 ? 1 : 0, INT32_MAX);
    check_float(dt, "dtype");
    [[maybe_unused]] Device dev = op_device({&out, &x}, "argmax");
    check_output(out, rows, DType::Int32);
    check_extent(x, checked_mul(rows, cols, "rows * cols"), dt);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::argmax(dev.index, reinterpret_cast<int32_t*>(out.data), x.data, dt, rows, cols);
      return info.Env().Undefined();
    }
#endif
    cpu::argmax(reinterpret_cast<int32_t*>(out.data), x.data, dt, rows, cols);
    return info.Env().Undefined();
  });
}

// softmax(out, outOffset, x, xOffset, dtype, rows, cols, log)
Napi::Value Softmax(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg out = arg_tensor(info, 0, "out");
    TensorArg x = arg_tensor(info, 2, "x");
    DType dt = arg_dtype(info, 4, "dtype");
    int64_t rows = arg_int(info, 5, "rows");
    int64_t cols = arg_int(info, 6, "cols");
    bool log = arg_bool(info, 7, "log");
    check_float(dt, "dtype");
    [[maybe_unused]] Device dev = op_device({&out, &x}, "softmax");
    int64_t n = checked_mul(rows, cols, "rows * cols");
    check_output(out, n, dt);
    check_extent(x, n, dt);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::softmax(dev.index, out.data, x.data, dt, rows, cols, log);
      return info.Env().Undefined();
    }
#endif
    cpu::softmax(out.data, x.data, dt, rows, cols, log);
    return info.Env().Undefined();
  });
}

// softmaxBackward(gx, gxOffset, gy, gyOffset, y, yOffset, dtype, rows, cols, log)
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg gx = arg_tensor(info, 0, "gx");
    TensorArg gy = arg_tensor(info, 2, "gy");
    TensorArg y = arg_tensor(info, 4, "y");
    DType dt = arg_dtype(info, 6, "dtype");
    int64_t rows = arg_int(info, 7, "rows");
    int64_t cols = arg_int(info, 8, "cols");
    bool log = arg_bool(info, 9, "log");
    check_float(dt, "dtype");
    [[maybe_unused]] Device dev = op_device({&gx, &gy, &y}, "softmaxBackward");
    int64_t n = checked_mul(rows, cols, "rows * cols");
    check_output(gx, n, dt);
    check_extent(gy, n, dt);
    check_extent(y, n, dt);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::softmax_backward(dev.index, gx.data, gy.data, y.data, dt, rows, cols, log);
      return info.Env().Undefined();
    }
#endif
    cpu::softmax_backward(gx.data, gy.data, y.data, dt, rows, cols, log);
    return info.Env().Undefined();
  });
}

// rmsNorm(out, outOffset, x, xOffset, w, wOffset, dtype, wDtype, rows, cols, eps)
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg out = arg_tensor(info, 0, "out");
    TensorArg x = arg_tensor(info, 2, "x");
    TensorArg w = arg_tensor(info, 4, "w");
    DType dt = arg_dtype(info, 6, "dtype");
    DType wdt = arg_dtype(info, 7, "wDtype");
    int64_t rows = arg_int(info, 8, "rows");
    int64_t cols = arg_int(info, 9, "cols");
    float eps = static_cast<float>(arg_finite(info, 10, "eps"));
    check_float(dt, "dtype");
    check_float(wdt, "wDtype");
    [[maybe_unused]] Device dev = op_device({&out, &x, &w}, "rmsNorm");
    int64_t n = checked_mul(rows, cols, "rows * cols");
    check_output(out, n, dt);
    check_extent(x, n, dt);
    check_extent(w, cols, wdt);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::rms_norm(dev.index, out.data, x.data, w.data, dt, wdt, rows, cols, eps);
      return info.Env().Undefined();
    }
#endif
    cpu::rms_norm(out.data, x.data, w.data, dt, wdt, rows, cols, eps);
    return info.Env().Undefined();
  });
}

// rmsNormBackward(gx, gxOffset, gw, gwOffset, gy, gyOffset, x, xOffset, w, wOffset, dtype, wDtype, rows, cols, eps)
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg gx = arg_tensor(info, 0, "gx");
    TensorArg gw = arg_tensor(info, 2, "gw");
    TensorArg gy = arg_tensor(info, 4, "gy");
    TensorArg x = arg_tensor(info, 6, "x");
    TensorArg w = arg_tensor(info, 8, "w");
    DType dt = arg_dtype(info, 10, "dtype");
    DType wdt = arg_dtype(info, 11, "wDtype");
    int64_t rows = arg_int(info, 12, "rows");
    int64_t cols = arg_int(info, 13, "cols");
    float eps = static_cast<float>(arg_finite(info, 14, "eps"));
    check_float(dt, "dtype");
    check_float(wdt, "wDtype");
    [[maybe_unused]] Device dev = op_device({&gx, &gw, &gy, &x, &w}, "rmsNormBackward");
    int64_t n = checked_mul(rows, cols, "rows * cols");
    check_output(gx, n, dt);
    check_output(gw, cols, DType::Float32);
    check_extent(gy, n, dt);
    check_extent(x, n, dt);
    check_extent(w, cols, wdt);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::rms_norm_backward(dev.index, gx.data, reinterpret_cast<float*>(gw.data), gy.data, x.data, w.data, dt, wdt,
                                  rows, cols, eps);
      return info.Env().Undefined();
    }
#endif
    cpu::rms_norm_backward(gx.data, reinterpret_cast<float*>(gw.data), gy.data, x.data, w.data, dt, wdt, rows, cols, eps);
    return info.Env().Undefined();
  });
}

// ---- transformer blocks -----------------------------------------------------------------------------

// rope(out, outOffset, x, xOffset, dtype, positions, positionsOffset, posDtype, invFreq, invFreqOffset,
//      B, H, T, D, attentionScaling, inverse)
Napi::Value Rope(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg out = arg_tensor(info, 0, "out");
    TensorArg x = arg_tensor(info, 2, "x");
    DType dt = arg_dtype(info, 4, "dtype");
    TensorArg pos = arg_tensor(info, 5, "positions");
    DType pdt = arg_dtype(info, 7, "posDtype");
    TensorArg inv = arg_tensor(info, 8, "invFreq");
    int64_t B = arg_int(info, 10, "B");
    int64_t H = arg_int(info, 11, "H");
    int64_t T = arg_int(info, 12, "T");
    int64_t D = arg_int(info, 13, "D");
    float scaling = static_cast<float>(arg_finite(info, 14, "attentionScaling"));
    bool inverse = arg_bool(info, 15, "inverse");
    check_float(dt, "dtype");
    check_index_dtype(pdt, "posDtype");
    if (D % 2 != 0) throw_error(ErrorKind::Shape, "Expected an even head dim for D but received " + std::to_string(D));
    [[maybe_unused]] Device dev = op_device({&out, &x, &pos, &inv}, "rope");
    int64_t n = mul4(B, H, T, D, "B * H * T * D");
    check_output(out, n, dt);
    check_extent(x, n, dt);
    check_extent(pos, checked_mul(B, T, "B * T"), pdt);
    check_extent(inv, D / 2, DType::Float32);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::rope(dev.index, out.data, x.data, dt, pos.data, pdt, reinterpret_cast<const float*>(inv.data), B, H, T, D,
                     scaling, inverse);
      return info.Env().Undefined();
    }
#endif
    cpu::rope(out.data, x.data, dt, pos.data, pdt, reinterpret_cast<const float*>(inv.data), B, H, T, D, scaling, inverse);
    return info.Env().Undefined();
  });
}

// Reads and checks the sizes shared by attention and attentionBackward, starting at info[i] (B).
cpu::AttentionShape arg_attention_shape(const Napi::CallbackInfo& info, size_t i) {
  cpu::AttentionShape s;
  s.B = arg_int(info, i, "B");
  s.Hq = arg_int(info, i + 1, "Hq", 1);
  s.Hkv = arg_int(info, i + 2, "Hkv", 1);
  s.Tq = arg_int(info, i + 3, "Tq");
  s.Tk = arg_int(info, i + 4, "Tk");
  s.S = arg_int(info, i + 5, "S");
  s.D = arg_int(info, i + 6, "D", 1);
  s.scale = static_cast<float>(arg_finite(info, i + 7, "scale"));
  s.causal = arg_bool(info, i + 8, "causal");
  s.q_start = arg_int(info, i + 9, "qStart");
  if (s.Hq % s.Hkv != 0) {
    throw_error(ErrorKind::Shape, "Expected Hq to be a multiple of Hkv (" + std::to_string(s.Hkv) + ") but received Hq = " +
                                      std::to_string(s.Hq));
  }
  if (s.Tk > s.S) {
    throw_error(ErrorKind::Shape, "Expected Tk <= S (the cache capacity, " + std::to_string(s.S) + ") but received Tk = " +
                                      std::to_string(s.Tk));
  }
  return s;
}

#if LOWBIT_WITH_CUDA
// Limits of the CUDA attention kernels: the head dim (register tiles) and grid sizes.
void check_cuda_attention_shape(const cpu::AttentionShape& s, const char* op) {
  if (s.D > cuda::nn::kMaxAttentionHeadDim) {
    throw_error(ErrorKind::Shape, "Expected a head dim D <= " + std::to_string(cuda::nn::kMaxAttentionHeadDim) + " for " + op +
                                      " on cuda but received D = " + std::to_string(s.D));
  }
  if (s.B > 65535 || s.Hq > 65535 || s.B * s.Hkv > 65535) {
    throw_error(ErrorKind::Shape, std::string("Expected B, Hq and B * Hkv <= 65535 for ") + op + " on cuda but received B = " +
                                      std::to_string(s.B) + ", Hq = " + std::to_string(s.Hq) + ", Hkv = " + std::to_string(s.Hkv));
  }
}
#endif

// attention(out, outOffset, q, qOffset, k, kOffset, v, vOffset, dtype, B, Hq, Hkv, Tq, Tk, S, D, scale, causal,
//           qStart, mask, maskOffset, lse, lseOffset)
Napi::Value Attention(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg out = arg_tensor(info, 0, "out");
    TensorArg q = arg_tensor(info, 2, "q");
    TensorArg k = arg_tensor(info, 4, "k");
    TensorArg v = arg_tensor(info, 6, "v");
    DType dt = arg_dtype(info, 8, "dtype");
    cpu::AttentionShape s = arg_attention_shape(info, 9);
    TensorArg mask = arg_tensor_opt(info, 19, "mask");
    TensorArg lse = arg_tensor_opt(info, 21, "lse");
    check_float(dt, "dtype");
    [[maybe_unused]] Device dev = op_device({&out, &q, &k, &v, &mask, &lse}, "attention");
    int64_t nq = mul4(s.B, s.Hq, s.Tq, s.D, "B * Hq * Tq * D");
    // k / v are read only up to key Tk - 1 of the last (b, kv head) row: a window into a longer cache (a view that
    // starts past the buffer's first key) needs that much after its offset, not a whole B * Hkv * S * D.
    mul4(s.B, s.Hkv, s.S, s.D, "B * Hkv * S * D");  // overflow check of the pitch arithmetic
    const int64_t nkv = s.Tk == 0 ? 0 : (s.B * s.Hkv - 1) * s.S * s.D + s.Tk * s.D;
    check_output(out, nq, dt);
    check_extent(q, nq, dt);
    check_extent(k, nkv, dt);
    check_extent(v, nkv, dt);
    if (mask.data != nullptr) check_extent(mask, checked_mul(s.B, s.Tk, "B * Tk"), DType::UInt8);
    if (lse.data != nullptr) check_output(lse, mul3(s.B, s.Hq, s.Tq, "B * Hq * Tq"), DType::Float32);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      check_cuda_attention_shape(s, "attention");
      cuda::nn::attention(dev.index, out.data, q.data, k.data, v.data, dt, s, mask.data, reinterpret_cast<float*>(lse.data));
      return info.Env().Undefined();
    }
#endif
    cpu::attention(out.data, q.data, k.data, v.data, dt, s, mask.data, reinterpret_cast<float*>(lse.data));
    return info.Env().Undefined();
  });
}

// attentionBackward(dq, dqOffset, dk, dkOffset, dv, dvOffset, gOut, gOutOffset, q, qOffset, k, kOffset, v, vOffset,
//                   out, outOffset, lse, lseOffset, dtype, B, Hq, Hkv, Tq, Tk, S, D, scale, causal, qStart, mask,
//                   maskOffset)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg dq = arg_tensor(info, 0, "dq");
    TensorArg dk = arg_tensor(info, 2, "dk");
    TensorArg dv = arg_tensor(info, 4, "dv");
    TensorArg g = arg_tensor(info, 6, "gOut");
    TensorArg q = arg_tensor(info, 8, "q");
    TensorArg k = arg_tensor(info, 10, "k");
    TensorArg v = arg_tensor(info, 12, "v");
    TensorArg out = arg_tensor(info, 14, "out");
    TensorArg lse = arg_tensor(info, 16, "lse");
    DType dt = arg_dtype(info, 18, "dtype");
    cpu::AttentionShape s = arg_attention_shape(info, 19);
    TensorArg mask = arg_tensor_opt(info, 29, "mask");
    check_float(dt, "dtype");
    [[maybe_unused]] Device dev = op_device({&dq, &dk, &dv, &g, &q, &k, &v, &out, &lse, &mask}, "attentionBackward");
    int64_t nq = mul4(s.B, s.Hq, s.Tq, s.D, "B * Hq * Tq * D");
    int64_t nkv = mul4(s.B, s.Hkv, s.S, s.D, "B * Hkv * S * D");
    check_output(dq, nq, dt);
    check_output(dk, nkv, dt);
    check_output(dv, nkv, dt);
    check_extent(g, nq, dt);
    check_extent(q, nq, dt);
    check_extent(k, nkv, dt);
    check_extent(v, nkv, dt);
    check_extent(out, nq, dt);
    check_extent(lse, mul3(s.B, s.Hq, s.Tq, "B * Hq * Tq"), DType::Float32);
    if (mask.data != nullptr) check_extent(mask, checked_mul(s.B, s.Tk, "B * Tk"), DType::UInt8);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      check_cuda_attention_shape(s, "attentionBackward");
      cuda::nn::attention_backward(dev.index, dq.data, dk.data, dv.data, g.data, q.data, k.data, v.data, out.data,
                                   reinterpret_cast<const float*>(lse.data), dt, s, mask.data);
      return info.Env().Undefined();
    }
#endif
    cpu::attention_backward(dq.data, dk.data, dv.data, g.data, q.data, k.data, v.data, out.data,
                            reinterpret_cast<const float*>(lse.data), dt, s, mask.data);
    return info.Env().Undefined();
  });
}

// embedding(out, outOffset, weight, weightOffset, wDtype, ids, idsOffset, idsDtype, n, dim, vocab, deferCheck?)
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg out = arg_tensor(info, 0, "out");
    TensorArg w = arg_tensor(info, 2, "weight");
    DType wdt = arg_dtype(info, 4, "wDtype");
    TensorArg ids = arg_tensor(info, 5, "ids");
    DType idt = arg_dtype(info, 7, "idsDtype");
    int64_t n = arg_int(info, 8, "n");
    int64_t dim = arg_int(info, 9, "dim");
    int64_t vocab = arg_int(info, 10, "vocab");
    // Optional: on CUDA, check ids on the device and report at the next synchronisation instead of waiting now.
    [[maybe_unused]] const bool defer = info.Length() > 11 && !info[11].IsUndefined() && arg_bool(info, 11, "deferCheck");
    check_float(wdt, "wDtype");
    check_index_dtype(idt, "idsDtype");
    [[maybe_unused]] Device dev = op_device({&out, &w, &ids}, "embedding");
    check_output(out, checked_mul(n, dim, "n * dim"), wdt);
    check_extent(w, checked_mul(vocab, dim, "vocab * dim"), wdt);
    check_extent(ids, n, idt);
    int64_t bad_id = 0;
    int64_t bad;
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      bad = cuda::nn::embedding(dev.index, out.data, w.data, wdt, ids.data, idt, n, dim, vocab, defer, &bad_id);
    } else
#endif
    {
      bad = cpu::embedding(out.data, w.data, wdt, ids.data, idt, n, dim, vocab, &bad_id);
    }
    if (bad >= 0) {
      throw_error(ErrorKind::Argument, "Expected an id in [0, " + std::to_string(vocab) + ") (the vocabulary size) for " +
                                           index_name("ids", bad) + " but received " + std::to_string(bad_id));
    }
    return info.Env().Undefined();
  });
}

// embeddingBackward(gw, gwOffset, gy, gyOffset, gyDtype, ids, idsOffset, idsDtype, n, dim, vocab)
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg gw = arg_tensor(info, 0, "gw");
    TensorArg gy = arg_tensor(info, 2, "gy");
    DType gdt = arg_dtype(info, 4, "gyDtype");
    TensorArg ids = arg_tensor(info, 5, "ids");
    DType idt = arg_dtype(info, 7, "idsDtype");
    int64_t n = arg_int(info, 8, "n");
    int64_t dim = arg_int(info, 9, "dim");
    int64_t vocab = arg_int(info, 10, "vocab");
    check_float(gdt, "gyDtype");
    check_index_dtype(idt, "idsDtype");
    [[maybe_unused]] Device dev = op_device({&gw, &gy, &ids}, "embeddingBackward");
    check_output(gw, checked_mul(vocab, dim, "vocab * dim"), DType::Float32);
    check_extent(gy, checked_mul(n, dim, "n * dim"), gdt);
    check_extent(ids, n, idt);
    int64_t bad_id = 0;
    int64_t bad;
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      // The CUDA scatter sorts 32-bit (id, position) pairs.
      if (n > INT32_MAX) {
        throw_error(ErrorKind::Shape, "Expected n <= " + std::to_string(INT32_MAX) + " for embeddingBackward on cuda but received " +
                                          std::to_string(n));
      }
      if (vocab > UINT32_MAX) {
        throw_error(ErrorKind::Shape, "Expected vocab <= " + std::to_string(UINT32_MAX) +
                                          " for embeddingBackward on cuda but received " + std::to_string(vocab));
      }
      bad = cuda::nn::embedding_backward(dev.index, reinterpret_cast<float*>(gw.data), gy.data, gdt, ids.data, idt, n, dim,
                                         vocab, &bad_id);
    } else
#endif
    {
      bad = cpu::embedding_backward(reinterpret_cast<float*>(gw.data), gy.data, gdt, ids.data, idt, n, dim, vocab, &bad_id);
    }
    if (bad >= 0) {
      throw_error(ErrorKind::Argument, "Expected an id in [0, " + std::to_string(vocab) + ") (the vocabulary size) for " +
                                           index_name("ids", bad) + " but received " + std::to_string(bad_id));
    }
    return info.Env().Undefined();
  });
}

[[noreturn]] void throw_bad_target(int64_t result, int64_t bad_target, int64_t cols, int64_t ignore_index) {
  throw_error(ErrorKind::Argument, "Expected a class index in [0, " + std::to_string(cols) + ") or the ignore index (" +
                                       std::to_string(ignore_index) + ") for " + index_name("targets", -1 - result) +
                                       " but received " + std::to_string(bad_target));
}

// Arguments shared by crossEntropy and crossEntropyBackward: (out, outOffset, logits, logitsOffset, dtype, targets,
// targetsOffset, tDtype, rows, cols, ignoreIndex).
struct CrossEntropyArgs {
  TensorArg out, logits, targets;
  DType dt, tdt;
  int64_t rows, cols, ignore_index;
};
CrossEntropyArgs arg_cross_entropy(const Napi::CallbackInfo& info, const char* out_name) {
  CrossEntropyArgs a;
  a.out = arg_tensor(info, 0, out_name);
  a.logits = arg_tensor(info, 2, "logits");
  a.dt = arg_dtype(info, 4, "dtype");
  a.targets = arg_tensor(info, 5, "targets");
  a.tdt = arg_dtype(info, 7, "tDtype");
  a.rows = arg_int(info, 8, "rows");
  a.cols = arg_int(info, 9, "cols", a.rows > 0 ? 1 : 0);
  a.ignore_index = arg_int(info, 10, "ignoreIndex", -kMaxSafe, kMaxSafe);
  check_float(a.dt, "dtype");
  check_index_dtype(a.tdt, "tDtype");
  return a;
}

// crossEntropy(losses, lossesOffset, logits, logitsOffset, dtype, targets, targetsOffset, tDtype, rows, cols,
//              ignoreIndex) -> number of rows not ignored
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    CrossEntropyArgs a = arg_cross_entropy(info, "losses");
    [[maybe_unused]] Device dev = op_device({&a.out, &a.logits, &a.targets}, "crossEntropy");
    check_output(a.out, a.rows, DType::Float32);
    check_extent(a.logits, checked_mul(a.rows, a.cols, "rows * cols"), a.dt);
    check_extent(a.targets, a.rows, a.tdt);
    int64_t bad_target = 0;
    int64_t r;
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      r = cuda::nn::cross_entropy(dev.index, reinterpret_cast<float*>(a.out.data), a.logits.data, a.dt, a.targets.data,
                                  a.tdt, a.rows, a.cols, a.ignore_index, &bad_target);
    } else
#endif
    {
      r = cpu::cross_entropy(reinterpret_cast<float*>(a.out.data), a.logits.data, a.dt, a.targets.data, a.tdt, a.rows,
                             a.cols, a.ignore_index, &bad_target);
    }
    if (r < 0) throw_bad_target(r, bad_target, a.cols, a.ignore_index);
    return Napi::Number::New(info.Env(), static_cast<double>(r));
  });
}

// crossEntropyBackward(glogits, glogitsOffset, logits, logitsOffset, dtype, targets, targetsOffset, tDtype, rows,
//                      cols, ignoreIndex, scale)
Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    CrossEntropyArgs a = arg_cross_entropy(info, "glogits");
    float scale = static_cast<float>(arg_finite(info, 11, "scale"));
    [[maybe_unused]] Device dev = op_device({&a.out, &a.logits, &a.targets}, "crossEntropyBackward");
    int64_t n = checked_mul(a.rows, a.cols, "rows * cols");
    check_output(a.out, n, a.dt);
    check_extent(a.logits, n, a.dt);
    check_extent(a.targets, a.rows, a.tdt);
    int64_t bad_target = 0;
    int64_t r;
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      r = cuda::nn::cross_entropy_backward(dev.index, a.out.data, a.logits.data, a.dt, a.targets.data, a.tdt, a.rows, a.cols,
                                           a.ignore_index, scale, &bad_target);
    } else
#endif
    {
      r = cpu::cross_entropy_backward(a.out.data, a.logits.data, a.dt, a.targets.data, a.tdt, a.rows, a.cols,
                                      a.ignore_index, scale, &bad_target);
    }
    if (r < 0) throw_bad_target(r, bad_target, a.cols, a.ignore_index);
    return info.Env().Undefined();
  });
}

// adamw(param, paramOffset, grad, gradOffset, m, mOffset, v, vOffset, dtype, gDtype, n, lr, beta1, beta2, eps,
//       weightDecay, step)
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg p = arg_tensor(info, 0, "param");
    TensorArg g = arg_tensor(info, 2, "grad");
    TensorArg m = arg_tensor(info, 4, "m");
    TensorArg v = arg_tensor(info, 6, "v");
    DType pdt = arg_dtype(info, 8, "dtype");
    DType gdt = arg_dtype(info, 9, "gDtype");
    int64_t n = arg_int(info, 10, "n");
    cpu::AdamWParams hp;
    hp.lr = arg_finite(info, 11, "lr");
    hp.beta1 = arg_finite(info, 12, "beta1");
    hp.beta2 = arg_finite(info, 13, "beta2");
    hp.eps = arg_finite(info, 14, "eps");
    hp.weight_decay = arg_finite(info, 15, "weightDecay");
    hp.step = arg_int(info, 16, "step", 1);
    check_float(pdt, "dtype");
    check_float(gdt, "gDtype");
    // torch.optim.AdamW's own checks.
    auto range = [](double x, bool ok, const char* name, const char* what) {
      if (!ok) throw_error(ErrorKind::Argument, std::string("Expected ") + what + " for " + name + " but received " + std::to_string(x));
    };
    range(hp.lr, hp.lr >= 0, "lr", "a number >= 0");
    range(hp.beta1, hp.beta1 >= 0 && hp.beta1 < 1, "beta1", "a number in [0, 1)");
    range(hp.beta2, hp.beta2 >= 0 && hp.beta2 < 1, "beta2", "a number in [0, 1)");
    range(hp.eps, hp.eps >= 0, "eps", "a number >= 0");
    range(hp.weight_decay, hp.weight_decay >= 0, "weightDecay", "a number >= 0");
    [[maybe_unused]] Device dev = op_device({&p, &g, &m, &v}, "adamw");
    check_output(p, n, pdt);
    check_extent(g, n, gdt);
    check_output(m, n, DType::Float32);
    check_output(v, n, DType::Float32);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::nn::adamw(dev.index, p.data, pdt, g.data, gdt, reinterpret_cast<float*>(m.data), reinterpret_cast<float*>(v.data),
                      n, hp);
      return info.Env().Undefined();
    }
#endif
    cpu::adamw(p.data, pdt, g.data, gdt, reinterpret_cast<float*>(m.data), reinterpret_cast<float*>(v.data), n, hp);
    return info.Env().Undefined();
  });
}

}  // namespace

void register_nn(Napi::Env env, Napi::Object exports) {
  define(env, exports, "unary", Unary);
  define(env, exports, "unaryBackward", UnaryBackward);
  define(env, exports, "binary", Binary);
  define(env, exports, "reduce", Reduce);
  define(env, exports, "argmax", Argmax);
  define(env, exports, "softmax", Softmax);
  define(env, exports, "softmaxBackward", SoftmaxBackward);
  define(env, exports, "rmsNorm", RmsNorm);
  define(env, exports, "rmsNormBackward", RmsNormBackward);
  define(env, exports, "rope", Rope);
  define(env, exports, "attention", Attention);
  define(env, exports, "attentionBackward", AttentionBackward);
  define(env, exports, "embedding", Embedding);
  define(env, exports, "embeddingBackward", EmbeddingBackward);
  define(env, exports, "crossEntropy", CrossEntropy);
  define(env, exports, "crossEntropyBackward", CrossEntropyBackward);
  define(env, exports, "adamw", AdamW);
}

}  // namespace lowbit
