#pragma once
// Experts: whole quantization methods (RTN, llama.cpp's k-quants with or without an importance
// matrix, GPTQ, AWQ, SmoothQuant) behind one interface, so that a search can pick one per layer.
//
// An expert quantizes the linear layers that read one input (q/k/v; o; gate/up; down): that is the
// unit that can share an input transform. Transforming experts (AWQ, SmoothQuant) return a
// per-input-channel scale s: the quantized weights approximate W·diag(s), and the layers' input
// must be divided by s, which the caller folds into the operation producing it (the preceding
// RMSNorm's weight, or the rows of the preceding linear).
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include <mpq/calibration.h>
#include <mpq/format.h>
#include <mpq/quantizer.h>

namespace mpq {

// One linear layer handed to an expert.
struct ExpertLayer {
  std::string name;   // "blk.3.attn_q": named in errors and results
  at::Tensor weight;  // floating [out, in], any device
  Format format;      // the target format
};

struct ExpertResult {
  std::string name;
  QuantizedTensor quantized;  // approximates weight · diag(input_scale)
  at::Tensor input_scale;     // float32 [in], or undefined (no transform)
  // Errors of the effective weight Ŵ = dequantize(quantized) · diag(input_scale)⁻¹:
  double weight_mse = std::numeric_limits<double>::quiet_NaN();    // mean (W - Ŵ)²
  double output_error = std::numeric_limits<double>::quiet_NaN();  // tr(ΔW H ΔWᵀ), H = (2/N) Σ x xᵀ
  std::string note;  // a documented fallback that was taken, if any

  std::string to_string() const;
};

class Expert {
 public:
  virtual ~Expert() = default;
  // The registry name ("gptq", ...).
  virtual std::string name() const = 0;
  virtual std::string to_string() const { return name(); }
  // Whether quantize() needs the input's statistics (XᵀX, Σx², Σ|x|, max |x|).
  virtual bool needs_stats() const { return true; }
  // Whether the expert returns an input_scale (the caller must fold it, and layers that read
  // the same input must all be quantized by this expert together).
  virtual bool transforms_input() const { return false; }

  // Transforming experts: the input scale s for `layers` (undefined for the others). Pipelines
  // that fold s themselves call this, scale the weights, then quantize(..., can_scale=false).
  virtual at::Tensor input_scale(const std::vector<ExpertLayer>& layers,
                                 const LayerStats* stats) const {
    return {};
  }

  // Quantizes `layers`, which all read the same input, described by `stats` (may be null when
  // needs_stats() is false). `can_scale`: whether an input scale can be folded into the operation
  // producing the input; when false, transforming experts quantize without one.
  // Returns one result per layer, in order, with output_error filled when stats hold XᵀX.
  virtual std::vector<ExpertResult> quantize(const std::vector<ExpertLayer>& layers,
                                             const LayerStats* stats, bool can_scale) const = 0;
};

// What every expert configured by an Options struct shares: the options, validated once at
// construction (a bad option is a ValueError there, not halfway through a model), shown by
// to_string() and readable by options().
template <typename Options>
class ConfiguredExpert : public Expert {
 public:
  std::string to_string() const override { return options_.to_string(); }
  const Options& options() const { return options_; }

 protected:
  explicit ConfiguredExpert(Options options) : options_(std::move(options)) { options_.validate(); }
  Options options_;
};

using ExpertFactory = std::function<std::shared_ptr<Expert>()>;

// Creates an expert with default options: "rtn", "kquant", "kquant_imatrix", "gptq", "awq",
// "smoothquant", or any name added by register_expert. ValueError for an unknown name.
std::shared_ptr<Expert> make_expert(std::string_view name);
// Adds (or replaces) a factory under `name`.
void register_expert(const std::string& name, ExpertFactory factory);
std::vector<std::string> list_experts();

// tr(ΔW H ΔWᵀ) for ΔW = weight - approx [out, in] and a Hessian H [in, in]: the increase of the
// layer's squared output error summed over outputs, averaged over tokens (times 2).
double output_error(const at::Tensor& weight, const at::Tensor& approx, const at::Tensor& hessian);

// Fills a result's errors from the original weight and, when given, the Hessian.
void fill_errors(ExpertResult& result, const at::Tensor& weight, const at::Tensor& hessian);

// The weight a result stands for: dequantize(quantized) / input_scale (float32, on `device`,
// by default the device of the codes).
at::Tensor effective_weight(const ExpertResult& result,
                            std::optional<at::Device> device = std::nullopt);

// "rtn": integer formats by round-to-nearest (RtnOptions), ggml formats by llama.cpp's reference
// quantizer; no statistics needed.
class RtnExpert : public ConfiguredExpert<RtnOptions> {
 public:
  explicit RtnExpert(RtnOptions options = {}) : ConfiguredExpert(std::move(options)) {}
  std::string name() const override { return "rtn"; }
  std::string to_string() const override;
  bool needs_stats() const override { return false; }
  std::vector<ExpertResult> quantize(const std::vector<ExpertLayer>& layers,
                                     const LayerStats* stats, bool can_scale) const override;
};

// "kquant": llama.cpp's quantizer for ggml formats; for integer formats the closest analogue,
// RTN with the error-minimising clipping search. "kquant_imatrix": the same weighted by the
// importance matrix (mean x² per input column), as llama-quantize --imatrix does.
class KquantExpert : public Expert {
 public:
  explicit KquantExpert(bool use_imatrix) : use_imatrix_(use_imatrix) {}
  std::string name() const override { return use_imatrix_ ? "kquant_imatrix" : "kquant"; }
  bool needs_stats() const override { return use_imatrix_; }
  std::vector<ExpertResult> quantize(const std::vector<ExpertLayer>& layers,
                                     const LayerStats* stats, bool can_scale) const override;

 private:
  bool use_imatrix_;
};

}  // namespace mpq
