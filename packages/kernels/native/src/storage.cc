// Storage memory: aligned zeroed host allocations, read-only file mappings and CUDA device memory (from
// the device's caching allocator), the per-device live / peak / reserved counters, and the JS `Storage`
// class that owns a block.
#include "storage.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "cuda/cuda_backend.h"

namespace lowbit {

namespace {

// Host allocations at least this large come from anonymous mmap: the kernel hands out zeroed pages
// lazily, so a big zero-filled allocation costs no memset and no RSS until touched.
constexpr int64_t kAnonymousThreshold = int64_t{1} << 20;
constexpr int kMaxCudaDevices = 64;

// Type tag of Storage objects (napi_type_tag_object): unwrap() never reinterprets a foreign object.
const napi_type_tag kStorageTag = {0x6c6f776269745374ULL, 0x6f72616765763031ULL};

// Zero-length storages still need a valid, aligned, non-null pointer.
alignas(64) uint8_t g_empty[64];

struct Counters {
  std::atomic<int64_t> allocated{0}, peak{0}, reserved{0};
};
Counters g_cpu;
Counters g_cuda[kMaxCudaDevices];

Counters* counters_for(const Device& d) {
  if (d.type == DeviceType::CPU) return &g_cpu;
  return d.index >= 0 && d.index < kMaxCudaDevices ? &g_cuda[d.index] : nullptr;
}

void count_alloc(const Device& d, int64_t bytes) {
  Counters* c = counters_for(d);
  if (c == nullptr) return;
  int64_t now = c->allocated.fetch_add(bytes) + bytes;
  c->reserved.fetch_add(bytes);
  int64_t peak = c->peak.load();
  while (now > peak && !c->peak.compare_exchange_weak(peak, now)) {
  }
}

void count_free(const Device& d, int64_t bytes) {
  Counters* c = counters_for(d);
  if (c == nullptr) return;
  c->allocated.fetch_sub(bytes);
  c->reserved.fetch_sub(bytes);
}

std::string format_bytes(int64_t bytes) {
  if (bytes < 0) return "an unknown amount";
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 6) {
    v /= 1024.0;
    ++u;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// Host memory the OS could still give us (MemAvailable), or -1.
int64_t host_available_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : -1;
}

int64_t page_size() {
  long p = sysconf(_SC_PAGESIZE);
  return p > 0 ? p : 4096;
}

}  // namespace

// ---- counters --------------------------------------------------------------------------------------------

MemoryCounters memory_counters(const Device& d) {
  MemoryCounters m;
  if (Counters* c = counters_for(d)) {
    m.allocated = c->allocated.load();
    m.peak = c->peak.load();
    // CUDA memory comes from a caching pool: what it holds from the driver is the pool's own figure.
    m.reserved = d.type == DeviceType::CUDA ? cuda::reserved_bytes(d.index) : c->reserved.load();
  }
  return m;
}

void reset_peak_memory(const Device& d) {
  if (Counters* c = counters_for(d)) c->peak.store(c->allocated.load());
}

// ---- MemoryBlock ---------------------------------------------------------------------------------------------

std::shared_ptr<MemoryBlock> MemoryBlock::allocate(const Device& device, int64_t bytes, bool zero) {
  if (bytes < 0) throw_error(ErrorKind::Argument, "Expected a non-negative byte length for byteLength but received " + std::to_string(bytes));
  if (device.type == DeviceType::CUDA) {
    // From the device's caching pool (no driver call in steady state). A zero-length storage still gets
    // a valid, distinct pointer (device_malloc rounds 0 up to 1 byte).
    void* p = cuda::device_malloc(device.index, bytes);
    std::shared_ptr<MemoryBlock> block(new MemoryBlock(Kind::Device, device, static_cast<uint8_t*>(p), bytes, 0));
    count_alloc(device, bytes);
    if (zero && bytes > 0) {
      const uint8_t zero_byte = 0;
      cuda::fill(device.index, p, &zero_byte, 1, bytes);
    }
    return block;
  }

  std::shared_ptr<MemoryBlock> block;
  if (bytes >= kAnonymousThreshold) {
    int64_t page = page_size();
    int64_t mapped = (bytes + page - 1) / page * page;
    void* p = mmap(nullptr, static_cast<size_t>(mapped), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      int64_t avail = host_available_bytes();
      throw_oom("Cannot allocate " + format_bytes(bytes) + " on cpu: " + format_bytes(avail) + " available", bytes, avail);
    }
    block.reset(new MemoryBlock(Kind::HostAnonymous, device, static_cast<uint8_t*>(p), bytes, mapped));
  } else {
    // Whole cache lines (no false sharing with a neighbouring allocation). Kernels must still never read
    // past byteLength: offsets and file mappings have no such padding.
    size_t alloc = static_cast<size_t>(bytes == 0 ? kHostAlignment : (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment);
    void* p = nullptr;
    if (posix_memalign(&p, static_cast<size_t>(kHostAlignment), alloc) != 0 || p == nullptr) {
      int64_t avail = host_available_bytes();
      throw_oom("Cannot allocate " + format_bytes(bytes) + " on cpu: " + format_bytes(avail) + " available", bytes, avail);
    }
    if (zero) std::memset(p, 0, alloc);
    block.reset(new MemoryBlock(Kind::HostHeap, device, static_cast<uint8_t*>(p), bytes, 0));
  }
  count_alloc(device, bytes);
  return block;
}

std::shared_ptr<MemoryBlock> MemoryBlock::map_file(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_error(ErrorKind::File, "Cannot open \"" + path + "\" for mapping: " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    throw_error(ErrorKind::File, "Cannot stat \"" + path + "\": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    throw_error(ErrorKind::File, "Expected a regular file for path but received \"" + path + "\" (not a regular file)");
  }
  int64_t size = static_cast<int64_t>(st.st_size);
  if (size == 0) {
    close(fd);
    return std::shared_ptr<MemoryBlock>(new MemoryBlock(Kind::FileMapping, Device{}, g_empty, 0, 0));
  }
  void* p = mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  close(fd);  // the mapping keeps the file referenced
  if (p == MAP_FAILED) throw_error(ErrorKind::File, "Cannot map \"" + path + "\" (" + format_bytes(size) + "): " + std::strerror(err));
  return std::shared_ptr<MemoryBlock>(new MemoryBlock(Kind::FileMapping, Device{}, static_cast<uint8_t*>(p), size, size));
}

MemoryBlock::~MemoryBlock() {
  switch (kind_) {
    case Kind::HostHeap:
      std::free(data_);
      count_free(device_, size_);
      break;
    case Kind::HostAnonymous:
      munmap(data_, static_cast<size_t>(mapped_size_));
      count_free(device_, size_);
      break;
    case Kind::FileMapping:
      if (mapped_size_ > 0) munmap(data_, static_cast<size_t>(mapped_size_));
      break;
    case Kind::Device:
      // Stream-ordered: the block is reused only after the kernels already queued on the device ran.
      cuda::device_free(device_.index, data_);
      count_free(device_, size_);
      break;
  }
}

// ---- StorageImpl -------------------------------------------------------------------------------------------

Napi::Function StorageImpl::define_class(Napi::Env env) {
  return DefineClass(env, "Storage",
                     {
                         InstanceAccessor<&StorageImpl::get_byte_length>("byteLength"),
                         InstanceAccessor<&StorageImpl::get_device>("device"),
                         InstanceAccessor<&StorageImpl::get_read_only>("readOnly"),
                         InstanceAccessor<&StorageImpl::get_disposed>("disposed"),
                         InstanceMethod<&StorageImpl::js_dispose>("dispose"),
                     });
}

Napi::Object StorageImpl::wrap(Napi::Env env, std::shared_ptr<MemoryBlock> block) {
  AddonData& data = addon_data(env);
  if (data.storage_class.IsEmpty()) throw_error(ErrorKind::Native, "The Storage class is not registered in this environment");
  // The constructor copies the shared_ptr out of the External during New().
  return data.storage_class.Value().New({Napi::External<std::shared_ptr<MemoryBlock>>::New(env, &block)});
}

StorageImpl* StorageImpl::unwrap(const Napi::Value& value) {
  if (!value.IsObject()) return nullptr;
  Napi::Object obj = value.As<Napi::Object>();
  if (!obj.CheckTypeTag(&kStorageTag)) return nullptr;
  return ObjectWrap<StorageImpl>::Unwrap(obj);
}

StorageImpl::StorageImpl(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StorageImpl>(info) {
  Napi::Env env = info.Env();
  // Only native code can make an External, so JS cannot forge a Storage around arbitrary memory.
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw make_js_error(env, LowbitException(ErrorKind::Argument,
                                             "Storage cannot be constructed from JS; use allocate(), mapFile() or readFile()"));
  }
  block_ = *info[0].As<Napi::External<std::shared_ptr<MemoryBlock>>>().Data();
  byte_length_ = block_->size();
  device_ = block_->device();
  read_only_ = block_->read_only();
  info.This().As<Napi::Object>().TypeTag(&kStorageTag);
  if (block_->counts_as_external() && byte_length_ > 0) {
    external_bytes_ = byte_length_;
    Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);
  }
}

StorageImpl::~StorageImpl() { release(); }

void StorageImpl::release() {
  if (block_ == nullptr) return;
  if (external_bytes_ > 0) {
    Napi::Env env = Env();
    AddonData* data = env.GetInstanceData<AddonData>();
    if (data != nullptr && !data->shutting_down) Napi::MemoryManagement::AdjustExternalMemory(env, -external_bytes_);
    external_bytes_ = 0;
  }
  block_.reset();  // frees now unless an async kernel still holds the block (then when it finishes)
}

const std::shared_ptr<MemoryBlock>& StorageImpl::live_block(const char* name) const {
  if (block_ == nullptr) {
    throw_error(ErrorKind::Disposed, std::string("Expected a live Storage for ") + name + " but received a disposed Storage(" +
                                         std::to_string(byte_length_) + " bytes, " + device_.str() + ")");
  }
  return block_;
}

Napi::Value StorageImpl::get_byte_length(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(byte_length_)); }
Napi::Value StorageImpl::get_device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), device_.str()); }
Napi::Value StorageImpl::get_read_only(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), read_only_); }
Napi::Value StorageImpl::get_disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), block_ == nullptr); }

