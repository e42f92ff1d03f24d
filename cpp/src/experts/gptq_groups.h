#pragma once
// Internal: the quantization grid GPTQ rounds each column onto, for both format families.
// A group (an integer format's group, a ggml block) is fitted to the current weights when the
// column loop reaches it; afterwards weight (r, c) can take the values
//   scale[r, c] * level(q) + offset[r, c],  q in [qmin, qmax],
// with level(q) = q (linear grids) or a table (IQ4's non-linear grid): ggml/block_grid.h's
// conventions, which the integer formats follow too.
#include <memory>

#include <ATen/core/Tensor.h>

#include <mpq/format.h>
#include <mpq/quantizer.h>

#include "ggml/block_grid.h"

namespace mpq::detail {

class GptqGroups {
 public:
  virtual ~GptqGroups() = default;

  // Fits the group that starts at column c0 (a multiple of group_size()) to w [rows, n]
  // (float32, the weight's device), weighted by importance [n] (CPU float32, may be undefined).
  virtual void fit(const at::Tensor& w, int64_t c0, const at::Tensor& importance) = 0;
  // The packed tensor for the final codes [rows, cols] (int32, on the weight's device, column
  // order).
  virtual QuantizedTensor finish(const at::Tensor& codes, at::ScalarType dtype) = 0;

  // Integer groups whose fit is the plain min/max range (no clip search), which a device kernel
  // can do itself: the format's bits and symmetry, and the [rows, groups] float32 tensors fit()
  // would fill (scale, zero point). nullptr for every other grid.
  struct IntegerFit {
    int bits = 0;
    bool symmetric = false;
    at::Tensor scales, zeros;
  };
  virtual IntegerFit* integer_fit() { return nullptr; }

  int64_t group_size() const { return group_size_; }
  // The codes and levels of the grid (integer formats: linear, 0 .. 2^bits - 1).
  const ggml::GridInfo& grid() const { return grid_; }
  at::Tensor scale;   // float32 [rows, cols], filled by fit()
  at::Tensor offset;  // float32 [rows, cols]

 protected:
  int64_t group_size_ = 0;
  ggml::GridInfo grid_{};
};

// `mse_clip`: integer groups search their clipping range (RtnOptions defaults).
std::unique_ptr<GptqGroups> make_gptq_groups(const Format& format, int64_t rows, int64_t cols,
                                             const at::TensorOptions& device, bool mse_clip);

}  // namespace mpq::detail
