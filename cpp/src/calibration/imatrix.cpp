#include <mpq/imatrix.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include <ATen/ATen.h>

#include <mpq/error.h>
#include <mpq/gguf.h>

#include "core/byte_io.h"
#include "ggml/ggml_types.h"

namespace mpq {
namespace {

constexpr uint32_t kF32 = static_cast<uint32_t>(detail::ggml::Type::F32);

int32_t calls_for(int64_t count, int32_t chunk_size) {
  // llama-imatrix's legacy writer: ceiling division, so no entry gets zero calls.
  const int64_t chunk = std::max<int32_t>(chunk_size, 1);
  return static_cast<int32_t>((count + chunk - 1) / chunk);
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
    const auto ncall = r.read<int32_t>();
    const auto nval = r.read<int32_t>();
    MPQ_CHECK_VALUE(ncall >= 0 && nval > 0 && static_cast<uint64_t>(nval) * 4 <= r.remaining(),
                    r.what(), ": entry '", name, "' is corrupt (ncall ", ncall, ", nval ", nval, ")");
    ImatrixEntry e;
    e.in_sum2.resize(nval);
    r.read_bytes(e.in_sum2.data(), 4ull * nval);
    // Legacy files store (Σx²/tokens)·ncall: with count = ncall, in_sum2 / count is the mean again.
    e.count = ncall;
    MPQ_CHECK_VALUE(m.entries.emplace(name, std::move(e)).second, r.what(), ": duplicate entry '",
                    name, "'");
  }
  // Optional trailer: the chunk count, then the dataset name.
  if (r.remaining() >= 4) {
    m.chunk_count = r.read<int32_t>();
    if (r.remaining() >= 4) {
      const auto len = r.read<int32_t>();
      MPQ_CHECK_VALUE(len >= 0 && static_cast<uint64_t>(len) <= r.remaining(), r.what(),
                      ": corrupt dataset name");
      std::string dataset(len, '\0');
      r.read_bytes(dataset.data(), len);
      if (!dataset.empty()) m.datasets.push_back(dataset);
    }
  }
  return m;
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
    for (const gguf::Value& v : d->as_array().items) m.datasets.push_back(v.as_string());
  }
  if (const gguf::Value* v = reader.find("imatrix.chunk_count")) m.chunk_count = static_cast<int32_t>(v->as_int());
  if (const gguf::Value* v = reader.find("imatrix.chunk_size")) m.chunk_size = static_cast<int32_t>(v->as_int());

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
    e.in_sum2.resize(t.numel());
    reader.read_into(t, e.in_sum2.data());
    float count = 0;
    reader.read_into(counts, &count);
    MPQ_CHECK_VALUE(std::isfinite(count) && count >= 0, what, ": ", name, " has count ", count);
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
  gguf::Array sets;
  sets.type = gguf::ValueType::kString;
  for (const std::string& d : datasets) sets.items.push_back(gguf::Value{d});
  w.set("imatrix.datasets", gguf::Value{sets});
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
    const int32_t ncall = calls_for(e.count, chunk_size);
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
