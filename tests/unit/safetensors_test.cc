// Safetensors reader / writer and sharded checkpoints: round trips of every dtype, and each malformed
// file and index class (error code + the file / tensor named in the message).
#include "dsv4/io/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "dsv4/core/buffer.h"
#include "test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::path(testing::TempDir()) / str_cat("dsv4_st_", ::getpid(), "_", counter++, "_",
                                                   testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

// Raw file bytes: little-endian u64 header length, header, data.
std::string raw_file(const std::string& header, const std::string& data, int64_t header_len_override = -1) {
  std::string out(8, '\0');
  const uint64_t len = header_len_override >= 0 ? static_cast<uint64_t>(header_len_override) : header.size();
  std::memcpy(out.data(), &len, 8);
  return out + header + data;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// parse_safetensors_header on in-memory bytes fails with kParseError naming every one of `parts`.
void expect_header_error(const std::string& bytes, const std::vector<std::string>& parts) {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  try {
    parse_safetensors_header(bytes.data(), bytes.size(), "mem.safetensors", &tensors, &metadata);
    ADD_FAILURE() << "expected a parse error for header " << bytes.substr(8, 300);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kParseError) << e.what();
    EXPECT_NE(std::string(e.what()).find("mem.safetensors"), std::string::npos) << e.what();
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

void expect_header_error(const json& header, size_t data_bytes, const std::vector<std::string>& parts) {
  SCOPED_TRACE(header.dump());
  expect_header_error(raw_file(header.dump(), std::string(data_bytes, '\x01')), parts);
}

template <typename F>
void expect_error(F&& f, StatusCode code, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// Host tensor of `dtype` and `shape` filled with distinct random bytes.
HostTensor random_tensor(DType dtype, std::vector<int64_t> shape, std::mt19937& rng) {
  HostTensor t(dtype, std::move(shape));
  auto* bytes = static_cast<uint8_t*>(t.t().data());
  for (size_t i = 0; i < t.t().nbytes(); ++i) bytes[i] = static_cast<uint8_t>(rng());
  return t;
}

// ---- round trips ------------------------------------------------------------------------------------

TEST(Safetensors, RoundTripEveryDtypeWithMetadata) {
  TempDir dir;
  std::mt19937 rng(7);
  struct Item {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Item> items = {
      {"a.f32", DType::F32, {3, 5}},   {"b.bf16", DType::BF16, {7}},      {"c.f16", DType::F16, {2, 3, 1}},
      {"d.i64", DType::I64, {4, 3}},   {"e.i32", DType::I32, {1, 1}},     {"f.f8", DType::F8_E4M3, {5, 3}},
      {"g.u8", DType::U8, {9}},        {"h.bool", DType::BOOL, {2, 2}},   {"i.scalar", DType::F32, {}},
      {"j.empty", DType::F32, {0, 4}}, {"k.odd", DType::BF16, {3, 3, 3}},
  };
  std::vector<HostTensor> storage;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const Item& it : items) {
    storage.push_back(random_tensor(it.dtype, it.shape, rng));
    tensors.emplace_back(it.name, storage.back().t());
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "round trip"}};
  const std::string path = dir / "model.safetensors";
  save_safetensors(path, tensors, metadata);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  // The file is valid safetensors: header JSON parses, the data section starts 8-aligned.
  const std::string bytes = read_bytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);
  const json header = json::parse(bytes.substr(8, header_len));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["a.f32"]["dtype"], "F32");
  EXPECT_EQ(header["f.f8"]["dtype"], "F8_E4M3");

  auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->path(), path);
  EXPECT_EQ(file->metadata(), metadata);
  ASSERT_EQ(file->tensors().size(), items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    SCOPED_TRACE(items[i].name);
    const TensorInfo* info = file->find(items[i].name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->name, items[i].name);
    EXPECT_EQ(info->dtype, items[i].dtype);
    EXPECT_EQ(info->shape, items[i].shape);
    EXPECT_EQ(info->nbytes, tensors[i].second.nbytes());
    EXPECT_EQ(info->numel(), tensors[i].second.numel());
    // An empty tensor has no data pointer to compare (memcmp on null is undefined even for 0 bytes).
    if (info->nbytes > 0) {
      EXPECT_EQ(0, std::memcmp(file->data(*info), tensors[i].second.data(), info->nbytes));
    }
    const Tensor v = file->view(*info);
    EXPECT_EQ(v.dtype(), items[i].dtype);
    EXPECT_EQ(v.shape(), items[i].shape);
    EXPECT_EQ(v.device(), Device::kCPU);
    if (info->nbytes > 0) {
      EXPECT_EQ(0, std::memcmp(v.data(), tensors[i].second.data(), info->nbytes));
    }
  }
  EXPECT_EQ(file->find("a.f32")->shape_string(), "[3, 5]");
  EXPECT_EQ(file->find("nope"), nullptr);

  // The same file as a single-file checkpoint directory.
  const Checkpoint ckpt = Checkpoint::open(dir.str());
  std::vector<std::string> names;
  for (const Item& it : items) names.push_back(it.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(ckpt.names(), names);
  size_t total = 0;
  for (const auto& [name, t] : tensors) total += t.nbytes();
  EXPECT_EQ(ckpt.total_bytes(), total);
  const Tensor d = ckpt.view("d.i64");
  // The mmap'd data is not aligned (safetensors promises no alignment): read the values with memcpy.
  for (int64_t i = 0; i < 12; ++i) {
    int64_t v = 0;
    std::memcpy(&v, static_cast<const char*>(d.data()) + 8 * i, 8);
    EXPECT_EQ(v, storage[3].ptr<int64_t>()[i]);
  }
  expect_error([&] { ckpt.view("missing.weight"); }, StatusCode::kNotFound, {"missing.weight"});
  EXPECT_EQ(ckpt.find("missing.weight"), nullptr);
}

