// N-API bindings of the matmul, 4-bit, 8-bit and LLM.int8 kernels (binding.ts: matmul ... int8OutlierMatmulAdd).
// Each function reads and checks every argument (types, dtypes, blocksizes, the exact byte extent and alignment of
// every tensor, writability, no output overlapping an input, one device) and then calls cpu/linalg.h or cpu/quant.h,
// or for storages on CUDA cuda/gemm.h (matmul) and cuda/quant_kernels.h (builds with CUDA only). The *Async variants
// do the same checks on the JS thread; on the CPU they run the kernel on a libuv worker, holding the storages' memory
// until it finishes; on CUDA they queue the kernels on the device's stream (already asynchronous) and return a promise
// that is settled once the work is queued (see queued_on_stream).
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cpu/linalg.h"
#include "cpu/quant.h"
#include "cuda/cuda_backend.h"
#include "cuda/gemm.h"
#include "napi_util.h"
#if LOWBIT_WITH_CUDA
#include "cuda/quant_kernels.h"
#endif

namespace lowbit {
namespace {

void check_float(DType d, const char* name) { check_dtype(d, {DType::Float32, DType::Float16, DType::BFloat16}, name); }

// The data pointer must be aligned to the element size (storages are 64-byte aligned: this checks the offset).
void check_aligned(const TensorArg& t, int64_t elem) {
  if (elem > 1 && reinterpret_cast<uintptr_t>(t.data) % static_cast<uintptr_t>(elem) != 0) {
    throw_error(ErrorKind::Argument, "Expected a byte offset that is a multiple of " + std::to_string(elem) + " for " + t.name +
                                         "Offset but received an offset that is not");
  }
}

// `numel` elements of `elem` bytes from t.data lie inside the storage and are aligned; returns the byte count.
int64_t check_extent(const TensorArg& t, int64_t numel, int64_t elem) {
  const int64_t bytes = checked_mul(numel, elem, t.name);
  check_bytes(t, bytes);
  check_aligned(t, elem);
  return bytes;
}
int64_t check_output(const TensorArg& t, int64_t numel, int64_t elem) {
  const int64_t bytes = check_extent(t, numel, elem);
  check_writable(t);
  return bytes;
}

// An output must not share bytes with an input it is computed from (the kernels read inputs after writing).
void check_disjoint(const TensorArg& out, int64_t out_bytes, const TensorArg& in, int64_t in_bytes) {
  if (out.data == nullptr || in.data == nullptr || out_bytes == 0 || in_bytes == 0) return;
  const uint8_t* o0 = out.data;
  const uint8_t* i0 = in.data;
  if (o0 < i0 + in_bytes && i0 < o0 + out_bytes) {
    throw_error(ErrorKind::Argument, std::string("Expected ") + out.name + " not to overlap " + in.name +
                                         " but received byte ranges that share memory");
  }
}

// The one device of an op's storages. A CUDA device only exists in builds with CUDA (parse_device refuses it
// otherwise); the DeviceError below is a second line of defence.
Device op_device(std::initializer_list<const TensorArg*> ts, const char* op) {
  const Device d = check_same_device(ts);
#if !LOWBIT_WITH_CUDA
  if (d.type != DeviceType::CPU) throw_error(ErrorKind::Device, std::string(op) + " on cuda needs a build of @lowbit/kernels with CUDA");
#endif
  return d;
}

// `count` elements of T at t.data as a host vector: a plain copy on the CPU, a device→host copy (which waits for the
// device's queued work) on CUDA. For the small tables the binding must inspect (8-bit codes, outlier column lists).
template <typename T>
std::vector<T> host_copy(const TensorArg& t, int64_t count) {
  std::vector<T> v(static_cast<size_t>(count));
  if (count == 0) return v;
  const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
  if (t.device.type == DeviceType::CUDA) cuda::copy_device_to_host(t.device.index, v.data(), t.data, bytes);
  else std::memcpy(v.data(), t.data, static_cast<size_t>(bytes));
  return v;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

double arg_finite(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const double v = arg_number(info, i, name);
  if (!std::isfinite(v)) {
    throw_error(ErrorKind::Argument, std::string("Expected a finite number for ") + name + " but received " + std::to_string(v));
  }
  return v;
}

int64_t arg_blocksize4(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const int64_t bs = arg_int(info, i, name, 0, INT64_MAX);
  if (!cpu::valid_blocksize4(bs)) {
    throw_error(ErrorKind::Argument, std::string("Expected one of 32, 64, 128, 256, 512, 1024, 2048, 4096 for ") + name +
                                         " but received " + std::to_string(bs) + " (number)");
  }
  return bs;
}
int64_t arg_blocksize8(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const int64_t bs = arg_int(info, i, name, 0, INT64_MAX);
  if (!cpu::valid_blocksize8(bs)) {
    throw_error(ErrorKind::Argument, std::string("Expected one of 64, 128, 256, 512, 1024, 2048, 4096 for ") + name +
                                         " but received " + std::to_string(bs) + " (number)");
  }
  return bs;
}
cpu::QuantType arg_quant_type(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<cpu::QuantType>(arg_int(info, i, "quantType (0 = nf4, 1 = fp4)", 0, 1));
}

// A 256-entry float32 code must be sorted ascending (the 8-bit binary search assumes it); NaN is rejected too.
void check_sorted_code(const float* code, const char* name) {
  for (int i = 1; i < 256; ++i) {
    if (!(code[i - 1] <= code[i])) {
      throw_error(ErrorKind::Argument, std::string("Expected a 256-entry code sorted ascending for ") + name + " but entry " +
                                           std::to_string(i) + " (" + std::to_string(code[i]) + ") is below entry " +
                                           std::to_string(i - 1) + " (" + std::to_string(code[i - 1]) + ")");
    }
  }
}

Napi::Value undefined(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

template <typename F>
void define(Napi::Env env, Napi::Object exports, const char* name, F&& fn) {
  exports.Set(name, Napi::Function::New(env, std::forward<F>(fn), name));
}

// Runs a checked kernel call on a libuv worker thread; the promise resolves to undefined. `keep` holds the storages'
// memory (TensorArg::keep_alive) until the kernel is done, even if JS disposes a storage meanwhile.
class KernelWorker : public Napi::AsyncWorker {
 public:
  KernelWorker(Napi::Env env, const char* name, std::vector<TensorArg> keep, std::function<void()> job)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        keep_(std::move(keep)),
        job_(std::move(job)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      job_();
    } catch (const LowbitException& e) {
      error_ = std::make_unique<LowbitException>(e);
    } catch (const std::bad_alloc&) {
      error_ = std::make_unique<LowbitException>(LowbitException::out_of_memory("Host memory allocation failed (std::bad_alloc)", 0, 0));
    } catch (const std::exception& e) {
      error_ = std::make_unique<LowbitException>(ErrorKind::Native, std::string("Native error: ") + e.what());
    }
    if (error_ != nullptr) SetError(error_->message);
  }

  void OnOK() override {
    keep_.clear();
    deferred_.Resolve(Env().Undefined());
  }

  void OnError(const Napi::Error& e) override {
    keep_.clear();
    if (error_ != nullptr) deferred_.Reject(make_js_error(Env(), *error_).Value());
    else deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<TensorArg> keep_;
  std::function<void()> job_;
  std::unique_ptr<LowbitException> error_;
};

Napi::Value queue(const Napi::CallbackInfo& info, const char* name, std::vector<TensorArg> keep, std::function<void()> job) {
  auto* worker = new KernelWorker(info.Env(), name, std::move(keep), std::move(job));
  Napi::Promise promise = worker->promise();
  worker->Queue();  // deletes itself after OnOK / OnError
  return promise;
}

// The [async] ops on CUDA: their kernels run on the device's stream, which is already asynchronous to the host, so
// `launch` is called on the JS thread (it only queues work, returning in microseconds) and the promise is settled as
// soon as the work is queued: resolved, or rejected with the typed error when queuing failed (out of memory for
// scratch, a launch error). The results are ordered before every later op on the device (one stream), and the host
// sees them at synchronize() or a device→host copy. Storages need no keep-alive: device memory is freed stream-ordered,
// after the queued work that uses it.
Napi::Value queued_on_stream(const Napi::CallbackInfo& info, const std::function<void()>& launch) {
  Napi::Env env = info.Env();
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  std::unique_ptr<LowbitException> error;
  try {
    launch();
  } catch (const LowbitException& e) {
    error = std::make_unique<LowbitException>(e);
  } catch (const std::bad_alloc&) {
    error = std::make_unique<LowbitException>(LowbitException::out_of_memory("Host memory allocation failed (std::bad_alloc)", 0, 0));
  } catch (const std::exception& e) {
    error = std::make_unique<LowbitException>(ErrorKind::Native, std::string("Native error: ") + e.what());
  }
  if (error != nullptr) deferred.Reject(make_js_error(env, *error).Value());
  else deferred.Resolve(env.Undefined());
  return deferred.Promise();
}

// ---- matmul ----------------------------------------------------------------------------------------------------------

struct MatmulCall {
  TensorArg out, a, b;
  Device dev;
  DType dtype = DType::Float32, out_dtype = DType::Float32;
  int64_t batch = 0, M = 0, N = 0, K = 0, sa = 0, sb = 0, so = 0;
  bool ta = false, tb = false;
  float alpha = 1.0f, beta = 0.0f;
  void run() const {
    if (dev.type == DeviceType::CUDA) {
      cuda::matmul(dev.index, out.data, out_dtype, a.data, b.data, dtype, batch, M, N, K, ta, tb, sa, sb, so, alpha, beta);
      return;
    }
    cpu::matmul(out.data, out_dtype, a.data, b.data, dtype, batch, M, N, K, ta, tb, sa, sb, so, alpha, beta);
  }
};

// Elements spanned by `batch` items of `per` elements `stride` apart (0 when nothing is touched).
int64_t batched_extent(int64_t batch, int64_t stride, int64_t per, const char* what) {
  if (batch == 0 || per == 0) return 0;
  return checked_mul(batch - 1, stride, what) + per;
}

// matmul(out, outOffset, a, aOffset, b, bOffset, dtype, outDtype, batch, M, N, K, transA, transB, strideA, strideB,
//        strideOut, alpha, beta)
MatmulCall parse_matmul(const Napi::CallbackInfo& info, const char* op) {
  MatmulCall c;
  c.out = arg_tensor(info, 0, "out");
  c.a = arg_tensor(info, 2, "a");
  c.b = arg_tensor(info, 4, "b");
  c.dtype = arg_dtype(info, 6, "dtype");
  c.out_dtype = arg_dtype(info, 7, "outDtype");
  c.batch = arg_int(info, 8, "batch");
  c.M = arg_int(info, 9, "M");
  c.N = arg_int(info, 10, "N");
  c.K = arg_int(info, 11, "K");
  c.ta = arg_bool(info, 12, "transA");
  c.tb = arg_bool(info, 13, "transB");
  c.sa = arg_int(info, 14, "strideA");
  c.sb = arg_int(info, 15, "strideB");
  c.so = arg_int(info, 16, "strideOut");
  c.alpha = static_cast<float>(arg_finite(info, 17, "alpha"));
  c.beta = static_cast<float>(arg_finite(info, 18, "beta"));
  check_float(c.dtype, "dtype");
  check_float(c.out_dtype, "outDtype");
  c.dev = op_device({&c.out, &c.a, &c.b}, op);
  const int64_t mn = checked_mul(c.M, c.N, "M * N");
  if (c.batch > 1 && mn > 0 && c.so < mn) {
    throw_error(ErrorKind::Argument, "Expected strideOut >= M * N (" + std::to_string(mn) +
                                         ") so batch items do not overlap in out but received " + std::to_string(c.so));
  }
  const bool touches_inputs = mn > 0 && c.K > 0;
  const int64_t es = dtype_size(c.dtype), os = dtype_size(c.out_dtype);
  const int64_t a_bytes = check_extent(c.a, touches_inputs ? batched_extent(c.batch, c.sa, checked_mul(c.M, c.K, "M * K"), "a") : 0, es);
  const int64_t b_bytes = check_extent(c.b, touches_inputs ? batched_extent(c.batch, c.sb, checked_mul(c.K, c.N, "K * N"), "b") : 0, es);
  const int64_t out_bytes = check_output(c.out, batched_extent(c.batch, c.so, mn, "out"), os);
  check_disjoint(c.out, out_bytes, c.a, a_bytes);
  check_disjoint(c.out, out_bytes, c.b, b_bytes);
  return c;
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    parse_matmul(info, "matmul").run();
    return undefined(info);
  });
}

Napi::Value MatmulAsync(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    MatmulCall c = parse_matmul(info, "matmulAsync");
    if (c.dev.type == DeviceType::CUDA) return queued_on_stream(info, [&c] { c.run(); });
    std::vector<TensorArg> keep{c.out, c.a, c.b};
    return queue(info, "lowbit:matmul", std::move(keep), [c] { c.run(); });
  });
}

