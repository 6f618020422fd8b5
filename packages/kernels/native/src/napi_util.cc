// Implementation of napi_util.h: argument readers and checks (every message names the argument:
// "Expected <what> for <name> but received <value>"), the lowbit exception → JS error conversion, and
// the per-environment addon data that holds the JS error classes.
#include "napi_util.h"

#include <cmath>
#include <sstream>

#include "storage.h"

namespace lowbit {

namespace {

constexpr double kMaxSafeInteger = 9007199254740991.0;  // Number.MAX_SAFE_INTEGER

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s.size() > 64 ? s.substr(0, 61) + "..." : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  std::ostringstream os;
  if (v == std::floor(v) && std::fabs(v) < 1e21) {
    os.precision(0);
    os << std::fixed << v;
  } else {
    os.precision(17);
    os << v;
  }
  return os.str();
}

// Describes a received value the way @lowbit/dtypes' describe() does: `128 (number)`, `"x" (string)`,
// `Float32Array(4)`, `Array(3)`, `null`, `undefined`, `Storage (object)`.
std::string describe(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return std::string(v.As<Napi::Boolean>().Value() ? "true" : "false") + " (boolean)";
    case napi_number: return format_number(v.As<Napi::Number>().DoubleValue()) + " (number)";
    case napi_string: return quote(v.As<Napi::String>().Utf8Value()) + " (string)";
    case napi_symbol: return "symbol";
    case napi_bigint: {
      bool lossless = false;
      return std::to_string(v.As<Napi::BigInt>().Int64Value(&lossless)) + " (bigint)";
    }
    case napi_function: return "function";
    case napi_external: return "external";
    case napi_object: break;
  }
  if (v.IsTypedArray()) {
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    static const char* names[] = {"Int8Array",    "Uint8Array",   "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array",  "Int32Array",   "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    int t = static_cast<int>(ta.TypedArrayType());
    const char* name = t >= 0 && t < 11 ? names[t] : "TypedArray";
    return std::string(name) + "(" + std::to_string(ta.ElementLength()) + ")";
  }
  if (v.IsArray()) return "Array(" + std::to_string(v.As<Napi::Array>().Length()) + ")";
  if (v.IsDataView()) return "DataView(" + std::to_string(v.As<Napi::DataView>().ByteLength()) + ")";
  if (v.IsArrayBuffer()) return "ArrayBuffer(" + std::to_string(v.As<Napi::ArrayBuffer>().ByteLength()) + ")";
  if (StorageImpl* s = StorageImpl::unwrap(v)) {
    return std::string(s->disposed() ? "disposed " : "") + "Storage(" + std::to_string(s->byte_length()) + " bytes, " +
           s->device().str() + ")";
  }
  return "Object (object)";
}

Napi::Value arg_at(const Napi::CallbackInfo& info, size_t i) { return i < info.Length() ? info[i] : info.Env().Undefined(); }

[[noreturn]] void throw_expected(ErrorKind kind, const std::string& what, const std::string& name, const Napi::Value& v) {
  throw_error(kind, "Expected " + what + " for " + name + " but received " + describe(v));
}

// info[i] as an integral double in [min, max] (both within the safe-integer range).
int64_t read_int(const Napi::Value& v, const std::string& name, int64_t min, int64_t max) {
  auto range = [&]() {
    std::string lo = min <= -static_cast<int64_t>(kMaxSafeInteger) ? "" : std::to_string(min);
    std::string hi = max >= static_cast<int64_t>(kMaxSafeInteger) ? "" : std::to_string(max);
    if (!lo.empty() && !hi.empty()) return "an integer in [" + lo + ", " + hi + "]";
    if (!lo.empty()) return min == 0 ? std::string("a non-negative integer") : "an integer >= " + lo;
    if (!hi.empty()) return "an integer <= " + hi;
    return std::string("a safe integer");
  };
  if (!v.IsNumber()) throw_expected(ErrorKind::Argument, range(), name, v);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > kMaxSafeInteger) throw_expected(ErrorKind::Argument, range(), name, v);
  int64_t x = static_cast<int64_t>(d);
  if (x < min || x > max) throw_expected(ErrorKind::Argument, range(), name, v);
  return x;
}

}  // namespace

std::string describe_value(const Napi::Value& value) { return describe(value); }

std::string Device::str() const { return type == DeviceType::CPU ? std::string("cpu") : "cuda:" + std::to_string(index); }

void throw_error(ErrorKind kind, const std::string& message) { throw LowbitException(kind, message); }

void throw_oom(const std::string& message, int64_t requested, int64_t free_bytes) {
  throw LowbitException::out_of_memory(message, requested, free_bytes);
}

// ---- per-environment data ----------------------------------------------------------------------------

AddonData& addon_data(Napi::Env env) {
  if (AddonData* data = env.GetInstanceData<AddonData>()) return *data;
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);  // deleted by node-addon-api's default finalizer at teardown
  // Runs before the environment's objects are finalized: from then on finalizers only free memory.
  env.AddCleanupHook([data]() { data->shutting_down = true; });
  return *data;
}

