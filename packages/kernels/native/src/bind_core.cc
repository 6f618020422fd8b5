// Core bindings: initialize / version / devices / memory statistics / threads, storage creation
// (allocate, mapFile, readFile), byte movement (copyBytes, upload, download, fill), the layout kernels
// `cast` and `copyStrided` (CPU here; CUDA storages dispatch to cuda/layout.h) and cudaGemmBackend.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/parallel.h"
#include "cuda/cuda_backend.h"
#include "cuda/gemm.h"
#include "cuda/layout.h"
#include "napi_util.h"
#include "storage.h"

#ifndef LOWBIT_VERSION
#define LOWBIT_VERSION "0.0.0"
#endif

namespace lowbit {
namespace {

// Bytes per parallel chunk for memcpy-like work: below this one thread is faster than waking others.
constexpr int64_t kCopyGrainBytes = int64_t{1} << 20;
// Elements per chunk for conversions.
constexpr int64_t kCastGrain = int64_t{1} << 16;

Napi::Value undefined(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

// The scalar conversions and Elem traits `cast` uses live in convert.h (shared with cuda/layout.cu).

template <DType S, DType D>
void cast_loop(const uint8_t* src, uint8_t* dst, int64_t numel) {
  using TS = typename Elem<S>::T;
  using TD = typename Elem<D>::T;
  const TS* s = reinterpret_cast<const TS*>(src);
  TD* d = reinterpret_cast<TD*>(dst);
  cpu::parallel_for(numel, kCastGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      TS x;
      std::memcpy(&x, s + i, sizeof x);  // storages are aligned, but byte offsets need not be
      TD y;
      if constexpr (Elem<S>::kFloat) y = from_f32<D>(to_f32<S>(x));
      else y = from_i64<D>(to_i64<S>(x));
      std::memcpy(d + i, &y, sizeof y);
    }
  });
}

#define LOWBIT_CAST_DTYPES(X) \
  X(Float32) X(Float16) X(BFloat16) X(Float8E4M3FN) X(Float8E5M2) X(Int8) X(UInt8) X(Int16) X(Int32) X(Int64) X(Bool)

template <DType S>
void cast_to(DType d, const uint8_t* src, uint8_t* dst, int64_t numel) {
  switch (d) {
#define LOWBIT_CASE(name) \
  case DType::name: return cast_loop<S, DType::name>(src, dst, numel);
    LOWBIT_CAST_DTYPES(LOWBIT_CASE)
#undef LOWBIT_CASE
    default: break;
  }
  throw_error(ErrorKind::DType, std::string("Expected a non-packed dtype for dstDtype but received ") + dtype_name(d));
}

void cast_cpu(DType d, uint8_t* dst, DType s, const uint8_t* src, int64_t numel) {
  switch (s) {
#define LOWBIT_CASE(name) \
  case DType::name: return cast_to<DType::name>(d, src, dst, numel);
    LOWBIT_CAST_DTYPES(LOWBIT_CASE)
#undef LOWBIT_CASE
    default: break;
  }
  throw_error(ErrorKind::DType, std::string("Expected a non-packed dtype for srcDtype but received ") + dtype_name(s));
}

// ---- host copies ---------------------------------------------------------------------------------------------

// memmove, split across threads when large and the ranges do not overlap.
void host_copy(uint8_t* dst, const uint8_t* src, int64_t bytes) {
  if (bytes <= 0 || dst == src) return;
  bool overlap = dst < src + bytes && src < dst + bytes;
  if (overlap || bytes < 2 * kCopyGrainBytes) {
    std::memmove(dst, src, static_cast<size_t>(bytes));
    return;
  }
  cpu::parallel_for(bytes, kCopyGrainBytes, [&](int64_t b, int64_t e) { std::memcpy(dst + b, src + b, static_cast<size_t>(e - b)); });
}

// Moves bytes between any two devices (both pointers already range-checked).
void copy_any(const Device& dd, uint8_t* dst, const Device& sd, const uint8_t* src, int64_t bytes) {
  if (bytes == 0) return;
  if (dd.type == DeviceType::CPU && sd.type == DeviceType::CPU) return host_copy(dst, src, bytes);
  if (dd.type == DeviceType::CUDA && sd.type == DeviceType::CPU) return cuda::copy_host_to_device(dd.index, dst, src, bytes);
  if (dd.type == DeviceType::CPU && sd.type == DeviceType::CUDA) return cuda::copy_device_to_host(sd.index, dst, src, bytes);
  // Overlapping ranges on one device are handled there (memmove semantics, through pool scratch).
  cuda::copy_device_to_device(dd.index, dst, sd.index, src, bytes);
}

// A host ArrayBufferView argument: pointer and byte length.
struct HostView {
  uint8_t* data = nullptr;
  int64_t bytes = 0;
};

HostView arg_view(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = i < info.Length() ? info[i] : info.Env().Undefined();
  HostView h;
  if (v.IsTypedArray()) {
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    Napi::ArrayBuffer buf = ta.ArrayBuffer();
    h.data = static_cast<uint8_t*>(buf.Data()) + ta.ByteOffset();
    h.bytes = static_cast<int64_t>(ta.ByteLength());
  } else if (v.IsDataView()) {
    Napi::DataView dv = v.As<Napi::DataView>();
    h.data = static_cast<uint8_t*>(dv.ArrayBuffer().Data()) + dv.ByteOffset();
    h.bytes = static_cast<int64_t>(dv.ByteLength());
  } else {
    throw_error(ErrorKind::Argument, std::string("Expected an ArrayBufferView (typed array or DataView) for ") + name + " but received " + describe_value(v));
  }
  if (h.data == nullptr) h.bytes = 0;  // detached buffer
  return h;
}

// The bit pattern of `value` in `dtype` for fill(). Integers must be exact and in range.
int fill_pattern(DType dtype, double value, uint8_t out[8]) {
  auto int_in = [&](double lo, double hi) -> int64_t {
    if (!(value == std::floor(value) && value >= lo && value <= hi)) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.17g", value);
      throw_error(ErrorKind::Argument, std::string("Expected an integer representable as ") + dtype_name(dtype) + " for value but received " + buf);
    }
    return static_cast<int64_t>(value);
  };
  const float f = static_cast<float>(value);  // JS numbers are doubles; float math is float32 (RNE)
  switch (dtype) {
    case DType::Float32: std::memcpy(out, &f, 4); return 4;
    case DType::Float16: { uint16_t h = f32_to_f16(f); std::memcpy(out, &h, 2); return 2; }
    case DType::BFloat16: { uint16_t h = f32_to_bf16(f); std::memcpy(out, &h, 2); return 2; }
    case DType::Float8E4M3FN: out[0] = f32_to_e4m3fn(f); return 1;
    case DType::Float8E5M2: out[0] = f32_to_e5m2(f); return 1;
    case DType::Int8: { int8_t x = static_cast<int8_t>(int_in(-128, 127)); std::memcpy(out, &x, 1); return 1; }
    case DType::UInt8: out[0] = static_cast<uint8_t>(int_in(0, 255)); return 1;
    case DType::Bool: out[0] = static_cast<uint8_t>(int_in(0, 1)); return 1;
    case DType::Int16: { int16_t x = static_cast<int16_t>(int_in(-32768, 32767)); std::memcpy(out, &x, 2); return 2; }
    case DType::Int32: { int32_t x = static_cast<int32_t>(int_in(-2147483648.0, 2147483647.0)); std::memcpy(out, &x, 4); return 4; }
    case DType::Int64: { int64_t x = int_in(-9223372036854775808.0, 9223372036854774784.0); std::memcpy(out, &x, 8); return 8; }
    default: break;
  }
  throw_error(ErrorKind::DType, std::string("Expected a non-packed dtype for dtype but received ") + dtype_name(dtype));
}