// ---- 4-bit -------------------------------------------------------------------------------------------------------

struct Quantize4Call {
  TensorArg packed, absmax, x;
  Device dev;
  DType dtype = DType::Float32;
  int64_t n = 0, bs = 64;
  cpu::QuantType type = cpu::QuantType::NF4;
  void run() const {
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::quant::quantize4bit(dev.index, packed.data, reinterpret_cast<float*>(absmax.data), x.data, dtype, n, bs, type);
      return;
    }
#endif
    cpu::quantize4bit(packed.data, reinterpret_cast<float*>(absmax.data), x.data, dtype, n, bs, type);
  }
};

// quantize4bit(packed, packedOffset, absmax, absmaxOffset, x, xOffset, dtype, n, blocksize, quantType)
Quantize4Call parse_quantize4(const Napi::CallbackInfo& info, const char* op) {
  Quantize4Call c;
  c.packed = arg_tensor(info, 0, "packed");
  c.absmax = arg_tensor(info, 2, "absmax");
  c.x = arg_tensor(info, 4, "x");
  c.dtype = arg_dtype(info, 6, "dtype");
  c.n = arg_int(info, 7, "n");
  c.bs = arg_blocksize4(info, 8, "blocksize");
  c.type = arg_quant_type(info, 9);
  check_float(c.dtype, "dtype");
  c.dev = op_device({&c.packed, &c.absmax, &c.x}, op);
  const int64_t x_bytes = check_extent(c.x, c.n, dtype_size(c.dtype));
  const int64_t p_bytes = check_output(c.packed, ceil_div(c.n, 2), 1);
  const int64_t a_bytes = check_output(c.absmax, ceil_div(c.n, c.bs), 4);
  check_disjoint(c.packed, p_bytes, c.x, x_bytes);
  check_disjoint(c.absmax, a_bytes, c.x, x_bytes);
  check_disjoint(c.absmax, a_bytes, c.packed, p_bytes);
  return c;
}

