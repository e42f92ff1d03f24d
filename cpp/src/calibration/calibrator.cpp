#include <mpq/calibration.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <memory>
#include <shared_mutex>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <mpq/error.h>

#include "core/byte_io.h"
#include "core/checks.h"
#include "core/untrusted.h"

namespace mpq {
namespace {

constexpr char kMagic[6] = {'M', 'P', 'Q', 'C', 'A', 'L'};
// 2 added collect_abs (1 is read as collect_abs=True); 3 aligns every array to kAlign bytes.
constexpr uint32_t kFileVersion = 3;
constexpr uint64_t kAlign = 64;

// One layer's running sums; `mutex` serialises the additions from concurrent observe() calls.
struct Entry {
  std::mutex mutex;
  LayerStats sums;
};

// XᵀX of `rows` [tokens, n]. On the CPU a wide input gets a blocked symmetric product: only the
// blocks on and above the diagonal are multiplied and the others mirrored (ATen has no syrk), 10
// of 16 block products for 4 blocks. On this repository's 2-core CPU, 2048 rows of SmolLM2's
// 1536-wide ffn_down input take 50 ms instead of 84; below 768 columns the blocks gain nothing.
at::Tensor gram(const at::Tensor& rows) {
  const int64_t n = rows.size(1);
  const int64_t k = rows.is_cpu() ? std::clamp<int64_t>(n / 384, 1, 4) : 1;
  if (k < 2) return at::matmul(rows.t(), rows);
  at::Tensor out = at::empty({n, n}, rows.options());
  std::vector<int64_t> edge(k + 1);
  for (int64_t i = 0; i <= k; ++i) edge[i] = n * i / k;
  auto block = [&](const at::Tensor& t, int64_t i, int64_t j) {
    return t.slice(0, edge[i], edge[i + 1]).slice(1, edge[j], edge[j + 1]);
  };
  for (int64_t i = 0; i < k; ++i) {
    const at::Tensor xi = rows.slice(1, edge[i], edge[i + 1]);
    for (int64_t j = i; j < k; ++j) {
      const at::Tensor b = at::matmul(xi.t(), rows.slice(1, edge[j], edge[j + 1]));
      block(out, i, j).copy_(b);
      if (j > i) block(out, j, i).copy_(b.t());
    }
  }
  return out;
}

}  // namespace

struct Calibrator::Impl {
  CalibratorOptions options;
  mutable std::shared_mutex map_mutex;  // guards `entries` and `order`, not the sums inside
  std::map<std::string, std::unique_ptr<Entry>> entries;
  std::vector<std::string> order;

  Entry* find(const std::string& layer) const {
    std::shared_lock lock(map_mutex);
    auto it = entries.find(layer);
    return it == entries.end() ? nullptr : it->second.get();
  }
  Entry& find_or_add(const std::string& layer) {
    if (Entry* e = find(layer)) return *e;
    std::unique_lock lock(map_mutex);
    auto [it, inserted] = entries.try_emplace(layer, nullptr);
    if (inserted) {
      it->second = std::make_unique<Entry>();
      order.push_back(layer);
    }
    return *it->second;
  }
};

void CalibratorOptions::validate() const {
  MPQ_CHECK_VALUE(accumulate_dtype == at::kFloat || accumulate_dtype == at::kDouble,
                  "CalibratorOptions: accumulate_dtype must be float32 or float64, got ",
                  c10::toString(accumulate_dtype));
}

std::string CalibratorOptions::to_string() const {
  return fmt::format("CalibratorOptions(collect_xtx={}, collect_abs={}, accumulate_dtype={})",
                     collect_xtx ? "True" : "False", collect_abs ? "True" : "False",
                     c10::toString(accumulate_dtype));
}

at::Tensor LayerStats::hessian() const {
  MPQ_CHECK_VALUE(xtx.defined(), "LayerStats.hessian: XᵀX was not collected (collect_xtx=False)");
  MPQ_CHECK_VALUE(tokens > 0, "LayerStats.hessian: no tokens observed");
  return xtx * (2.0 / static_cast<double>(tokens));
}

at::Tensor LayerStats::mean_sq() const {
  MPQ_CHECK_VALUE(tokens > 0, "LayerStats.mean_sq: no tokens observed");
  return sum_sq / static_cast<double>(tokens);
}

at::Tensor LayerStats::mean_abs() const {
  MPQ_CHECK_VALUE(sum_abs.defined(), "LayerStats.mean_abs: Σ|x| was not collected (collect_abs=False)");
  MPQ_CHECK_VALUE(tokens > 0, "LayerStats.mean_abs: no tokens observed");
  return sum_abs / static_cast<double>(tokens);
}

Calibrator::Calibrator(CalibratorOptions options) : impl_(std::make_unique<Impl>()) {
  options.validate();
  impl_->options = options;
}
Calibrator::~Calibrator() = default;
Calibrator::Calibrator(Calibrator&&) noexcept = default;
Calibrator& Calibrator::operator=(Calibrator&&) noexcept = default;

void Calibrator::observe(const std::string& layer, const at::Tensor& x) {
  observe(std::vector<std::string>{layer}, x);
}

void Calibrator::observe(const std::vector<std::string>& layers, const at::Tensor& x) {
  MPQ_CHECK_VALUE(!layers.empty(), "Calibrator.observe: no layer names given");
  for (size_t i = 0; i < layers.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      MPQ_CHECK_VALUE(layers[i] != layers[j], "Calibrator.observe: layer ", layers[i],
                      " named twice in one observation");
    }
  }
  const std::string& first = layers.front();
  const std::string name = "layer " + first + " activations";
  MPQ_CHECK_VALUE(x.defined() && x.dim() >= 1, name, ": expected a tensor [..., in_features], got ",
                  detail::describe(x));
  detail::check_floating(x, name, x.dim());
  const int64_t in = x.size(-1);
  const CalibratorOptions& o = impl_->options;
  const at::Tensor rows = x.reshape({-1, in}).to(o.accumulate_dtype);