// ---- copyStrided -----------------------------------------------------------------------------------------------

// dst[idx] = src[idx] over `shape` (dims already coalesced; strides in elements, >= 0).
template <typename T>
void strided_copy(uint8_t* dst_base, const std::vector<int64_t>& dst_st, const uint8_t* src_base, const std::vector<int64_t>& src_st,
                  const std::vector<int64_t>& shape) {
  const size_t nd = shape.size();
  const int64_t inner = shape[nd - 1];
  const int64_t ds = dst_st[nd - 1], ss = src_st[nd - 1];
  int64_t rows = 1;
  for (size_t k = 0; k + 1 < nd; ++k) rows *= shape[k];
  T* dst = reinterpret_cast<T*>(dst_base);
  const T* src = reinterpret_cast<const T*>(src_base);
  const int64_t grain = std::max<int64_t>(1, kCopyGrainBytes / static_cast<int64_t>(sizeof(T)) / std::max<int64_t>(1, inner));
  cpu::parallel_for(rows, grain, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      // Row r of the outer dims -> element offsets in dst and src.
      int64_t rem = r, doff = 0, soff = 0;
      for (size_t k = nd - 1; k-- > 0;) {
        int64_t idx = rem % shape[k];
        rem /= shape[k];
        doff += idx * dst_st[k];
        soff += idx * src_st[k];
      }
      T* d = dst + doff;
      const T* s = src + soff;
      if (ds == 1 && ss == 1) {
        std::memcpy(d, s, static_cast<size_t>(inner) * sizeof(T));
      } else if (ss == 0) {
        T v;
        std::memcpy(&v, s, sizeof v);
        for (int64_t i = 0; i < inner; ++i) std::memcpy(d + i * ds, &v, sizeof v);
      } else {
        for (int64_t i = 0; i < inner; ++i) std::memcpy(d + i * ds, s + i * ss, sizeof(T));
      }
    }
  });
}

