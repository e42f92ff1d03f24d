// The 2-bit codebook formats: IQ2_XXS (groups of 32, codewords of 8 from a 256-point lattice, 4-bit
// group scales in the sign words), IQ2_XS (groups of 16, 512 points, 9-bit indices with 7 sign
// bits) and IQ2_S (groups of 16, 1024 points, 8 explicit sign bits). ggml's
// quantize_row_iq2_*_impl; IQ2_XXS and IQ2_XS need importance weights, IQ2_S weighs by
// 0.25 sigma^2 + x^2 without them.
#include <cassert>
#include <cmath>
#include <cstring>

#include "ggml/ggml_blocks.h"
#include "ggml/half.h"
#include "ggml/iq_search.h"

namespace mpq::detail::ggml {

namespace {

constexpr int QK = kSuperBlock;
constexpr int kMaxQ = 3;  // levels 0..2, coordinates 1, 3, 5

void iq2_xxs_block(const float* x, const float* qw, BlockIQ2_XXS& b) {
  const Lattice& g = lattice(LatticeKind::kIq2xxs);
  static constexpr GroupSearch kSearch{6, 0.1f, true, Requant::kAll};
  std::memset(&b, 0, sizeof b);
  uint32_t q2[16] = {};
  float scales[8], max_scale = 0;
  const float sigma2 = sum_of_squares(x, QK) / QK;
  for (int ib = 0; ib < 8; ++ib) {
    const float* xb = x + 32 * ib;
    float weight[32], waux[32], xval[32];
    group_weights(xb, qw + 32 * ib, sigma2, 32, weight, [](float) { return 0.f; });  // qw is given
    for (int i = 0; i < 32; ++i) waux[i] = std::sqrt(weight[i]);
    uint8_t signs[4];
    split_signs(xb, weight, 4, true, xval, signs);
    float max = xval[0];
    for (int i = 1; i < 32; ++i) max = larger(max, xval[i]);
    scales[ib] = 0;
    if (max < kGroupEps) continue;
    uint8_t Lqp[32];
    const float qp_scale = fit_positive<32, kMaxQ + 1>(xval, Lqp, weight);
    const float eff_max = qp_scale * kMaxQ;
    if (eff_max <= 0) continue;
    uint16_t index[4];
    float scale = search_group<32, 8, kMaxQ>(g, kSearch, xval, weight, waux, eff_max, qp_scale, index);
    if (scale < 0) {
      scale = -scale;
      for (uint8_t& s : signs) s = static_cast<uint8_t>(~s & 127);
    }
    for (int k = 0; k < 4; ++k) {
      q2[2 * ib] |= static_cast<uint32_t>(index[k]) << 8 * k;
      q2[2 * ib + 1] |= static_cast<uint32_t>(signs[k]) << 7 * k;
    }
    scales[ib] = scale;
    max_scale = larger(max_scale, scale);
  }
  if (!max_scale) return;
  const float d = max_scale / 31;
  b.d = half_from_float(d);
  const float id = 1 / d;
  for (int ib = 0; ib < 8; ++ib) q2[2 * ib + 1] |= static_cast<uint32_t>(group_scale_code(id, scales[ib])) << 28;
  std::memcpy(b.qs, q2, sizeof q2);
}

// IQ2_XS and IQ2_S: groups of 16 = two codewords, one 4-bit scale each.
struct Iq2Pair {
  LatticeKind lattice;
  bool even_signs;   // IQ2_XS: 7 sign bits per 8 (parity fixed), IQ2_S: 8
  float sigma2_mul;  // sigma^2 = sigma2_mul * sum x^2 / 256
  float eps;         // groups below it are all zero
  float d_fudge;     // the super-scale is stored times this
};

// Returns false when every group came out with scale 0 (then d and the scales are left alone).
template <typename Store>
bool iq2_pairs_block(const float* x, const float* qw, const Iq2Pair& t, uint16_t& dh, uint8_t* scales_out,
                     Store store) {
  const Lattice& g = lattice(t.lattice);
  static constexpr GroupSearch kSearch{9, 0.1f, true, Requant::kOffGrid};
  float scales[16], max_scale = 0;
  const float sigma2 = t.sigma2_mul * sum_of_squares(x, QK) / QK;
  for (int ib = 0; ib < 16; ++ib) {
    const float* xb = x + 16 * ib;
    float weight[16], waux[16], xval[16];
    group_weights(xb, qw ? qw + 16 * ib : nullptr, sigma2, 16, weight,
                  [sigma2](float v) { return 0.25f * sigma2 + v * v; });
    for (int i = 0; i < 16; ++i) waux[i] = std::sqrt(weight[i]);
    uint8_t signs[2];
    split_signs(xb, weight, 2, t.even_signs, xval, signs);
    float max = xval[0];
    for (int i = 1; i < 16; ++i) max = larger(max, xval[i]);
    scales[ib] = 0;
    if (max < t.eps) continue;
    uint16_t index[2];
    float scale = search_group<16, 8, kMaxQ>(g, kSearch, xval, weight, waux, max, max / (2 * kMaxQ - 1), index);
    if (scale < 0) {
      scale = -scale;
      for (uint8_t& s : signs) s = static_cast<uint8_t>(t.even_signs ? ~s & 127 : ~s);
    }
    for (int k = 0; k < 2; ++k) store(2 * ib + k, index[k], signs[k]);
    scales[ib] = scale;
    max_scale = larger(max_scale, scale);
  }
  if (!max_scale) return false;
  const float d = max_scale / 31;
  const float id = 1 / d;
  for (int ib = 0; ib < 16; ib += 2) {
    scales_out[ib / 2] = static_cast<uint8_t>(group_scale_code(id, scales[ib]) |
                                              (group_scale_code(id, scales[ib + 1]) << 4));
  }
  dh = half_from_float(d * t.d_fudge);
  return true;
}

constexpr Iq2Pair kIq2xs{LatticeKind::kIq2xs, true, 1.f, kGroupEps, 1.f};
constexpr Iq2Pair kIq2s{LatticeKind::kIq2s, false, 2.f, 1e-8f, 0.9875f};

}  // namespace

void quantize_iq2_xxs(const float* x, void* dst, int64_t n, const float* qw) {
  assert(qw && "IQ2_XXS needs importance weights");
  auto* out = static_cast<uint8_t*>(dst);
  BlockIQ2_XXS b;
  for (int64_t i = 0; i < n / QK; ++i, x += QK, qw += QK, out += sizeof b) {
    iq2_xxs_block(x, qw, b);
    std::memcpy(out, &b, sizeof b);
  }
}

void quantize_iq2_xs(const float* x, void* dst, int64_t n, const float* qw) {
  assert(qw && "IQ2_XS needs importance weights");
  auto* out = static_cast<uint8_t*>(dst);
  BlockIQ2_XS b;
  for (int64_t i = 0; i < n / QK; ++i, x += QK, qw += QK, out += sizeof b) {
    std::memset(&b, 0, sizeof b);
    const bool nonzero = iq2_pairs_block(x, qw, kIq2xs, b.d, b.scales, [&](int i8, uint16_t index, uint8_t signs) {
      b.qs[i8] = static_cast<uint16_t>(index | (signs << 9));
    });
    if (!nonzero) std::memset(b.qs, 0, sizeof b.qs);  // as ggml (IQ2_S keeps them)
    std::memcpy(out, &b, sizeof b);
  }
}

void quantize_iq2_s(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockIQ2_S b;
  for (int64_t i = 0; i < n / QK; ++i, x += QK, out += sizeof b) {
    std::memset(&b, 0, sizeof b);
    iq2_pairs_block(x, qw ? qw + QK * i : nullptr, kIq2s, b.d, b.scales,
                          [&](int i8, uint16_t index, uint8_t signs) {
                            b.qs[i8] = static_cast<uint8_t>(index & 255);
                            b.qh[i8 / 4] = static_cast<uint8_t>(b.qh[i8 / 4] | ((index >> 8) << 2 * (i8 % 4)));
                            b.qs[QK / 8 + i8] = signs;
                          });
    std::memcpy(out, &b, sizeof b);
  }
}

}  // namespace mpq::detail::ggml
