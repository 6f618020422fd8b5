// Storage: the one kind of memory the addon hands to JS. A MemoryBlock owns the bytes (64-byte-aligned
// zeroed host memory, a read-only file mapping, or CUDA device memory from the device's caching allocator,
// cuda_backend.h device_malloc); a StorageImpl is the JS-visible
// `Storage` object (Napi::ObjectWrap) that holds a block until dispose() or its finalizer. Also: the
// per-device memory counters and the per-environment addon data (error classes, Storage constructor).
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "napi_util.h"

namespace lowbit {

// Alignment of every host allocation (cache line; AVX-512 loads).
constexpr int64_t kHostAlignment = 64;

// ---- per-device memory counters (process-wide; devices are shared by all JS environments) ----------
struct MemoryCounters {
  int64_t allocated = 0;  // bytes in live blocks (file mappings excluded)
  int64_t peak = 0;       // max of `allocated` since start / reset_peak_memory
  int64_t reserved = 0;   // bytes held from the system: == allocated on cpu; on cuda the caching allocator's
                          // pool (live blocks, cached free blocks, scratch, the cuBLAS workspace)
};
MemoryCounters memory_counters(const Device& d);
void reset_peak_memory(const Device& d);

// ---- MemoryBlock -------------------------------------------------------------------------------------
class MemoryBlock {
 public:
  enum class Kind { HostHeap, HostAnonymous, FileMapping, Device };

  // New zero-filled memory on `device` (host or CUDA). Throws OutOfMemoryError (requested and free
  // bytes) when the allocation fails, DeviceError for an unusable device. `zero` = false skips the
  // zero fill for callers that overwrite every byte (readFile).
  static std::shared_ptr<MemoryBlock> allocate(const Device& device, int64_t bytes, bool zero = true);
  // Maps the whole file read-only. Throws FileError naming the path and the OS reason.
  static std::shared_ptr<MemoryBlock> map_file(const std::string& path);

  ~MemoryBlock();
  MemoryBlock(const MemoryBlock&) = delete;
  MemoryBlock& operator=(const MemoryBlock&) = delete;

  uint8_t* data() const { return data_; }
  int64_t size() const { return size_; }
  const Device& device() const { return device_; }
  bool read_only() const { return kind_ == Kind::FileMapping; }
  Kind kind() const { return kind_; }
  // Host memory the JS heap should know about (reported to V8 as external memory).
  bool counts_as_external() const { return kind_ == Kind::HostHeap || kind_ == Kind::HostAnonymous; }

 private:
  MemoryBlock(Kind kind, Device device, uint8_t* data, int64_t size, int64_t mapped_size)
      : kind_(kind), device_(device), data_(data), size_(size), mapped_size_(mapped_size) {}

  Kind kind_;
  Device device_;
  uint8_t* data_;
  int64_t size_;
  int64_t mapped_size_;  // bytes passed to mmap (HostAnonymous / FileMapping); 0 otherwise
};

// ---- StorageImpl: the JS class `Storage` ---------------------------------------------------------------
class StorageImpl : public Napi::ObjectWrap<StorageImpl> {
 public:
  // Defines the class (stored in the environment's AddonData; JS code cannot construct it directly).
  static Napi::Function define_class(Napi::Env env);
  // New JS Storage object owning `block`.
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<MemoryBlock> block);
  // The StorageImpl behind `value`, or nullptr if `value` is not a Storage (checked by type tag).
  static StorageImpl* unwrap(const Napi::Value& value);

  explicit StorageImpl(const Napi::CallbackInfo& info);
  ~StorageImpl() override;

  // The block, or nullptr once disposed.
  const std::shared_ptr<MemoryBlock>& block() const { return block_; }
  bool disposed() const { return block_ == nullptr; }
  // The block, or throws DisposedError naming `name`.
  const std::shared_ptr<MemoryBlock>& live_block(const char* name) const;
  int64_t byte_length() const { return byte_length_; }
  const Device& device() const { return device_; }
  bool read_only() const { return read_only_; }

 private:
  Napi::Value get_byte_length(const Napi::CallbackInfo& info);
  Napi::Value get_device(const Napi::CallbackInfo& info);
  Napi::Value get_read_only(const Napi::CallbackInfo& info);
  Napi::Value get_disposed(const Napi::CallbackInfo& info);
  Napi::Value js_dispose(const Napi::CallbackInfo& info);
  void release();

  std::shared_ptr<MemoryBlock> block_;
  int64_t byte_length_ = 0;  // kept after dispose so error messages and `byteLength` stay meaningful
  Device device_;
  bool read_only_ = false;
  int64_t external_bytes_ = 0;  // reported to V8 while the block is held
};

// ---- devices -----------------------------------------------------------------------------------------
// "cpu", "cuda" (= cuda:0) or "cuda:N". ArgumentError for anything else; DeviceError when the CUDA
// device does not exist or CUDA is unusable.
Device parse_device(const std::string& text, const char* name);
Device arg_device(const Napi::CallbackInfo& info, size_t i, const char* name);
// The StorageImpl at info[i] (not disposed); ArgumentError / DisposedError otherwise.
StorageImpl* arg_storage(const Napi::CallbackInfo& info, size_t i, const char* name);

// ---- per-environment addon data ------------------------------------------------------------------------
// One per JS environment (main thread, each worker): set with env.SetInstanceData by addon.cc.
struct AddonData {
  // Indexed by ErrorKind; plus the OutOfMemoryError class. Empty until initialize().
  Napi::FunctionReference errors[7];
  Napi::FunctionReference out_of_memory;
  bool initialized = false;
  Napi::FunctionReference storage_class;
  // Set by the environment cleanup hook: finalizers that run during teardown must not touch V8.
  bool shutting_down = false;
};
// The environment's data; created (and its cleanup hook registered) on first use.
AddonData& addon_data(Napi::Env env);

}  // namespace lowbit
