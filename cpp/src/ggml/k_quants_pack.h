#pragma once
// Internal, inline: how the K-quant blocks lay out their levels and group scales (ggml-common.h),
// shared by the quantizers (k_quants.cpp) and the readers (k_dequants.cpp).
#include <cstdint>
#include <cstring>

namespace mpq::detail::ggml {

// Q2_K / Q3_K low bits: byte l of each 32-byte half holds values l, l+32, l+64, l+96 of its
// 128 values, 2 bits each from the bottom.
template <typename Level>
inline void pack_2bit(const Level* L, uint8_t* qs) {
  for (int j = 0; j < 256; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                           (L[j + l + 96] << 6));
    }
  }
}

// Q3_K's 16 six-bit scales (stored + 32) in 12 bytes: low nibbles of scales 0-7 in the low
// nibbles of bytes 0-7, of 8-15 in their high nibbles; the 2 high bits of scale j in byte
// 8 + j % 4 at bit 2 * (j / 4). Bytes must start zeroed.
inline void set_q3_k_scale(uint8_t* scales, int j, int l) {
  if (j < 8) {
    scales[j] = static_cast<uint8_t>(l & 0xF);
  } else {
    scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
  }
  l >>= 4;
  scales[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
}

// The signed scale of group j, -32..31.
inline int get_q3_k_scale(const uint8_t* scales, int j) {
  const int low = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
  return (low | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

// Q3_K levels 0..7: the high bit of value j goes to bit j / 32 of hmask[j % 32], the low 2 bits
// through pack_2bit. Overwrites L with the low bits. (Branch-free: the high bit is a coin flip.)
inline void pack_q3_k_levels(int8_t* L, uint8_t* hmask, uint8_t* qs) {
  std::memset(hmask, 0, 32);
  for (int bit = 0; bit < 8; ++bit) {
    for (int m = 0; m < 32; ++m) {
      const int j = 32 * bit + m;
      const int high = L[j] > 3;
      hmask[m] = static_cast<uint8_t>(hmask[m] | (high << bit));
      L[j] = static_cast<int8_t>(L[j] - 4 * high);
    }
  }
  pack_2bit(L, qs);
}

// Q4_K / Q5_K: 8 six-bit scales and 8 six-bit mins in 12 bytes. Groups 0-3 take bytes 0-3
// (scale) and 4-7 (min) whole; groups 4-7 put their low nibbles in bytes 8-11 and their 2 high
// bits in the top bits of bytes 0-3 (scale) and 4-7 (min).
inline void pack_scale_min_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* q) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      q[j] = ls[j];
      q[j + 4] = lm[j];
    } else {
      q[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      q[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      q[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K: each 64 values share 32 bytes, the first 32 in the low nibbles.
inline void pack_4bit_k(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < 256; j += 64, qs += 32) {
    for (int l = 0; l < 32; ++l) qs[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
  }
}

// Q5_K: nibbles as Q4_K; the 5th bit of value 64k + l goes to bit 2k of qh[l], of 64k + 32 + l
// to bit 2k + 1.
inline void pack_5bit_k(const uint8_t* L, uint8_t* ql, uint8_t* qh) {
  std::memset(qh, 0, 32);
  for (int k = 0; k < 4; ++k, ql += 32) {
    for (int j = 0; j < 32; ++j) {
      const int l1 = L[64 * k + j], l2 = L[64 * k + j + 32];
      qh[j] = static_cast<uint8_t>(qh[j] | ((l1 >> 4) << (2 * k)) | ((l2 >> 4) << (2 * k + 1)));
      ql[j] = static_cast<uint8_t>((l1 & 0xF) | ((l2 & 0xF) << 4));
    }
  }
}

// Q6_K levels 0..63, per 128 values: low nibbles of values l and l+64 share ql[l], of l+32 and
// l+96 share ql[l+32]; the 2 high bits of l, l+32, l+64, l+96 fill qh[l] from the bottom.
inline void pack_q6_k_levels(const int8_t* L, uint8_t* ql, uint8_t* qh) {
  for (int j = 0; j < 256; j += 128, ql += 64, qh += 32) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
      const int q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                   ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
  }
}

}  // namespace mpq::detail::ggml
