// Dispatch from a Type to its row kernels.
#include "ggml/ggml_quants.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstring>

#include "ggml/ggml_blocks.h"

namespace mpq::detail::ggml {

namespace {

// |x|'s bits order like |x| and stay below 2^31, so a signed integer max finds the largest |x|
// (NaN above Inf) in vector code; eight lanes keep several accumulators in flight.
uint32_t max_abs_bits(const float* x, int64_t n) {
  int32_t lane[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) {
      const int32_t a = std::bit_cast<int32_t>(x[i + k]) & 0x7FFFFFFF;
      lane[k] = a > lane[k] ? a : lane[k];
    }
  }
  int32_t m = 0;
  for (; i < n; ++i) m = std::max(m, std::bit_cast<int32_t>(x[i]) & 0x7FFFFFFF);
  for (int32_t v : lane) m = std::max(m, v);
  return static_cast<uint32_t>(m);
}

}  // namespace

uint32_t quantize_row(Type type, const float* src, void* dst, int64_t n_per_row,
                      const float* importance) {
  assert(is_supported(type) && n_per_row % info(type).block_size == 0);
  assert(importance || !requires_importance(type));
  const float* qw = importance;
  // The memory-bound paths report the row's largest |x| themselves: a pass of its own would cost
  // them a quarter of their time.
  if (type == Type::Q8_0) return quantize_q8_0(src, dst, n_per_row);  // no weighted form
  if (!qw) {
    switch (type) {
      case Type::Q4_0: return quantize_q4_0_ref(src, dst, n_per_row);
      case Type::Q4_1: return quantize_q4_1_ref(src, dst, n_per_row);
      case Type::Q5_0: return quantize_q5_0_ref(src, dst, n_per_row);
      case Type::Q5_1: return quantize_q5_1_ref(src, dst, n_per_row);
      default: break;
    }
  }
  // The searches index tables with values derived from x, so non-finite rows stop here.
  const uint32_t amax = max_abs_bits(src, n_per_row);
  if (amax >= kNonFiniteBits) return amax;
  switch (type) {
    case Type::F32: std::memcpy(dst, src, static_cast<size_t>(n_per_row) * sizeof(float)); break;
    case Type::F16: convert_row_to_f16(src, dst, n_per_row); break;
    case Type::BF16: convert_row_to_bf16(src, dst, n_per_row); break;
    case Type::Q4_0: quantize_q4_0_impl(src, dst, n_per_row, qw); break;
    case Type::Q4_1: quantize_q4_1_impl(src, dst, n_per_row, qw); break;
    case Type::Q5_0: quantize_q5_0_impl(src, dst, n_per_row, qw); break;
    case Type::Q5_1: quantize_q5_1_impl(src, dst, n_per_row, qw); break;
    case Type::Q8_0: break;  // handled above
    case Type::Q2_K: quantize_q2_k(src, dst, n_per_row, qw); break;
    case Type::Q3_K: quantize_q3_k(src, dst, n_per_row, qw); break;
    case Type::Q4_K: quantize_q4_k(src, dst, n_per_row, qw); break;
    case Type::Q5_K: quantize_q5_k(src, dst, n_per_row, qw); break;
    case Type::Q6_K: quantize_q6_k(src, dst, n_per_row, qw); break;
    case Type::IQ4_NL: quantize_iq4_nl(src, dst, n_per_row, qw); break;
    case Type::IQ4_XS: quantize_iq4_xs(src, dst, n_per_row, qw); break;
    case Type::IQ2_XXS: quantize_iq2_xxs(src, dst, n_per_row, qw); break;
    case Type::IQ2_XS: quantize_iq2_xs(src, dst, n_per_row, qw); break;
    case Type::IQ2_S: quantize_iq2_s(src, dst, n_per_row, qw); break;
    case Type::IQ3_XXS: quantize_iq3_xxs(src, dst, n_per_row, qw); break;
    case Type::IQ3_S: quantize_iq3_s(src, dst, n_per_row, qw); break;
    case Type::IQ1_S: quantize_iq1_s(src, dst, n_per_row, qw); break;
    case Type::IQ1_M: quantize_iq1_m(src, dst, n_per_row, qw); break;
  }
  return amax;
}

void dequantize_row(Type type, const void* src, float* dst, int64_t n_per_row) {
  assert(is_supported(type) && n_per_row % info(type).block_size == 0);
  switch (type) {
    case Type::F32: std::memcpy(dst, src, static_cast<size_t>(n_per_row) * sizeof(float)); return;
    case Type::F16: convert_row_from_f16(src, dst, n_per_row); return;
    case Type::BF16: convert_row_from_bf16(src, dst, n_per_row); return;
    case Type::Q4_0: dequantize_q4_0(src, dst, n_per_row); return;
    case Type::Q4_1: dequantize_q4_1(src, dst, n_per_row); return;
    case Type::Q5_0: dequantize_q5_0(src, dst, n_per_row); return;
    case Type::Q5_1: dequantize_q5_1(src, dst, n_per_row); return;
    case Type::Q8_0: dequantize_q8_0(src, dst, n_per_row); return;
    case Type::Q2_K: dequantize_q2_k(src, dst, n_per_row); return;
    case Type::Q3_K: dequantize_q3_k(src, dst, n_per_row); return;
    case Type::Q4_K: dequantize_q4_k(src, dst, n_per_row); return;
    case Type::Q5_K: dequantize_q5_k(src, dst, n_per_row); return;
    case Type::Q6_K: dequantize_q6_k(src, dst, n_per_row); return;
    case Type::IQ4_NL: dequantize_iq4_nl(src, dst, n_per_row); return;
    case Type::IQ4_XS: dequantize_iq4_xs(src, dst, n_per_row); return;
    case Type::IQ2_XXS: dequantize_iq2_xxs(src, dst, n_per_row); return;
    case Type::IQ2_XS: dequantize_iq2_xs(src, dst, n_per_row); return;
    case Type::IQ2_S: dequantize_iq2_s(src, dst, n_per_row); return;
    case Type::IQ3_XXS: dequantize_iq3_xxs(src, dst, n_per_row); return;
    case Type::IQ3_S: dequantize_iq3_s(src, dst, n_per_row); return;
    case Type::IQ1_S: dequantize_iq1_s(src, dst, n_per_row); return;
    case Type::IQ1_M: dequantize_iq1_m(src, dst, n_per_row); return;
  }
}

}  // namespace mpq::detail::ggml
