// Entry point of lowbit_kernels.node: creates the per-environment data (so worker threads each get their
// own error classes and Storage class) and lets each binding file register its functions.
#include <napi.h>

#include "napi_util.h"
#include "storage.h"

namespace lowbit {

void register_core(Napi::Env env, Napi::Object exports);  // bind_core.cc
// The kernel bindings are compiled when their files exist (CMake defines LOWBIT_HAVE_*), so the core
// builds and loads on its own.
#ifdef LOWBIT_HAVE_LINALG
void register_linalg(Napi::Env env, Napi::Object exports);  // bind_linalg.cc
#endif
#ifdef LOWBIT_HAVE_NN
void register_nn(Napi::Env env, Napi::Object exports);  // bind_nn.cc
#endif

Napi::Object init(Napi::Env env, Napi::Object exports) {
  AddonData& data = addon_data(env);
  data.storage_class = Napi::Persistent(StorageImpl::define_class(env));
  exports.Set("Storage", data.storage_class.Value());
  register_core(env, exports);
#ifdef LOWBIT_HAVE_LINALG
  register_linalg(env, exports);
#endif
#ifdef LOWBIT_HAVE_NN
  register_nn(env, exports);
#endif
  return exports;
}

}  // namespace lowbit

// NODE_API_MODULE pastes the function name into an identifier, so it needs an unqualified one.
static Napi::Object lowbit_init(Napi::Env env, Napi::Object exports) { return lowbit::init(env, exports); }

NODE_API_MODULE(lowbit_kernels, lowbit_init)