TEST(Safetensors, FloatValuesSurviveConversionRoundTrip) {
  TempDir dir;
  std::vector<float> v = {0.5f, -1.25f, 3.0f, 1e-3f, -7.75f, 100.0f};
  HostTensor bf(DType::BF16, {6}), f16(DType::F16, {6});
  convert_from_f32(v.data(), DType::BF16, bf.t().data(), v.size());
  convert_from_f32(v.data(), DType::F16, f16.t().data(), v.size());
  save_safetensors(dir / "x.safetensors",
                   {{"f32", Tensor(v.data(), DType::F32, {2, 3})}, {"bf16", bf.t()}, {"f16", f16.t()}});
  auto file = SafetensorsFile::open(dir / "x.safetensors");
  EXPECT_TRUE(file->metadata().empty());
  EXPECT_EQ(test::to_vector(file->view(*file->find("f32"))), v);
  const std::vector<float> b = test::to_vector(file->view(*file->find("bf16")));
  const std::vector<float> h = test::to_vector(file->view(*file->find("f16")));
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(b[i], round_to_bf16(v[i]));
    EXPECT_NEAR(h[i], v[i], std::fabs(v[i]) * 1e-3);
  }
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  float x[4] = {1, 2, 3, 4};
  expect_error(
      [&] {
        save_safetensors(dir / "a.safetensors", {{"x", Tensor(x, DType::F32, {4})}, {"x", Tensor(x, DType::F32, {4})}});
      },
      StatusCode::kInvalidArgument, {"duplicate", "'x'"});
  expect_error(
      [&] {
        save_safetensors(dir / "b.safetensors", {{"x", Tensor(x, DType::F32, {2, 2}).slice(1, 0, 1)}});
      },
      StatusCode::kInvalidArgument, {"contiguous", "'x'"});
  expect_error(
      [&] {
        save_safetensors(dir / "c.safetensors", {{"__metadata__", Tensor(x, DType::F32, {4})}});
      },
      StatusCode::kInvalidArgument, {"__metadata__"});
}

