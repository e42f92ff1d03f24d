#pragma once
// Internal, inline: fp16 / bf16 <-> fp32 conversions (public wrappers in fp16.cpp). Integer-only,
// so they cannot depend on FPU modes or compiler contraction; checked exhaustively against ggml.
#include <bit>
#include <cstdint>

namespace mpq::detail::ggml {

inline uint16_t half_from_float(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t mag = bits & 0x7FFFFFFFu;
  if (mag > 0x7F800000u) return sign | 0x7E00u;  // NaN: ggml drops the payload
  if (mag >= 0x477FF000u) return sign | 0x7C00u; // >= 65520 rounds beyond 65504: inf
  if (mag >= 0x38800000u) {                      // a normal half (>= 2^-14)
    // Round away the 13 extra mantissa bits (to nearest, ties to even; a carry bumps the
    // exponent, which is correct), then move the exponent bias from 127 to 15.
    const uint32_t rounded = mag + 0x0FFFu + ((mag >> 13) & 1u);
    return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
  }
  if (mag <= 0x33000000u) return sign;  // <= 2^-25: ties to even go to zero
  // A half subnormal counts units of 2^-24: shift the full 24-bit significand down, round to even.
  const uint32_t exponent = mag >> 23;  // 102..112
  const uint32_t significand = (mag & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - exponent;  // 14..24
  uint32_t q = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  if (rest > halfway || (rest == halfway && (q & 1u))) ++q;
  return sign | static_cast<uint16_t>(q);
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
