// AWQ (mit-han-lab/llm-awq auto_scale.py / auto_clip.py; AutoAWQ's duo scaling), with each
// candidate judged by the layers' output error tr(ΔW H ΔWᵀ) over every calibration token.
#include <mpq/awq.h>

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mpq/error.h>

#include "experts/expert_util.h"

namespace mpq {
namespace {

// Columns sharing one quantization scale: the integer group, or the ggml block.
int64_t group_of(const Format& f, int64_t cols) {
  return f.group_size == 0 ? cols : std::min(f.group_size, cols);
}

// The dequantized RTN / llama.cpp reference quantization of w (float32, on w's device).
at::Tensor fake_quantize(const at::Tensor& w, const Format& f, std::string_view name) {
  return dequantize(quantize(w, f, std::nullopt, RtnOptions{}, name), at::kFloat).to(w.device());
}

// Per row and group: Σ_ij Δ_i H_ij Δ_j over the group's columns, i.e. each group's own share of
// the output error. d [rows, cols], h [cols, cols] -> [rows, groups].
at::Tensor group_errors(const at::Tensor& d, const at::Tensor& h, int64_t g) {
  const int64_t rows = d.size(0), cols = d.size(1), groups = (cols + g - 1) / g;
  const int64_t pad = groups * g - cols;
  at::Tensor dg = at::constant_pad_nd(d, {0, pad}, 0).view({rows, groups, g});
  at::Tensor hp = at::constant_pad_nd(h, {0, pad, 0, pad}, 0);
  std::vector<at::Tensor> blocks;  // the diagonal blocks of H, [groups, g, g]
  for (int64_t k = 0; k < groups; ++k) blocks.push_back(hp.narrow(0, k * g, g).narrow(1, k * g, g));
  const at::Tensor hb = at::stack(blocks, 0);
  return at::einsum("rki,kij,rkj->rk", {dg, hb, dg});
}

// The (row, group) clipping of w (already scaled) that minimises each group's output error.
at::Tensor clip_search(const at::Tensor& ws, const at::Tensor& s, const at::Tensor& h,
                       const Format& f, const AwqOptions& o, std::string_view name) {
  const int64_t rows = ws.size(0), cols = ws.size(1), g = group_of(f, cols);
  const int64_t groups = (cols + g - 1) / g, pad = groups * g - cols;
  auto per_column = [&](const at::Tensor& m) {  // [rows, groups] -> [rows, cols]
    return m.unsqueeze(-1).expand({rows, groups, g}).reshape({rows, groups * g}).narrow(1, 0, cols);
  };
  const at::Tensor org_max =
      at::constant_pad_nd(ws.abs(), {0, pad}, 0).view({rows, groups, g}).amax(-1);
  at::Tensor best_max = org_max.clone();
  at::Tensor best_err = at::full_like(org_max, INFINITY);
  for (int i = 0; static_cast<double>(i) / o.clip_grid < o.max_shrink; ++i) {
    const at::Tensor max = per_column(org_max * (1.0 - static_cast<double>(i) / o.clip_grid));
    const at::Tensor clipped = at::minimum(at::maximum(ws, -max), max);
    const at::Tensor d = (ws - fake_quantize(clipped, f, name)) / s;
    const at::Tensor err = group_errors(d, h, g);
    const at::Tensor better = err < best_err;
    best_err = at::where(better, err, best_err);
    best_max = at::where(better, org_max * (1.0 - static_cast<double>(i) / o.clip_grid), best_max);
  }
  const at::Tensor max = per_column(best_max);
  return at::minimum(at::maximum(ws, -max), max);
}

}  // namespace

void AwqOptions::validate() const {
  MPQ_CHECK_VALUE(grid >= 1, "AwqOptions: grid must be >= 1, got ", grid);
  MPQ_CHECK_VALUE(clip_grid >= 1, "AwqOptions: clip_grid must be >= 1, got ", clip_grid);
  MPQ_CHECK_VALUE(max_shrink > 0 && max_shrink < 1, "AwqOptions: max_shrink must be in (0, 1), got ",
                  max_shrink);
}

std::string AwqOptions::to_string() const {
  return fmt::format("AwqOptions(grid={}, duo_scaling={}, clip={}, clip_grid={}, max_shrink={}, "
                     "no_clip=[{}])",
                     grid, duo_scaling ? "True" : "False", clip ? "True" : "False", clip_grid,
                     max_shrink, fmt::join(no_clip, ", "));
}

at::Tensor AwqExpert::input_scale(const std::vector<ExpertLayer>& layers,
                                  const LayerStats* stats) const {
  detail::check_stats(layers, stats, name(), /*need_xtx=*/true);
  const at::Device dev = layers[0].weight.device();
  const at::Tensor h = stats->hessian().to(dev, at::kFloat);
  const int64_t cols = layers[0].weight.size(1);
  std::vector<at::Tensor> w;
  for (const ExpertLayer& l : layers) w.push_back(l.weight.to(at::kFloat));

  // Total output error of the group for input scale s.
  auto error_for = [&](const at::Tensor& s) {
    double total = 0;
    for (size_t k = 0; k < layers.size(); ++k) {
      const at::Tensor q = fake_quantize(w[k] * s, layers[k].format, layers[k].name) / s;
      total += output_error(w[k], q, h);
    }
    return total;
  };

  const at::Tensor x_mean = stats->mean_abs().to(dev, at::kFloat);
  // AutoAWQ's w_mean: |W| normalised by its group's max, averaged over every row of the group.
  const int64_t g = group_of(layers[0].format, cols);
  const int64_t groups = (cols + g - 1) / g, pad = groups * g - cols;
  at::Tensor wa = at::constant_pad_nd(at::cat(w, 0).abs(), {0, pad}, 0).view({-1, groups, g});
  wa = wa / wa.amax(-1, true).clamp_min(1e-12);
  const at::Tensor w_mean = wa.reshape({wa.size(0), groups * g}).narrow(1, 0, cols).mean(0);
  at::Tensor best_s = at::ones({cols}, w[0].options());
  double best_err = error_for(best_s);  // the unscaled baseline: AWQ never does worse
  for (int i = 0; i < options_.grid; ++i) {
    const double ratio = static_cast<double>(i) / options_.grid;
    at::Tensor s = options_.duo_scaling ? x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)
                                        : x_mean.pow(ratio);
    s = s.clamp_min(1e-4);
    s = s / (s.max() * s.min()).sqrt();
    const double err = error_for(s);
    if (err < best_err) best_err = err, best_s = s;
  }
  return best_s;
}

