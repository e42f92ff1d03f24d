#pragma once
// mpq's own implementation of llama.cpp/ggml's quantization formats, byte-identical to ggml's
// ggml_quantize_chunk() (with and without an importance matrix) and to its to_float() readers.
//
// Everything here is pure, thread-safe and re-entrant, so rows may be quantized in parallel. The
// one piece of shared state, the IQ1-IQ3 codebooks' lattices (iq_grids.h), is built once on
// first use and read-only after. Inputs are trusted (validated by the caller): non-negative
// importance weights, n_per_row a multiple of the type's block size. Non-finite values are found
// here (quantize_row's result), because the fast formats find them at no cost while quantizing.
//
// Byte-exactness depends on doing ggml's float arithmetic in ggml's order; the .cpp files must be
// compiled with -ffp-contract=off (no fused multiply-add), as ggml's own x86-64 build effectively is.
#include <cstdint>

#include "ggml/ggml_types.h"

namespace mpq::detail::ggml {

// Quantizes one row of n_per_row floats into row_size(type, n_per_row) bytes at dst.
// `importance` (nullable) holds n_per_row per-column weights (an imatrix row). As in ggml:
// Q8_0 ignores it; the legacy and K types without it use ggml's reference quantizer; the IQ4,
// IQ3, IQ2_S and IQ1_M types always run their weighted search (squared values stand in for
// missing weights); IQ2_XXS, IQ2_XS and IQ1_S require it (requires_importance(), checked by the
// caller).
// F32 / F16 / BF16 rows are plain conversions and ignore it.
// Returns the row's largest |x| as float bits. A result >= kNonFiniteBits means the row holds a
// NaN or an Inf: its bytes at dst are then meaningless (or not written) and must be rejected.
inline constexpr uint32_t kNonFiniteBits = 0x7F800000u;
uint32_t quantize_row(Type type, const float* src, void* dst, int64_t n_per_row,
                      const float* importance);

// Decodes one row of n_per_row values, exactly as ggml's to_float().
void dequantize_row(Type type, const void* src, float* dst, int64_t n_per_row);

// IEEE half conversions, bit-identical to ggml's (round to nearest even, subnormals kept,
// overflow to inf, NaN -> quiet NaN 0x7E00 with the sign kept).
uint16_t fp32_to_fp16(float f);
float fp16_to_fp32(uint16_t h);
// bfloat16 as ggml writes BF16 tensors: round to nearest even, NaN forced quiet; no flushing.
uint16_t fp32_to_bf16(float f);
float bf16_to_fp32(uint16_t h);

}  // namespace mpq::detail::ggml
