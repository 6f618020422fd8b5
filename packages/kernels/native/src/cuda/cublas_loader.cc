// Run-time loading of cuBLAS / cuBLASLt (see cublas_loader.h): dlopen the newest supported soname,
// resolve every required symbol, and remember a one-sentence reason when anything is missing.
#include "cublas_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <vector>

namespace lowbit::cuda::cublas {
namespace {

struct Loaded {
  Api api;
  bool ok = false;
  std::string error;
};

// Resolves `name` into `fn`; returns false (and records the symbol) when it is missing.
template <typename Fn>
bool resolve(void* lib, const char* name, Fn& fn, std::string& missing) {
  fn = reinterpret_cast<Fn>(dlsym(lib, name));
  if (fn == nullptr) {
    if (!missing.empty()) missing += ", ";
    missing += name;
    return false;
  }
  return true;
}

// Directories to try when a soname is not on the loader's search path.
std::vector<std::string> toolkit_dirs() {
  std::vector<std::string> dirs;
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') dirs.push_back(std::string(v) + "/lib64/");
  }
  dirs.push_back("/usr/local/cuda/lib64/");
  dirs.push_back("/usr/local/cuda/targets/x86_64-linux/lib/");
  return dirs;
}

// dlopen(name), then dlopen(dir + name) for each toolkit directory; records the loader's errors in `tried`.
void* open_library(const char* name, std::string& tried) {
  if (void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL)) return lib;
  const char* err = dlerror();
  tried += std::string(tried.empty() ? "" : "; ") + (err != nullptr ? err : name);
  for (const std::string& dir : toolkit_dirs()) {
    if (void* lib = dlopen((dir + name).c_str(), RTLD_NOW | RTLD_LOCAL)) return lib;
    dlerror();
  }
  return nullptr;
}

Loaded load() {
  Loaded out;
  // libcublas.so.13 ships with CUDA 13, .12 with CUDA 12; a CUDA 13 runtime works with either's ABI
  // for these entry points (they have not changed since CUDA 11).
  static const char* kNames[] = {"libcublas.so.13", "libcublas.so.12"};
  static const char* kLtNames[] = {"libcublasLt.so.13", "libcublasLt.so.12"};
  void* lib = nullptr;
  void* lt = nullptr;
  std::string tried;
  for (int v = 0; v < 2 && lib == nullptr; ++v) {
    // cuBLASLt first: libcublas needs it, and once loaded from a toolkit directory it satisfies that
    // dependency even where the directory is not on the loader's path.
    std::string lt_tried;
    lt = open_library(kLtNames[v], lt_tried);
    lib = open_library(kNames[v], tried);
    if (lib != nullptr) out.api.library = kNames[v];
  }
  if (lib == nullptr) {
    out.error = "cuBLAS is not installed (" + tried + ")";
    return out;
  }
  // The library stays loaded for the life of the process (no dlclose: handles may outlive us).
  std::string missing;
  Api& a = out.api;
  bool ok = resolve(lib, "cublasCreate_v2", a.create, missing);
  ok = resolve(lib, "cublasDestroy_v2", a.destroy, missing) && ok;
  ok = resolve(lib, "cublasSetStream_v2", a.set_stream, missing) && ok;
  ok = resolve(lib, "cublasSetMathMode", a.set_math_mode, missing) && ok;
  ok = resolve(lib, "cublasSgemm_v2", a.sgemm, missing) && ok;
  ok = resolve(lib, "cublasGemmEx", a.gemm_ex, missing) && ok;
  ok = resolve(lib, "cublasGemmStridedBatchedEx", a.gemm_strided_batched_ex, missing) && ok;
  if (!ok) {
    out.error = out.api.library + " lacks required symbols: " + missing;
    return out;
  }
  std::string optional_missing;
  resolve(lib, "cublasSetWorkspace_v2", a.set_workspace, optional_missing);
  // cublasGetProperty(libraryPropertyType {MAJOR_VERSION = 0, MINOR_VERSION = 1, PATCH_LEVEL = 2}, int*)
  // needs no handle (and so no GPU).
  int (*get_property)(int, int*) = nullptr;
  std::string ignored;
  if (resolve(lib, "cublasGetProperty", get_property, ignored)) {
    int major = 0, minor = 0, patch = 0;
    if (get_property(0, &major) == kSuccess && get_property(1, &minor) == kSuccess && get_property(2, &patch) == kSuccess) {
      a.version = major * 10000 + minor * 100 + patch;
    }
  }
  if (lt != nullptr) {
    std::string lt_missing;
    if (!resolve(lt, "cublasLtCreate", a.lt_create, lt_missing) || !resolve(lt, "cublasLtDestroy", a.lt_destroy, lt_missing)) {
      a.lt_create = nullptr;
      a.lt_destroy = nullptr;
    }
  }
  out.ok = true;
  return out;
}

const Loaded& loaded() {
  static Loaded l;
  static std::once_flag once;
  std::call_once(once, [] { l = load(); });
  return l;
}

}  // namespace

const Api* api() { return loaded().ok ? &loaded().api : nullptr; }
std::string load_error() { return loaded().error; }

}  // namespace lowbit::cuda::cublas
