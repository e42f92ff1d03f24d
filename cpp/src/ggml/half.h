#pragma once
// Internal, inline: fp16 / bf16 <-> fp32 conversions (public wrappers in fp16.cpp). Bit-identical
// to ggml for every input (checked exhaustively), and independent of flush-to-zero modes.
#include <bit>
#include <cstdint>

namespace mpq::detail::ggml {

inline uint16_t half_from_float(float f) {
  // Branch-free (it runs per value for F16 rows): every case computed, one selected.
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t mag = bits & 0x7FFFFFFFu;
  // A normal half (|f| >= 2^-14): round away the 13 extra mantissa bits to nearest even (a carry
  // correctly bumps the exponent), then move the exponent bias from 127 to 15.
  const uint32_t normal = (mag + 0x0FFFu + ((mag >> 13) & 1u) - 0x38000000u) >> 13;
  // Below that, halves count units of 2^-24: adding 0.5 makes the FPU round |f| to that unit
  // (nearest even), leaving the count in the low mantissa bits. Only normal operands and
  // results, so flush-to-zero / denormals-are-zero modes cannot change it.
  const uint32_t subnormal = std::bit_cast<uint32_t>(std::bit_cast<float>(mag) + 0.5f) - 0x3F000000u;
  const uint32_t h = mag > 0x7F800000u   ? 0x7E00u     // NaN: ggml drops the payload
                     : mag >= 0x477FF000u ? 0x7C00u    // >= 65520 rounds beyond 65504: inf
                     : mag < 0x38800000u  ? subnormal
                                          : normal;
  return static_cast<uint16_t>(sign | h);
}

inline float float_from_half(uint16_t h) {
  // Branch-free: all three cases computed, one selected. Only integer operations and an exact
  // int -> float conversion and power-of-two product with normal operands, so a thread running
  // with flush-to-zero / denormals-are-zero still decodes half subnormals correctly.
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;                      // exponent and mantissa
  const uint32_t normal = (em << 13) + 0x38000000u;     // exponent bias 15 -> 127
  // inf, or NaN: ggml's float arithmetic on the way quiets a signalling NaN (bit 22)
  const uint32_t special = (em << 13) | 0x7F800000u | ((em & 0x3FFu) ? 0x00400000u : 0u);
  const uint32_t subnormal = std::bit_cast<uint32_t>(static_cast<float>(em) * 0x1p-24f);
  const uint32_t bits = em < 0x400u ? subnormal : em >= 0x7C00u ? special : normal;
  return std::bit_cast<float>(sign | bits);
}

inline uint16_t bf16_from_float(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

inline float float_from_bf16(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

}  // namespace mpq::detail::ggml