Napi::Value Quantize4bit(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    parse_quantize4(info, "quantize4bit").run();
    return undefined(info);
  });
}

Napi::Value Quantize4bitAsync(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Quantize4Call c = parse_quantize4(info, "quantize4bitAsync");
    if (c.dev.type == DeviceType::CUDA) return queued_on_stream(info, [&c] { c.run(); });
    std::vector<TensorArg> keep{c.packed, c.absmax, c.x};
    return queue(info, "lowbit:quantize4bit", std::move(keep), [c] { c.run(); });
  });
}

// dequantize4bit(out, outOffset, outDtype, packed, packedOffset, absmax, absmaxOffset, n, blocksize, quantType)
Napi::Value Dequantize4bit(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg out = arg_tensor(info, 0, "out");
    DType od = arg_dtype(info, 2, "outDtype");
    TensorArg packed = arg_tensor(info, 3, "packed");
    TensorArg absmax = arg_tensor(info, 5, "absmax");
    int64_t n = arg_int(info, 7, "n");
    int64_t bs = arg_blocksize4(info, 8, "blocksize");
    cpu::QuantType type = arg_quant_type(info, 9);
    check_float(od, "outDtype");
    [[maybe_unused]] const Device dev = op_device({&out, &packed, &absmax}, "dequantize4bit");
    const int64_t p_bytes = check_extent(packed, ceil_div(n, 2), 1);
    const int64_t a_bytes = check_extent(absmax, ceil_div(n, bs), 4);
    const int64_t o_bytes = check_output(out, n, dtype_size(od));
    check_disjoint(out, o_bytes, packed, p_bytes);
    check_disjoint(out, o_bytes, absmax, a_bytes);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::quant::dequantize4bit(dev.index, out.data, od, packed.data, reinterpret_cast<const float*>(absmax.data), n, bs, type);
      return undefined(info);
    }