std::vector<ExpertResult> AwqExpert::quantize(const std::vector<ExpertLayer>& layers,
                                              const LayerStats* stats, bool can_scale) const {
  detail::check_stats(layers, stats, name(), /*need_xtx=*/true);
  const at::Device dev = layers[0].weight.device();
  const at::Tensor h = stats->hessian().to(dev, at::kFloat);
  const at::Tensor s = can_scale ? input_scale(layers, stats)
                                 : at::ones({layers[0].weight.size(1)},
                                            layers[0].weight.options().dtype(at::kFloat));
  std::vector<ExpertResult> out;
  for (size_t k = 0; k < layers.size(); ++k) {
    const ExpertLayer& l = layers[k];
    at::Tensor ws = l.weight.to(at::kFloat) * s;
    const bool skip = std::any_of(options_.no_clip.begin(), options_.no_clip.end(),
                                  [&](const std::string& suffix) {
                                    return l.name.size() >= suffix.size() &&
                                           l.name.compare(l.name.size() - suffix.size(),
                                                          suffix.size(), suffix) == 0;
                                  });
    if (options_.clip && !skip) ws = clip_search(ws, s, h, l.format, options_, l.name);
    ExpertResult r;
    r.name = l.name;
    r.quantized = mpq::quantize(ws, l.format, std::nullopt, RtnOptions{}, l.name);
    r.quantized.dtype = l.weight.scalar_type();
    if (can_scale) r.input_scale = s;
    fill_errors(r, l.weight, h);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace mpq
