#include "core/checks.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mpq/error.h>

namespace mpq::detail {

std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return fmt::format("{} [{}] on {}", c10::toString(t.scalar_type()), fmt::join(t.sizes(), ", "),
                     t.device().str());
}

void check_floating(const at::Tensor& t, std::string_view name, int64_t dims) {
  MPQ_CHECK_VALUE(t.defined(), name, ": expected a tensor, got an undefined one");
  MPQ_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name,
                 ": expected a floating-point tensor (float32/float16/bfloat16/float64), got ",
                 describe(t));
  MPQ_CHECK_VALUE(t.dim() == dims, name, ": expected ", dims, " dimensions, got ", describe(t));
  MPQ_CHECK_VALUE(t.numel() > 0, name, ": expected a non-empty tensor, got ", describe(t));
}

void check_finite(const at::Tensor& t, std::string_view name) {
  if (at::isfinite(t).all().item<bool>()) return;  // the common case, without counting
  const int64_t bad = (~at::isfinite(t)).sum().item<int64_t>();
  MPQ_CHECK_VALUE(bad == 0, name, ": contains ", bad, " NaN/Inf value", bad == 1 ? "" : "s",
                  " (", describe(t), "); quantization needs finite values");
}

void check_fp16_range(bool ok, const at::Tensor& weight, std::string_view name,
                      std::string_view format) {
  MPQ_CHECK_VALUE(ok, name, ": its values exceed the fp16 range of the scales (or values) that ",
                  format, " stores (max |w| = ", weight.abs().max().item<double>(), ")");
}

at::Tensor checked_importance(const at::Tensor& importance, int64_t n, std::string_view name) {
  const std::string what = std::string(name) + " importance";
  check_floating(importance, what, 1);
  MPQ_CHECK_VALUE(importance.size(0) == n, what, ": ", importance.size(0), " weights for rows of ",
                  n);
  check_finite(importance, what);
  at::Tensor imp = importance.to(at::kFloat);
  MPQ_CHECK_VALUE(imp.min().item<float>() >= 0.0f, what, ": importance weights must be >= 0");
  return imp;
}

}  // namespace mpq::detail
