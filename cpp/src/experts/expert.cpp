// The expert registry, the error metrics every expert reports, and the two experts without a
// search of their own: RTN and llama.cpp's k-quants (with or without the importance matrix).
#include <mpq/expert.h>

#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mpq/awq.h>
#include <mpq/error.h>
#include <mpq/gptq.h>
#include <mpq/smoothquant.h>

#include "core/registry.h"
#include "experts/expert_util.h"

namespace mpq {
namespace {

// The built-in experts; register_expert adds more (or replaces one) at run time.
detail::Registry<ExpertFactory>& registry() {
  static detail::Registry<ExpertFactory> r;
  // Filled once, thread-safely (a static's initialisation), before any caller sees it.
  static const bool filled = [] {
    r.set("rtn", [] { return std::make_shared<RtnExpert>(); });
    r.set("kquant", [] { return std::make_shared<KquantExpert>(false); });
    r.set("kquant_imatrix", [] { return std::make_shared<KquantExpert>(true); });
    r.set("gptq", [] { return std::make_shared<GptqExpert>(); });
    r.set("awq", [] { return std::make_shared<AwqExpert>(); });
    r.set("smoothquant", [] { return std::make_shared<SmoothQuantExpert>(); });
    return true;
  }();
  (void)filled;
  return r;
}

}  // namespace

std::string ExpertResult::to_string() const {
  return fmt::format("ExpertResult(name='{}', format='{}', scaled={}, weight_mse={:.4g}, "
                     "output_error={:.4g}{})",
                     name, quantized.format, input_scale.defined() ? "True" : "False", weight_mse,
                     output_error, note.empty() ? "" : ", note='" + note + "'");
}

std::shared_ptr<Expert> make_expert(std::string_view name) {
  const std::optional<ExpertFactory> factory = registry().find(name);
  MPQ_CHECK_VALUE(factory.has_value(), "unknown expert '", name, "'; known experts: ",
                  fmt::format("{}", fmt::join(list_experts(), ", ")));
  std::shared_ptr<Expert> expert = (*factory)();
  MPQ_CHECK_VALUE(expert != nullptr, "the factory of expert '", name, "' returned nothing");
  return expert;
}

void register_expert(const std::string& name, ExpertFactory factory) {
  MPQ_CHECK_VALUE(!name.empty(), "register_expert: the name must not be empty");
  MPQ_CHECK_VALUE(static_cast<bool>(factory), "register_expert('", name, "'): no factory given");
  registry().set(name, std::move(factory));
}

std::vector<std::string> list_experts() { return registry().names(); }

double output_error(const at::Tensor& weight, const at::Tensor& approx, const at::Tensor& hessian) {
  // Accumulated in float64: the difference of nearly equal weights, summed over in² terms.
  at::Tensor d = (weight.to(at::kDouble) - approx.to(weight.device(), at::kDouble));
  at::Tensor h = hessian.to(weight.device(), at::kDouble);
  return at::mm(d, h).mul_(d).sum().item<double>();
}

void fill_errors(ExpertResult& result, const at::Tensor& weight, const at::Tensor& hessian) {
  at::Tensor approx = effective_weight(result, weight.device());
  result.weight_mse = (weight.to(at::kFloat) - approx).pow(2).mean().item<double>();
  if (hessian.defined()) result.output_error = output_error(weight, approx, hessian);
}

at::Tensor effective_weight(const ExpertResult& result, std::optional<at::Device> device) {
  at::Tensor w = dequantize(device ? result.quantized.to(*device) : result.quantized, at::kFloat);
  if (result.input_scale.defined()) w = w / result.input_scale.to(w.device()).unsqueeze(0);
  return w;
}

std::string RtnExpert::to_string() const { return "RtnExpert(" + options_.to_string() + ")"; }

std::vector<ExpertResult> RtnExpert::quantize(const std::vector<ExpertLayer>& layers,
                                              const LayerStats* stats, bool /*can_scale*/) const {
  detail::check_layers(layers, name());
  const at::Tensor h = detail::optional_hessian(layers, stats);
  std::vector<ExpertResult> out;
  for (const ExpertLayer& layer : layers) {
    ExpertResult r;
    r.name = layer.name;
    r.quantized = mpq::quantize(layer.weight, layer.format, std::nullopt, options_, layer.name);
    fill_errors(r, layer.weight, h);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<ExpertResult> KquantExpert::quantize(const std::vector<ExpertLayer>& layers,
                                                 const LayerStats* stats, bool /*can_scale*/) const {
  detail::check_layers(layers, name());
  const at::Tensor h = detail::optional_hessian(layers, stats);
  std::optional<at::Tensor> importance;
  if (use_imatrix_) {
    detail::check_stats(layers, stats, name());
    importance = stats->mean_sq();
  }
  RtnOptions clip;
  clip.mse_clip = true;
  std::vector<ExpertResult> out;
  for (const ExpertLayer& layer : layers) {
    ExpertResult r;
    r.name = layer.name;
    r.quantized = mpq::quantize(layer.weight, layer.format, importance, clip, layer.name);
    fill_errors(r, layer.weight, h);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace mpq
