#pragma once
// GPTQ (Frantar et al., 2022): quantizes a weight column by column, each column's rounding error
// compensated on the columns not yet quantized through the inverse Hessian of the layer's
// squared output error. Targets every format: the integer group formats and llama.cpp's blocks,
// whose scales are computed when the column loop reaches each block, so the exported bytes keep
// GPTQ's error compensation.
#include <string>
#include <string_view>

#include <ATen/core/Tensor.h>

#include <mpq/expert.h>

namespace mpq {

struct GptqOptions {
  double damp = 0.01;        // added to H's diagonal, times mean(diag H)
  double max_damp = 1.0;     // when Cholesky fails, damp doubles up to this before giving up
  int64_t block_size = 128;  // columns per lazy batch update
  bool act_order = false;    // quantize columns in order of decreasing diag(H)
  // Group (block) parameters from the original weights before the loop, rather than from the
  // updated ones when the loop reaches them. Always on with act_order, because the stored formats
  // keep groups in column order.
  bool static_groups = false;
  bool mse_clip = false;     // integer groups: clip search for each group's range (RtnOptions)
  // ggml blocks: weight each block's scale search by diag(H), as an imatrix would. (The legacy
  // types Q4_0..Q5_1 then use the block's variance where ggml uses the row's: a block is fitted
  // before the rest of its row is final.)
  bool importance = true;

  void validate() const;
  std::string to_string() const;
};

struct GptqResult {
  QuantizedTensor quantized;
  double damp = 0;           // the damping that made H positive definite
  int64_t dead_columns = 0;  // columns with diag(H) = 0: their weights were set to zero
};

// GPTQ of weight [out, in] against hessian [in, in] (LayerStats::hessian()). Runs on the weight's
// device. Throws ValueError (naming `name`) for shapes that disagree, non-finite values, or a
// Hessian that stays singular up to max_damp. A Hessian with every column dead (all-zero input)
// has no information: the layer is quantized by RTN instead (result.damp = 0).
GptqResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const Format& format,
                         const GptqOptions& options = {}, std::string_view name = "weight");

class GptqExpert : public ConfiguredExpert<GptqOptions> {
 public:
  explicit GptqExpert(GptqOptions options = {}) : ConfiguredExpert(std::move(options)) {}
  std::string name() const override { return "gptq"; }
  std::vector<ExpertResult> quantize(const std::vector<ExpertLayer>& layers,
                                     const LayerStats* stats, bool can_scale) const override;
};

}  // namespace mpq
