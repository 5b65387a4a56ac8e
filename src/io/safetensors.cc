#include "dsv4/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsv4/io/file.h"
#include "dsv4/io/json.h"
#include "dsv4/io/limits.h"

namespace dsv4 {
namespace {

using json = nlohmann::json;

// Headers above this size are refused (real checkpoints have a few MB of header at most).
constexpr uint64_t kMaxHeaderBytes = 256ull << 20;

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string TensorInfo::shape_string() const {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

void parse_safetensors_header(const char* bytes, size_t file_size, const std::string& origin,
                              std::vector<TensorInfo>* tensors, std::map<std::string, std::string>* metadata) {
  auto bad = [&](auto&&... parts) { fail(StatusCode::kParseError, origin, ": ", parts...); };
  if (file_size < 8) bad("file is ", file_size, " bytes, too short for a safetensors header (truncated?)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian u64
  if (header_len > kMaxHeaderBytes) bad("header length ", header_len, " is implausible (corrupt file?)");
  if (8 + header_len > file_size) {
    bad("header length ", header_len, " runs past the end of the ", file_size, "-byte file (truncated?)");
  }
  json h;
  try {
    h = parse_json(std::string_view(bytes + 8, header_len), "header");
  } catch (const Error& e) {
    bad("header is not valid JSON: ", e.what());
  }
  if (!h.is_object()) bad("header must be a JSON object");
  const size_t data_begin = 8 + header_len;
  const size_t data_size = file_size - data_begin;
  tensors->clear();
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) bad("__metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) bad("__metadata__ entry '", m.key(), "' is not a string");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) bad("tensor '", name, "': entry must be an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) bad("tensor '", name, "': missing dtype");
    TensorInfo info;
    info.name = name;
    const std::string dtype = v["dtype"].get<std::string>();
    if (!parse_dtype(dtype, &info.dtype)) {
      bad("tensor '", name, "': unknown dtype '", dtype,
          "' (dsv4 reads F32, BF16, F16, I64, I32, F8_E4M3, F8_E8M0, I8, U8, BOOL)");
    }
    if (!v.contains("shape") || !v["shape"].is_array()) bad("tensor '", name, "': missing shape");
    for (const json& s : v["shape"]) {
      if (!s.is_number_integer() || s.get<int64_t>() < 0) bad("tensor '", name, "': shape must hold integers >= 0");
      info.shape.push_back(s.get<int64_t>());
    }
    if (info.shape.size() > static_cast<size_t>(kMaxDims)) bad("tensor '", name, "': rank above ", kMaxDims);
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2 ||
        !v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned()) {
      bad("tensor '", name, "': data_offsets must be [begin, end]");
    }
    const uint64_t begin = v["data_offsets"][0].get<uint64_t>();
    const uint64_t end = v["data_offsets"][1].get<uint64_t>();
    if (begin > end) bad("tensor '", name, "': data_offsets [", begin, ", ", end, "] are reversed");
    if (end > data_size) {
      bad("tensor '", name, "': data_offsets [", begin, ", ", end, "] lie outside the ", data_size,
          "-byte data section (truncated file?)");
    }
    // Overflow-checked: a huge shape must not wrap around to a small (or zero) byte count.
    uint64_t expected = dtype_size(info.dtype);
    bool overflow = false;
    for (int64_t s : info.shape) overflow |= __builtin_mul_overflow(expected, static_cast<uint64_t>(s), &expected);
    if (std::find(info.shape.begin(), info.shape.end(), 0) != info.shape.end()) {
      overflow = false;
      expected = 0;
    }
    if (overflow || expected > static_cast<uint64_t>(INT64_MAX)) {
      bad("tensor '", name, "': shape ", info.shape_string(), " is too large");
    }
    if (end - begin != expected) {
      bad("tensor '", name, "': ", dtype, info.shape_string(), " needs ", expected, " bytes but data_offsets span ",
          end - begin);
    }
    info.offset = data_begin + begin;
    info.nbytes = end - begin;
    tensors->push_back(std::move(info));
  }
  std::vector<const TensorInfo*> order;
  for (const TensorInfo& t : *tensors) order.push_back(&t);
  // The tensors must tile the data section exactly, as the safetensors format (and its reference reader)
  // requires: no overlap, no gap between tensors, no bytes after the last one. Empty tensors sort first.
  std::sort(order.begin(), order.end(),
            [](auto* a, auto* b) { return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes; });
  uint64_t covered = data_begin;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : order) {
    if (t->offset < covered) bad("tensors '", prev->name, "' and '", t->name, "' overlap in the data section");
    if (t->offset > covered) {
      bad("tensor '", t->name, "' starts ", t->offset - covered, " bytes after ",
          prev ? str_cat("the end of '", prev->name, "'") : std::string("the start of the data section"),
          ": the data section has a gap");
    }
    covered = t->offset + t->nbytes;
    prev = t;
  }
  if (covered != data_begin + data_size) {
    bad("the data section has ", data_begin + data_size - covered, " bytes after the last tensor");
  }
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  // O_NONBLOCK: a FIFO must not block the open; it is refused right after (mmap needs a regular file).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(StatusCode::kNotFound, "cannot open '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(StatusCode::kIoError, "cannot stat '", path, "'");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(StatusCode::kInvalidArgument, "'", path, "' is not a regular file (a FIFO, device or directory)");
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail(StatusCode::kIoError, "cannot mmap '", path, "': ", std::strerror(errno));
    }
    f->base_ = static_cast<const char*>(p);
  }
  ::close(fd);
  parse_safetensors_header(f->base_, f->size_, path, &f->tensors_, &f->metadata_);
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr) ::munmap(const_cast<char*>(base_), size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Tensor SafetensorsFile::view(const TensorInfo& info) const {
  return Tensor(const_cast<char*>(base_ + info.offset), info.dtype, info.shape, Device::kCPU);
}

Checkpoint Checkpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint c;
  c.dir_ = dir;
  if (!fs::is_directory(dir)) fail(StatusCode::kNotFound, "checkpoint directory '", dir, "' does not exist");
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(dir) / "model.safetensors";
  if (fs::exists(index_path)) {
    const json idx = parse_json(read_text_file(index_path.string(), "checkpoint index", kMaxIndexBytes),
                                index_path.string());
    if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object()) {
      fail(StatusCode::kParseError, index_path.string(), ": missing object 'weight_map'");
    }
    std::map<std::string, const SafetensorsFile*> opened;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        fail(StatusCode::kParseError, index_path.string(), ": weight_map entry '", it.key(), "' is not a file name");
      }
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.empty() || shard == "." || shard == "..") {
        fail(StatusCode::kParseError, index_path.string(), ": shard name '", shard, "' must be a plain file name");
      }
      if (!opened.count(shard)) {
        c.files_.push_back(SafetensorsFile::open((fs::path(dir) / shard).string()));
        opened[shard] = c.files_.back().get();
      }
      const SafetensorsFile* file = opened[shard];
      const TensorInfo* info = file->find(it.key());
      if (info == nullptr) {
        fail(StatusCode::kParseError, index_path.string(), ": tensor '", it.key(), "' is mapped to '", shard,
             "' but that file does not hold it");
      }
      c.entries_[it.key()] = {file, info};
    }
    for (const auto& f : c.files_) {
      for (const TensorInfo& t : f->tensors()) {
        if (!c.entries_.count(t.name)) {
          fail(StatusCode::kParseError, index_path.string(), ": tensor '", t.name, "' in '", f->path(),
               "' is missing from weight_map");
        }
      }
    }
  } else if (fs::exists(single_path)) {
    c.files_.push_back(SafetensorsFile::open(single_path.string()));
    for (const TensorInfo& t : c.files_.back()->tensors()) c.entries_[t.name] = {c.files_.back().get(), &t};
  } else {
    fail(StatusCode::kNotFound, "checkpoint directory '", dir,
         "' has neither model.safetensors nor model.safetensors.index.json");
  }
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.info;
}

Tensor Checkpoint::view(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail(StatusCode::kNotFound, "checkpoint '", dir_, "' has no tensor '", name, "'");
  return it->second.file->view(*it->second.info);
}

size_t Checkpoint::total_bytes() const {
  size_t n = 0;
  for (const auto& [name, e] : entries_) n += e.info->nbytes;
  return n;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    DSV4_CHECK_ARG(t.device() == Device::kCPU && t.is_contiguous(), "save_safetensors: '", name,
                   "' must be a contiguous CPU tensor");
    DSV4_CHECK_ARG(name != "__metadata__" && !h.contains(name), "save_safetensors: duplicate name '", name, "'");
    h[name] = {{"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string header = h.dump();
  while ((8 + header.size()) % 8 != 0) header.push_back(' ');  // align the data section
  write_output_file(path, [&](std::ostream& out) {
    const uint64_t len = header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& [name, t] : tensors) {
      out.write(static_cast<const char*>(t.data()), static_cast<std::streamsize>(t.nbytes()));
    }
  });
}

}  // namespace dsv4