  // The per-batch partial sums are computed once, outside any lock; only the additions are
  // serialised. max|x| is the infinity norm of each column and Σ|x| its 1-norm: one reduction
  // each, without the |x| temporary of the size of the input.
  at::Tensor sum_sq = rows.square().sum(0);
  MPQ_CHECK_VALUE(at::isfinite(sum_sq).all().item<bool>(), name,
                  ": contains NaN/Inf (or values whose squares overflow ",
                  c10::toString(rows.scalar_type()), ")");
  at::Tensor sum_abs, max_abs;
  if (o.collect_abs) {
    sum_abs = at::linalg_vector_norm(rows, 1, {0});
    max_abs = at::linalg_vector_norm(rows, std::numeric_limits<double>::infinity(), {0});
  }
  at::Tensor xtx = o.collect_xtx ? gram(rows) : at::Tensor();
  const bool imatrix_batch = rows.size(0) >= kImatrixMinRows;

  for (size_t i = 0; i < layers.size(); ++i) {
    // The first observation of a layer keeps the partial sums as its accumulators; layers that
    // share this batch need their own copies.
    const bool last = i + 1 == layers.size();
    auto own = [&](const at::Tensor& t) { return !t.defined() || last ? t : t.clone(); };
    Entry& entry = impl_->find_or_add(layers[i]);
    std::lock_guard lock(entry.mutex);
    LayerStats& s = entry.sums;
    const std::string where = "layer " + layers[i] + " activations";
    if (s.batches == 0) {
      s.sum_sq = own(sum_sq);
      s.sum_abs = own(sum_abs);
      s.max_abs = own(max_abs);
      s.xtx = own(xtx);
      s.imatrix_sum_sq = imatrix_batch ? sum_sq.clone() : at::zeros_like(sum_sq);
    } else {
      MPQ_CHECK_VALUE(s.in_features() == in, where, ": has ", in, " features, but earlier inputs of ",
                      layers[i], " had ", s.in_features());
      MPQ_CHECK_VALUE(s.sum_sq.device() == rows.device(), where, ": is on ", rows.device().str(),
                      ", but earlier inputs of ", layers[i], " were on ", s.sum_sq.device().str());
      s.sum_sq.add_(sum_sq);
      if (sum_abs.defined()) {
        s.sum_abs.add_(sum_abs);
        s.max_abs = at::maximum(s.max_abs, max_abs);
      }
      if (xtx.defined()) s.xtx.add_(xtx);
      if (imatrix_batch) s.imatrix_sum_sq.add_(sum_sq);
    }
    if (imatrix_batch) s.imatrix_tokens += rows.size(0);
    s.tokens += rows.size(0);
    s.batches += 1;
  }
}

