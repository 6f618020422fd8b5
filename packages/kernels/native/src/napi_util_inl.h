// Inline part of napi_util.h: the C++ exception type native code throws and the `guard` template that
// turns it into an instance of the JS error class handed to initialize() (see napi_util.cc).
#pragma once
#include <napi.h>

#include <cstdint>
#include <exception>
#include <new>
#include <string>

namespace lowbit {

// What native code throws. `oom` marks an OutOfMemoryError (requested / free bytes set); otherwise
// `kind` picks the JS class. Never crosses the N-API boundary: guard() converts it.
class LowbitException : public std::exception {
 public:
  LowbitException(ErrorKind kind, std::string message) : kind(kind), message(std::move(message)) {}
  static LowbitException out_of_memory(std::string message, int64_t requested, int64_t free_bytes) {
    LowbitException e(ErrorKind::Device, std::move(message));
    e.oom = true;
    e.requested = requested;
    e.free_bytes = free_bytes;
    return e;
  }
  const char* what() const noexcept override { return message.c_str(); }

  ErrorKind kind;
  std::string message;
  bool oom = false;
  int64_t requested = 0;
  int64_t free_bytes = 0;
};

// `128 (number)`, `"x" (string)`, `Float32Array(4)`, `Storage(64 bytes, cpu)`: the <value> of messages.
std::string describe_value(const Napi::Value& value);

// Builds the JS error object for `e` in `env`: an instance of the class registered by initialize(), or
// a plain Error / TypeError / RangeError when initialize() was not called in this environment.
Napi::Error make_js_error(Napi::Env env, const LowbitException& e);

template <typename F>
auto guard(Napi::Env env, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;  // already a JS exception (a JS call inside the body threw); keep it as is
  } catch (const LowbitException& e) {
    throw make_js_error(env, e);
  } catch (const std::bad_alloc&) {
    throw make_js_error(env, LowbitException::out_of_memory("Host memory allocation failed (std::bad_alloc)", 0, 0));
  } catch (const std::exception& e) {
    throw make_js_error(env, LowbitException(ErrorKind::Native, std::string("Native error: ") + e.what()));
  } catch (...) {
    throw make_js_error(env, LowbitException(ErrorKind::Native, "Native error: unknown C++ exception"));
  }
}

}  // namespace lowbit
