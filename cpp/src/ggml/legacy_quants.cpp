// The 32-value "legacy" formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (ggml's quantize_row_*_ref without
// importance weights, quantize_row_*_impl with them) and their readers.
#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ggml/ggml_blocks.h"
#include "ggml/half.h"
#include "ggml/scale_search.h"

namespace mpq::detail::ggml {

namespace {

constexpr int QK = kBlock32;

// The block scans of the reference quantizers, vectorised: a float min / max with ggml's tie rules
// (the first of equal values wins, which matters only for the sign of a zero) does not vectorise,
// but on integer keys that order like the floats it does; the zero case is settled afterwards.
inline int32_t order_key(float v) {
  const auto b = std::bit_cast<int32_t>(v);
  return b ^ ((b >> 31) & 0x7FFFFFFF);  // negative floats: flip the magnitude bits
}
inline float from_order_key(int32_t k) { return std::bit_cast<float>(k ^ ((k >> 31) & 0x7FFFFFFF)); }

inline void store_half(uint8_t* p, uint16_t h) { std::memcpy(p, &h, 2); }

inline float first_zero(const float* x) {
  for (int j = 0; j < QK; ++j) {
    if (x[j] == 0) return x[j];
  }
  return 0.f;
}

// ggml's "if (x < min) min = x; if (x > max) max = x" from FLT_MAX / -FLT_MAX.
inline void min_max(const float* x, float& min, float& max) {
  int32_t kmin = order_key(FLT_MAX), kmax = order_key(-FLT_MAX);
  for (int j = 0; j < QK; ++j) {
    const int32_t k = order_key(x[j]);
    kmin = k < kmin ? k : kmin;
    kmax = k > kmax ? k : kmax;
  }
  min = from_order_key(kmin);
  max = from_order_key(kmax);
  if (min == 0) min = first_zero(x);  // +0 and -0 tie: the first in order
  if (max == 0) max = first_zero(x);
}

inline int32_t abs_bits(float v) { return std::bit_cast<int32_t>(v) & 0x7FFFFFFF; }

// The largest |x| of a block as float bits (|x|'s bits order like |x|, and as int32 that max
// vectorises where a float max with ggml's comparison would not). NaN and Inf come out at or above
// 0x7F800000, which is how the fast paths report a non-finite row without a pass of their own.
inline int32_t block_abs_max_bits(const float* x) {
  int32_t m = 0;
  for (int j = 0; j < QK; ++j) {
    const int32_t a = abs_bits(x[j]);
    m = a > m ? a : m;
  }
  return m;
}

// ggml's Q4_0 / Q5_0 scan "if (amax < |x|) { amax = |x|; max = x; }" from 0: the first value of
// largest magnitude m (as bits), +0 when all are zero. Only its sign is unknown, and when the
// block holds that magnitude with one sign only (nearly always) the sign follows without the
// scan, whose exit at a random position costs a branch miss per block.
inline float block_signed_absmax(const float* x, int32_t m) {
  if (m == 0) return 0.f;
  const int32_t neg_m = static_cast<int32_t>(static_cast<uint32_t>(m) | 0x80000000u);
  int32_t pos = 0, neg = 0;
  for (int j = 0; j < QK; ++j) {
    const int32_t b = std::bit_cast<int32_t>(x[j]);
    pos |= b == m;
    neg |= b == neg_m;
  }
  if (!(pos & neg)) return std::bit_cast<float>(neg ? neg_m : m);
  for (int j = 0; j < QK; ++j) {
    if (abs_bits(x[j]) == m) return x[j];
  }
  return 0.f;  // unreachable
}

// roundf(v) as an integer, which ggml's Q8_0 stores: the libm call does not vectorise. Truncate,
// then step away from zero when the dropped fraction (exact: v - trunc(v) needs no rounding) is at
// least one half. Where the conversion overflows (NaN, |v| >= 2^31: rows with a huge scale
// inverse) it returns the conversion's own INT32_MIN, as ggml's (int8_t)roundf(v) does on x86.
inline int32_t round_away(float v) {
  const int32_t t = static_cast<int32_t>(v);
  const float f = v - static_cast<float>(t);
  const int32_t step = (f >= 0.5f) - (f <= -0.5f);
  return t == INT32_MIN ? t : t + step;
}

// The weighted paths scale each importance weight by sqrt(sigma2 + x^2), sigma2 = mean x^2 over
// the whole row, so that large values matter more even where the imatrix is flat.
inline float row_sigma2(const float* x, int64_t n) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / n;
}

inline void block_weights(const float* xb, const float* qw, float sigma2, float* weight) {
  for (int j = 0; j < QK; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
}

// The weighted Q4_1 / Q5_1 search (ggml make_qkx3_quants per block), 8 blocks at a time through
// the transposed fit_affine. Writes per block: levels L[32 * b + j], scale d[b], min m[b] (the
// value of level 0, <= 0). A short tail is padded with all-zero blocks whose results are unused.
template <int NMAX>
void fit_affine_blocks(const float* x, const float* qw, float sigma2, int count, uint8_t* L,
                       float* d, float* m) {
  float xt[QK][8] = {}, wt[QK][8] = {}, scale[8], neg_min[8];
  int32_t Lt[QK][8];
  for (int b = 0; b < count; ++b) {
    for (int j = 0; j < QK; ++j) {
      const float v = x[QK * b + j];
      xt[j][b] = v;
      wt[j][b] = qw[QK * b + j] * std::sqrt(sigma2 + v * v);
    }
  }
  fit_affine<QK, 8, NMAX, false>(xt, wt, Lt, scale, neg_min, -0.9f, 0.05f, 36);
  for (int b = 0; b < count; ++b) {
    d[b] = scale[b];
    m[b] = -neg_min[b];
    for (int j = 0; j < QK; ++j) L[QK * b + j] = static_cast<uint8_t>(Lt[j][b]);
  }
}

// Splits 32 five-bit levels into nibbles (value j low, j+16 high) and the 5th bits into qh.
template <typename Level>
inline void pack_5bit(const Level* L, uint8_t* qs, uint8_t* qh_bytes) {
  uint32_t qh = 0;
  for (int j = 0; j < QK / 2; ++j) {
    const uint8_t lo = static_cast<uint8_t>(L[j]);
    const uint8_t hi = static_cast<uint8_t>(L[j + QK / 2]);
    qs[j] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
    qh |= ((lo & 0x10u) >> 4) << j;
    qh |= ((hi & 0x10u) >> 4) << (j + QK / 2);
  }
  std::memcpy(qh_bytes, &qh, 4);
}

}  // namespace

// The reference paths (no importance) are memory-bound at a few GB/s, so they avoid anything per
// value that is not vector code: the output is written through __restrict pointers from local
// arrays (bytes stored one by one straight to `dst`, which may alias `x` as far as the compiler
// knows, keep every value's arithmetic scalar), and the row's largest |x| comes out of the block
// scans instead of a pass of its own.

uint32_t quantize_q4_0_ref(const float* __restrict x, void* __restrict dst, int64_t n) {
  auto* __restrict out = static_cast<uint8_t*>(dst);
  int32_t row_max = 0;
  for (int64_t ib = 0; ib < n / QK; ++ib, x += QK, out += sizeof(BlockQ4_0)) {
    const int32_t m = block_abs_max_bits(x);
    row_max = m > row_max ? m : row_max;
    // Scale so that the largest-magnitude value maps exactly to level -8 (the extra level).
    const float d = block_signed_absmax(x, m) / -8;
    const float id = d ? 1.0f / d : 0.0f;
    uint8_t qs[QK / 2];
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = smaller(15, int{static_cast<int8_t>(x[j] * id + 8.5f)});
      const int hi = smaller(15, int{static_cast<int8_t>(x[j + QK / 2] * id + 8.5f)});
      qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
    store_half(out + offsetof(BlockQ4_0, d), half_from_float(d));
    std::memcpy(out + offsetof(BlockQ4_0, qs), qs, sizeof qs);
  }
  return static_cast<uint32_t>(row_max);
}

void quantize_q4_0_impl(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  const float sigma2 = row_sigma2(x, n);
  BlockQ4_0 b;
  float weight[QK];
  int8_t L[QK];
  for (int64_t ib = 0; ib < n / QK; ++ib, x += QK, qw += QK, out += sizeof b) {
    block_weights(x, qw, sigma2, weight);
    b.d = half_from_float(fit_symmetric<QK, 8>(x, weight, L));
    for (int j = 0; j < QK / 2; ++j) b.qs[j] = static_cast<uint8_t>(L[j] | (L[j + QK / 2] << 4));
    std::memcpy(out, &b, sizeof b);
  }
}

uint32_t quantize_q4_1_ref(const float* __restrict x, void* __restrict dst, int64_t n) {
  auto* __restrict out = static_cast<uint8_t*>(dst);
  uint32_t row_max = 0;
  for (int64_t ib = 0; ib < n / QK; ++ib, x += QK, out += sizeof(BlockQ4_1)) {
    float min, max;
    min_max(x, min, max);
    // NaN sorts beyond +-Inf on the order keys, so a non-finite block shows in min or max.
    row_max = std::max({row_max, static_cast<uint32_t>(abs_bits(min)),
                        static_cast<uint32_t>(abs_bits(max))});
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    uint8_t qs[QK / 2];
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = smaller(15, int{static_cast<int8_t>((x[j] - min) * id + 0.5f)});
      const int hi = smaller(15, int{static_cast<int8_t>((x[j + QK / 2] - min) * id + 0.5f)});
      qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
    store_half(out + offsetof(BlockQ4_1, d), half_from_float(d));
    store_half(out + offsetof(BlockQ4_1, m), half_from_float(min));
    std::memcpy(out + offsetof(BlockQ4_1, qs), qs, sizeof qs);
  }
  return row_max;
}

void quantize_q4_1_impl(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t nb = n / QK;
  const float sigma2 = row_sigma2(x, n);
  BlockQ4_1 b;
  uint8_t L[8 * QK];
  float d[8], m[8];
  for (int64_t ib = 0; ib < nb; ib += 8, x += 8 * QK, qw += 8 * QK) {
    const int count = static_cast<int>(nb - ib < 8 ? nb - ib : 8);
    fit_affine_blocks<15>(x, qw, sigma2, count, L, d, m);
    for (int k = 0; k < count; ++k, out += sizeof b) {
      b.d = half_from_float(d[k]);
      b.m = half_from_float(m[k]);
      const uint8_t* Lk = L + QK * k;
      for (int j = 0; j < QK / 2; ++j) {
        b.qs[j] = static_cast<uint8_t>(Lk[j] | (Lk[j + QK / 2] << 4));
      }
      std::memcpy(out, &b, sizeof b);
    }
  }
}

uint32_t quantize_q5_0_ref(const float* __restrict x, void* __restrict dst, int64_t n) {
  auto* __restrict out = static_cast<uint8_t*>(dst);
  int32_t row_max = 0;
  BlockQ5_0 b;
  uint8_t L[QK];
  for (int64_t ib = 0; ib < n / QK; ++ib, x += QK, out += sizeof b) {
    const int32_t m = block_abs_max_bits(x);
    row_max = m > row_max ? m : row_max;
    const float d = block_signed_absmax(x, m) / -16;
    const float id = d ? 1.0f / d : 0.0f;
    b.d = half_from_float(d);
    for (int j = 0; j < QK; ++j) {
      L[j] = static_cast<uint8_t>(smaller(31, int{static_cast<int8_t>(x[j] * id + 16.5f)}));
    }
    pack_5bit(L, b.qs, b.qh);
    std::memcpy(out, &b, sizeof b);
  }
  return static_cast<uint32_t>(row_max);
}

void quantize_q5_0_impl(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  const float sigma2 = row_sigma2(x, n);
  BlockQ5_0 b;
  float weight[QK];
  int8_t L[QK];
  for (int64_t ib = 0; ib < n / QK; ++ib, x += QK, qw += QK, out += sizeof b) {
    block_weights(x, qw, sigma2, weight);
    b.d = half_from_float(fit_symmetric<QK, 16>(x, weight, L));
    pack_5bit(L, b.qs, b.qh);
    std::memcpy(out, &b, sizeof b);
  }
}

uint32_t quantize_q5_1_ref(const float* __restrict x, void* __restrict dst, int64_t n) {
  auto* __restrict out = static_cast<uint8_t*>(dst);
  uint32_t row_max = 0;
  BlockQ5_1 b;
  uint8_t L[QK];
  for (int64_t ib = 0; ib < n / QK; ++ib, x += QK, out += sizeof b) {
    float min, max;
    min_max(x, min, max);
    row_max = std::max({row_max, static_cast<uint32_t>(abs_bits(min)),
                        static_cast<uint32_t>(abs_bits(max))});
    const float d = (max - min) / ((1 << 5) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    b.d = half_from_float(d);
    b.m = half_from_float(min);
    // No clamp to 31 here (ggml has none): (max - min) * id rounds to at most 31.
    for (int j = 0; j < QK; ++j) L[j] = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
    pack_5bit(L, b.qs, b.qh);
    std::memcpy(out, &b, sizeof b);
  }
  return row_max;
}

void quantize_q5_1_impl(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t nb = n / QK;
  const float sigma2 = row_sigma2(x, n);
  BlockQ5_1 b;
  uint8_t L8[8 * QK];
  float d[8], m[8];
  for (int64_t ib = 0; ib < nb; ib += 8, x += 8 * QK, qw += 8 * QK) {
    const int count = static_cast<int>(nb - ib < 8 ? nb - ib : 8);
    fit_affine_blocks<31>(x, qw, sigma2, count, L8, d, m);
    for (int k = 0; k < count; ++k, out += sizeof b) {
      b.d = half_from_float(d[k]);
      b.m = half_from_float(m[k]);
      pack_5bit(L8 + QK * k, b.qs, b.qh);
      std::memcpy(out, &b, sizeof b);
    }
  }
}

uint32_t quantize_q8_0(const float* __restrict x, void* __restrict dst, int64_t n) {
  auto* __restrict out = static_cast<uint8_t*>(dst);
  int32_t row_max = 0;
  for (int64_t ib = 0; ib < n / QK; ++ib, x += QK, out += sizeof(BlockQ8_0)) {
    const int32_t m = block_abs_max_bits(x);
    row_max = m > row_max ? m : row_max;
    // ggml's running MAX(amax, fabsf(x)) from 0, for finite values.
    const float d = std::bit_cast<float>(m) / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    int8_t qs[QK];
    for (int j = 0; j < QK; ++j) qs[j] = static_cast<int8_t>(round_away(x[j] * id));
    store_half(out + offsetof(BlockQ8_0, d), half_from_float(d));
    std::memcpy(out + offsetof(BlockQ8_0, qs), qs, sizeof qs);
  }
  return static_cast<uint32_t>(row_max);
}

// ------------------------------------------------------------------------------------- readers

void dequantize_q4_0(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockQ4_0 b;
  for (int64_t ib = 0; ib < n / QK; ++ib, in += sizeof b, y += QK) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    for (int j = 0; j < QK / 2; ++j) {
      y[j] = ((b.qs[j] & 0x0F) - 8) * d;
      y[j + QK / 2] = ((b.qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockQ4_1 b;
  for (int64_t ib = 0; ib < n / QK; ++ib, in += sizeof b, y += QK) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    const float m = float_from_half(b.m);
    for (int j = 0; j < QK / 2; ++j) {
      y[j] = (b.qs[j] & 0x0F) * d + m;
      y[j + QK / 2] = (b.qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_q5_0(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockQ5_0 b;
  for (int64_t ib = 0; ib < n / QK; ++ib, in += sizeof b, y += QK) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = (b.qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10);
      const int hi = (b.qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
      y[j] = (lo - 16) * d;
      y[j + QK / 2] = (hi - 16) * d;
    }
  }
}

void dequantize_q5_1(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockQ5_1 b;
  for (int64_t ib = 0; ib < n / QK; ++ib, in += sizeof b, y += QK) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    const float m = float_from_half(b.m);
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    for (int j = 0; j < QK / 2; ++j) {
      const int lo = (b.qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10);
      const int hi = (b.qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
      y[j] = lo * d + m;
      y[j + QK / 2] = hi * d + m;
    }
  }
}

void dequantize_q8_0(const void* src, float* y, int64_t n) {
  // Read in place (the block is just a scale and 32 bytes); copying it out costs as much as
  // decoding it.
  const auto* in = static_cast<const uint8_t*>(src);
  for (int64_t ib = 0; ib < n / QK; ++ib, in += sizeof(BlockQ8_0), y += QK) {
    uint16_t dh;
    std::memcpy(&dh, in + offsetof(BlockQ8_0, d), 2);
    const float d = float_from_half(dh);
    const auto* qs = reinterpret_cast<const int8_t*>(in + offsetof(BlockQ8_0, qs));
    for (int j = 0; j < QK; ++j) y[j] = qs[j] * d;
  }
}

}  // namespace mpq::detail::ggml
