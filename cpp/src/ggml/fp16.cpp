// Public fp16 / bf16 conversions and the plain-float row types (F32, F16, BF16).
#include <cstring>

#include "ggml/ggml_blocks.h"
#include "ggml/ggml_quants.h"
#include "ggml/half.h"

namespace mpq::detail::ggml {

uint16_t fp32_to_fp16(float f) { return half_from_float(f); }
float fp16_to_fp32(uint16_t h) { return float_from_half(h); }
uint16_t fp32_to_bf16(float f) { return bf16_from_float(f); }
float bf16_to_fp32(uint16_t h) { return float_from_bf16(h); }

// Row converters (unaligned-safe: values go through memcpy).
void convert_row_to_f16(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = half_from_float(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

void convert_row_to_bf16(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = bf16_from_float(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

void convert_row_from_f16(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    y[i] = float_from_half(h);
  }
}

void convert_row_from_bf16(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    y[i] = float_from_bf16(h);
  }
}

}  // namespace mpq::detail::ggml