void strided_copy_dispatch(int64_t esize, uint8_t* dst, const std::vector<int64_t>& dst_st, const uint8_t* src,
                           const std::vector<int64_t>& src_st, const std::vector<int64_t>& shape) {
  switch (esize) {
    case 1: return strided_copy<uint8_t>(dst, dst_st, src, src_st, shape);
    case 2: return strided_copy<uint16_t>(dst, dst_st, src, src_st, shape);
    case 4: return strided_copy<uint32_t>(dst, dst_st, src, src_st, shape);
    default: return strided_copy<uint64_t>(dst, dst_st, src, src_st, shape);
  }
}

// Highest element index reachable with `strides` over `shape` (all >= 0, numel > 0), checked.
int64_t max_index(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, const char* name) {
  int64_t m = 0;
  for (size_t k = 0; k < shape.size(); ++k) m += checked_mul(shape[k] - 1, strides[k], name);
  if (m < 0 || m > (int64_t{1} << 53)) throw_error(ErrorKind::Argument, std::string("Expected strides that stay below 2^53 elements for ") + name);
  return m;
}

// ---- readFile (async) ------------------------------------------------------------------------------------------

class ReadFileWorker : public Napi::AsyncWorker {
 public:
  ReadFileWorker(Napi::Env env, std::string path, int64_t offset, int64_t bytes, Device device)
      : Napi::AsyncWorker(env, "lowbit:readFile"),
        deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)),
        offset_(offset),
        bytes_(bytes),
        device_(device) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      read();
    } catch (const LowbitException& e) {
      error_ = std::make_unique<LowbitException>(e);
      SetError(e.message);
    } catch (const std::bad_alloc&) {
      error_ = std::make_unique<LowbitException>(LowbitException::out_of_memory("Host memory allocation failed while reading \"" + path_ + "\"", bytes_, -1));
      SetError(error_->message);
    } catch (const std::exception& e) {
      error_ = std::make_unique<LowbitException>(ErrorKind::Native, std::string("Native error: ") + e.what());
      SetError(error_->message);
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(StorageImpl::wrap(env, std::move(block_)));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const LowbitException& e) {
      deferred_.Reject(make_js_error(env, e).Value());
    }
  }

  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    block_.reset();
    if (error_ != nullptr) deferred_.Reject(make_js_error(env, *error_).Value());
    else deferred_.Reject(e.Value());
  }

 private:
  // Reads [offset, offset + bytes) of the file with pread (off the JS thread).
  void pread_all(int fd, uint8_t* dst, int64_t file_offset, int64_t bytes) {
    int64_t done = 0;
    while (done < bytes) {
      size_t want = static_cast<size_t>(std::min<int64_t>(bytes - done, int64_t{1} << 30));
      ssize_t got = pread(fd, dst + done, want, static_cast<off_t>(file_offset + done));
      if (got < 0) {
        if (errno == EINTR) continue;
        throw_error(ErrorKind::File, "Cannot read \"" + path_ + "\" at byte " + std::to_string(file_offset + done) + ": " + std::strerror(errno));
      }
      if (got == 0) {
        throw_error(ErrorKind::File, "Unexpected end of \"" + path_ + "\" at byte " + std::to_string(file_offset + done) + " (the file shrank while reading)");
      }
      done += got;
    }
  }

  void read() {
    int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_error(ErrorKind::File, "Cannot open \"" + path_ + "\": " + std::strerror(errno));
    struct FdCloser {
      int fd;
      ~FdCloser() { close(fd); }
    } closer{fd};
    struct stat st;
    if (fstat(fd, &st) != 0) throw_error(ErrorKind::File, "Cannot stat \"" + path_ + "\": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw_error(ErrorKind::File, "Expected a regular file for path but received \"" + path_ + "\" (not a regular file)");
    const int64_t size = static_cast<int64_t>(st.st_size);
    if (offset_ > size || bytes_ > size - offset_) {
      throw_error(ErrorKind::File, "Expected a byte range inside \"" + path_ + "\" (" + std::to_string(size) + " bytes) but received [" +
                                       std::to_string(offset_) + ", " + std::to_string(offset_ + bytes_) + ")");
    }
    if (device_.type == DeviceType::CPU) {
      block_ = MemoryBlock::allocate(device_, bytes_, /*zero=*/false);  // pread overwrites every byte
      pread_all(fd, block_->data(), offset_, bytes_);
      return;
    }
    // CUDA: read chunks into a host buffer and copy each to the device. copy_host_to_device moves the
    // chunk into its pinned staging buffers and returns while the DMA runs, so the next read overlaps it.
    block_ = MemoryBlock::allocate(device_, bytes_, /*zero=*/false);
    const int64_t chunk = std::min<int64_t>(std::max<int64_t>(bytes_, 1), int64_t{16} << 20);
    std::vector<uint8_t> buffer(static_cast<size_t>(chunk));
    for (int64_t done = 0; done < bytes_; done += chunk) {
      int64_t n = std::min(chunk, bytes_ - done);
      pread_all(fd, buffer.data(), offset_ + done, n);
      cuda::copy_host_to_device(device_.index, block_->data() + done, buffer.data(), n);
    }
  }

  Napi::Promise::Deferred deferred_;
  std::string path_;
  int64_t offset_, bytes_;
  Device device_;
  std::shared_ptr<MemoryBlock> block_;
  std::unique_ptr<LowbitException> error_;
};