TEST(Safetensors, ShardedCheckpointThroughIndex) {
  TempDir dir;
  std::mt19937 rng(3);
  HostTensor a = random_tensor(DType::F32, {4, 4}, rng), b = random_tensor(DType::BF16, {8}, rng),
             c = random_tensor(DType::I64, {3, 2}, rng), d = random_tensor(DType::F32, {5}, rng);
  save_safetensors(dir / "model-00001-of-00002.safetensors", {{"layers.0.w", a.t()}, {"layers.0.b", b.t()}});
  save_safetensors(dir / "model-00002-of-00002.safetensors", {{"layers.1.w", c.t()}, {"norm.weight", d.t()}});
  json index = {{"metadata", {{"total_size", 64 + 16 + 48 + 20}}},
                {"weight_map",
                 {{"layers.0.w", "model-00001-of-00002.safetensors"},
                  {"layers.0.b", "model-00001-of-00002.safetensors"},
                  {"layers.1.w", "model-00002-of-00002.safetensors"},
                  {"norm.weight", "model-00002-of-00002.safetensors"}}}};
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
  // A stale single file next to the index is ignored: the index wins.
  save_safetensors(dir / "model.safetensors", {{"stale", d.t()}});

  const Checkpoint ckpt = Checkpoint::open(dir.str());
  EXPECT_EQ(ckpt.dir(), dir.str());
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"layers.0.b", "layers.0.w", "layers.1.w", "norm.weight"}));
  EXPECT_EQ(ckpt.total_bytes(), 64u + 16u + 48u + 20u);
  EXPECT_EQ(ckpt.find("stale"), nullptr);
  for (const auto& [name, t] : std::vector<std::pair<std::string, const HostTensor*>>{
           {"layers.0.w", &a}, {"layers.0.b", &b}, {"layers.1.w", &c}, {"norm.weight", &d}}) {
    SCOPED_TRACE(name);
    const Tensor v = ckpt.view(name);
    EXPECT_EQ(v.dtype(), t->t().dtype());
    EXPECT_EQ(v.shape(), t->t().shape());
    EXPECT_EQ(0, std::memcmp(v.data(), t->t().data(), v.nbytes()));
  }
}

// ---- malformed files --------------------------------------------------------------------------------

json one_tensor(const std::string& dtype, json shape, json offsets) {
  return {{"w", {{"dtype", dtype}, {"shape", std::move(shape)}, {"data_offsets", std::move(offsets)}}}};
}

TEST(SafetensorsErrors, FileShorterThanHeaderLength) {
  expect_header_error(std::string(), {"0 bytes", "too short"});
  expect_header_error(std::string(7, '\0'), {"7 bytes", "too short"});
  // The length field points past the end of the file.
  const std::string header = one_tensor("F32", {2}, {0, 8}).dump();
  expect_header_error(raw_file(header, std::string(8, '\0'), static_cast<int64_t>(header.size()) + 100),
                      {"header length", "past the end"});
  expect_header_error(raw_file(header.substr(0, 10), "", static_cast<int64_t>(header.size())), {"past the end"});
  // Absurd lengths are refused before any allocation.
  expect_header_error(raw_file("{}", "", int64_t{1} << 60), {"implausible"});
}

TEST(SafetensorsErrors, HeaderJson) {
  expect_header_error(raw_file("{\"w\": {\"dtype\": \"F32\",", ""), {"not valid JSON"});
  expect_header_error(raw_file("not json at all", ""), {"not valid JSON"});
  expect_header_error(raw_file("[1, 2, 3]", ""), {"must be a JSON object"});
  expect_header_error(raw_file("\"w\"", ""), {"must be a JSON object"});
  expect_header_error(json{{"w", 5}}, 0, {"'w'", "must be an object"});
  expect_header_error(json{{"__metadata__", {1, 2}}}, 0, {"__metadata__"});
  expect_header_error(json{{"__metadata__", {{"format", 3}}}}, 0, {"__metadata__", "'format'"});
  // Trailing spaces after the JSON are allowed (the writer pads the header with them).
  std::vector<TensorInfo> tensors;
  const std::string ok = raw_file(one_tensor("U8", {3}, {0, 3}).dump() + "      ", "abc");
  parse_safetensors_header(ok.data(), ok.size(), "ok", &tensors, nullptr);
  ASSERT_EQ(tensors.size(), 1u);
  EXPECT_EQ(tensors[0].offset, ok.size() - 3);
}

