// Safetensors: mmap'd reader with a fully validated header, sharded checkpoints through
// model.safetensors.index.json, and a writer.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/core/tensor.h"

namespace dsv4 {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  size_t offset = 0;  // absolute byte offset of the data in the file
  size_t nbytes = 0;
  int64_t numel() const;
  std::string shape_string() const;
};

// One .safetensors file, memory-mapped read-only. Opening validates the whole header: its length,
// JSON syntax, each entry's dtype (F32, BF16, F16, I64, I32, F8_E4M3, F8_E8M0, I8, U8, BOOL), shape and data
// offsets (inside the file, dtype x shape = byte length, no two tensors overlapping). Any violation
// throws kParseError naming the file and the tensor.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  const void* data(const TensorInfo& info) const { return base_ + info.offset; }
  // A CPU view of the tensor's bytes (read-only memory: never write through it).
  Tensor view(const TensorInfo& info) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  const char* base_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a safetensors header held in memory (exposed for tests and fuzzing).
void parse_safetensors_header(const char* bytes, size_t file_size, const std::string& origin,
                              std::vector<TensorInfo>* tensors, std::map<std::string, std::string>* metadata);

// A checkpoint directory: `model.safetensors`, or shards listed in `model.safetensors.index.json`.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const;  // sorted
  const TensorInfo* find(const std::string& name) const;
  Tensor view(const std::string& name) const;  // throws kNotFound naming the tensor
  size_t total_bytes() const;

 private:
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> entries_;
};

// Writes tensors (CPU, contiguous) to a .safetensors file; `metadata` goes under "__metadata__".
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace dsv4