#endif
    cpu::dequantize4bit(out.data, od, packed.data, reinterpret_cast<const float*>(absmax.data), n, bs, type);
    return undefined(info);
  });
}

// dequantizeNestedAbsmax(out, outOffset, qabsmax, qabsmaxOffset, nestedAbsmax, nestedAbsmaxOffset, code, codeOffset,
//                        offset, nBlocks, nestedBlocksize)
Napi::Value DequantizeNestedAbsmax(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg out = arg_tensor(info, 0, "out");
    TensorArg q = arg_tensor(info, 2, "qabsmax");
    TensorArg nested = arg_tensor(info, 4, "nestedAbsmax");
    TensorArg code = arg_tensor(info, 6, "code");
    const float offset = static_cast<float>(arg_finite(info, 8, "offset"));
    int64_t nb = arg_int(info, 9, "nBlocks");
    int64_t nbs = arg_blocksize8(info, 10, "nestedBlocksize");
    [[maybe_unused]] const Device dev = op_device({&out, &q, &nested, &code}, "dequantizeNestedAbsmax");
    const int64_t q_bytes = check_extent(q, nb, 1);
    const int64_t n_bytes = check_extent(nested, ceil_div(nb, nbs), 4);
    const int64_t c_bytes = check_extent(code, 256, 4);
    const int64_t o_bytes = check_output(out, nb, 4);
    check_disjoint(out, o_bytes, q, q_bytes);
    check_disjoint(out, o_bytes, nested, n_bytes);
    check_disjoint(out, o_bytes, code, c_bytes);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::quant::dequantize_nested_absmax(dev.index, reinterpret_cast<float*>(out.data), q.data,
                                            reinterpret_cast<const float*>(nested.data), reinterpret_cast<const float*>(code.data),
                                            offset, nb, nbs);
      return undefined(info);
    }
#endif
    cpu::dequantize_nested_absmax(reinterpret_cast<float*>(out.data), q.data, reinterpret_cast<const float*>(nested.data),
                                  reinterpret_cast<const float*>(code.data), offset, nb, nbs);
    return undefined(info);
  });
}