TEST(SafetensorsErrors, EntryFields) {
  expect_header_error(one_tensor("F4", {2}, {0, 1}), 1, {"'w'", "unknown dtype", "F4"});
  expect_header_error(one_tensor("float32", {2}, {0, 8}), 8, {"'w'", "unknown dtype", "float32"});
  expect_header_error(json{{"w", {{"shape", {2}}, {"data_offsets", {0, 8}}}}}, 8, {"'w'", "missing dtype"});
  expect_header_error(json{{"w", {{"dtype", 1}, {"shape", {2}}, {"data_offsets", {0, 8}}}}}, 8, {"'w'", "dtype"});
  expect_header_error(json{{"w", {{"dtype", "F32"}, {"data_offsets", {0, 8}}}}}, 8, {"'w'", "missing shape"});
  expect_header_error(json{{"w", {{"dtype", "F32"}, {"shape", 2}, {"data_offsets", {0, 8}}}}}, 8,
                      {"'w'", "missing shape"});
  expect_header_error(json{{"w", {{"dtype", "F32"}, {"shape", {2}}}}}, 8, {"'w'", "data_offsets"});
  expect_header_error(one_tensor("F32", {-2}, {0, 8}), 8, {"'w'", "shape"});
  expect_header_error(one_tensor("F32", {2.5}, {0, 10}), 10, {"'w'", "shape"});
  expect_header_error(one_tensor("F32", {"2"}, {0, 8}), 8, {"'w'", "shape"});
  expect_header_error(one_tensor("F32", {1, 1, 1, 1, 1, 1, 2}, {0, 8}), 8, {"'w'", "rank"});
  expect_header_error(one_tensor("F32", {2}, {0}), 8, {"'w'", "data_offsets"});
  expect_header_error(one_tensor("F32", {2}, {0, 8, 16}), 16, {"'w'", "data_offsets"});
  expect_header_error(one_tensor("F32", {2}, {-8, 0}), 8, {"'w'", "data_offsets"});
  expect_header_error(one_tensor("F32", {2}, {0.0, 8.0}), 8, {"'w'", "data_offsets"});
}

