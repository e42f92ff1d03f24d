// Round-to-nearest quantization to the integer group formats, written in ATen ops so that the same
// code runs on CPU, CUDA and MPS. Scales are rounded to fp16 *before* the codes are computed: the
// stored scale is the one that produced the codes, so dequantize() reproduces the evaluated weights.
#include <mpq/quantizer.h>

#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <mpq/error.h>
#include <mpq/kquants.h>

#include "core/checks.h"
#include "quant/groups.h"

namespace mpq {
namespace detail {
namespace {

// Smallest positive fp16 (subnormal): scales that round below it would divide by zero.
constexpr double kMinScale = 5.960464477539063e-08;

// Scale and zero point per group from the group's range [lo, hi] (both [rows, groups]).
GroupParams params_from_range(const at::Tensor& lo, const at::Tensor& hi, const Format& f) {
  GroupParams p;
  if (f.symmetric) {
    // Codes -2^(b-1)..2^(b-1)-1 around zero, the range [-absmax, absmax] spread over all 2^b
    // codes (scale 2·absmax / (2^b - 1)), as GPTQ's reference and its descendants (AutoGPTQ,
    // GPTQModel, compressed-tensors) define it: a positive absmax is clipped by half a step, and
    // every code is used. (absmax / (2^(b-1) - 1) would leave code -2^(b-1) unused: 3 bits get
    // 7 levels instead of 8.)
    const double half_range = ((1 << f.bits) - 1) / 2.0;
    p.scale = at::maximum(lo.abs(), hi.abs()).div(half_range);
    p.zero = at::full_like(p.scale, 1 << (f.bits - 1));
  } else {
    // The range always contains 0 so that 0 is exact (padding and dead weights stay 0).
    const double maxq = (1 << f.bits) - 1;
    p.scale = (hi.clamp_min(0) - lo.clamp_max(0)).div(maxq);
  }
  p.scale = p.scale.to(at::kHalf).to(at::kFloat);
  p.scale = at::where(p.scale < kMinScale, at::full_like(p.scale, kMinScale), p.scale);
  if (!f.symmetric) {
    const double maxq = (1 << f.bits) - 1;
    p.zero = at::round(lo.clamp_max(0).neg().div(p.scale)).clamp(0, maxq);
  }
  return p;
}

}  // namespace

at::Tensor group_codes(const at::Tensor& wg, const GroupParams& p, const Format& f) {
  const double maxq = (1 << f.bits) - 1;
  return at::round(wg.div(p.scale.unsqueeze(-1))).add(p.zero.unsqueeze(-1)).clamp(0, maxq);
}

at::Tensor dequantize_groups(const at::Tensor& q, const GroupParams& p) {
  return q.sub(p.zero.unsqueeze(-1)).mul(p.scale.unsqueeze(-1));
}

GroupParams fit_groups(const at::Tensor& wg, const Format& format, const RtnOptions& options,
                       const std::optional<at::Tensor>& importance) {
  at::Tensor lo = std::get<0>(wg.min(-1)), hi = std::get<0>(wg.max(-1));
  GroupParams best = params_from_range(lo, hi, format);
  if (!options.mse_clip) return best;
  at::Tensor best_err = at::full_like(lo, INFINITY);
  const int steps = static_cast<int>(options.max_shrink * options.grid);
  for (int i = 0; i <= steps; ++i) {
    const double ratio = 1.0 - static_cast<double>(i) / options.grid;
    GroupParams p = params_from_range(lo * ratio, hi * ratio, format);
    at::Tensor err = dequantize_groups(group_codes(wg, p, format), p).sub(wg).abs_().pow_(options.norm);
    if (importance) err.mul_(*importance);
    err = err.sum(-1);
    at::Tensor better = err < best_err;
    best_err = at::where(better, err, best_err);
    best.scale = at::where(better, p.scale, best.scale);
    best.zero = at::where(better, p.zero, best.zero);
  }
  return best;
}

}  // namespace detail

namespace {
using detail::GroupParams;
}  // namespace

void RtnOptions::validate() const {
  MPQ_CHECK_VALUE(grid >= 1, "RtnOptions: grid must be >= 1, got ", grid);
  MPQ_CHECK_VALUE(max_shrink >= 0.0 && max_shrink < 1.0,
                  "RtnOptions: max_shrink must be in [0, 1), got ", max_shrink);
  MPQ_CHECK_VALUE(norm > 0.0 && std::isfinite(norm), "RtnOptions: norm must be > 0, got ", norm);
}

std::string RtnOptions::to_string() const {
  return fmt::format("RtnOptions(mse_clip={}, grid={}, max_shrink={}, norm={})",
                     mse_clip ? "True" : "False", grid, max_shrink, norm);
}

int64_t QuantizedTensor::nbytes() const { return find_format(format).bytes(rows, cols); }

QuantizedTensor QuantizedTensor::to(const at::Device& device) const {
  QuantizedTensor r = *this;
  r.codes = codes.to(device);
  if (scales.defined()) r.scales = scales.to(device);
  if (zeros.defined()) r.zeros = zeros.to(device);
  return r;
}

void QuantizedTensor::validate() const {
  const Format f = find_format(format);
  const std::string what = "QuantizedTensor(" + format + ")";
  MPQ_CHECK_VALUE(rows > 0 && cols > 0, what, ": rows and cols must be positive, got ", rows, "x",
                  cols);
  if (f.family == FormatFamily::kGgml) {
    const int64_t row_bytes = f.bytes(1, cols);
    MPQ_CHECK_VALUE(cols % f.group_size == 0, what, ": rows of ", cols,
                    " weights are not a whole number of blocks of ", f.group_size);
    MPQ_CHECK_TYPE(codes.defined() && codes.scalar_type() == at::kByte, what,
                   ": codes must be uint8 blocks, got ", detail::describe(codes));
    MPQ_CHECK_VALUE(codes.dim() == 2 && codes.size(0) == rows && codes.size(1) == row_bytes, what,
                    ": blocks must be [", rows, ", ", row_bytes, "], got ", detail::describe(codes));
    MPQ_CHECK_VALUE(!scales.defined() && !zeros.defined(), what,
                    ": ggml blocks carry their own scales; scales and zeros must be empty");
    return;
  }
  const int64_t groups = f.groups_per_row(cols);
  MPQ_CHECK_TYPE(codes.defined() && codes.scalar_type() == at::kByte, what,
                 ": codes must be uint8, got ", detail::describe(codes));
  MPQ_CHECK_VALUE(codes.dim() == 2 && codes.size(0) == rows && codes.size(1) == (cols * f.bits + 7) / 8,
                  what, ": codes must be [", rows, ", ", (cols * f.bits + 7) / 8, "], got ",
                  detail::describe(codes));
  MPQ_CHECK_TYPE(scales.defined() && scales.scalar_type() == at::kHalf, what,
                 ": scales must be float16, got ", detail::describe(scales));
  MPQ_CHECK_VALUE(scales.dim() == 2 && scales.size(0) == rows && scales.size(1) == groups, what,
                  ": scales must be [", rows, ", ", groups, "], got ", detail::describe(scales));
  MPQ_CHECK_VALUE(scales.device() == codes.device(), what, ": scales are on ",
                  scales.device().str(), " but codes on ", codes.device().str());
  if (f.symmetric) {
    MPQ_CHECK_VALUE(!zeros.defined(), what, ": a symmetric format has no zero points");
  } else {
    MPQ_CHECK_TYPE(zeros.defined() && zeros.scalar_type() == at::kByte, what,
                   ": zeros must be uint8, got ", detail::describe(zeros));
    MPQ_CHECK_VALUE(zeros.sizes() == scales.sizes(), what, ": zeros must be [", rows, ", ", groups,
                    "], got ", detail::describe(zeros));
    MPQ_CHECK_VALUE(zeros.device() == codes.device(), what, ": zeros are on ",
                    zeros.device().str(), " but codes on ", codes.device().str());
  }
}

std::string QuantizedTensor::to_string() const {
  return fmt::format("QuantizedTensor(format='{}', shape=[{}, {}], dtype={}, nbytes={})", format,
                     rows, cols, c10::toString(dtype), nbytes());
}

QuantizedTensor quantize(const at::Tensor& weight, const Format& format,
                         const std::optional<at::Tensor>& importance, const RtnOptions& options,
                         std::string_view name) {
  if (format.family == FormatFamily::kInteger) {
    return quantize_rtn(weight, format, options, name, importance);
  }
  QuantizedTensor q;
  q.codes = quantize_ggml(weight, format, importance, name);
  q.format = format.name;
  q.rows = weight.size(0);
  q.cols = weight.size(1);
  q.dtype = weight.scalar_type();
  return q;
}

QuantizedTensor quantize_rtn(const at::Tensor& weight, const Format& format,
                             const RtnOptions& options, std::string_view name,
                             const std::optional<at::Tensor>& importance) {
  detail::check_floating(weight, name, 2);
  format.validate();
  options.validate();
  MPQ_CHECK_VALUE(format.family == FormatFamily::kInteger, name, ": RTN targets integer formats, ",
                  format.name, " is not one");
  detail::check_finite(weight, name);

  const int64_t rows = weight.size(0), cols = weight.size(1);
  const int64_t g = format.group_size == 0 ? cols : std::min(format.group_size, cols);
  const int64_t groups = (cols + g - 1) / g;
  // Zero padding of a short last group is harmless: every range contains 0, which is exact.
  at::Tensor wg = at::constant_pad_nd(weight.to(at::kFloat), {0, groups * g - cols}, 0)
                      .reshape({rows, groups, g});
  std::optional<at::Tensor> imp;
  if (importance && importance->defined()) {
    imp = at::constant_pad_nd(detail::checked_importance(*importance, cols, name), {0, groups * g - cols}, 0)
              .to(wg.device())
              .reshape({groups, g});
  }
  const GroupParams best = detail::fit_groups(wg, format, options, imp);

  QuantizedTensor q;
  q.format = format.name;
  q.rows = rows;
  q.cols = cols;
  q.dtype = weight.scalar_type();
  at::Tensor codes = detail::group_codes(wg, best, format).reshape({rows, groups * g}).narrow(1, 0, cols);
  q.codes = pack_codes(codes.to(at::kByte), format.bits);
  q.scales = best.scale.to(at::kHalf);
  if (!format.symmetric) q.zeros = best.zero.to(at::kByte);
  detail::check_fp16_range(at::isfinite(q.scales).all().item<bool>(), weight, name, format.name);
  return q;
}

at::Tensor dequantize(const QuantizedTensor& q, std::optional<at::ScalarType> dtype) {
  q.validate();
  const Format f = find_format(q.format);
  if (f.family == FormatFamily::kGgml) {
    return dequantize_ggml(q.codes, f, q.cols).to(dtype.value_or(q.dtype));
  }
  const int64_t g = f.group_size == 0 ? q.cols : std::min(f.group_size, q.cols);
  const int64_t groups = f.groups_per_row(q.cols);
  at::Tensor codes = unpack_codes(q.codes, f.bits, q.cols).to(at::kFloat);
  codes = at::constant_pad_nd(codes, {0, groups * g - q.cols}, 0).reshape({q.rows, groups, g});
  GroupParams p;
  p.scale = q.scales.to(at::kFloat);
  p.zero = f.symmetric ? at::full_like(p.scale, 1 << (f.bits - 1)) : q.zeros.to(at::kFloat);
  return detail::dequantize_groups(codes, p)
      .reshape({q.rows, groups * g})
      .narrow(1, 0, q.cols)
      .to(dtype.value_or(q.dtype))
      .contiguous();
}

}  // namespace mpq
