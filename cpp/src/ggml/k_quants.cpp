// The K-quant formats Q2_K..Q6_K: 256-value super-blocks of 16- or 32-value groups, each group
// with its own scale (and min), the group scales themselves quantized against one fp16 super
// scale. Without importance weights this is ggml's quantize_row_*_ref; with them, *_impl.
#include <cmath>
#include <cstring>

#include "ggml/ggml_blocks.h"
#include "ggml/half.h"
#include "ggml/k_quants_pack.h"
#include "ggml/scale_search.h"

namespace mpq::detail::ggml {

namespace {

constexpr int QK = kSuperBlock;

inline float sum_squares(const float* x) {
  float s = 0;
  for (int j = 0; j < QK; ++j) s += x[j] * x[j];
  return s;
}

// Requantizes values with the final (fp16-rounded, 4/6-bit quantized) scale and min of their
// group: level = clamp(round((x + dm) / d), 0, NMAX). Groups whose scale rounded to 0 keep the
// levels of the search, as in ggml.
template <int GROUP, int NMAX>
inline void requantize_affine(const float* x, float d, float dm, uint8_t* L) {
  if (!d) return;
  for (int i = 0; i < GROUP; ++i) {
    L[i] = static_cast<uint8_t>(larger(0, smaller(NMAX, round_nearest((x[i] + dm) / d))));
  }
}

// Symmetric counterpart for Q3_K (levels -4..3) and Q6_K (-32..31), stored with the offset.
template <int NMAX>
inline void requantize_symmetric(const float* x, float d, int8_t* L) {
  if (!d) return;
  for (int i = 0; i < 16; ++i) {
    L[i] = static_cast<int8_t>(larger(-NMAX, smaller(NMAX - 1, round_nearest(x[i] / d))) + NMAX);
  }
}

// ------------------------------------------------------------------------------------- Q2_K

void q2_k_block(const float* x, const float* qw, BlockQ2_K& b) {
  // Groups go through fit_affine transposed: xt[l][j] is value l of group j.
  float xt[16][16], wt[16][16], scales[16], mins[16];
  int32_t Lt[16][16];
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) xt[l][j] = x[16 * j + l];
  }
  if (!qw) {
    // Groups searched with |x| as weights (mean absolute error), then scales and mins each
    // quantized to 4 bits against their maximum.
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) wt[l][j] = std::fabs(x[16 * j + l]);
    }
    fit_affine<16, 16, 3, true>(xt, wt, Lt, scales, mins, -0.5f, 0.1f, 15);
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float q4scale = 15.f;
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<uint8_t>(round_nearest(iscale * scales[j]));
      b.d = half_from_float(max_scale / q4scale);
    } else {
      std::memset(b.scales, 0, 16);
      b.d = half_from_float(0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < 16; ++j) b.scales[j] |= static_cast<uint8_t>(round_nearest(iscale * mins[j]) << 4);
      b.dmin = half_from_float(max_min / q4scale);
    } else {
      b.dmin = half_from_float(0.f);
    }
  } else {
    // Importance-weighted groups; the 16 scales and 16 mins are then fitted with the groups'
    // total weights.
    const float sigma2 = sum_squares(x) / QK;
    float sw[16];
    for (int j = 0; j < 16; ++j) {
      const float* xg = x + 16 * j;
      const float* qg = qw + 16 * j;
      sw[j] = 0;
      for (int l = 0; l < 16; ++l) {
        wt[l][j] = qg[l] * std::sqrt(sigma2 + xg[l] * xg[l]);
        sw[j] += wt[l][j];
      }
    }
    fit_affine<16, 16, 3, false>(xt, wt, Lt, scales, mins, -0.9f, 0.05f, 36);
    uint8_t Ls[16], Lm[16];
    const float dm = fit_positive<16, 15>(scales, Ls, sw);
    const float mm = fit_positive<16, 15>(mins, Lm, sw);
    b.d = half_from_float(dm);
    b.dmin = half_from_float(mm);
    for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
  }
  uint8_t L[QK];
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) L[16 * j + l] = static_cast<uint8_t>(Lt[l][j]);
  }
  const float d = float_from_half(b.d), dmin = float_from_half(b.dmin);
  for (int j = 0; j < 16; ++j) {
    requantize_affine<16, 3>(x + 16 * j, d * (b.scales[j] & 0xF), dmin * (b.scales[j] >> 4), L + 16 * j);
  }
  pack_2bit(L, b.qs);
}

