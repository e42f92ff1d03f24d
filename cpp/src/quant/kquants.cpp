// The ATen face of the ggml block formats: argument checks, then the torch-free row kernels of
// cpp/src/ggml, one row per task on ATen's thread pool; blocks on an accelerator are read there by
// the bit-identical ATen-op reader (ggml_dequant_device.cpp).
#include <mpq/kquants.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <algorithm>
#include <cmath>
#include <vector>

#include <mpq/error.h>

#include "core/checks.h"
#include "ggml/ggml_quants.h"
#include "ggml/ggml_types.h"
#include "quant/ggml_dequant_device.h"

namespace mpq {
namespace {

namespace g = detail::ggml;

g::Type ggml_type_of(const Format& format, std::string_view name) {
  MPQ_CHECK_VALUE(format.family == FormatFamily::kGgml, name, ": ", format.name,
                  " is not a llama.cpp (ggml) format");
  return static_cast<g::Type>(format.ggml_type);
}

// Rows per task: enough work per task to amortise scheduling (~64K weights).
int64_t grain(int64_t n_per_row) { return std::max<int64_t>(1, (int64_t{1} << 16) / n_per_row); }

// Every fp16 a format stores (scales, mins, f16 values) is at most the row's largest |w|, so rows
// within the fp16 range cannot overflow; only rows beyond it are decoded again and checked.
constexpr uint32_t kFp16MaxBits = 0x477fe000u;  // 65504.0f

// For a row beyond the fp16 range: true when its blocks decode to finite values within half the
// row's largest |w| of it. An fp16 scale that overflowed decodes to Inf/NaN; a scale search whose
// float sums overflowed (x^2 of 1e30) decodes to finite garbage: both fail.
bool decodes_close(g::Type type, const uint8_t* blocks, const float* x, int64_t n,
                   std::vector<float>& decoded) {
  decoded.resize(n);
  g::dequantize_row(type, blocks, decoded.data(), n);
  float amax = 0, err = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::fabs(decoded[i] - x[i]);
    if (!std::isfinite(e)) return false;
    amax = std::max(amax, std::fabs(x[i]));
    err = std::max(err, e);
  }
  return err <= 0.5f * amax;
}

}  // namespace

at::Tensor quantize_ggml(const at::Tensor& weight, const Format& format,
                         const std::optional<at::Tensor>& importance, std::string_view name) {
  const g::Type type = ggml_type_of(format, name);
  detail::check_floating(weight, name, 2);
  const int64_t rows = weight.size(0), n = weight.size(1);
  const g::TypeInfo& info = g::info(type);
  MPQ_CHECK_VALUE(n % info.block_size == 0, name, ": rows of ", n, " weights are not a multiple of ",
                  format.name, "'s block of ", info.block_size, " (llama-quantize would use ",
                  ggml_fallback(format, n).name, ")");
  const at::Tensor w = weight.to(at::kCPU, at::kFloat).contiguous();

  at::Tensor imp;
  if (importance && importance->defined()) {
    imp = detail::checked_importance(*importance, n, name).to(at::kCPU).contiguous();
  }
  MPQ_CHECK_VALUE(imp.defined() || !g::requires_importance(type), name, ": ", format.name,
                  " needs importance weights (an imatrix), as in llama.cpp; pass `importance`");

  const int64_t row_bytes = static_cast<int64_t>(g::row_size(type, n));
  at::Tensor out = at::empty({rows, row_bytes}, at::TensorOptions().dtype(at::kByte));
  const float* src = w.data_ptr<float>();
  const float* qw = imp.defined() ? imp.data_ptr<float>() : nullptr;
  uint8_t* dst = out.data_ptr<uint8_t>();
  std::atomic<int64_t> bad_row{-1};
  std::atomic<bool> overflow{false};
  at::parallel_for(0, rows, grain(n), [&](int64_t begin, int64_t end) {
    std::vector<float> decoded;
    for (int64_t r = begin; r < end; ++r) {
      // The row kernel reports NaN/Inf (as the row's largest |x|): the fast formats find it while
      // scanning their blocks, and a pass of its own cost them about a quarter of their time.
      const uint32_t max_bits = g::quantize_row(type, src + r * n, dst + r * row_bytes, n, qw);
      if (max_bits >= g::kNonFiniteBits) {
        bad_row = r;
        return;
      }
      if (max_bits > kFp16MaxBits && type != g::Type::F32 &&
          !decodes_close(type, dst + r * row_bytes, src + r * n, n, decoded)) {
        overflow = true;
        return;
      }
    }
  });
  MPQ_CHECK_VALUE(bad_row < 0, name, ": row ", bad_row.load(), " contains NaN/Inf (",
                  detail::describe(weight), "); quantization needs finite values");
  detail::check_fp16_range(!overflow, weight, name, format.name);
  return out;
}

at::Tensor dequantize_ggml(const at::Tensor& blocks, const Format& format, int64_t n_per_row) {
  const g::Type type = ggml_type_of(format, "blocks");
  const g::TypeInfo& info = g::info(type);
  MPQ_CHECK_VALUE(n_per_row > 0 && n_per_row % info.block_size == 0, "dequantize_ggml: n_per_row ",
                  n_per_row, " is not a positive multiple of ", format.name, "'s block of ",
                  info.block_size);
  const int64_t row_bytes = static_cast<int64_t>(g::row_size(type, n_per_row));
  MPQ_CHECK_TYPE(blocks.defined() && blocks.scalar_type() == at::kByte,
                 "dequantize_ggml: blocks must be uint8, got ", detail::describe(blocks));
  MPQ_CHECK_VALUE(blocks.dim() == 2 && blocks.size(1) == row_bytes, "dequantize_ggml: ", format.name,
                  " rows of ", n_per_row, " weights take ", row_bytes, " bytes; got ",
                  detail::describe(blocks));
  // Off the CPU: read on the blocks' own device with ATen ops (bit-identical to the row kernels).
  if (!blocks.device().is_cpu()) return detail::dequantize_ggml_device(blocks, type, n_per_row);
  const at::Tensor b = blocks.contiguous();
  const int64_t rows = b.size(0);
  at::Tensor out = at::empty({rows, n_per_row}, at::TensorOptions().dtype(at::kFloat));
  const uint8_t* src = b.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, rows, grain(n_per_row), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      g::dequantize_row(type, src + r * row_bytes, dst + r * n_per_row, n_per_row);
    }
  });
  return out;
}

Format ggml_fallback(const Format& format, int64_t n_per_row) {
  const g::Type type = ggml_type_of(format, "ggml_fallback");
  if (n_per_row % g::info(type).block_size == 0) return format;
  g::Type to = type;
  switch (type) {
    case g::Type::IQ4_XS:
    case g::Type::IQ2_XXS:
    case g::Type::IQ2_XS:
    case g::Type::IQ2_S:
    case g::Type::IQ3_XXS:
    case g::Type::IQ3_S:
    case g::Type::IQ1_S:
    case g::Type::IQ1_M: to = g::Type::IQ4_NL; break;
    case g::Type::Q2_K:
    case g::Type::Q3_K: to = g::Type::Q4_0; break;
    case g::Type::Q4_K: to = g::Type::Q5_0; break;
    case g::Type::Q5_K: to = g::Type::Q5_1; break;
    case g::Type::Q6_K: to = g::Type::Q8_0; break;
    default: break;  // a 32-block type: only F16 remains
  }
  if (n_per_row % g::info(to).block_size != 0) to = g::Type::F16;
  return find_format(g::info(to).name);
}

}  // namespace mpq
