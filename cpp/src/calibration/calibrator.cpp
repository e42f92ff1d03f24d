#include <mpq/calibration.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <shared_mutex>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <mpq/error.h>

#include "core/checks.h"

namespace mpq {
namespace {

constexpr const char* kFileKind = "mpq.calibration";
constexpr int64_t kFileVersion = 1;

// One layer's running sums; `mutex` serialises the additions from concurrent observe() calls.
struct Entry {
  std::mutex mutex;
  LayerStats sums;
};

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
  return fmt::format("CalibratorOptions(collect_xtx={}, accumulate_dtype={})",
                     collect_xtx ? "True" : "False", c10::toString(accumulate_dtype));
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
  const std::string name = "layer " + layer + " activations";
  MPQ_CHECK_VALUE(x.defined() && x.dim() >= 1, name, ": expected a tensor [..., in_features], got ",
                  detail::describe(x));
  detail::check_floating(x, name, x.dim());
  const int64_t in = x.size(-1);
  const at::Tensor rows = x.reshape({-1, in}).to(impl_->options.accumulate_dtype);

  // The per-batch partial sums are computed outside any lock; only the additions are serialised.
  at::Tensor sum_sq = rows.square().sum(0);
  MPQ_CHECK_VALUE(at::isfinite(sum_sq).all().item<bool>(), name,
                  ": contains NaN/Inf (or values whose squares overflow ",
                  c10::toString(rows.scalar_type()), ")");
  at::Tensor abs = rows.abs();
  at::Tensor sum_abs = abs.sum(0);
  at::Tensor max_abs = std::get<0>(abs.max(0));
  at::Tensor xtx = impl_->options.collect_xtx ? at::matmul(rows.t(), rows) : at::Tensor();

