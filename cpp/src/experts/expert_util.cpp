#include "experts/expert_util.h"

#include <ATen/ATen.h>

#include <mpq/error.h>

#include "core/checks.h"

namespace mpq::detail {

std::string layer_names(const std::vector<ExpertLayer>& layers) {
  std::string s;
  for (const ExpertLayer& l : layers) s += (s.empty() ? "" : ", ") + l.name;
  return s;
}

void check_layers(const std::vector<ExpertLayer>& layers, std::string_view expert) {
  MPQ_CHECK_VALUE(!layers.empty(), expert, ": no layers to quantize");
  for (const ExpertLayer& l : layers) {
    check_floating(l.weight, l.name, 2);
    check_finite(l.weight, l.name);
    l.format.validate();
    MPQ_CHECK_VALUE(l.weight.size(1) == layers[0].weight.size(1), expert, ": layers ",
                    layer_names(layers), " share one input but ", l.name, " has ",
                    l.weight.size(1), " input columns and ", layers[0].name, " ",
                    layers[0].weight.size(1));
  }
}

void check_stats(const std::vector<ExpertLayer>& layers, const LayerStats* stats,
                 std::string_view expert, bool need_xtx) {
  check_layers(layers, expert);
  const std::string names = layer_names(layers);
  MPQ_CHECK_VALUE(stats != nullptr, expert, " needs calibration statistics for ", names);
  MPQ_CHECK_VALUE(stats->tokens > 0, expert, ": no calibration tokens were observed for ", names);
  const int64_t in = layers[0].weight.size(1);
  MPQ_CHECK_VALUE(stats->in_features() == in, expert, ": the calibration statistics of ", names,
                  " have ", stats->in_features(), " input features but the weights have ", in,
                  " columns (statistics of another layer?)");
  if (need_xtx) {
    MPQ_CHECK_VALUE(stats->xtx.defined(), expert, ": ", names,
                    " needs XᵀX; calibrate with collect_xtx=True");
  }
}

at::Tensor optional_hessian(const std::vector<ExpertLayer>& layers, const LayerStats* stats) {
  if (stats == nullptr || !stats->xtx.defined() || stats->tokens == 0 || layers.empty()) return {};
  if (stats->in_features() != layers[0].weight.size(1)) return {};
  return stats->hessian();
}

}  // namespace mpq::detail
