#pragma once
// Argument checks shared by the public entry points. Each names the tensor it checks.
#include <string>
#include <string_view>

#include <ATen/core/Tensor.h>

namespace mpq::detail {

// "float32 [64, 172] on cpu"
std::string describe(const at::Tensor& t);

// A defined, non-empty, floating-point tensor of `dims` dimensions.
void check_floating(const at::Tensor& t, std::string_view name, int64_t dims);

// No NaN or Inf anywhere in t (one reduction; synchronises on accelerators).
void check_finite(const at::Tensor& t, std::string_view name);

// The rule every quantizer applies to weights beyond the fp16 range: a format that stores fp16
// scales (or, as f16, fp16 values) must reject them, never write Inf. `ok` is the quantizer's own
// finding; the ValueError names the tensor, the format and the largest |w|.
void check_fp16_range(bool ok, const at::Tensor& weight, std::string_view name,
                      std::string_view format);

// Importance weights for rows of n weights: float [n], finite and >= 0. Returns them as float32
// on their device; `name` is the weight's name.
at::Tensor checked_importance(const at::Tensor& importance, int64_t n, std::string_view name);

}  // namespace mpq::detail
