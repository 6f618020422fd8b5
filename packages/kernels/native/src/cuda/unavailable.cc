// cuda_backend.h, layout.h and gemm.h for builds without the CUDA sources (no toolkit, or LOWBIT_CUDA=0):
// no devices, and every device operation throws DeviceError saying CUDA was not compiled. parse_device() already refuses
// "cuda:N" when device_count() is 0, so the throwing paths are a second line of defence.
#include "../napi_util.h"
#include "cuda_backend.h"
#include "gemm.h"
#include "layout.h"

namespace lowbit::cuda {

namespace {
const char* kReason = "This build of @lowbit/kernels was compiled without CUDA (no CUDA toolkit was found, or LOWBIT_CUDA=0)";
[[noreturn]] void unavailable() { throw_error(ErrorKind::Device, std::string(kReason) + "."); }
}  // namespace

bool compiled() { return false; }
int device_count() { return 0; }
std::string unavailable_reason() { return std::string(kReason) + "."; }
DeviceProperties device_properties(int) { unavailable(); }
int64_t free_bytes(int) { return -1; }
void* device_malloc(int, int64_t) { unavailable(); }
void device_free(int, void*) noexcept {}
int64_t reserved_bytes(int) { return 0; }
void* host_pinned_malloc(int64_t) noexcept { return nullptr; }
void host_pinned_free(void*) noexcept {}
void copy_host_to_device(int, void*, const void*, int64_t) { unavailable(); }
void copy_device_to_host(int, void*, const void*, int64_t) { unavailable(); }
void copy_device_to_device(int, void*, int, const void*, int64_t) { unavailable(); }
void fill(int, void*, const void*, int, int64_t) { unavailable(); }
void synchronize(int) { unavailable(); }
double elapsed_ms(int, const std::function<void()>&) { unavailable(); }
void sleep(int, int64_t) { unavailable(); }
void cast(int, void*, DType, const void*, DType, int64_t) { unavailable(); }
void copy_strided(int, void*, const std::vector<int64_t>&, const void*, const std::vector<int64_t>&, int64_t, const std::vector<int64_t>&, bool) {
  unavailable();
}
void matmul(int, void*, DType, const void*, const void*, DType, int64_t, int64_t, int64_t, int64_t, bool, bool, int64_t, int64_t, int64_t, float,
            float) {
  unavailable();
}
const char* gemm_backend(int) { unavailable(); }

}  // namespace lowbit::cuda