// ---- CPU description for deviceInfo("cpu") ------------------------------------------------------------------

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "CPU";
}

// MemTotal / MemAvailable from /proc/meminfo in bytes (-1 when missing).
void host_memory(int64_t& total, int64_t& available) {
  total = available = -1;
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  int64_t kib = 0;
  while (in >> key >> kib >> unit) {
    if (key == "MemTotal:") total = kib * 1024;
    if (key == "MemAvailable:") available = kib * 1024;
  }
  if (total < 0) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    total = static_cast<int64_t>(pages) * page;
  }
  if (available < 0) {
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    available = static_cast<int64_t>(pages) * page;
  }
}

Napi::Number num(Napi::Env env, int64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }

// ---- bindings ------------------------------------------------------------------------------------------------

Napi::Value Initialize(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      throw_error(ErrorKind::Argument, "Expected an object of error classes for errors but received " +
                                           describe_value(info.Length() ? info[0] : env.Undefined()));
    }
    Napi::Object errors = info[0].As<Napi::Object>();
    auto cls = [&](const char* key) {
      Napi::Value v = errors.Get(key);
      if (!v.IsFunction()) throw_error(ErrorKind::Argument, std::string("Expected a class for errors.") + key + " but received " + describe_value(v));
      return Napi::Persistent(v.As<Napi::Function>());
    };
    // Read them all before storing any, so a bad object leaves the previous state intact.
    Napi::FunctionReference argument = cls("ArgumentError"), dtype = cls("DTypeError"), shape = cls("ShapeError"),
                            disposed = cls("DisposedError"), device = cls("DeviceError"), file = cls("FileError"),
                            oom = cls("OutOfMemoryError");
    AddonData& data = addon_data(env);
    data.errors[static_cast<int>(ErrorKind::Argument)] = std::move(argument);
    data.errors[static_cast<int>(ErrorKind::DType)] = std::move(dtype);
    data.errors[static_cast<int>(ErrorKind::Shape)] = std::move(shape);
    data.errors[static_cast<int>(ErrorKind::Disposed)] = std::move(disposed);
    data.errors[static_cast<int>(ErrorKind::Device)] = std::move(device);
    data.errors[static_cast<int>(ErrorKind::File)] = std::move(file);
    data.out_of_memory = std::move(oom);
    data.initialized = true;
    return undefined(info);
  });
}

Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), cuda::device_count()); });
}

