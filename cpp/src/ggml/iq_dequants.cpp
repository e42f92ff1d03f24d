// Readers of the IQ1-IQ3 codebook formats, exactly ggml's dequantize_row_iq* (same products in the
// same order; a sign is a multiplication by -1, which also turns 0 into -0 as there).
#include <cstring>

#include "ggml/ggml_blocks.h"
#include "ggml/half.h"
#include "ggml/iq_grids.h"

namespace mpq::detail::ggml {

namespace {

constexpr int QK = kSuperBlock;

// Byte j of a grid entry (ggml reads entries as byte arrays; x86 and ARM are little-endian).
inline int grid_byte(uint64_t entry, int j) { return static_cast<int>((entry >> 8 * j) & 0xFF); }
inline int grid_sbyte(uint64_t entry, int j) { return static_cast<int8_t>(grid_byte(entry, j)); }

inline float sign(uint8_t signs, int j) { return (signs >> j) & 1 ? -1.f : 1.f; }

// Eight values db * grid[j] * (+-1).
inline void put8(float db, uint64_t entry, uint8_t signs, float* y) {
  for (int j = 0; j < 8; ++j) y[j] = db * grid_byte(entry, j) * sign(signs, j);
}

// Two 4-value codewords sharing one sign byte.
inline void put4x2(float db, uint32_t g1, uint32_t g2, uint8_t signs, float* y) {
  for (int j = 0; j < 4; ++j) {
    y[j] = db * grid_byte(g1, j) * sign(signs, j);
    y[j + 4] = db * grid_byte(g2, j) * sign(signs, j + 4);
  }
}

}  // namespace

void dequantize_iq2_xxs(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockIQ2_XXS b;
  for (int64_t i = 0; i < n / QK; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t aux[2];
      std::memcpy(aux, b.qs + 4 * ib, sizeof aux);
      const float db = d * (0.5f + (aux[1] >> 28)) * 0.25f;
      for (int l = 0; l < 4; ++l, y += 8) {
        put8(db, kIq2xxsGrid[(aux[0] >> 8 * l) & 255], sign_byte(aux[1] >> 7 * l), y);
      }
    }
  }
}

void dequantize_iq2_xs(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockIQ2_XS b;
  for (int64_t i = 0; i < n / QK; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    for (int ib = 0; ib < 8; ++ib) {
      const float db[2] = {d * (0.5f + (b.scales[ib] & 0xf)) * 0.25f, d * (0.5f + (b.scales[ib] >> 4)) * 0.25f};
      for (int l = 0; l < 4; ++l, y += 8) {
        const uint16_t q = b.qs[4 * ib + l];
        put8(db[l / 2], kIq2xsGrid[q & 511], sign_byte(q >> 9), y);
      }
    }
  }
}

void dequantize_iq2_s(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockIQ2_S b;
  for (int64_t i = 0; i < n / QK; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    const uint8_t* signs = b.qs + QK / 8;
    for (int ib = 0; ib < 8; ++ib) {
      const float db[2] = {d * (0.5f + (b.scales[ib] & 0xf)) * 0.25f, d * (0.5f + (b.scales[ib] >> 4)) * 0.25f};
      for (int l = 0; l < 4; ++l, y += 8) {
        const int idx = b.qs[4 * ib + l] | ((b.qh[ib] << (8 - 2 * l)) & 0x300);
        put8(db[l / 2], kIq2sGrid[idx], signs[4 * ib + l], y);
      }
    }
  }
}

void dequantize_iq3_xxs(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockIQ3_XXS b;
  for (int64_t i = 0; i < n / QK; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t aux;
      std::memcpy(&aux, b.qs + QK / 4 + 4 * ib, sizeof aux);
      const float db = d * (0.5f + (aux >> 28)) * 0.5f;
      const uint8_t* qs = b.qs + 8 * ib;
      for (int l = 0; l < 4; ++l, y += 8) {
        put4x2(db, kIq3xxsGrid[qs[2 * l]], kIq3xxsGrid[qs[2 * l + 1]], sign_byte(aux >> 7 * l), y);
      }
    }
  }
}

void dequantize_iq3_s(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockIQ3_S b;
  for (int64_t i = 0; i < n / QK; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    for (int ib = 0; ib < 8; ++ib) {
      const int ls = (b.scales[ib / 2] >> 4 * (ib % 2)) & 0xf;
      const float db = d * (1 + 2 * ls);
      const uint8_t* qs = b.qs + 8 * ib;
      const int qh = b.qh[ib];
      for (int l = 0; l < 4; ++l, y += 8) {
        const uint32_t g1 = kIq3sGrid[qs[2 * l] | ((qh << (8 - 2 * l)) & 256)];
        const uint32_t g2 = kIq3sGrid[qs[2 * l + 1] | ((qh << (7 - 2 * l)) & 256)];
        put4x2(db, g1, g2, b.signs[4 * ib + l], y);
      }
    }
  }
}

void dequantize_iq1_s(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockIQ1_S b;
  for (int64_t i = 0; i < n / QK; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    for (int ib = 0; ib < 8; ++ib) {
      const int qh = b.qh[ib];
      const float dl = d * (2 * ((qh >> 12) & 7) + 1);
      const float delta = qh & 0x8000 ? -0.125f : 0.125f;
      for (int l = 0; l < 4; ++l, y += 8) {
        const uint64_t g = kIq1sGrid[b.qs[4 * ib + l] | (((qh >> 3 * l) & 7) << 8)];
        for (int j = 0; j < 8; ++j) y[j] = dl * (grid_sbyte(g, j) + delta);
      }
    }
  }
}

void dequantize_iq1_m(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockIQ1_M b;
  for (int64_t i = 0; i < n / QK; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    uint16_t sc[4];
    std::memcpy(sc, b.scales, sizeof sc);
    const uint16_t dh = static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) |
                                              (sc[3] & 0xf000));
    const float d = float_from_half(dh);
    for (int ib = 0; ib < 8; ++ib) {
      const float dl[2] = {d * (2 * ((sc[ib / 2] >> (6 * (ib % 2))) & 7) + 1),
                           d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 7) + 1)};
      for (int l = 0; l < 4; ++l, y += 8) {
        const int qh = b.qh[2 * ib + l / 2] >> 4 * (l % 2);  // this codeword's nibble
        const uint64_t g = kIq1sGrid[b.qs[4 * ib + l] | ((qh & 7) << 8)];
        const float delta = qh & 8 ? -0.125f : 0.125f;
        for (int j = 0; j < 8; ++j) y[j] = dl[l / 2] * (grid_sbyte(g, j) + delta);
      }
    }
  }
}

}  // namespace mpq::detail::ggml