// gemm4bit(out, outOffset, x, xOffset, dtype, packed, packedOffset, absmax, absmaxOffset, nestedAbsmax,
//          nestedAbsmaxOffset, nestedCode, nestedCodeOffset, offset, M, N, K, blocksize, quantType, bias, biasOffset)
Napi::Value Gemm4bit(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg out = arg_tensor(info, 0, "out");
    TensorArg x = arg_tensor(info, 2, "x");
    DType dtype = arg_dtype(info, 4, "dtype");
    TensorArg packed = arg_tensor(info, 5, "packed");
    TensorArg absmax = arg_tensor(info, 7, "absmax");
    TensorArg nested = arg_tensor_opt(info, 9, "nestedAbsmax");
    TensorArg ncode = arg_tensor_opt(info, 11, "nestedCode");
    const double offset = arg_finite(info, 13, "offset");
    int64_t M = arg_int(info, 14, "M");
    int64_t N = arg_int(info, 15, "N");
    int64_t K = arg_int(info, 16, "K");
    int64_t bs = arg_blocksize4(info, 17, "blocksize");
    cpu::QuantType type = arg_quant_type(info, 18);
    TensorArg bias = arg_tensor_opt(info, 19, "bias");
    check_float(dtype, "dtype");
    if ((nested.data == nullptr) != (ncode.data == nullptr)) {
      throw_error(ErrorKind::Argument, std::string("Expected nestedAbsmax and nestedCode to be both storages (double-quant state) ") +
                                           "or both null (plain state) but received " + (nested.data ? "a storage" : "null") +
                                           " and " + (ncode.data ? "a storage" : "null"));
    }
    [[maybe_unused]] const Device dev = op_device({&out, &x, &packed, &absmax, &nested, &ncode, &bias}, "gemm4bit");
    const int64_t es = dtype_size(dtype);
    const int64_t nk = checked_mul(N, K, "N * K");
    const int64_t n_blocks = ceil_div(nk, bs);
    const int64_t x_bytes = check_extent(x, checked_mul(M, K, "M * K"), es);
    const int64_t p_bytes = check_extent(packed, ceil_div(nk, 2), 1);
    const bool nested_state = nested.data != nullptr;
    const int64_t a_bytes = check_extent(absmax, n_blocks, nested_state ? 1 : 4);
    int64_t n_bytes = 0, c_bytes = 0, b_bytes = 0;
    if (nested_state) {
      n_bytes = check_extent(nested, ceil_div(n_blocks, 256), 4);  // the nested blocksize is fixed at 256 (spec §9)
      c_bytes = check_extent(ncode, 256, 4);
    }
    if (bias.data != nullptr) b_bytes = check_extent(bias, N, es);
    const int64_t o_bytes = check_output(out, checked_mul(M, N, "M * N"), es);
    for (const auto& [in, bytes] : {std::pair<const TensorArg*, int64_t>{&x, x_bytes}, {&packed, p_bytes}, {&absmax, a_bytes},
                                    {&nested, n_bytes}, {&ncode, c_bytes}, {&bias, b_bytes}}) {
      check_disjoint(out, o_bytes, *in, bytes);
    }
    cpu::Weight4bit w;
    w.packed = packed.data;
    w.blocksize = bs;
    w.type = type;
    if (nested_state) {
      w.qabsmax = absmax.data;
      w.nested_absmax = reinterpret_cast<const float*>(nested.data);
      w.nested_code = reinterpret_cast<const float*>(ncode.data);
      w.offset = static_cast<float>(offset);
    } else {
      w.absmax = reinterpret_cast<const float*>(absmax.data);
    }
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::quant::gemm4bit(dev.index, out.data, x.data, dtype, w, M, N, K, bias.data);
      return undefined(info);
    }
#endif
    cpu::gemm4bit(out.data, x.data, dtype, w, M, N, K, bias.data);
    return undefined(info);
  });
}

// ---- 8-bit blockwise -------------------------------------------------------------------------------------------------

// quantizeBlockwise8(codes, codesOffset, absmax, absmaxOffset, x, xOffset, dtype, n, blocksize, code, codeOffset)
Napi::Value QuantizeBlockwise8(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg codes = arg_tensor(info, 0, "codes");
    TensorArg absmax = arg_tensor(info, 2, "absmax");
    TensorArg x = arg_tensor(info, 4, "x");
    DType dtype = arg_dtype(info, 6, "dtype");
    int64_t n = arg_int(info, 7, "n");
    int64_t bs = arg_blocksize8(info, 8, "blocksize");
    TensorArg code = arg_tensor(info, 9, "code");
    check_float(dtype, "dtype");
    [[maybe_unused]] const Device dev = op_device({&codes, &absmax, &x, &code}, "quantizeBlockwise8");
    const int64_t x_bytes = check_extent(x, n, dtype_size(dtype));
    const int64_t c_bytes = check_extent(code, 256, 4);
    const int64_t q_bytes = check_output(codes, n, 1);
    const int64_t a_bytes = check_output(absmax, ceil_div(n, bs), 4);
    check_disjoint(codes, q_bytes, x, x_bytes);
    check_disjoint(codes, q_bytes, code, c_bytes);
    check_disjoint(absmax, a_bytes, x, x_bytes);
    check_disjoint(absmax, a_bytes, code, c_bytes);
    check_disjoint(absmax, a_bytes, codes, q_bytes);
    const std::vector<float> host_code = host_copy<float>(code, 256);  // on CUDA: a 1 KiB copy (waits for the device)
    check_sorted_code(host_code.data(), "code");
    const float* table = reinterpret_cast<const float*>(code.data);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::quant::quantize_blockwise8(dev.index, codes.data, reinterpret_cast<float*>(absmax.data), x.data, dtype, n, bs, table);
      return undefined(info);
    }
#endif
    cpu::quantize_blockwise8(codes.data, reinterpret_cast<float*>(absmax.data), x.data, dtype, n, bs, table);
    return undefined(info);
  });
}

