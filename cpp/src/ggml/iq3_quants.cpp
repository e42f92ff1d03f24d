// The 3-bit codebook formats, groups of 32 values as 8 codewords of 4 three-bit levels: IQ3_XXS (a
// 256-point lattice, 7 sign bits per 8 with the parity fixed, 4-bit group scales in the sign
// words) and IQ3_S (512 points, 8 explicit sign bits, scales in nibbles). ggml's
// quantize_row_iq3_xxs_impl / quantize_row_iq3_s_impl; without importance weights both weigh by x^2.
#include <cmath>
#include <cstring>

#include "ggml/ggml_blocks.h"
#include "ggml/half.h"
#include "ggml/iq_search.h"

namespace mpq::detail::ggml {

namespace {

constexpr int QK = kSuperBlock;
constexpr int kMaxQ = 8;  // levels 0..7, coordinates 1, 3, ..., 15

struct Iq3Type {
  LatticeKind lattice;
  bool even_signs;
  float eps;  // groups whose max is below it are zero; 0: only an all-zero group (IQ3_S's "!max")
  float d_fudge;
  GroupSearch search;
};

constexpr Iq3Type kIq3xxs{LatticeKind::kIq3xxs, true, 1e-8f, 1.0125f, {15, 0.2f, true, Requant::kOffGrid}};
constexpr Iq3Type kIq3s{LatticeKind::kIq3s, false, 0.f, 1.033f, {9, 0.2f, false, Requant::kAllIfOff}};

// One super-block: store(ib, index[8], signs[4]) for every group that is not zero; returns the
// largest group scale (0 when all groups are zero) and the groups' scales in scales.
template <typename Store>
float iq3_block(const float* x, const float* qw, const Iq3Type& t, float* scales, Store store) {
  const Lattice& g = lattice(t.lattice);
  float max_scale = 0;
  const float sigma2 = 2 * sum_of_squares(x, QK) / QK;
  for (int ib = 0; ib < 8; ++ib) {
    const float* xb = x + 32 * ib;
    float weight[32], waux[32], xval[32];
    group_weights(xb, qw ? qw + 32 * ib : nullptr, sigma2, 32, weight, [](float v) { return v * v; });
    for (int i = 0; i < 32; ++i) waux[i] = std::sqrt(weight[i]);
    uint8_t signs[4];
    split_signs(xb, weight, 4, t.even_signs, xval, signs);
    float max = xval[0];
    for (int i = 1; i < 32; ++i) max = larger(max, xval[i]);
    scales[ib] = 0;
    if (max < t.eps || max == 0) continue;
    uint16_t index[8];
    float scale = search_group<32, 4, kMaxQ>(g, t.search, xval, weight, waux, max, max / (2 * kMaxQ - 1), index);
    if (scale < 0) {
      scale = -scale;
      for (uint8_t& s : signs) s = static_cast<uint8_t>(t.even_signs ? ~s & 127 : ~s);
    }
    store(ib, index, signs);
    scales[ib] = scale;
    max_scale = larger(max_scale, scale);
  }
  return max_scale;
}

}  // namespace

void quantize_iq3_xxs(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockIQ3_XXS b;
  for (int64_t i = 0; i < n / QK; ++i, x += QK, out += sizeof b) {
    std::memset(&b, 0, sizeof b);
    uint32_t scales_and_signs[8] = {};
    float scales[8];
    const float max_scale = iq3_block(x, qw ? qw + QK * i : nullptr, kIq3xxs, scales,
                              [&](int ib, const uint16_t* index, const uint8_t* signs) {
                                for (int k = 0; k < 8; ++k) b.qs[8 * ib + k] = static_cast<uint8_t>(index[k]);
                                scales_and_signs[ib] = signs[0] | (signs[1] << 7) | (signs[2] << 14) |
                                                       (static_cast<uint32_t>(signs[3]) << 21);
                              });
    if (max_scale) {  // else ggml clears the whole block
      const float d = max_scale / 31;
      b.d = half_from_float(d * kIq3xxs.d_fudge);
      const float id = 1 / d;
      for (int ib = 0; ib < 8; ++ib) scales_and_signs[ib] |= static_cast<uint32_t>(group_scale_code(id, scales[ib])) << 28;
      std::memcpy(b.qs + QK / 4, scales_and_signs, sizeof scales_and_signs);
    } else {
      std::memset(b.qs, 0, sizeof b.qs);
    }
    std::memcpy(out, &b, sizeof b);
  }
}

void quantize_iq3_s(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockIQ3_S b;
  for (int64_t i = 0; i < n / QK; ++i, x += QK, out += sizeof b) {
    std::memset(&b, 0, sizeof b);
    float scales[8];
    // ggml advances its qs / signs write position only past groups that are not zero, so the
    // groups after a zero one sit one slot early there (and the reader decodes them shifted);
    // the 9th index bits in qh stay at the group's own place.
    int slot = 0;
    const float max_scale = iq3_block(x, qw ? qw + QK * i : nullptr, kIq3s, scales,
                              [&](int ib, const uint16_t* index, const uint8_t* signs) {
                                for (int k = 0; k < 8; ++k) {
                                  b.qs[8 * slot + k] = static_cast<uint8_t>(index[k] & 255);
                                  b.qh[ib] = static_cast<uint8_t>(b.qh[ib] | ((index[k] >> 8) << k));
                                }
                                std::memcpy(b.signs + 4 * slot, signs, 4);
                                ++slot;
                              });
    if (max_scale) {
      const float d = max_scale / 31;
      b.d = half_from_float(d * kIq3s.d_fudge);
      const float id = 1 / d;
      for (int ib = 0; ib < 8; ib += 2) {
        b.scales[ib / 2] = static_cast<uint8_t>(group_scale_code(id, scales[ib]) |
                                                (group_scale_code(id, scales[ib + 1]) << 4));
      }
    }
    std::memcpy(out, &b, sizeof b);
  }
}

}  // namespace mpq::detail::ggml