TEST(SafetensorsErrors, Offsets) {
  expect_header_error(one_tensor("F32", {2}, {8, 0}), 8, {"'w'", "reversed"});
  expect_header_error(one_tensor("F32", {2}, {8, 16}), 8, {"'w'", "outside", "8-byte data section"});
  expect_header_error(one_tensor("F32", {2}, {0, 12}), 12, {"'w'", "F32[2]", "needs 8 bytes", "span 12"});
  expect_header_error(one_tensor("BF16", {3, 2}, {0, 24}), 24, {"'w'", "needs 12 bytes"});
  expect_header_error(one_tensor("I64", {3}, {0, 4}), 24, {"'w'", "needs 24 bytes"});
  // Two tensors sharing bytes.
  json h = {{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}},
            {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {12, 20}}}}};
  expect_header_error(h, 20, {"'a'", "'b'", "overlap"});
  h["b"]["data_offsets"] = {0, 8};
  expect_header_error(h, 20, {"'a'", "'b'", "overlap"});
  // One tensor inside another.
  h = {{"big", {{"dtype", "U8"}, {"shape", {32}}, {"data_offsets", {0, 32}}}},
       {"small", {{"dtype", "U8"}, {"shape", {4}}, {"data_offsets", {8, 12}}}}};
  expect_header_error(h, 32, {"'big'", "'small'", "overlap"});
  // Gaps: before the first tensor, between two, after the last (the format tiles the section exactly).
  expect_header_error(one_tensor("F32", {2}, {4, 12}), 12, {"'w'", "4 bytes after the start", "gap"});
  h = {{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
       {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {12, 20}}}}};
  expect_header_error(h, 20, {"'b'", "after the end of 'a'", "gap"});
  expect_header_error(one_tensor("F32", {2}, {0, 8}), 11, {"3 bytes after the last tensor"});
  // Empty tensors anywhere in the tiling are fine.
  h = {{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
       {"e", {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {8, 8}}}},
       {"z", {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {0, 0}}}},
       {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 16}}}}};
  const std::string ok = raw_file(h.dump(), std::string(16, '\x01'));
  TempDir dir;
  write_bytes(dir / "ok.safetensors", ok);
  EXPECT_EQ(SafetensorsFile::open(dir / "ok.safetensors")->tensors().size(), 4u);
  // A shape whose element count overflows cannot pass as a small (or empty) tensor.
  expect_header_error(one_tensor("F32", {int64_t{1} << 32, int64_t{1} << 32}, {0, 0}), 0, {"'w'", "too large"});
  expect_header_error(one_tensor("F32", {int64_t{1} << 62, 4}, {0, 0}), 0, {"'w'", "too large"});
  expect_header_error(one_tensor("BF16", {int64_t{1} << 62, 2}, {0, 0}), 0, {"'w'", "too large"});
}

TEST(SafetensorsErrors, TruncatedFilesOnDisk) {
  TempDir dir;
  std::vector<float> v(64, 1.5f);
  const std::string path = dir / "t.safetensors";
  save_safetensors(
      path, {{"first", Tensor(v.data(), DType::F32, {32})}, {"second", Tensor(v.data() + 32, DType::F32, {32})}});
  const std::string bytes = read_bytes(path);
  // Data section cut: the last tensor runs past the end.
  write_bytes(path, bytes.substr(0, bytes.size() - 4));
  expect_error([&] { SafetensorsFile::open(path); }, StatusCode::kParseError, {path, "'second'", "outside"});
  // Cut inside the header.
  write_bytes(path, bytes.substr(0, 20));
  expect_error([&] { SafetensorsFile::open(path); }, StatusCode::kParseError, {path, "past the end"});
  // Cut inside the length field; empty file.
  write_bytes(path, bytes.substr(0, 5));
  expect_error([&] { SafetensorsFile::open(path); }, StatusCode::kParseError, {path, "too short"});
  write_bytes(path, "");
  expect_error([&] { SafetensorsFile::open(path); }, StatusCode::kParseError, {path, "too short"});
  // Missing file.
  expect_error([&] { SafetensorsFile::open(dir / "absent.safetensors"); }, StatusCode::kNotFound,
               {"absent.safetensors"});
  // A single-file checkpoint reports the broken file.
  write_bytes(dir / "model.safetensors", bytes.substr(0, bytes.size() - 100));
  expect_error([&] { Checkpoint::open(dir.str()); }, StatusCode::kParseError, {"model.safetensors", "'second'"});
}

// ---- malformed sharded checkpoints ------------------------------------------------------------------

class ShardedErrors : public testing::Test {
 protected:
  void SetUp() override {
    save_safetensors(dir_ / "s1.safetensors",
                     {{"a", Tensor(v_, DType::F32, {2})}, {"b", Tensor(v_ + 2, DType::F32, {2})}});
    save_safetensors(dir_ / "s2.safetensors", {{"c", Tensor(v_ + 4, DType::F32, {4})}});
  }
  json good_map() const { return {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}}; }
  void write_index(const std::string& text) { std::ofstream(dir_ / "model.safetensors.index.json") << text; }
  void expect_open_error(StatusCode code, const std::vector<std::string>& parts) {
    expect_error([&] { Checkpoint::open(dir_.str()); }, code, parts);
  }

  TempDir dir_;
  float v_[8] = {1, 2, 3, 4, 5, 6, 7, 8};
};