bool Calibrator::contains(const std::string& layer) const { return impl_->find(layer) != nullptr; }

LayerStats Calibrator::stats(const std::string& layer) const {
  Entry* e = impl_->find(layer);
  MPQ_CHECK_VALUE(e != nullptr, "Calibrator: no statistics for layer '", layer,
                  "' (it was never observed)");
  std::lock_guard lock(e->mutex);
  LayerStats out = e->sums;
  for (at::Tensor* t : {&out.xtx, &out.sum_sq, &out.sum_abs, &out.max_abs, &out.imatrix_sum_sq}) {
    if (t->defined()) *t = t->clone();
  }
  return out;
}

std::vector<std::string> Calibrator::layers() const {
  std::shared_lock lock(impl_->map_mutex);
  return impl_->order;
}

void Calibrator::clear() {
  std::unique_lock lock(impl_->map_mutex);
  impl_->entries.clear();
  impl_->order.clear();
}

const CalibratorOptions& Calibrator::options() const { return impl_->options; }

// File layout (little-endian): magic "MPQCAL", u32 version, u8 collect_xtx, u8 dtype (0 float32,
// 1 float64), u8 collect_abs (version 2 only; version 1 files hold Σ|x| and max|x|), u64 layer
// count; per layer: u64-length name, u64 in_features, i64 tokens, i64 batches, i64
// imatrix_tokens, then sum_sq, sum_abs and max_abs (if collected), imatrix_sum_sq [in] and, if
// collected, xtx [in * in]; from version 3 each array starts at a multiple of kAlign bytes (zero
// padding before it), so that load() can leave the arrays in the mapped file.
void Calibrator::save(const std::string& path) const {
  // Streamed layer by layer: the statistics of a large model are as large as the memory left
  // (a 1.5B model's XᵀX sums: 10 GB), so they are never gathered into one buffer.
  detail::TempFile file(path, "Calibrator.save");
  auto flush = [&file](detail::ByteWriter& w) {
    file.write(w.bytes().data(), w.bytes().size());
    w = detail::ByteWriter();
  };
  uint64_t written = 0;
  auto flush_counted = [&](detail::ByteWriter& w) {
    written += w.bytes().size();
    flush(w);
  };
  detail::ByteWriter w;
  w.write_bytes(kMagic, sizeof(kMagic));
  w.write<uint32_t>(kFileVersion);
  w.write<uint8_t>(impl_->options.collect_xtx);
  w.write<uint8_t>(impl_->options.accumulate_dtype == at::kDouble);
  w.write<uint8_t>(impl_->options.collect_abs);
  const std::vector<std::string> names = layers();
  w.write<uint64_t>(names.size());
  for (const std::string& name : names) {
    const LayerStats s = stats(name);
    w.write_string(name);
    w.write<uint64_t>(s.in_features());
    w.write<int64_t>(s.tokens);
    w.write<int64_t>(s.batches);
    w.write<int64_t>(s.imatrix_tokens);
    flush_counted(w);
    for (const at::Tensor& t : {s.sum_sq, s.sum_abs, s.max_abs, s.imatrix_sum_sq, s.xtx}) {
      if (!t.defined()) continue;
      const at::Tensor c = t.cpu().contiguous();
      const uint64_t pad = (kAlign - written % kAlign) % kAlign;
      file.write_zeros(pad);
      file.write(c.data_ptr(), c.nbytes());
      written += pad + c.nbytes();
    }
  }
  file.commit();
}

