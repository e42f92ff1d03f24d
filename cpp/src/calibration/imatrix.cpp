#include <mpq/imatrix.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <ATen/ATen.h>

#include <mpq/error.h>
#include <mpq/gguf.h>

#include "core/byte_io.h"
#include "core/untrusted.h"
#include "ggml/ggml_types.h"

namespace mpq {
namespace {

constexpr uint32_t kF32 = static_cast<uint32_t>(detail::ggml::Type::F32);

int32_t calls_for(int64_t count, int32_t chunk_size, const std::string& name) {
  // llama-imatrix's legacy writer: ceiling division, so no entry gets zero calls.
  const int64_t chunk = std::max<int32_t>(chunk_size, 1);
  return detail::checked_range<int32_t>(count / chunk + (count % chunk != 0), 0,
                                        std::numeric_limits<int32_t>::max(),
                                        "imatrix.save_legacy: " + name + ": call count");
}

// Σx² is a sum of squares: finite and >= 0 (NaN would make every importance weight NaN later).
void check_sums(const std::vector<float>& in_sum2, const std::string& what) {
  for (size_t i = 0; i < in_sum2.size(); ++i) {
    MPQ_CHECK_VALUE(std::isfinite(in_sum2[i]) && in_sum2[i] >= 0, what, ": in_sum2[", i, "] = ",
                    in_sum2[i], " (must be finite and >= 0)");
  }
}

bool starts_with_gguf_magic(const std::vector<char>& bytes) {
  return bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0;
}

Imatrix load_legacy(const std::string& path, const std::vector<char>& bytes) {
  detail::ByteReader r(bytes, "imatrix " + path);
  Imatrix m;
  const auto n = r.read<int32_t>();
  MPQ_CHECK_VALUE(n >= 0 && static_cast<uint64_t>(n) <= r.remaining() / 12, r.what(),
                  ": not an imatrix file (", n, " entries)");
  for (int32_t i = 0; i < n; ++i) {
    const auto len = r.read<int32_t>();
    MPQ_CHECK_VALUE(len > 0 && len <= 4096, r.what(), ": entry ", i, " has name length ", len);
    std::string name(len, '\0');
    r.read_bytes(name.data(), len);
    detail::check_utf8(name, "tensor name", r.what() + ": entry " + std::to_string(i));
    const auto ncall = r.read<int32_t>();
    const auto nval = r.read<int32_t>();
    MPQ_CHECK_VALUE(ncall >= 0 && nval > 0 && static_cast<uint64_t>(nval) * 4 <= r.remaining(),
                    r.what(), ": entry '", name, "' is corrupt (ncall ", ncall, ", nval ", nval, ")");
    ImatrixEntry e;
    e.in_sum2.resize(nval);
    r.read_bytes(e.in_sum2.data(), 4ull * nval);
    check_sums(e.in_sum2, r.what() + ": entry '" + name + "'");
    // Legacy files store (Σx²/tokens)·ncall: with count = ncall, in_sum2 / count is the mean again.
    e.count = ncall;
    MPQ_CHECK_VALUE(m.entries.emplace(name, std::move(e)).second, r.what(), ": duplicate entry '",
                    name, "'");
  }
  // Optional trailer: the chunk count, then the dataset name.
  if (r.remaining() >= 4) {
    m.chunk_count = r.read<int32_t>();
    MPQ_CHECK_VALUE(m.chunk_count >= 0, r.what(), ": chunk count ", m.chunk_count, " is negative");
    if (r.remaining() >= 4) {
      const auto len = r.read<int32_t>();
      MPQ_CHECK_VALUE(len >= 0 && static_cast<uint64_t>(len) <= r.remaining(), r.what(),
                      ": corrupt dataset name (length ", len, ", ", r.remaining(), " bytes left)");
      std::string dataset(len, '\0');
      r.read_bytes(dataset.data(), len);
      detail::check_utf8(dataset, "dataset name", r.what());
      if (!dataset.empty()) m.datasets.push_back(dataset);
    }
  }
  return m;
}

// The integer key `key` in [0, INT32_MAX], when present.
void read_count_key(const gguf::Reader& reader, const std::string& key, const std::string& what,
                    int32_t& out) {
  const gguf::Value* v = reader.find(key);
  if (!v) return;
  const gguf::ValueType t = v->type();
  MPQ_CHECK_VALUE(t != gguf::ValueType::kString && t != gguf::ValueType::kArray &&
                      t != gguf::ValueType::kFloat32 && t != gguf::ValueType::kFloat64 &&
                      t != gguf::ValueType::kBool,
                  what, ": ", key, " must be an integer, not a ", gguf::to_string(t));
  const bool huge = t == gguf::ValueType::kUint64 && std::get<uint64_t>(v->v) > INT32_MAX;
  out = detail::checked_range<int32_t>(huge ? int64_t{-1} : v->as_int(), 0, INT32_MAX,
                                       what + ": " + key);
}

Imatrix load_gguf(const std::string& path) {
  gguf::Reader reader(path);
  Imatrix m;
  const std::string what = "imatrix " + path;
  if (const gguf::Value* t = reader.find("general.type")) {
    MPQ_CHECK_VALUE(t->type() == gguf::ValueType::kString && t->as_string() == "imatrix", what,
                    ": general.type is not 'imatrix' (is this a model file?)");
  }
  if (const gguf::Value* d = reader.find("imatrix.datasets")) {
    MPQ_CHECK_VALUE(d->type() == gguf::ValueType::kArray &&
                        d->as_array().type() == gguf::ValueType::kString,
                    what, ": imatrix.datasets must be an array of strings");
    for (const std::string& name : d->as_array().as<std::string>()) {
      detail::check_utf8(name, "dataset name", what + ": imatrix.datasets");
      m.datasets.push_back(name);
    }
  }
  read_count_key(reader, "imatrix.chunk_count", what, m.chunk_count);
  read_count_key(reader, "imatrix.chunk_size", what, m.chunk_size);

  const std::string suffix = ".in_sum2";
  for (const gguf::TensorInfo& t : reader.tensors()) {
    if (t.name.size() <= suffix.size() || !t.name.ends_with(suffix)) continue;
    const std::string name = t.name.substr(0, t.name.size() - suffix.size());
    const gguf::TensorInfo& counts = reader.tensor(name + ".counts");
    MPQ_CHECK_VALUE(t.type == kF32 && counts.type == kF32, what, ": ", name,
                    " statistics must be F32 tensors");
    // One matrix per entry; MoE experts (several counts) are not supported yet.
    MPQ_CHECK_VALUE(counts.numel() == 1, what, ": ", name, " has ", counts.numel(),
                    " counts (per-expert statistics of MoE models are not supported)");
    ImatrixEntry e;
    e.in_sum2.resize(t.numel());  // the reader checked that its bytes lie inside the file
    reader.read_into(t, e.in_sum2.data());
    check_sums(e.in_sum2, what + ": " + t.name);
    float count = 0;
    reader.read_into(counts, &count);
    // A token count stored as float32: a whole number that float32 holds exactly.
    constexpr float kMaxCount = 16777216.0f * 16777216.0f;  // 2^48 tokens: far beyond any run
    MPQ_CHECK_VALUE(std::isfinite(count) && count >= 0 && count <= kMaxCount &&
                        count == std::floor(count),
                    what, ": ", name, ".counts is ", count,
                    " (a token count must be a whole number in [0, 2^48])");
    e.count = static_cast<int64_t>(count);
    m.entries.emplace(name, std::move(e));
  }
  return m;
}

}  // namespace

std::vector<float> Imatrix::importance(const std::string& tensor) const {
  auto it = entries.find(tensor);
  MPQ_CHECK_VALUE(it != entries.end(), "imatrix: no entry for tensor '", tensor, "'");
  const ImatrixEntry& e = it->second;
  std::vector<float> w(e.in_sum2.size(), 1.0f);
  if (e.count > 0) {
    const float count = static_cast<float>(e.count);
    for (size_t i = 0; i < w.size(); ++i) w[i] = e.in_sum2[i] / count;
  }
  return w;
}

Imatrix Imatrix::from_calibrator(const Calibrator& calibrator, int32_t chunk_size,
                                 std::vector<std::string> datasets, bool include_output) {
  MPQ_CHECK_VALUE(chunk_size > 0, "imatrix: chunk_size must be positive, got ", chunk_size);
  Imatrix m;
  m.chunk_size = chunk_size;
  m.datasets = std::move(datasets);
  int64_t max_count = 0;
  for (const std::string& layer : calibrator.layers()) {
    if (!(layer.starts_with("blk.") || (include_output && layer == "output"))) continue;
    const LayerStats s = calibrator.stats(layer);
    if (s.imatrix_tokens == 0) continue;
    const at::Tensor sums = s.imatrix_sum_sq.to(at::kFloat).cpu().contiguous();
    ImatrixEntry e;
    e.in_sum2.assign(sums.data_ptr<float>(), sums.data_ptr<float>() + sums.numel());
    e.count = s.imatrix_tokens;
    max_count = std::max(max_count, e.count);
    m.entries.emplace(layer + ".weight", std::move(e));
  }
  m.chunk_count = static_cast<int32_t>(max_count / chunk_size);
  return m;
}

void Imatrix::save(const std::string& path) const {
  gguf::Writer w(path);
  w.set("general.type", gguf::Value{std::string("imatrix")});
  w.set("imatrix.datasets", gguf::Value{gguf::Array{datasets}});
  w.set("imatrix.chunk_count", gguf::Value{static_cast<uint32_t>(chunk_count)});
  w.set("imatrix.chunk_size", gguf::Value{static_cast<uint32_t>(chunk_size)});
  for (const auto& [name, e] : entries) {
    w.add_tensor(name + ".in_sum2", {static_cast<int64_t>(e.in_sum2.size()), 1}, kF32);
    w.add_tensor(name + ".counts", {1, 1}, kF32);
  }
  for (const auto& [name, e] : entries) {
    w.write_tensor(name + ".in_sum2", e.in_sum2.data(), 4 * e.in_sum2.size());
    const float count = static_cast<float>(e.count);
    w.write_tensor(name + ".counts", &count, 4);
  }
  w.finish();
}

void Imatrix::save_legacy(const std::string& path) const {
  detail::ByteWriter w;
  w.write<int32_t>(static_cast<int32_t>(entries.size()));
  for (const auto& [name, e] : entries) {  // std::map: sorted names, as llama-imatrix writes them
    w.write<int32_t>(static_cast<int32_t>(name.size()));
    w.write_bytes(name.data(), name.size());
    const int32_t ncall = calls_for(e.count, chunk_size, name);
    w.write<int32_t>(ncall);
    w.write<int32_t>(static_cast<int32_t>(e.in_sum2.size()));
    for (float v : e.in_sum2) {
      const float count = static_cast<float>(e.count);
      const float stored = count == 0.0f ? static_cast<float>(ncall) : (v / count) * static_cast<float>(ncall);
      w.write<float>(stored);
    }
  }
  w.write<int32_t>(chunk_count);
  const std::string dataset = datasets.empty() ? std::string() : datasets.back();
  w.write<int32_t>(static_cast<int32_t>(dataset.size()));
  w.write_bytes(dataset.data(), dataset.size());
  detail::write_file_atomic(path, w.bytes(), "imatrix.save_legacy");
}

Imatrix Imatrix::load(const std::string& path) {
  const std::vector<char> bytes = detail::read_file(path, "imatrix.load");
  return starts_with_gguf_magic(bytes) ? load_gguf(path) : load_legacy(path, bytes);
}

}  // namespace mpq
