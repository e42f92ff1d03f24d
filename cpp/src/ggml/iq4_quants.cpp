// The non-linear 4-bit formats: IQ4_NL (blocks of 32, one fp16 scale) and IQ4_XS (super-blocks of
// 256, 6-bit block scales under one fp16 scale). Levels index a fixed 16-entry table tuned for
// roughly normal weights. ggml runs the same weighted search with or without an imatrix (x^2
// weights without), for both formats (quantize_row_iq4_nl_impl).
#include <cmath>
#include <cstring>

#include "ggml/ggml_blocks.h"
#include "ggml/half.h"
#include "ggml/scale_search.h"

namespace mpq::detail::ggml {

namespace {

constexpr int8_t kValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                1,    13,   25,  38,  53,  69,  89,  113};
constexpr int kTries = 7;  // ggml's ntry: scales (v0 + t) / max for t in -7..7

// Index of the table entry nearest to x (the lower one on ties), as ggml's best_index_int8:
// a binary search for the bracketing pair, then a float comparison of the two distances.
inline int nearest_value(float x) {
  if (x <= kValues[0]) return 0;
  if (x >= kValues[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (x < kValues[mid]) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return x - kValues[hi - 1] < kValues[hi] - x ? hi - 1 : hi;
}

// The same choice, branch-free, for the hot scale search: all midpoints between neighbouring
// table entries are multiples of 1/2, so the nearest entry is constant on each [t/2, (t+1)/2).
// (The float distance comparison above is exact near a midpoint, where it matters; checked
// against it for every float with |x| < 300.) Valid for |x| < 2^30; the search stays within
// |x| <= 134.
constexpr int kBucketLo = -232, kBucketHi = 202;  // floor(2x) at or beyond these: index 0 / 15
struct BucketTable {
  float q[kBucketHi - kBucketLo + 1];
};
constexpr BucketTable make_bucket_table() {
  BucketTable t{};
  for (int b = kBucketLo; b <= kBucketHi; ++b) {
    int idx = 0;
    for (int k = 0; k < 15; ++k) idx += (kValues[k] + kValues[k + 1] <= b);  // midpoint <= b / 2
    t.q[b - kBucketLo] = kValues[idx];
  }
  return t;
}
constexpr BucketTable kBuckets = make_bucket_table();

inline float nearest_value_fast(float x) {
  const float x2 = 2 * x;
  int b = static_cast<int>(x2);
  b -= x2 < static_cast<float>(b);  // floor
  b = larger(kBucketLo, smaller(kBucketHi, b));
  return kBuckets.q[b - kBucketLo];
}

// One super-block of SUPER values in groups of 32. Writes the fp16 scale, the level nibbles and,
// for IQ4_XS (SUPER > 32), the 6-bit group scales.
template <int SUPER>
void iq4_block(const float* x, const float* qw, uint16_t& dh, uint8_t* q4, uint16_t* scales_h,
               uint8_t* scales_l) {
  constexpr int kGroups = SUPER / 32;
  float sigma2 = 0;
  for (int j = 0; j < SUPER; ++j) sigma2 += x[j] * x[j];
  sigma2 *= 2.f / SUPER;

  uint8_t L[SUPER];
  float scales[kGroups], weight[32];
  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < kGroups; ++ib) {
    const float* xb = x + 32 * ib;
    if (qw) {
      const float* qb = qw + 32 * ib;
      for (int j = 0; j < 32; ++j) weight[j] = qb[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    } else {
      for (int j = 0; j < 32; ++j) weight[j] = xb[j] * xb[j];
    }
    float amax;
    const float max = signed_absmax(xb, 32, &amax);
    if (amax < kGroupEps) {
      scales[ib] = 0;  // its levels are set below from a zero scale
      continue;
    }
    // Trial 0 maps the largest-magnitude value to the table's end, trials 1..15 use the scales
    // (v0 + t) / max, t = -7..7; keep the d = (sum w q x) / (sum w q^2) of the trial maximising
    // (sum w q x)^2 / (sum w q^2). The trials are independent, so their sums are accumulated
    // side by side (each in ggml's element order) and the choice replayed afterwards. ggml also
    // stores trial 0's levels, but every path below recomputes them.
    constexpr int kTrials = 2 * kTries + 2;
    float id[kTrials];
    id[0] = 1 / (-max / kValues[0]);
    for (int t = -kTries; t <= kTries; ++t) id[t + kTries + 1] = (t + kValues[0]) / max;
    float sumqx[kTrials] = {}, sumq2[kTrials] = {};
    for (int j = 0; j < 32; ++j) {
      const float xj = xb[j], w = weight[j];
      for (int k = 0; k < kTrials; ++k) {
        const float q = nearest_value_fast(id[k] * xj);
        sumqx[k] += w * q * xj;
        sumq2[k] += w * q * q;
      }
    }
    float d = sumq2[0] > 0 ? sumqx[0] / sumq2[0] : 0.f;
    float best = d * sumqx[0];
    for (int k = 1; k < kTrials; ++k) {
      if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best * sumq2[k]) {
        d = sumqx[k] / sumq2[k];
        best = d * sumqx[k];
      }
    }
    scales[ib] = d;
    const float abs_d = std::fabs(d);
    if (abs_d > amax_scale) {
      amax_scale = abs_d;
      max_scale = d;
    }
  }

  if constexpr (kGroups > 1) {
    // Group scales to 6 bits (-32..31) against the largest one (-> -32); levels redone with the
    // rounded group scale.
    *scales_h = 0;
    const float d = -max_scale / 32;  // -0.0 for an all-zero block, as in ggml
    dh = half_from_float(d);
    const float id = d ? 1 / d : 0.f;
    for (int ib = 0; ib < kGroups; ++ib) {
      int l = larger(-32, smaller(31, round_nearest(id * scales[ib])));
      const float dl = d * l;
      const float idl = dl ? 1 / dl : 0.f;
      const float* xb = x + 32 * ib;
      uint8_t* Lb = L + 32 * ib;
      for (int j = 0; j < 32; ++j) Lb[j] = static_cast<uint8_t>(nearest_value(idl * xb[j]));
      l += 32;
      const auto l_l = static_cast<uint8_t>(l & 0xF);
      const auto l_h = static_cast<uint8_t>(l >> 4);
      if (ib % 2 == 0) {
        scales_l[ib / 2] = l_l;
      } else {
        scales_l[ib / 2] |= static_cast<uint8_t>(l_l << 4);
      }
      *scales_h |= static_cast<uint16_t>(l_h << 2 * (ib % 8));
    }
  } else {
    dh = half_from_float(scales[0]);
    const float id = scales[0] ? 1 / scales[0] : 0;
    for (int j = 0; j < SUPER; ++j) L[j] = static_cast<uint8_t>(nearest_value(id * x[j]));
  }

  for (int i = 0; i < SUPER / 32; ++i) {
    for (int j = 0; j < 16; ++j) q4[16 * i + j] = static_cast<uint8_t>(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
  }
}

}  // namespace

void quantize_iq4_nl(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockIQ4_NL b;
  for (int64_t i = 0; i < n / 32; ++i, x += 32, out += sizeof b) {
    iq4_block<32>(x, qw ? qw + 32 * i : nullptr, b.d, b.qs, nullptr, nullptr);
    std::memcpy(out, &b, sizeof b);
  }
}

void quantize_iq4_xs(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockIQ4_XS b;
  for (int64_t i = 0; i < n / kSuperBlock; ++i, x += kSuperBlock, out += sizeof b) {
    iq4_block<kSuperBlock>(x, qw ? qw + kSuperBlock * i : nullptr, b.d, b.qs, &b.scales_h, b.scales_l);
    std::memcpy(out, &b, sizeof b);
  }
}

void dequantize_iq4_nl(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockIQ4_NL b;
  for (int64_t i = 0; i < n / 32; ++i, in += sizeof b, y += 32) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * kValues[b.qs[j] & 0xF];
      y[j + 16] = d * kValues[b.qs[j] >> 4];
    }
  }
}

void dequantize_iq4_xs(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockIQ4_XS b;
  for (int64_t i = 0; i < n / kSuperBlock; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    const uint8_t* qs = b.qs;
    for (int ib = 0; ib < 8; ++ib, y += 32, qs += 16) {
      const int ls = ((b.scales_l[ib / 2] >> 4 * (ib % 2)) & 0xF) | (((b.scales_h >> 2 * ib) & 3) << 4);
      const float dl = d * (ls - 32);
      for (int j = 0; j < 16; ++j) {
        y[j] = dl * kValues[qs[j] & 0xF];
        y[j + 16] = dl * kValues[qs[j] >> 4];
      }
    }
  }
}

}  // namespace mpq::detail::ggml