Napi::Error make_js_error(Napi::Env env, const LowbitException& e) {
  AddonData* data = env.GetInstanceData<AddonData>();
  if (data != nullptr && data->initialized) {
    if (e.oom) {
      Napi::Object obj = data->out_of_memory.Value().New(
          {Napi::String::New(env, e.message), Napi::Number::New(env, static_cast<double>(e.requested)),
           Napi::Number::New(env, static_cast<double>(e.free_bytes))});
      return Napi::Error(env, obj);
    }
    Napi::FunctionReference& cls = data->errors[static_cast<int>(e.kind)];
    if (!cls.IsEmpty()) return Napi::Error(env, cls.Value().New({Napi::String::New(env, e.message)}));
  }
  // initialize() was not called: the closest built-in class.
  switch (e.kind) {
    case ErrorKind::Argument:
    case ErrorKind::DType: return Napi::TypeError::New(env, e.message);
    case ErrorKind::Shape: return Napi::RangeError::New(env, e.message);
    default: return Napi::Error::New(env, e.message);
  }
}

// ---- argument readers ----------------------------------------------------------------------------------

int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max) {
  return read_int(arg_at(info, i), name, min, max);
}

double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = arg_at(info, i);
  if (!v.IsNumber()) throw_expected(ErrorKind::Argument, "a number", name, v);
  return v.As<Napi::Number>().DoubleValue();
}

bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = arg_at(info, i);
  if (!v.IsBoolean()) throw_expected(ErrorKind::Argument, "a boolean", name, v);
  return v.As<Napi::Boolean>().Value();
}

std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = arg_at(info, i);
  if (!v.IsString()) throw_expected(ErrorKind::Argument, "a string", name, v);
  return v.As<Napi::String>().Utf8Value();
}

std::vector<int64_t> arg_int_array(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min) {
  Napi::Value v = arg_at(info, i);
  if (!v.IsArray()) throw_expected(ErrorKind::Argument, "an array of integers", name, v);
  Napi::Array a = v.As<Napi::Array>();
  uint32_t n = a.Length();
  std::vector<int64_t> out;
  out.reserve(n);
  for (uint32_t k = 0; k < n; ++k) {
    out.push_back(read_int(a.Get(k), std::string(name) + "[" + std::to_string(k) + "]", min, INT64_MAX));
  }
  return out;
}

DType arg_dtype(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = arg_at(info, i);
  if (!v.IsNumber()) throw_expected(ErrorKind::DType, "a dtype id (integer in [0, " + std::to_string(kDTypeCount - 1) + "])", name, v);
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != std::floor(d) || d < 0 || d >= kDTypeCount) {
    throw_expected(ErrorKind::DType, "a dtype id (integer in [0, " + std::to_string(kDTypeCount - 1) + "])", name, v);
  }
  return static_cast<DType>(static_cast<int32_t>(d));
}

TensorArg arg_tensor(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = arg_at(info, i);
  StorageImpl* s = StorageImpl::unwrap(v);
  if (s == nullptr) throw_expected(ErrorKind::Argument, "a Storage", name, v);
  const std::shared_ptr<MemoryBlock>& block = s->live_block(name);
  std::string offset_name = std::string(name) + "Offset";
  int64_t offset = read_int(arg_at(info, i + 1), offset_name, 0, s->byte_length());
  TensorArg t;
  t.data = block->data() + offset;
  t.bytes_available = s->byte_length() - offset;
  t.device = block->device();
  t.read_only = block->read_only();
  t.name = name;
  t.keep_alive = block;
  return t;
}

TensorArg arg_tensor_opt(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = arg_at(info, i);
  if (v.IsNull() || v.IsUndefined()) {
    TensorArg t;
    t.name = name;
    return t;
  }
  return arg_tensor(info, i, name);
}

// ---- checks ----------------------------------------------------------------------------------------------

void check_bytes(const TensorArg& t, int64_t bytes) {
  if (bytes < 0) throw_error(ErrorKind::Argument, std::string("Expected a non-negative byte count for ") + t.name + " but received " + std::to_string(bytes));
  if (bytes > t.bytes_available) {
    throw_error(ErrorKind::Shape, "Expected " + std::to_string(bytes) + " bytes after the byte offset for " + t.name +
                                      " but received a storage with " + std::to_string(t.bytes_available) + " bytes there");
  }
}

void check_writable(const TensorArg& t) {
  if (t.read_only) throw_error(ErrorKind::Argument, std::string("Expected a writable storage for ") + t.name + " but received a read-only file mapping");
}

Device check_same_device(std::initializer_list<const TensorArg*> ts) {
  const TensorArg* first = nullptr;
  for (const TensorArg* t : ts) {
    if (t == nullptr || t->data == nullptr) continue;
    if (first == nullptr) {
      first = t;
    } else if (t->device != first->device) {
      throw_error(ErrorKind::Device, std::string("Expected a storage on ") + first->device.str() + " (the device of " + first->name + ") for " +
                                         t->name + " but received one on " + t->device.str());
    }
  }
  return first != nullptr ? first->device : Device{};
}

void check_dtype(DType d, std::initializer_list<DType> allowed, const char* name) {
  std::string list;
  for (DType a : allowed) {
    if (a == d) return;
    if (!list.empty()) list += ", ";
    list += dtype_name(a);
  }
  throw_error(ErrorKind::DType, "Expected one of " + list + " for " + name + " but received " + dtype_name(d));
}

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) || r > static_cast<int64_t>(kMaxSafeInteger)) {
    throw_error(ErrorKind::Argument, std::string("Expected a size below 2^53 for ") + what + " but received " + std::to_string(a) + " * " +
                                         std::to_string(b) + " (overflow)");
  }
  return r;
}

}  // namespace lowbit