Napi::Value StorageImpl::js_dispose(const Napi::CallbackInfo& info) {
  release();
  return info.Env().Undefined();
}

// ---- devices ---------------------------------------------------------------------------------------------------

Device parse_device(const std::string& text, const char* name) {
  auto bad = [&]() {
    throw_error(ErrorKind::Argument, std::string("Expected a device string (\"cpu\", \"cuda\" or \"cuda:N\") for ") + name + " but received \"" + text + "\"");
  };
  Device d;
  if (text == "cpu") return d;
  int index = 0;
  if (text == "cuda") {
    index = 0;
  } else if (text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() <= 5 + 6) {
    for (size_t k = 5; k < text.size(); ++k) {
      if (text[k] < '0' || text[k] > '9') bad();
      index = index * 10 + (text[k] - '0');
    }
  } else {
    bad();
  }
  d.type = DeviceType::CUDA;
  d.index = index;
  int count = cuda::device_count();
  if (count == 0) {
    throw_error(ErrorKind::Device, std::string("Expected an available CUDA device for ") + name + " but received \"" + text + "\": " +
                                       cuda::unavailable_reason());
  }
  if (index >= count || index >= kMaxCudaDevices) {
    throw_error(ErrorKind::Device, std::string("Expected a CUDA device index below ") + std::to_string(count) + " for " + name + " but received \"" +
                                       text + "\"");
  }
  return d;
}

Device arg_device(const Napi::CallbackInfo& info, size_t i, const char* name) { return parse_device(arg_string(info, i, name), name); }

StorageImpl* arg_storage(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = i < info.Length() ? info[i] : info.Env().Undefined();
  StorageImpl* s = StorageImpl::unwrap(v);
  if (s == nullptr) throw_error(ErrorKind::Argument, std::string("Expected a Storage for ") + name + " but received " + describe_value(v));
  s->live_block(name);
  return s;
}

}  // namespace lowbit