// dequantizeBlockwise8(out, outOffset, outDtype, codes, codesOffset, absmax, absmaxOffset, code, codeOffset, n, blocksize)
Napi::Value DequantizeBlockwise8(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg out = arg_tensor(info, 0, "out");
    DType od = arg_dtype(info, 2, "outDtype");
    TensorArg codes = arg_tensor(info, 3, "codes");
    TensorArg absmax = arg_tensor(info, 5, "absmax");
    TensorArg code = arg_tensor(info, 7, "code");
    int64_t n = arg_int(info, 9, "n");
    int64_t bs = arg_blocksize8(info, 10, "blocksize");
    check_float(od, "outDtype");
    [[maybe_unused]] const Device dev = op_device({&out, &codes, &absmax, &code}, "dequantizeBlockwise8");
    const int64_t q_bytes = check_extent(codes, n, 1);
    const int64_t a_bytes = check_extent(absmax, ceil_div(n, bs), 4);
    const int64_t c_bytes = check_extent(code, 256, 4);
    const int64_t o_bytes = check_output(out, n, dtype_size(od));
    check_disjoint(out, o_bytes, codes, q_bytes);
    check_disjoint(out, o_bytes, absmax, a_bytes);
    check_disjoint(out, o_bytes, code, c_bytes);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::quant::dequantize_blockwise8(dev.index, out.data, od, codes.data, reinterpret_cast<const float*>(absmax.data),
                                         reinterpret_cast<const float*>(code.data), n, bs);
      return undefined(info);
    }
#endif
    cpu::dequantize_blockwise8(out.data, od, codes.data, reinterpret_cast<const float*>(absmax.data),
                               reinterpret_cast<const float*>(code.data), n, bs);
    return undefined(info);
  });
}

// ---- LLM.int8 ----------------------------------------------------------------------------------------------------

// int8VectorwiseQuant(CB, CBOffset, SCB, SCBOffset, x, xOffset, dtype, rows, cols, threshold, outliers?, outliersOffset?)
//   -> Int32Array (empty when `outliers` receives the list)
Napi::Value Int8VectorwiseQuant(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TensorArg cb = arg_tensor(info, 0, "CB");
    TensorArg scb = arg_tensor(info, 2, "SCB");
    TensorArg x = arg_tensor(info, 4, "x");
    DType dtype = arg_dtype(info, 6, "dtype");
    int64_t rows = arg_int(info, 7, "rows");
    int64_t cols = arg_int(info, 8, "cols", 0, INT32_MAX);  // outlier column indices are returned as int32
    const double threshold = arg_finite(info, 9, "threshold");
    if (threshold < 0) {
      throw_error(ErrorKind::Argument, "Expected a non-negative number for threshold but received " + std::to_string(threshold));
    }
    check_float(dtype, "dtype");
    // Optional: an int32 storage of cols + 1 entries that receives the outlier list where it is computed (count, then
    // the ascending indices) instead of returning it, so CUDA does not wait for the device.
    TensorArg list = arg_tensor_opt(info, 10, "outliers");
    [[maybe_unused]] const Device dev = op_device({&cb, &scb, &x, &list}, "int8VectorwiseQuant");
    const int64_t numel = checked_mul(rows, cols, "rows * cols");
    const int64_t x_bytes = check_extent(x, numel, dtype_size(dtype));
    const int64_t cb_bytes = check_output(cb, numel, 1);
    const int64_t s_bytes = check_output(scb, rows, 4);
    check_disjoint(cb, cb_bytes, x, x_bytes);
    check_disjoint(scb, s_bytes, x, x_bytes);
    check_disjoint(scb, s_bytes, cb, cb_bytes);
    if (list.data != nullptr) {
      const int64_t l_bytes = check_output(list, cols + 1, 4);
      check_disjoint(list, l_bytes, x, x_bytes);
      check_disjoint(list, l_bytes, cb, cb_bytes);
      check_disjoint(list, l_bytes, scb, s_bytes);
      auto* lp = reinterpret_cast<int32_t*>(list.data);
#if LOWBIT_WITH_CUDA
      if (dev.type == DeviceType::CUDA) {
        cuda::quant::int8_vectorwise_quant_list(dev.index, reinterpret_cast<int8_t*>(cb.data), reinterpret_cast<float*>(scb.data), x.data,
                                                dtype, rows, cols, threshold, lp);
        return Napi::Int32Array::New(info.Env(), 0);
      }
#endif
      const std::vector<int32_t> found = cpu::int8_vectorwise_quant(reinterpret_cast<int8_t*>(cb.data), reinterpret_cast<float*>(scb.data),
                                                                    x.data, dtype, rows, cols, threshold);
      lp[0] = static_cast<int32_t>(found.size());
      if (!found.empty()) std::memcpy(lp + 1, found.data(), found.size() * sizeof(int32_t));
      return Napi::Int32Array::New(info.Env(), 0);
    }
    std::vector<int32_t> outliers;
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      outliers = cuda::quant::int8_vectorwise_quant(dev.index, reinterpret_cast<int8_t*>(cb.data), reinterpret_cast<float*>(scb.data),
                                                    x.data, dtype, rows, cols, threshold);
    } else
