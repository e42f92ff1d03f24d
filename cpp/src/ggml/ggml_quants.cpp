// Dispatch from a Type to its row kernels.
#include "ggml/ggml_quants.h"

#include <cassert>
#include <cstring>

#include "ggml/ggml_blocks.h"

namespace mpq::detail::ggml {

void quantize_row(Type type, const float* src, void* dst, int64_t n_per_row, const float* importance) {
  assert(is_supported(type) && n_per_row % info(type).block_size == 0);
  assert(importance || !requires_importance(type));
  const float* qw = importance;
  switch (type) {
    case Type::F32: std::memcpy(dst, src, static_cast<size_t>(n_per_row) * sizeof(float)); return;
    case Type::F16: convert_row_to_f16(src, dst, n_per_row); return;
    case Type::BF16: convert_row_to_bf16(src, dst, n_per_row); return;
    case Type::Q4_0: quantize_q4_0(src, dst, n_per_row, qw); return;
    case Type::Q4_1: quantize_q4_1(src, dst, n_per_row, qw); return;
    case Type::Q5_0: quantize_q5_0(src, dst, n_per_row, qw); return;
    case Type::Q5_1: quantize_q5_1(src, dst, n_per_row, qw); return;
    case Type::Q8_0: quantize_q8_0(src, dst, n_per_row); return;
    case Type::Q2_K: quantize_q2_k(src, dst, n_per_row, qw); return;
    case Type::Q3_K: quantize_q3_k(src, dst, n_per_row, qw); return;
    case Type::Q4_K: quantize_q4_k(src, dst, n_per_row, qw); return;
    case Type::Q5_K: quantize_q5_k(src, dst, n_per_row, qw); return;
    case Type::Q6_K: quantize_q6_k(src, dst, n_per_row, qw); return;
    case Type::IQ4_NL: quantize_iq4_nl(src, dst, n_per_row, qw); return;
    case Type::IQ4_XS: quantize_iq4_xs(src, dst, n_per_row, qw); return;
    case Type::IQ2_XXS: quantize_iq2_xxs(src, dst, n_per_row, qw); return;
    case Type::IQ2_XS: quantize_iq2_xs(src, dst, n_per_row, qw); return;
    case Type::IQ2_S: quantize_iq2_s(src, dst, n_per_row, qw); return;
    case Type::IQ3_XXS: quantize_iq3_xxs(src, dst, n_per_row, qw); return;
    case Type::IQ3_S: quantize_iq3_s(src, dst, n_per_row, qw); return;
    case Type::IQ1_S: quantize_iq1_s(src, dst, n_per_row, qw); return;
    case Type::IQ1_M: quantize_iq1_m(src, dst, n_per_row, qw); return;
  }
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