Napi::Value CudaUnavailableReason(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    std::string reason = cuda::unavailable_reason();
    if (reason.empty()) return info.Env().Null();
    return Napi::String::New(info.Env(), reason);
  });
}

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    Device d = arg_device(info, 0, "device");
    Napi::Object out = Napi::Object::New(env);
    out.Set("device", d.str());
    if (d.type == DeviceType::CPU) {
      int64_t total = 0, avail = 0;
      host_memory(total, avail);
      out.Set("name", cpu_model_name());
      out.Set("totalBytes", num(env, total));
      out.Set("freeBytes", num(env, avail));
      return out;
    }
    cuda::DeviceProperties p = cuda::device_properties(d.index);
    out.Set("name", p.name);
    out.Set("totalBytes", num(env, p.total_bytes));
    out.Set("freeBytes", num(env, p.free_bytes));
    out.Set("multiProcessorCount", Napi::Number::New(env, p.multiprocessor_count));
    Napi::Array cc = Napi::Array::New(env, 2);
    cc.Set(uint32_t{0}, Napi::Number::New(env, p.cc_major));
    cc.Set(uint32_t{1}, Napi::Number::New(env, p.cc_minor));
    out.Set("computeCapability", cc);
    return out;
  });
}

// The CUDA device of argument i, or ArgumentError naming it.
Device arg_cuda_device(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Device d = arg_device(info, i, name);
  if (d.type != DeviceType::CUDA)
    throw_error(ErrorKind::Argument, std::string("Expected a CUDA device (\"cuda\" or \"cuda:N\") for ") + name + " but received \"" + d.str() + "\"");
  return d;
}

Napi::Value CudaGemmBackend(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Device d = arg_cuda_device(info, 0, "device");
    return Napi::String::New(info.Env(), cuda::gemm_backend(d.index));
  });
}

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    MemoryCounters c = memory_counters(arg_device(info, 0, "device"));
    Napi::Object out = Napi::Object::New(env);
    out.Set("allocatedBytes", num(env, c.allocated));
    out.Set("peakBytes", num(env, c.peak));
    out.Set("reservedBytes", num(env, c.reserved));
    return out;
  });
}

Napi::Value ResetPeakMemoryStats(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    reset_peak_memory(arg_device(info, 0, "device"));
    return undefined(info);
  });
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    Device d = arg_device(info, 0, "device");
    if (d.type == DeviceType::CUDA) cuda::synchronize(d.index);  // CPU work is synchronous already
    return undefined(info);
  });
}