Calibrator Calibrator::load(const std::string& path) {
  // The mapping lives as long as any tensor that points into it (version 3 files).
  const auto bytes = std::make_shared<detail::MappedFile>(path, "Calibrator.load");
  detail::ByteReader r(bytes->data(), bytes->size(), "Calibrator.load: " + path);
  char magic[sizeof(kMagic)];
  r.read_bytes(magic, sizeof(magic));
  MPQ_CHECK_VALUE(std::memcmp(magic, kMagic, sizeof(kMagic)) == 0, r.what(),
                  ": not an mpq calibration file (bad magic)");
  const auto version = r.read<uint32_t>();
  MPQ_CHECK_VALUE(version >= 1 && version <= kFileVersion, r.what(), ": unsupported version ",
                  version);
  CalibratorOptions options;
  const auto collect = r.read<uint8_t>(), dtype = r.read<uint8_t>();
  const auto abs = version >= 2 ? r.read<uint8_t>() : uint8_t{1};
  MPQ_CHECK_VALUE(collect <= 1 && dtype <= 1 && abs <= 1, r.what(), ": corrupt header");
  options.collect_xtx = collect == 1;
  options.collect_abs = abs == 1;
  options.accumulate_dtype = dtype == 1 ? at::kDouble : at::kFloat;
  const uint64_t elem = dtype == 1 ? 8 : 4;
  Calibrator cal(options);

  // Per layer at least a name length, in_features, three counts and two one-element vectors.
  const auto count = r.read<uint64_t>();
  detail::check_count_fits(count, 8 * 5 + 2 * elem, r.remaining(), r.what() + ": layer count");
  for (uint64_t i = 0; i < count; ++i) {
    const std::string name = r.read_string(4096);
    detail::check_utf8(name, "layer name", r.what() + ": layer " + std::to_string(i));
    const std::string where = r.what() + ": layer '" + name + "'";
    const auto in = r.read<uint64_t>();
    const auto tokens = r.read<int64_t>(), batches = r.read<int64_t>();
    const auto imatrix_tokens = r.read<int64_t>();
    MPQ_CHECK_VALUE(in > 0 && tokens > 0 && batches > 0 && imatrix_tokens >= 0 &&
                        imatrix_tokens <= tokens,
                    where, ": invalid size or count (in_features ", in, ", tokens ", tokens,
                    ", batches ", batches, ", imatrix_tokens ", imatrix_tokens, ")");
    // Size check before any allocation: the arrays must fit in what is left of the file.
    const uint64_t square = options.collect_xtx ? detail::checked_mul(in, in, where + ": XᵀX size") : 0;
    const uint64_t vectors = options.collect_abs ? 4 : 2;
    const uint64_t values = detail::checked_add(detail::checked_mul(vectors, in, where), square, where);
    detail::check_count_fits(values, elem, r.remaining(), where + ": statistics of " +
                             std::to_string(in) + " input features");
    auto read_tensor = [&](std::vector<int64_t> shape, const char* what, bool non_negative) {
      const auto dtype = at::TensorOptions().dtype(options.accumulate_dtype);
      at::Tensor t;
      if (version >= 3) {
        // Left in the file: its pages are read as they are used and can be dropped again, so
        // the statistics need not fit in memory beside the model. The mapping is private and
        // writable: observe() after load() adds to copies of the pages it touches, never to
        // the file.
        r.read_bytes(nullptr, (kAlign - r.position() % kAlign) % kAlign);
        const char* at = bytes->data() + r.position();
        uint64_t n = elem;
        for (int64_t d : shape) n *= static_cast<uint64_t>(d);
        r.read_bytes(nullptr, n);
        t = at::from_blob(const_cast<char*>(at), shape, [keep = bytes](void*) {}, dtype);
      } else {
        t = at::empty(shape, dtype);
        r.read_bytes(t.data_ptr(), t.nbytes());
      }
      // Sums of squares and absolute values, maxima of absolute values: finite (and >= 0).
      const bool ok = at::isfinite(t).all().item<bool>() &&
                      (!non_negative || t.min().item<double>() >= 0);
      MPQ_CHECK_VALUE(ok, where, ": ", what, " holds ", non_negative ? "negative, " : "",
                      "NaN or Inf values");
      return t;
    };
    const auto n = static_cast<int64_t>(in);
    LayerStats s;
    s.sum_sq = read_tensor({n}, "sum_sq", true);
    if (options.collect_abs) {
      s.sum_abs = read_tensor({n}, "sum_abs", true);
      s.max_abs = read_tensor({n}, "max_abs", true);
    }
    s.imatrix_sum_sq = read_tensor({n}, "imatrix_sum_sq", true);
    s.imatrix_tokens = imatrix_tokens;
    if (options.collect_xtx) s.xtx = read_tensor({n, n}, "xtx", false);
    s.tokens = tokens;
    s.batches = batches;
    MPQ_CHECK_VALUE(!cal.contains(name), where, " appears twice");
    cal.impl_->find_or_add(name).sums = std::move(s);
  }
  MPQ_CHECK_VALUE(r.remaining() == 0, r.what(), ": ", r.remaining(), " unexpected bytes after the last layer");
  return cal;
}

}  // namespace mpq