#endif
    {
      outliers = cpu::int8_vectorwise_quant(reinterpret_cast<int8_t*>(cb.data), reinterpret_cast<float*>(scb.data), x.data, dtype,
                                            rows, cols, threshold);
    }
    Napi::Int32Array result = Napi::Int32Array::New(info.Env(), outliers.size());
    if (!outliers.empty()) std::memcpy(result.Data(), outliers.data(), outliers.size() * sizeof(int32_t));
    return result;
  });
}

// int8Matmul(out, outOffset, a, aOffset, b, bOffset, M, N, K)
Napi::Value Int8Matmul(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg out = arg_tensor(info, 0, "out");
    TensorArg a = arg_tensor(info, 2, "a");
    TensorArg b = arg_tensor(info, 4, "b");
    int64_t M = arg_int(info, 6, "M");
    int64_t N = arg_int(info, 7, "N");
    int64_t K = arg_int(info, 8, "K");
    [[maybe_unused]] const Device dev = op_device({&out, &a, &b}, "int8Matmul");
    const int64_t a_bytes = check_extent(a, checked_mul(M, K, "M * K"), 1);
    const int64_t b_bytes = check_extent(b, checked_mul(N, K, "N * K"), 1);
    const int64_t o_bytes = check_output(out, checked_mul(M, N, "M * N"), 4);
    check_disjoint(out, o_bytes, a, a_bytes);
    check_disjoint(out, o_bytes, b, b_bytes);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::quant::int8_matmul(dev.index, reinterpret_cast<int32_t*>(out.data), reinterpret_cast<const int8_t*>(a.data),
                               reinterpret_cast<const int8_t*>(b.data), M, N, K);
      return undefined(info);
    }
#endif
    cpu::int8_matmul(reinterpret_cast<int32_t*>(out.data), reinterpret_cast<const int8_t*>(a.data),
                     reinterpret_cast<const int8_t*>(b.data), M, N, K);
    return undefined(info);
  });
}

// int8MmDequant(out, outOffset, outDtype, C, COffset, rowStats, rowStatsOffset, colStats, colStatsOffset, bias,
//               biasOffset, M, N)
Napi::Value Int8MmDequant(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg out = arg_tensor(info, 0, "out");
    DType od = arg_dtype(info, 2, "outDtype");
    TensorArg c = arg_tensor(info, 3, "C");
    TensorArg rs = arg_tensor(info, 5, "rowStats");
    TensorArg cs = arg_tensor(info, 7, "colStats");
    TensorArg bias = arg_tensor_opt(info, 9, "bias");
    int64_t M = arg_int(info, 11, "M");
    int64_t N = arg_int(info, 12, "N");
    check_float(od, "outDtype");
    [[maybe_unused]] const Device dev = op_device({&out, &c, &rs, &cs, &bias}, "int8MmDequant");
    const int64_t mn = checked_mul(M, N, "M * N");
    const int64_t c_bytes = check_extent(c, mn, 4);
    const int64_t r_bytes = check_extent(rs, M, 4);
    const int64_t s_bytes = check_extent(cs, N, 4);
    const int64_t b_bytes = bias.data != nullptr ? check_extent(bias, N, dtype_size(od)) : 0;
    const int64_t o_bytes = check_output(out, mn, dtype_size(od));
    check_disjoint(out, o_bytes, c, c_bytes);
    check_disjoint(out, o_bytes, rs, r_bytes);
    check_disjoint(out, o_bytes, cs, s_bytes);
    check_disjoint(out, o_bytes, bias, b_bytes);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::quant::int8_mm_dequant(dev.index, out.data, od, reinterpret_cast<const int32_t*>(c.data),
                                   reinterpret_cast<const float*>(rs.data), reinterpret_cast<const float*>(cs.data), bias.data, M, N);
      return undefined(info);
    }
#endif
    cpu::int8_mm_dequant(out.data, od, reinterpret_cast<const int32_t*>(c.data), reinterpret_cast<const float*>(rs.data),
                         reinterpret_cast<const float*>(cs.data), bias.data, M, N);
    return undefined(info);
  });
}