Napi::Value DeviceElapsed(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Device d = arg_cuda_device(info, 0, "device");
    if (info.Length() < 2 || !info[1].IsFunction())
      throw_error(ErrorKind::Argument, "Expected a function for work but received " + describe_value(info[1]));
    Napi::Function work = info[1].As<Napi::Function>();
    const double ms = cuda::elapsed_ms(d.index, [&] { work.Call({}); });  // a throw in work propagates (events freed)
    return Napi::Number::New(info.Env(), ms);
  });
}

Napi::Value DeviceSleep(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    Device d = arg_cuda_device(info, 0, "device");
    cuda::sleep(d.index, arg_int(info, 1, "microseconds", 0, 10'000'000));
    return undefined(info);
  });
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    cpu::set_num_threads(static_cast<int>(arg_int(info, 0, "n", 1, 1024)));
    return undefined(info);
  });
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), cpu::num_threads()); });
}

Napi::Value Allocate(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Device d = arg_device(info, 0, "device");
    int64_t bytes = arg_int(info, 1, "byteLength");
    // Optional `zero` (default true): false leaves the contents undefined, for outputs the caller overwrites
    // (on CUDA that saves a fill launch per allocation).
    const bool zero = info.Length() <= 2 || info[2].IsUndefined() || arg_bool(info, 2, "zero");
    return StorageImpl::wrap(info.Env(), MemoryBlock::allocate(d, bytes, zero));
  });
}

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    std::string path = arg_string(info, 0, "path");
    return StorageImpl::wrap(info.Env(), MemoryBlock::map_file(path));
  });
}

Napi::Value ReadFile(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    std::string path = arg_string(info, 0, "path");
    int64_t offset = arg_int(info, 1, "fileOffset");
    int64_t bytes = arg_int(info, 2, "byteLength");
    Device d = arg_device(info, 3, "device");
    auto* worker = new ReadFileWorker(info.Env(), std::move(path), offset, bytes, d);
    Napi::Promise promise = worker->promise();
    worker->Queue();  // the worker deletes itself after OnOK / OnError
    return promise;
  });
}

Napi::Value CopyBytes(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg dst = arg_tensor(info, 0, "dst");
    TensorArg src = arg_tensor(info, 2, "src");
    int64_t bytes = arg_int(info, 4, "byteLength");
    check_bytes(dst, bytes);
    check_bytes(src, bytes);
    check_writable(dst);
    copy_any(dst.device, dst.data, src.device, src.data, bytes);
    return undefined(info);
  });
}

Napi::Value Upload(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg dst = arg_tensor(info, 0, "dst");
    HostView src = arg_view(info, 2, "src");
    check_bytes(dst, src.bytes);
    check_writable(dst);
    copy_any(dst.device, dst.data, Device{}, src.data, src.bytes);
    return undefined(info);
  });
}

Napi::Value Download(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg src = arg_tensor(info, 0, "src");
    HostView dst = arg_view(info, 2, "dst");
    check_bytes(src, dst.bytes);
    copy_any(Device{}, dst.data, src.device, src.data, dst.bytes);
    return undefined(info);
  });
}

Napi::Value Fill(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg dst = arg_tensor(info, 0, "dst");
    DType dtype = arg_dtype(info, 2, "dtype");
    int64_t count = arg_int(info, 3, "count");
    double value = arg_number(info, 4, "value");
    uint8_t pattern[8];
    int esize = fill_pattern(dtype, value, pattern);
    check_bytes(dst, checked_mul(count, esize, "count * element size"));
    check_writable(dst);
    if (count == 0) return undefined(info);
    if (dst.device.type == DeviceType::CUDA) {
      cuda::fill(dst.device.index, dst.data, pattern, esize, count);
      return undefined(info);
    }
    uint8_t* p = dst.data;
    // All pattern bytes equal (zeros, int8, most integers): one memset per chunk.
    const bool uniform = std::all_of(pattern + 1, pattern + esize, [&](uint8_t x) { return x == pattern[0]; });
    cpu::parallel_for(count, kCopyGrainBytes / esize, [&](int64_t b, int64_t e) {
      if (uniform) {
        std::memset(p + b * esize, pattern[0], static_cast<size_t>((e - b) * esize));
      } else {
        for (int64_t i = b; i < e; ++i) std::memcpy(p + i * esize, pattern, static_cast<size_t>(esize));
      }
    });
    return undefined(info);
  });
}

