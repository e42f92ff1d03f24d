#pragma once
// Internal: the per-group parameters of the integer formats, shared by RTN (quantizer.cpp) and
// the experts that quantize a group at a time (GPTQ's column loop, AWQ's searches).
#include <optional>

#include <ATen/core/Tensor.h>

#include <mpq/format.h>
#include <mpq/quantizer.h>

namespace mpq::detail {

// Element (r, c) of group k dequantizes to scale[r, k] * (code - zero[r, k]).
struct GroupParams {
  at::Tensor scale;  // float32 [rows, groups], exactly representable in fp16
  at::Tensor zero;   // float32 [rows, groups], integer-valued
};

// Parameters for weights grouped as wg [rows, groups, g] (float32): the groups' full range, or with
// options.mse_clip the clipping ratio that minimises sum_j importance_j |w - deq(q(w))|^norm
// (importance [groups, g] or unweighted when absent).
GroupParams fit_groups(const at::Tensor& wg, const Format& format, const RtnOptions& options,
                       const std::optional<at::Tensor>& importance = std::nullopt);

// Codes (float, integer-valued) for wg [rows, groups, g].
at::Tensor group_codes(const at::Tensor& wg, const GroupParams& p, const Format& format);

// Dequantized values for codes [rows, groups, g].
at::Tensor dequantize_groups(const at::Tensor& codes, const GroupParams& p);

}  // namespace mpq::detail
