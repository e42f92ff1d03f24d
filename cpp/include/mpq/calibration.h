#pragma once
// The Calibrator: per named layer, the statistics of observed input activations that the experts
// need - XᵀX (GPTQ's Hessian), Σx² (llama.cpp's importance matrix), Σ|x| (AWQ), max|x|
// (SmoothQuant) and the token count. observe() may be called from several threads at once.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace mpq {

struct CalibratorOptions {
  // Accumulate XᵀX (in_features² values per layer). Off: only the per-column statistics.
  bool collect_xtx = true;
  // Accumulate Σ|x| and max|x| (AWQ's and SmoothQuant's statistics). Off: LayerStats.sum_abs
  // and max_abs stay undefined and the pass saves two reductions over every input; the other
  // experts (rtn, kquant, kquant_imatrix, gptq) need neither.
  bool collect_abs = true;
  // Accumulation dtype of every sum: kFloat or kDouble. Inputs are converted to it first.
  at::ScalarType accumulate_dtype = at::kFloat;

  void validate() const;
  std::string to_string() const;
};

// llama-imatrix skips batches of fewer tokens than this.
constexpr int64_t kImatrixMinRows = 16;

// Sums over every observed row x (one token's input to the layer).
struct LayerStats {
  at::Tensor xtx;      // Σ x xᵀ [in, in]; undefined if not collected
  at::Tensor sum_sq;   // Σ x²   [in]
  at::Tensor sum_abs;  // Σ |x|  [in]; undefined if not collected
  at::Tensor max_abs;  // max |x| [in]; undefined if not collected
  int64_t tokens = 0;  // rows observed
  int64_t batches = 0; // observe() calls
  // llama-imatrix's sums: Σx² and row count over observations of at least kImatrixMinRows rows
  // (llama.cpp ignores matrix multiplications of fewer than 16 tokens).
  at::Tensor imatrix_sum_sq;  // [in]
  int64_t imatrix_tokens = 0;

  // GPTQ's Hessian of the layer-wise squared error: (2 / tokens) Σ x xᵀ.
  at::Tensor hessian() const;
  // Mean x² per input column: the importance matrix consumers use (in_sum2 / count).
  at::Tensor mean_sq() const;
  // Mean |x| per input column: AWQ's activation statistic.
  at::Tensor mean_abs() const;
  int64_t in_features() const { return sum_sq.defined() ? sum_sq.size(0) : 0; }
};

class Calibrator {
 public:
  explicit Calibrator(CalibratorOptions options = {});
  ~Calibrator();
  Calibrator(Calibrator&&) noexcept;
  Calibrator& operator=(Calibrator&&) noexcept;

  // Adds the rows of `x` ([..., in_features], floating, finite) to layer `layer`'s sums. Every
  // observation of one layer must have the same in_features and device.
  void observe(const std::string& layer, const at::Tensor& x);
  // The same for every layer of `layers` (distinct names), from one computation of the batch's
  // sums: the linears that read one input (q/k/v, gate/up) cost one observation, not three.
  void observe(const std::vector<std::string>& layers, const at::Tensor& x);

  bool contains(const std::string& layer) const;
  // A snapshot of the layer's sums (tensors are copies). Throws ValueError for an unknown layer.
  LayerStats stats(const std::string& layer) const;
  // Layer names in order of first observation.
  std::vector<std::string> layers() const;
  void clear();
  const CalibratorOptions& options() const;

  // mpq's calibration file (a small documented binary format, see calibrator.cpp), written to a
  // temporary name, then renamed. load() validates every length against the file's size.
  void save(const std::string& path) const;
  static Calibrator load(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mpq