// int8OutlierMatmulAdd(out, outOffset, x, xOffset, dtype, CB, CBOffset, SCB, SCBOffset, cols, colsOffset, nCols, M, N, K)
//   (nCols = -1: cols is an `outliers` list of int8VectorwiseQuant: count, then indices)
Napi::Value Int8OutlierMatmulAdd(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg out = arg_tensor(info, 0, "out");
    TensorArg x = arg_tensor(info, 2, "x");
    DType dtype = arg_dtype(info, 4, "dtype");
    TensorArg cb = arg_tensor(info, 5, "CB");
    TensorArg scb = arg_tensor(info, 7, "SCB");
    TensorArg cols = arg_tensor(info, 9, "cols");
    int64_t n_cols = arg_int(info, 11, "nCols", -1);  // -1: cols holds a list from int8VectorwiseQuant's `outliers`
    int64_t M = arg_int(info, 12, "M");
    int64_t N = arg_int(info, 13, "N");
    int64_t K = arg_int(info, 14, "K");
    check_float(dtype, "dtype");
    [[maybe_unused]] const Device dev = op_device({&out, &x, &cb, &scb, &cols}, "int8OutlierMatmulAdd");
    const int64_t es = dtype_size(dtype);
    const int64_t x_bytes = check_extent(x, checked_mul(M, K, "M * K"), es);
    const int64_t cb_bytes = check_extent(cb, checked_mul(N, K, "N * K"), 1);
    const int64_t s_bytes = check_extent(scb, N, 4);
    const int64_t c_bytes = check_extent(cols, n_cols < 0 ? K + 1 : n_cols, 4);
    const int64_t o_bytes = check_output(out, checked_mul(M, N, "M * N"), es);
    check_disjoint(out, o_bytes, x, x_bytes);
    check_disjoint(out, o_bytes, cb, cb_bytes);
    check_disjoint(out, o_bytes, scb, s_bytes);
    check_disjoint(out, o_bytes, cols, c_bytes);
    if (n_cols < 0) {
#if LOWBIT_WITH_CUDA
      if (dev.type == DeviceType::CUDA) {
        // The count and indices stay on the device: the kernel clamps the count to K and skips indices outside [0, K).
        cuda::quant::int8_outlier_matmul_add_list(dev.index, out.data, x.data, dtype, reinterpret_cast<const int8_t*>(cb.data),
                                                  reinterpret_cast<const float*>(scb.data), reinterpret_cast<const int32_t*>(cols.data), M,
                                                  N, K);
        return undefined(info);
      }
#endif
      const auto* lp = reinterpret_cast<const int32_t*>(cols.data);
      if (lp[0] < 0 || lp[0] > K) {
        throw_error(ErrorKind::Argument, "Expected an outlier count in [0, " + std::to_string(K) + "] at cols[0] but received " +
                                             std::to_string(lp[0]));
      }
      n_cols = lp[0];
      for (int64_t j = 0; j < n_cols; ++j) {
        if (lp[1 + j] < 0 || lp[1 + j] >= K) {
          throw_error(ErrorKind::Argument, "Expected an index in [0, " + std::to_string(K) + ") for cols[" + std::to_string(j + 1) +
                                               "] but received " + std::to_string(lp[1 + j]));
        }
      }
      cpu::int8_outlier_matmul_add(out.data, x.data, dtype, reinterpret_cast<const int8_t*>(cb.data), reinterpret_cast<const float*>(scb.data),
                                   lp + 1, n_cols, M, N, K);
      return undefined(info);
    }
    // The indices are read by the kernel: check them all first (on CUDA through a host copy, which waits for the device).
    const std::vector<int32_t> host_idx = host_copy<int32_t>(cols, n_cols);
    for (int64_t j = 0; j < n_cols; ++j) {
      const int32_t v = host_idx[static_cast<size_t>(j)];
      if (v < 0 || v >= K) {
        throw_error(ErrorKind::Argument, "Expected an index in [0, " + std::to_string(K) + ") for cols[" + std::to_string(j) +
                                             "] but received " + std::to_string(v));
      }
    }
    const int32_t* idx = reinterpret_cast<const int32_t*>(cols.data);
#if LOWBIT_WITH_CUDA
    if (dev.type == DeviceType::CUDA) {
      cuda::quant::int8_outlier_matmul_add(dev.index, out.data, x.data, dtype, reinterpret_cast<const int8_t*>(cb.data),
                                           reinterpret_cast<const float*>(scb.data), idx, n_cols, M, N, K);
      return undefined(info);
    }
#endif
    cpu::int8_outlier_matmul_add(out.data, x.data, dtype, reinterpret_cast<const int8_t*>(cb.data),
                                 reinterpret_cast<const float*>(scb.data), idx, n_cols, M, N, K);
    return undefined(info);
  });
}

}  // namespace

void register_linalg(Napi::Env env, Napi::Object exports) {
  define(env, exports, "matmul", Matmul);
  define(env, exports, "matmulAsync", MatmulAsync);
  define(env, exports, "quantize4bit", Quantize4bit);
  define(env, exports, "quantize4bitAsync", Quantize4bitAsync);
  define(env, exports, "dequantize4bit", Dequantize4bit);
  define(env, exports, "dequantizeNestedAbsmax", DequantizeNestedAbsmax);
  define(env, exports, "gemm4bit", Gemm4bit);
  define(env, exports, "quantizeBlockwise8", QuantizeBlockwise8);
  define(env, exports, "dequantizeBlockwise8", DequantizeBlockwise8);
  define(env, exports, "int8VectorwiseQuant", Int8VectorwiseQuant);
  define(env, exports, "int8Matmul", Int8Matmul);
  define(env, exports, "int8MmDequant", Int8MmDequant);
  define(env, exports, "int8OutlierMatmulAdd", Int8OutlierMatmulAdd);
}

}  // namespace lowbit