  Entry& entry = impl_->find_or_add(layer);
  std::lock_guard lock(entry.mutex);
  LayerStats& s = entry.sums;
  if (s.batches == 0) {
    s.sum_sq = sum_sq;
    s.sum_abs = sum_abs;
    s.max_abs = max_abs;
    s.xtx = xtx;
  } else {
    MPQ_CHECK_VALUE(s.in_features() == in, name, ": has ", in, " features, but earlier inputs of ",
                    layer, " had ", s.in_features());
    MPQ_CHECK_VALUE(s.sum_sq.device() == rows.device(), name, ": is on ", rows.device().str(),
                    ", but earlier inputs of ", layer, " were on ", s.sum_sq.device().str());
    s.sum_sq.add_(sum_sq);
    s.sum_abs.add_(sum_abs);
    s.max_abs = at::maximum(s.max_abs, max_abs);
    if (xtx.defined()) s.xtx.add_(xtx);
  }
  s.tokens += rows.size(0);
  s.batches += 1;
}

bool Calibrator::contains(const std::string& layer) const { return impl_->find(layer) != nullptr; }

LayerStats Calibrator::stats(const std::string& layer) const {
  Entry* e = impl_->find(layer);
  MPQ_CHECK_VALUE(e != nullptr, "Calibrator: no statistics for layer '", layer,
                  "' (it was never observed)");
  std::lock_guard lock(e->mutex);
  LayerStats out = e->sums;
  for (at::Tensor* t : {&out.xtx, &out.sum_sq, &out.sum_abs, &out.max_abs}) {
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

void Calibrator::save(const std::string& path) const {
  c10::impl::GenericDict layers(c10::StringType::get(), c10::AnyType::get());
  for (const std::string& name : this->layers()) {
    LayerStats s = stats(name);
    c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
    d.insert("sum_sq", s.sum_sq.cpu());
    d.insert("sum_abs", s.sum_abs.cpu());
    d.insert("max_abs", s.max_abs.cpu());
    if (s.xtx.defined()) d.insert("xtx", s.xtx.cpu());
    d.insert("tokens", s.tokens);
    d.insert("batches", s.batches);
    layers.insert(name, d);
  }
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  root.insert("kind", std::string(kFileKind));
  root.insert("version", kFileVersion);
  root.insert("collect_xtx", impl_->options.collect_xtx);
  root.insert("accumulate_dtype", std::string(c10::toString(impl_->options.accumulate_dtype)));
  root.insert("layers", layers);
  const std::vector<char> bytes = torch::jit::pickle_save(root);

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    MPQ_CHECK_IO(out.good(), "Calibrator.save: cannot open ", tmp, " for writing");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    MPQ_CHECK_IO(out.good(), "Calibrator.save: writing ", tmp, " failed (disk full?)");
  }
  MPQ_CHECK_IO(std::rename(tmp.c_str(), path.c_str()) == 0, "Calibrator.save: cannot rename ", tmp,
               " to ", path);
}

Calibrator Calibrator::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MPQ_CHECK_IO(in.good(), "Calibrator.load: cannot open ", path);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  c10::IValue root;
  try {
    root = torch::jit::pickle_load(bytes);
  } catch (const std::exception& e) {
    MPQ_CHECK_VALUE(false, "Calibrator.load: ", path, " is not a calibration file (",
                    c10::GetExceptionString(e).substr(0, 200), ")");
  }
  const std::string bad = "Calibrator.load: " + path + " is not an mpq calibration file: ";
  MPQ_CHECK_VALUE(root.isGenericDict(), bad, "the top level is not a dict");
  auto dict = root.toGenericDict();
  auto get = [&](const c10::impl::GenericDict& d, const std::string& key) {
    auto it = d.find(key);
    MPQ_CHECK_VALUE(it != d.end(), bad, "the key '", key, "' is missing");
    return it->value();
  };
  const c10::IValue kind = get(dict, "kind");
  MPQ_CHECK_VALUE(kind.isString() && kind.toStringRef() == kFileKind, bad, "wrong 'kind'");
  const c10::IValue version = get(dict, "version");
  MPQ_CHECK_VALUE(version.isInt() && version.toInt() == kFileVersion, bad, "unsupported version");

  CalibratorOptions options;
  const c10::IValue collect = get(dict, "collect_xtx"), dtype = get(dict, "accumulate_dtype");
  MPQ_CHECK_VALUE(collect.isBool() && dtype.isString(), bad, "malformed options");
  options.collect_xtx = collect.toBool();
  MPQ_CHECK_VALUE(dtype.toStringRef() == "Float" || dtype.toStringRef() == "Double", bad,
                  "accumulate_dtype '", dtype.toStringRef(), "'");
  options.accumulate_dtype = dtype.toStringRef() == "Float" ? at::kFloat : at::kDouble;
  Calibrator cal(options);

  const c10::IValue layers = get(dict, "layers");
  MPQ_CHECK_VALUE(layers.isGenericDict(), bad, "'layers' is not a dict");
  for (const auto& item : layers.toGenericDict()) {
    MPQ_CHECK_VALUE(item.key().isString() && item.value().isGenericDict(), bad, "malformed layer");
    const std::string name = item.key().toStringRef();
    const std::string where = bad + "layer " + name + ": ";
    auto d = item.value().toGenericDict();
    auto tensor = [&](const std::string& key, int64_t dims) {
      const c10::IValue v = get(d, key);
      MPQ_CHECK_VALUE(v.isTensor() && v.toTensor().dim() == dims &&
                          v.toTensor().scalar_type() == options.accumulate_dtype,
                      where, "'", key, "' must be a ", dims, "-D ",
                      c10::toString(options.accumulate_dtype), " tensor");
      return v.toTensor();
    };
    LayerStats s;
    s.sum_sq = tensor("sum_sq", 1);
    s.sum_abs = tensor("sum_abs", 1);
    s.max_abs = tensor("max_abs", 1);
    const int64_t in = s.sum_sq.size(0);
    MPQ_CHECK_VALUE(s.sum_abs.size(0) == in && s.max_abs.size(0) == in, where,
                    "per-column statistics differ in length");
    if (options.collect_xtx) {
      s.xtx = tensor("xtx", 2);
      MPQ_CHECK_VALUE(s.xtx.size(0) == in && s.xtx.size(1) == in, where, "xtx must be [", in, ", ",
                      in, "]");
    }
    const c10::IValue tokens = get(d, "tokens"), batches = get(d, "batches");
    MPQ_CHECK_VALUE(tokens.isInt() && batches.isInt() && tokens.toInt() > 0 && batches.toInt() > 0,
                    where, "tokens and batches must be positive integers");
    s.tokens = tokens.toInt();
    s.batches = batches.toInt();
    Entry& e = cal.impl_->find_or_add(name);
    e.sums = std::move(s);
  }
  return cal;
}

}  // namespace mpq