// ------------------------------------------------------------------------------------- Q3_K

void q3_k_block(const float* x, const float* qw, BlockQ3_K& b) {
  int8_t L[QK];
  float scales[16];
  std::memset(b.scales, 0, 12);
  if (!qw) {
    // x^2-weighted descent per group; the signed scale of largest magnitude maps to -32.
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = fit_symmetric_descent<16, 4>(x + 16 * j, L + 16 * j);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        auto l = static_cast<int8_t>(round_nearest(iscale * scales[j]));
        l = static_cast<int8_t>(larger(-32, smaller(31, int{l})) + 32);
        set_q3_k_scale(b.scales, j, l);
      }
      b.d = half_from_float(1 / iscale);
    } else {
      b.d = half_from_float(0.f);
    }
  } else {
    const float sigma2 = 2 * sum_squares(x) / QK;
    float weight[16], sw[16];
    for (int j = 0; j < 16; ++j) {
      const float* xg = x + 16 * j;
      const float* qg = qw + 16 * j;
      for (int l = 0; l < 16; ++l) weight[l] = qg[l] * std::sqrt(sigma2 + xg[l] * xg[l]);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weight[l];
      sw[j] = sumw;
      scales[j] = fit_symmetric<16, 4>(xg, weight, L + 16 * j);
    }
    int8_t Ls[16];
    const float d_block = fit_symmetric<16, 32>(scales, sw, Ls);
    for (int j = 0; j < 16; ++j) set_q3_k_scale(b.scales, j, Ls[j]);
    b.d = half_from_float(d_block);
  }
  const float d = float_from_half(b.d);
  for (int j = 0; j < 16; ++j) requantize_symmetric<4>(x + 16 * j, d * get_q3_k_scale(b.scales, j), L + 16 * j);
  pack_q3_k_levels(L, b.hmask, b.qs);
}

// ------------------------------------------------------------------------------ Q4_K and Q5_K

// Shared by Q4_K (NMAX 15) and Q5_K (NMAX 31): 8 groups of 32 with 6-bit scales and mins. Leaves
// the final levels in L; the caller packs them.
template <int NMAX>
void q45_k_block(const float* x, const float* qw, uint16_t& d_out, uint16_t& dmin_out,
                 uint8_t* packed_scales, uint8_t* L) {
  // Groups go through fit_affine transposed: xt[l][j] is value l of group j.
  float xt[32][8], wt[32][8], scales[8], mins[8];
  int32_t Lt[32][8];
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) xt[l][j] = x[32 * j + l];
  }
  if (!qw) {
    // Per group: weights sqrt(mean x^2) + |x|; then scales and mins quantized against their max.
    for (int j = 0; j < 8; ++j) {
      const float* xg = x + 32 * j;
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += xg[l] * xg[l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) wt[l][j] = av_x + std::fabs(xg[l]);
    }
    if constexpr (NMAX == 15) {
      fit_affine<32, 8, NMAX, false>(xt, wt, Lt, scales, mins, -1.f, 0.1f, 20);
    } else {
      fit_affine<32, 8, NMAX, false>(xt, wt, Lt, scales, mins, -0.5f, 0.1f, 15);
    }
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
      ls[j] = smaller<uint8_t>(63, static_cast<uint8_t>(round_nearest(inv_scale * scales[j])));
      lm[j] = smaller<uint8_t>(63, static_cast<uint8_t>(round_nearest(inv_min * mins[j])));
    }
    d_out = half_from_float(max_scale / 63.f);
    dmin_out = half_from_float(max_min / 63.f);
  } else {
    const float sigma2 = 2 * sum_squares(x) / QK;
    float sw[8];
    for (int j = 0; j < 8; ++j) {
      const float* xg = x + 32 * j;
      const float* qg = qw + 32 * j;
      float sumw = 0;
      for (int l = 0; l < 32; ++l) {
        wt[l][j] = qg[l] * std::sqrt(sigma2 + xg[l] * xg[l]);
        sumw += wt[l][j];
      }
      sw[j] = sumw;
    }
    fit_affine<32, 8, NMAX, false>(xt, wt, Lt, scales, mins, -0.9f, 0.05f, 36);
    const float d_block = fit_positive<8, 63>(scales, ls, sw);
    const float m_block = fit_positive<8, 63>(mins, lm, sw);
    if constexpr (NMAX == 31) {  // ggml clamps here for Q5_K only (a level wrapped from a
      for (int j = 0; j < 8; ++j) {  // negative value, never seen in practice, would differ)
        ls[j] = smaller<uint8_t>(63, ls[j]);
        lm[j] = smaller<uint8_t>(63, lm[j]);
      }
    }
    d_out = half_from_float(d_block);
    dmin_out = half_from_float(m_block);
  }
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) L[32 * j + l] = static_cast<uint8_t>(Lt[l][j]);
  }
  pack_scale_min_k4(ls, lm, packed_scales);
  const float d = float_from_half(d_out), dmin = float_from_half(dmin_out);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    get_scale_min_k4(j, packed_scales, sc, m);
    requantize_affine<32, NMAX>(x + 32 * j, d * sc, dmin * m, L + 32 * j);
  }
}

