// Helpers every binding file (bind_*.cc) uses to read and check N-API arguments and to throw the
// JS-defined error classes. Implemented in napi_util.cc (core). Every check names the argument.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtype.h"

namespace lowbit {

class StorageImpl;  // defined in storage.h

// Where a storage lives.
enum class DeviceType : int32_t { CPU = 0, CUDA = 1 };
struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;  // "cpu" / "cuda:0"
};

// A checked view of one tensor argument: (storage, byteOffset) resolved to a raw pointer.
struct TensorArg {
  uint8_t* data = nullptr;   // storage base + byteOffset (host pointer for CPU, device pointer for CUDA)
  int64_t bytes_available = 0;  // storage byteLength - byteOffset
  Device device;
  bool read_only = false;
  const char* name = "";
  // Owns a reference to the storage's memory: an async kernel that keeps its TensorArgs until it
  // finishes stays valid even if JS disposes the storage meanwhile (the memory is freed afterwards).
  std::shared_ptr<void> keep_alive;
};

// Error kinds map onto the classes JS passed to initialize().
enum class ErrorKind { Argument, DType, Shape, Disposed, Device, File, Native };

// Throws (as a C++ exception carrying the kind, converted to the JS class at the binding boundary).
[[noreturn]] void throw_error(ErrorKind kind, const std::string& message);
// OutOfMemoryError(message, requested, free).
[[noreturn]] void throw_oom(const std::string& message, int64_t requested, int64_t free_bytes);

// Wraps a binding body: catches lowbit exceptions (and std::bad_alloc, std::exception) and throws the
// matching JS error. Use as: return guard(env, [&] { ...; return value; });
template <typename F>
auto guard(Napi::Env env, F&& body) -> decltype(body());

// Argument readers: throw ArgumentError "Expected <what> for <name> but received <value>".
int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min = 0, int64_t max = INT64_MAX);
double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name);
bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name);
std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name);
std::vector<int64_t> arg_int_array(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min = INT64_MIN);
DType arg_dtype(const Napi::CallbackInfo& info, size_t i, const char* name);

// Reads storage at info[i] and byteOffset at info[i+1]. Throws DisposedError on a disposed storage,
// ArgumentError if info[i] is not a storage or the offset is negative / past the end.
TensorArg arg_tensor(const Napi::CallbackInfo& info, size_t i, const char* name);
// Same, but info[i] may be null/undefined (returns a TensorArg with data == nullptr).
TensorArg arg_tensor_opt(const Napi::CallbackInfo& info, size_t i, const char* name);

// Range and access checks: `bytes` bytes from t.data must lie inside the storage (ShapeError naming
// t.name, the needed and the available bytes); writable requires !read_only.
void check_bytes(const TensorArg& t, int64_t bytes);
void check_writable(const TensorArg& t);
// All non-null tensors must be on the same device (DeviceError otherwise); returns that device.
Device check_same_device(std::initializer_list<const TensorArg*> ts);
// dtype must be one of the listed ones (DTypeError naming the argument and the allowed set).
void check_dtype(DType d, std::initializer_list<DType> allowed, const char* name);
// Checked a*b for byte counts (ArgumentError on overflow).
int64_t checked_mul(int64_t a, int64_t b, const char* what);

}  // namespace lowbit

#include "napi_util_inl.h"
