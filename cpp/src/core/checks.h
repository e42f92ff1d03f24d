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

}  // namespace mpq::detail