TEST_F(ShardedErrors, GoodIndexOpens) {
  write_index(json{{"weight_map", good_map()}}.dump());
  EXPECT_EQ(Checkpoint::open(dir_.str()).names(), (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(ShardedErrors, IndexJson) {
  write_index("{\"weight_map\": {\"a\": ");
  expect_open_error(StatusCode::kParseError, {"model.safetensors.index.json", "invalid JSON"});
  write_index("[]");
  expect_open_error(StatusCode::kParseError, {"model.safetensors.index.json", "weight_map"});
  write_index(json{{"metadata", {{"total_size", 32}}}}.dump());
  expect_open_error(StatusCode::kParseError, {"model.safetensors.index.json", "weight_map"});
  write_index(json{{"weight_map", json::array({"a", "b"})}}.dump());
  expect_open_error(StatusCode::kParseError, {"weight_map"});
  json m = good_map();
  m["b"] = 1;
  write_index(json{{"weight_map", m}}.dump());
  expect_open_error(StatusCode::kParseError, {"weight_map entry 'b'"});
}

TEST_F(ShardedErrors, MapAndShardsDisagree) {
  json m = good_map();
  m["c"] = "s1.safetensors";  // s1 lacks c
  write_index(json{{"weight_map", m}}.dump());
  expect_open_error(StatusCode::kParseError, {"'c'", "s1.safetensors", "does not hold it"});
  m = good_map();
  m.erase("b");  // b sits in s1 but the map does not list it
  write_index(json{{"weight_map", m}}.dump());
  expect_open_error(StatusCode::kParseError, {"'b'", "s1.safetensors", "missing from weight_map"});
  m = good_map();
  m["d"] = "s2.safetensors";  // no such tensor anywhere
  write_index(json{{"weight_map", m}}.dump());
  expect_open_error(StatusCode::kParseError, {"'d'", "s2.safetensors"});
  m = good_map();
  m["c"] = "s3.safetensors";  // missing shard file
  write_index(json{{"weight_map", m}}.dump());
  expect_open_error(StatusCode::kNotFound, {"s3.safetensors"});
}

TEST_F(ShardedErrors, ShardNamesMustBePlainFileNames) {
  for (const char* shard : {"../s1.safetensors", "sub/s1.safetensors", "/tmp/s1.safetensors", "..", ".", ""}) {
    SCOPED_TRACE(shard);
    json m = good_map();
    m["a"] = shard;
    write_index(json{{"weight_map", m}}.dump());
    expect_open_error(StatusCode::kParseError, {shard, "plain file name"});
  }
}

TEST_F(ShardedErrors, BrokenShardIsReported) {
  write_index(json{{"weight_map", good_map()}}.dump());
  const std::string bytes = read_bytes(dir_ / "s2.safetensors");
  write_bytes(dir_ / "s2.safetensors", bytes.substr(0, bytes.size() - 1));
  expect_open_error(StatusCode::kParseError, {"s2.safetensors", "'c'"});
}

TEST(CheckpointErrors, MissingDirectoryOrFiles) {
  TempDir dir;
  expect_error([&] { Checkpoint::open(dir / "absent"); }, StatusCode::kNotFound, {"absent", "does not exist"});
  expect_error([&] { Checkpoint::open(dir.str()); }, StatusCode::kNotFound,
               {"neither model.safetensors nor model.safetensors.index.json"});
  // A file is not a checkpoint directory.
  write_bytes(dir / "file", "x");
  expect_error([&] { Checkpoint::open(dir / "file"); }, StatusCode::kNotFound, {"does not exist"});
  // Shards without an index are not picked up.
  float v[2] = {1, 2};
  save_safetensors(dir / "model-00001-of-00001.safetensors", {{"a", Tensor(v, DType::F32, {2})}});
  expect_error([&] { Checkpoint::open(dir.str()); }, StatusCode::kNotFound, {"neither"});
}

}  // namespace
}  // namespace dsv4
