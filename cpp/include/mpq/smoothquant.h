#pragma once
// SmoothQuant (Xiao et al., 2023): migrates activation outliers into the weights with a
// per-input-channel scale s_j = max|x_j|^α / max|W[:, j]|^(1-α) (max over every layer reading the
// input), then quantizes the scaled weights to the base format. For W8A8 research use, pair it
// with per-channel int8 weights ("int8_sym") and mpq's activation quantization in Python; in a
// GGUF file only the weight transform survives (llama.cpp quantizes activations itself).
#include <string>

#include <mpq/expert.h>

namespace mpq {

struct SmoothQuantOptions {
  double alpha = 0.5;  // migration strength; the paper uses 0.85 for Llama-2/3
  RtnOptions rtn;      // how integer formats are rounded after smoothing

  void validate() const;
  std::string to_string() const;
};

// The smoothing scale for layers [out_k, in] reading an input whose per-channel max |x| is
// `act_max` [in]: float32 [in], clamped to >= 1e-5. Channels never active (act_max = 0) get 1.
at::Tensor smoothquant_scale(const std::vector<at::Tensor>& weights, const at::Tensor& act_max,
                             double alpha);

class SmoothQuantExpert : public ConfiguredExpert<SmoothQuantOptions> {
 public:
  explicit SmoothQuantExpert(SmoothQuantOptions options = {})
      : ConfiguredExpert(std::move(options)) {}
  std::string name() const override { return "smoothquant"; }
  bool transforms_input() const override { return true; }
  at::Tensor input_scale(const std::vector<ExpertLayer>& layers,
                         const LayerStats* stats) const override;
  std::vector<ExpertResult> quantize(const std::vector<ExpertLayer>& layers,
                                     const LayerStats* stats, bool can_scale) const override;
};

}  // namespace mpq
