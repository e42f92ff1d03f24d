// SmoothQuant (mit-han-lab/smoothquant smooth.py): s_j = max|x_j|^α / max|W[:, j]|^(1-α).
#include <mpq/smoothquant.h>

#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <mpq/error.h>

#include "core/checks.h"
#include "experts/expert_util.h"

namespace mpq {

void SmoothQuantOptions::validate() const {
  MPQ_CHECK_VALUE(alpha >= 0 && alpha <= 1, "SmoothQuantOptions: alpha must be in [0, 1], got ",
                  alpha);
  rtn.validate();
}

std::string SmoothQuantOptions::to_string() const {
  return fmt::format("SmoothQuantOptions(alpha={}, rtn={})", alpha, rtn.to_string());
}

at::Tensor smoothquant_scale(const std::vector<at::Tensor>& weights, const at::Tensor& act_max,
                             double alpha) {
  MPQ_CHECK_VALUE(!weights.empty(), "smoothquant_scale: no weights");
  detail::check_floating(act_max, "act_max", 1);
  at::Tensor w_max;
  for (const at::Tensor& w : weights) {
    detail::check_floating(w, "weight", 2);
    MPQ_CHECK_VALUE(w.size(1) == act_max.size(0), "smoothquant_scale: a weight has ", w.size(1),
                    " input columns but act_max has ", act_max.size(0), " channels");
    at::Tensor m = std::get<0>(w.to(at::kFloat).abs().max(0));
    w_max = w_max.defined() ? at::maximum(w_max, m.to(w_max.device())) : m;
  }
  const at::Tensor a = act_max.to(w_max.device(), at::kFloat);
  at::Tensor s = (a.pow(alpha) / w_max.pow(1 - alpha)).clamp_min(1e-5);
  // A channel that never fired, or whose weights are all zero, has nothing to migrate; scaling it
  // would only amplify whatever it carries at inference.
  return at::where((a > 0) & (w_max > 0), s, at::ones_like(s));
}

at::Tensor SmoothQuantExpert::input_scale(const std::vector<ExpertLayer>& layers,
                                          const LayerStats* stats) const {
  detail::check_stats(layers, stats, name());
  MPQ_CHECK_VALUE(stats->max_abs.defined(), name(), ": ", layers[0].name,
                  " needs max|x|; calibrate with collect_abs=True");
  std::vector<at::Tensor> w;
  for (const ExpertLayer& l : layers) w.push_back(l.weight);
  return smoothquant_scale(w, stats->max_abs, options_.alpha);
}

std::vector<ExpertResult> SmoothQuantExpert::quantize(const std::vector<ExpertLayer>& layers,
                                                      const LayerStats* stats,
                                                      bool can_scale) const {
  detail::check_stats(layers, stats, name());
  const at::Tensor h = detail::optional_hessian(layers, stats);
  const at::Tensor s = can_scale ? input_scale(layers, stats) : at::Tensor();
  std::vector<ExpertResult> out;
  for (const ExpertLayer& l : layers) {
    ExpertResult r;
    r.name = l.name;
    const at::Tensor ws = s.defined() ? l.weight.to(at::kFloat) * s.to(l.weight.device())
                                      : l.weight;
    r.quantized = mpq::quantize(ws, l.format, std::nullopt, options_.rtn, l.name);
    r.quantized.dtype = l.weight.scalar_type();
    r.input_scale = s;
    fill_errors(r, l.weight, h);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace mpq
