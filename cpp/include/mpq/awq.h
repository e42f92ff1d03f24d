#pragma once
// AWQ (Lin et al., 2023): activation-aware weight quantization. A per-input-channel scale s,
// searched on a grid, multiplies the weights of the layers that read one input (and divides the
// input, folded into the preceding operation), so that salient channels lose less to rounding;
// then a per-group clipping search; then any base format, integer or llama.cpp's.
//
// mpq scores candidates by each layer's output error tr(ΔW H ΔWᵀ), computed from the calibration
// Hessian over every calibration token, instead of re-running the module on sampled activations.
#include <string>
#include <vector>

#include <mpq/expert.h>

namespace mpq {

struct AwqOptions {
  int grid = 20;             // scale exponents α = i/grid, i = 0..grid-1
  bool duo_scaling = true;   // s = x_mean^α / w_mean^(1-α) (AutoAWQ); off: s = x_mean^α
  bool clip = true;          // search a clipping range per output row and group
  int clip_grid = 20;        // shrink factors 1 - i/clip_grid ...
  double max_shrink = 0.5;   // ... for i/clip_grid < max_shrink
  // Layers (name suffixes) whose clipping is skipped: AWQ skips q and k, whose outputs meet in a
  // softmax that an unweighted output error misjudges.
  std::vector<std::string> no_clip = {"attn_q", "attn_k"};

  void validate() const;
  std::string to_string() const;
};

class AwqExpert : public ConfiguredExpert<AwqOptions> {
 public:
  explicit AwqExpert(AwqOptions options = {}) : ConfiguredExpert(std::move(options)) {}
  std::string name() const override { return "awq"; }
  bool transforms_input() const override { return true; }
  at::Tensor input_scale(const std::vector<ExpertLayer>& layers,
                         const LayerStats* stats) const override;
  std::vector<ExpertResult> quantize(const std::vector<ExpertLayer>& layers,
                                     const LayerStats* stats, bool can_scale) const override;
};

}  // namespace mpq