Napi::Value Cast(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg dst = arg_tensor(info, 0, "dst");
    DType dd = arg_dtype(info, 2, "dstDtype");
    TensorArg src = arg_tensor(info, 3, "src");
    DType sd = arg_dtype(info, 5, "srcDtype");
    int64_t numel = arg_int(info, 6, "numel");
    for (auto [d, name] : {std::pair<DType, const char*>{dd, "dstDtype"}, {sd, "srcDtype"}}) {
      if (dtype_size(d) == 0) {
        throw_error(ErrorKind::DType, std::string("Expected a non-packed dtype for ") + name + " but received " + dtype_name(d) +
                                          " (use the 4-bit quantize / dequantize kernels)");
      }
    }
    const int64_t dst_bytes = checked_mul(numel, dtype_size(dd), "numel * dst element size");
    const int64_t src_bytes = checked_mul(numel, dtype_size(sd), "numel * src element size");
    check_bytes(dst, dst_bytes);
    check_bytes(src, src_bytes);
    check_writable(dst);
    Device dev = check_same_device({&dst, &src});
    if (numel == 0) return undefined(info);
    if (dd == sd) {
      copy_any(dev, dst.data, dev, src.data, dst_bytes);  // memmove semantics on both backends
      return undefined(info);
    }
    // Element-wise in place is fine (each element is read before it is written, by the same thread);
    // any other overlap would read already-converted bytes.
    bool overlap = dst.data < src.data + src_bytes && src.data < dst.data + dst_bytes;
    if (overlap && !(dst.data == src.data && dst_bytes == src_bytes)) {
      throw_error(ErrorKind::Argument, "Expected dst and src ranges that do not overlap (or are identical) for cast but received overlapping ranges");
    }
    if (dev.type == DeviceType::CUDA) cuda::cast(dev.index, dst.data, dd, src.data, sd, numel);  // asynchronous
    else cast_cpu(dd, dst.data, sd, src.data, numel);
    return undefined(info);
  });
}