// ------------------------------------------------------------------------------------- Q6_K

// Returns false (block left for the caller to zero) when every group scale is ~0.
bool q6_k_block(const float* x, const float* qw, BlockQ6_K& b) {
  int8_t L[QK];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int j = 0; j < 16; ++j) {
    // With an imatrix ggml uses its raw weights here (no sigma2 term), without it x^2.
    scales[j] = fit_symmetric<16, 32>(x + 16 * j, qw ? qw + 16 * j : nullptr, L + 16 * j);
    const float abs_scale = std::fabs(scales[j]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scales[j];
    }
  }
  if (max_abs_scale < kGroupEps) return false;
  const float iscale = -128.f / max_scale;
  b.d = half_from_float(1 / iscale);
  for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<int8_t>(smaller(127, round_nearest(iscale * scales[j])));
  const float d = float_from_half(b.d);
  for (int j = 0; j < 16; ++j) requantize_symmetric<32>(x + 16 * j, d * b.scales[j], L + 16 * j);
  pack_q6_k_levels(L, b.ql, b.qh);
  return true;
}

}  // namespace

void quantize_q2_k(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockQ2_K b;
  for (int64_t i = 0; i < n / QK; ++i, x += QK, out += sizeof b) {
    q2_k_block(x, qw ? qw + i * QK : nullptr, b);
    std::memcpy(out, &b, sizeof b);
  }
}

void quantize_q3_k(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockQ3_K b;
  for (int64_t i = 0; i < n / QK; ++i, x += QK, out += sizeof b) {
    q3_k_block(x, qw ? qw + i * QK : nullptr, b);
    std::memcpy(out, &b, sizeof b);
  }
}

void quantize_q4_k(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockQ4_K b;
  uint8_t L[QK];
  for (int64_t i = 0; i < n / QK; ++i, x += QK, out += sizeof b) {
    q45_k_block<15>(x, qw ? qw + i * QK : nullptr, b.d, b.dmin, b.scales, L);
    pack_4bit_k(L, b.qs);
    std::memcpy(out, &b, sizeof b);
  }
}

void quantize_q5_k(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockQ5_K b;
  uint8_t L[QK];
  for (int64_t i = 0; i < n / QK; ++i, x += QK, out += sizeof b) {
    q45_k_block<31>(x, qw ? qw + i * QK : nullptr, b.d, b.dmin, b.scales, L);
    pack_5bit_k(L, b.qs, b.qh);
    std::memcpy(out, &b, sizeof b);
  }
}

void quantize_q6_k(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockQ6_K b;
  for (int64_t i = 0; i < n / QK; ++i, x += QK, out += sizeof b) {
    if (!q6_k_block(x, qw ? qw + i * QK : nullptr, b)) std::memset(&b, 0, sizeof b);
    std::memcpy(out, &b, sizeof b);
  }
}

}  // namespace mpq::detail::ggml