Napi::Value CopyStrided(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&] {
    TensorArg dst = arg_tensor(info, 0, "dst");
    std::vector<int64_t> dst_st = arg_int_array(info, 2, "dstStrides", 0);
    TensorArg src = arg_tensor(info, 3, "src");
    std::vector<int64_t> src_st = arg_int_array(info, 5, "srcStrides", 0);
    DType dtype = arg_dtype(info, 6, "dtype");
    std::vector<int64_t> shape = arg_int_array(info, 7, "shape", 0);
    const int64_t esize = dtype_size(dtype);
    if (esize == 0) {
      throw_error(ErrorKind::DType, std::string("Expected a non-packed dtype for dtype but received ") + dtype_name(dtype) +
                                        " (copy packed 4-bit data as uint8)");
    }
    if (dst_st.size() != shape.size() || src_st.size() != shape.size()) {
      throw_error(ErrorKind::Shape, "Expected dstStrides and srcStrides with " + std::to_string(shape.size()) + " entries (one per dim of shape) but received " +
                                        std::to_string(dst_st.size()) + " and " + std::to_string(src_st.size()));
    }
    check_writable(dst);
    Device dev = check_same_device({&dst, &src});
    int64_t numel = 1;
    for (int64_t s : shape) numel = checked_mul(numel, s, "shape");
    if (numel == 0) return undefined(info);
    for (size_t k = 0; k < shape.size(); ++k) {
      if (shape[k] > 1 && dst_st[k] == 0) {
        throw_error(ErrorKind::Argument, "Expected a non-zero dstStrides[" + std::to_string(k) + "] (dim of size " + std::to_string(shape[k]) +
                                             ") but received 0: broadcasting the destination would write one element many times");
      }
    }
    // Every index stays inside both storages: the highest reachable element (strides are >= 0) must fit.
    const int64_t dst_reach = checked_mul(max_index(shape, dst_st, "dstStrides") + 1, esize, "dst extent");
    const int64_t src_reach = checked_mul(max_index(shape, src_st, "srcStrides") + 1, esize, "src extent");
    check_bytes(dst, dst_reach);
    check_bytes(src, src_reach);

    // Coalesce: drop size-1 dims, merge dim k into k+1 when both tensors are contiguous across them.
    std::vector<int64_t> cs, cd, css;
    for (size_t k = 0; k < shape.size(); ++k) {
      if (shape[k] == 1) continue;
      if (!cs.empty() && cd.back() == dst_st[k] * shape[k] && css.back() == src_st[k] * shape[k]) {
        cs.back() *= shape[k];
        cd.back() = dst_st[k];
        css.back() = src_st[k];
      } else {
        cs.push_back(shape[k]);
        cd.push_back(dst_st[k]);
        css.push_back(src_st[k]);
      }
    }
    if (cs.empty()) {  // a single element
      cs = {1};
      cd = {1};
      css = {1};
    }
    const bool overlap = dst.data < src.data + src_reach && src.data < dst.data + dst_reach;
    if (overlap && dst.data == src.data && dst_st == src_st) return undefined(info);  // copies onto itself
    if (dev.type == DeviceType::CUDA) {
      // Asynchronous; with overlap it gathers src into pool scratch first, like the CPU path below.
      cuda::copy_strided(dev.index, dst.data, cd, src.data, css, esize, cs, overlap);
      return undefined(info);
    }
    if (overlap) {
      // Same storage, overlapping extents: gather src into a temporary first so no read sees a write.
      // Plain heap memory: a transient buffer should not show up in the storages' memory statistics.
      std::unique_ptr<uint8_t[]> tmp(new uint8_t[static_cast<size_t>(checked_mul(numel, esize, "temporary"))]);
      std::vector<int64_t> contiguous(cs.size());
      int64_t s = 1;
      for (size_t k = cs.size(); k-- > 0;) {
        contiguous[k] = s;
        s *= cs[k];
      }
      strided_copy_dispatch(esize, tmp.get(), contiguous, src.data, css, cs);
      strided_copy_dispatch(esize, dst.data, cd, tmp.get(), contiguous, cs);
    } else {
      strided_copy_dispatch(esize, dst.data, cd, src.data, css, cs);
    }
    return undefined(info);
  });
}

}  // namespace

void register_core(Napi::Env env, Napi::Object exports) {
  auto fn = [&](const char* name, Napi::Function::Callback cb) { exports.Set(name, Napi::Function::New(env, cb, name)); };
  fn("initialize", Initialize);
  exports.Set("version", Napi::String::New(env, LOWBIT_VERSION));
  exports.Set("cudaCompiled", Napi::Boolean::New(env, cuda::compiled()));
  fn("cudaDeviceCount", CudaDeviceCount);
  fn("cudaUnavailableReason", CudaUnavailableReason);
  fn("deviceInfo", DeviceInfo);
  fn("cudaGemmBackend", CudaGemmBackend);
  fn("memoryStats", MemoryStats);
  fn("resetPeakMemoryStats", ResetPeakMemoryStats);
  fn("synchronize", Synchronize);
  fn("deviceElapsed", DeviceElapsed);
  fn("deviceSleep", DeviceSleep);
  fn("setNumThreads", SetNumThreads);
  fn("getNumThreads", GetNumThreads);
  fn("allocate", Allocate);
  fn("mapFile", MapFile);
  fn("readFile", ReadFile);
  fn("copyBytes", CopyBytes);
  fn("upload", Upload);
  fn("download", Download);
  fn("fill", Fill);
  fn("cast", Cast);
  fn("copyStrided", CopyStrided);
}

}  // namespace lowbit
