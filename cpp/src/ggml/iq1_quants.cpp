// The ternary codebook formats: values d * s * (l - 1 + delta), l in {0, 1, 2}, delta = +-1/8, in
// codewords of 8 from a 2048-point lattice. IQ1_S: groups of 32 with a 3-bit scale and one delta
// sign, an fp16 super-scale; IQ1_M: groups of 16, a delta sign per 8, the fp16 super-scale spread
// over the top nibbles of the scale words. ggml's quantize_row_iq1_s_impl / _iq1_m_impl.
//
// Each group is solved exactly: with values sorted, every split into (-1, 0, +1) runs is scored.
// ggml sorts with qsort on the value alone; glibc's qsort is a merge sort, so equal values keep
// their index order, and a stable sort reproduces it.
#include <cassert>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "ggml/ggml_blocks.h"
#include "ggml/half.h"
#include "ggml/iq_search.h"

namespace mpq::detail::ggml {

namespace {

constexpr int QK = kSuperBlock;
constexpr float kDelta = 0.125f;  // IQ1S_DELTA = IQ1M_DELTA
constexpr float kPlus[3] = {-1 + kDelta, kDelta, 1 + kDelta};
constexpr float kMinus[3] = {-1 - kDelta, -kDelta, 1 - kDelta};

// Indices 0..N-1 ordered by x, ties by index (a stable insertion sort: N is 16 or 32).
template <int N>
void sort_by_value(const float* x, int* idx) {
  for (int j = 0; j < N; ++j) {
    int at = j;
    while (at > 0 && x[j] < x[idx[at - 1]]) {
      idx[at] = idx[at - 1];
      --at;
    }
    idx[at] = j;
  }
}

// The off-grid level vector's neighbour nearest scale * xg[level] (weighted), xg = kPlus or
// kMinus; ggml's iq1_find_best_neighbour2. xg[l] = (l - 1) + delta exactly, so the lanes compute
// it from the coordinate 2l + 1.
int best_neighbour_ternary(const Lattice& g, int key, const float* x, const float* w, float scale,
                           const float* xg, int8_t* L) {
  const float delta = xg[1];
  return best_neighbour<8>(g, key, x, w, [scale, delta](int8_t c) {
    return scale * (0.5f * static_cast<float>(c - 3) + delta);
  }, L);
}

int key_of(const int8_t* L) {
  int key = 0;
  for (int i = 0; i < 8; ++i) key |= L[i] << 2 * i;
  return key;
}

// Levels 0 / 1 / 2 for the sorted runs [0, i1), [i1, i2), [i2, N).
template <int N>
void split_levels(const int* idx, int i1, int i2, int8_t* L) {
  for (int j = 0; j < N; ++j) L[idx[j]] = static_cast<int8_t>(j < i1 ? 0 : j < i2 ? 1 : 2);
}

// Codewords for the N / 8 level vectors of L (off-grid ones replaced by the best neighbour under
// xx(k)); then, if any was off the grid, the least-squares scale refitted (when positive).
template <int N, typename Shift>
void to_codewords(const Lattice& g, const float* xb, const float* weight, int8_t* L, Shift xx,
                  float& scale, uint16_t* index) {
  bool all_on_grid = true;
  for (int k = 0; k < N / 8; ++k) {
    const int key = key_of(L + 8 * k);
    int gi = g.map[key];
    if (gi < 0) {
      all_on_grid = false;
      gi = best_neighbour_ternary(g, key, xb + 8 * k, weight + 8 * k, scale, xx(k), L + 8 * k);
    }
    index[k] = static_cast<uint16_t>(gi);
  }
  if (all_on_grid) return;
  float sumqx = 0, sumq2 = 0;
  for (int k = 0; k < N / 8; ++k) {
    const int8_t* pg = g.point(index[k]);
    const float* v = xx(k);
    for (int j = 0; j < 8; ++j) {
      const float w = weight[8 * k + j];
      const float q = v[(pg[j] - 1) / 2];
      sumqx += w * q * xb[8 * k + j];
      sumq2 += w * q * q;
    }
  }
  if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
}

inline float abs_max(const float* x, int n) {
  float max = std::fabs(x[0]);
  for (int i = 1; i < n; ++i) max = larger(max, std::fabs(x[i]));
  return max;
}

void iq1_s_block(const float* x, const float* qw, BlockIQ1_S& b) {
  constexpr int N = 32;
  const Lattice& g = lattice(LatticeKind::kIq1s);
  std::memset(&b, 0, sizeof b);
  float scales[QK / N], max_scale = 0;
  int shifts[QK / N];
  const float sigma2 = 2 * sum_of_squares(x, QK) / QK;
  for (int ib = 0; ib < QK / N; ++ib) {
    const float* xb = x + N * ib;
    float weight[N];
    group_weights(xb, qw + N * ib, sigma2, N, weight, [](float v) { return v * v; });
    scales[ib] = 0;
    shifts[ib] = 1;
    const float max = abs_max(xb, N);
    if (max < 1e-12f) continue;  // GROUP_MAX_EPS_IQ1_S
    int idx[N];
    sort_by_value<N>(xb, idx);
    float sumx[N + 1], sumw[N + 1];
    sumx[0] = sumw[0] = 0;
    for (int j = 0; j < N; ++j) {
      const int i = idx[j];
      sumx[j + 1] = sumx[j] + weight[i] * xb[i];
      sumw[j + 1] = sumw[j] + weight[i];
    }
    float best_score = -FLT_MAX, scale = max;
    int besti1 = -1, besti2 = -1, best_shift = 0;
    for (int i1 = 0; i1 <= N; ++i1) {
      for (int i2 = i1; i2 <= N; ++i2) {
        for (int shift : {1, -1}) {
          const float* v = shift == 1 ? kPlus : kMinus;
          const float sumqx = (sumx[i1] - sumx[0]) * v[0] + (sumx[i2] - sumx[i1]) * v[1] + (sumx[N] - sumx[i2]) * v[2];
          const float sumq2 = (sumw[i1] - sumw[0]) * v[0] * v[0] + (sumw[i2] - sumw[i1]) * v[1] * v[1] +
                              (sumw[N] - sumw[i2]) * v[2] * v[2];
          if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
            scale = sumqx / sumq2;
            best_score = scale * sumqx;
            besti1 = i1;
            besti2 = i2;
            best_shift = shift;
          }
        }
      }
    }
    if (besti1 < 0) continue;
    int8_t L[N];
    split_levels<N>(idx, besti1, besti2, L);
    if (scale < 0) {
      for (int8_t& l : L) l = static_cast<int8_t>(2 - l);
      scale = -scale;
      best_shift = -best_shift;
    }
    const float* xx = best_shift == 1 ? kPlus : kMinus;
    uint16_t index[N / 8];
    to_codewords<N>(g, xb, weight, L, [xx](int) { return xx; }, scale, index);
    uint16_t h = 0;
    for (int k = 0; k < N / 8; ++k) {
      b.qs[N / 8 * ib + k] = static_cast<uint8_t>(index[k] & 255);
      h = static_cast<uint16_t>(h | ((index[k] >> 8) << 3 * k));
    }
    b.qh[ib] = h;
    scales[ib] = scale;
    shifts[ib] = best_shift;
    max_scale = larger(max_scale, scale);
  }
  if (!max_scale) return;
  const float d = max_scale / 15;
  b.d = half_from_float(d * 1.125f);
  const float id = 1 / d;
  for (int ib = 0; ib < QK / N; ++ib) {
    int l = larger(0, smaller(7, round_nearest(0.5f * (id * scales[ib] - 1))));
    if (shifts[ib] == -1) l |= 8;
    b.qh[ib] = static_cast<uint16_t>(b.qh[ib] | (l << 12));
  }
}

void iq1_m_block(const float* x, const float* qw, BlockIQ1_M& b) {
  constexpr int N = 16;
  constexpr uint8_t kMasks[4] = {0x00, 0x80, 0x08, 0x88};
  const Lattice& g = lattice(LatticeKind::kIq1s);
  std::memset(&b, 0, sizeof b);
  float scales[QK / N], max_scale = 0, weight_all[QK];
  int shifts[QK / N];
  const float sigma2 = 2 * sum_of_squares(x, QK) / QK;
  // Shift k: bit 1 set = first 8 use kMinus, bit 0 set = second 8 use kMinus.
  auto delta_of = [](int k, int half) { return (half == 0 ? k < 2 : k % 2 == 0) ? kPlus : kMinus; };
  for (int ib = 0; ib < QK / N; ++ib) {
    const float* xb = x + N * ib;
    float* weight = weight_all + N * ib;
    group_weights(xb, qw ? qw + N * ib : nullptr, sigma2, N, weight, [](float v) { return v * v; });
    scales[ib] = 0;
    shifts[ib] = 0;
    const float max = abs_max(xb, N);
    if (max < 1e-7f) continue;  // GROUP_MAX_EPS_IQ1_M
    int idx[N];
    sort_by_value<N>(xb, idx);
    // Prefix sums per half (each half has its own delta sign). With v0 - v1 = v1 - v2 = -1 the
    // score of a split reduces to T v2 - px[i1] - px[i2], as ggml computes it.
    float px[2][N + 1], pw[2][N + 1];
    px[0][0] = px[1][0] = pw[0][0] = pw[1][0] = 0;
    for (int j = 0; j < N; ++j) {
      const int i = idx[j];
      const int h = i < N / 2 ? 0 : 1;
      px[h][j + 1] = px[h][j] + weight[i] * xb[i];
      px[1 - h][j + 1] = px[1 - h][j];
      pw[h][j + 1] = pw[h][j] + weight[i];
      pw[1 - h][j + 1] = pw[1 - h][j];
    }
    const float txs[2] = {px[0][N], px[1][N]}, tws[2] = {pw[0][N], pw[1][N]};
    const float p2 = kPlus[2], m2 = kMinus[2];
    const float cp1 = kPlus[0] * kPlus[0] - kPlus[1] * kPlus[1];
    const float cp2 = kPlus[1] * kPlus[1] - kPlus[2] * kPlus[2];
    const float cm1 = kMinus[0] * kMinus[0] - kMinus[1] * kMinus[1];
    const float cm2 = kMinus[1] * kMinus[1] - kMinus[2] * kMinus[2];
    float best_score = -FLT_MAX, scale = max;
    int besti1 = -1, besti2 = -1, best_k = -1;
    for (int i1 = 0; i1 <= N; ++i1) {
      for (int i2 = i1; i2 <= N; ++i2) {
        float qx_p[2], qx_m[2], q2_p[2], q2_m[2];
        for (int h = 0; h < 2; ++h) {
          const float sx = px[h][i1] + px[h][i2];
          qx_p[h] = txs[h] * p2 - sx;
          qx_m[h] = txs[h] * m2 - sx;
          q2_p[h] = tws[h] * p2 * p2 + pw[h][i1] * cp1 + pw[h][i2] * cp2;
          q2_m[h] = tws[h] * m2 * m2 + pw[h][i1] * cm1 + pw[h][i2] * cm2;
        }
        const float sumqx[4] = {qx_p[0] + qx_p[1], qx_p[0] + qx_m[1], qx_m[0] + qx_p[1], qx_m[0] + qx_m[1]};
        const float sumq2[4] = {q2_p[0] + q2_p[1], q2_p[0] + q2_m[1], q2_m[0] + q2_p[1], q2_m[0] + q2_m[1]};
        for (int k = 0; k < 4; ++k) {
          if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best_score * sumq2[k]) {
            scale = sumqx[k] / sumq2[k];
            best_score = scale * sumqx[k];
            besti1 = i1;
            besti2 = i2;
            best_k = k;
          }
        }
      }
    }
    if (besti1 < 0) continue;
    int8_t L[N];
    split_levels<N>(idx, besti1, besti2, L);
    if (scale < 0) {
      for (int8_t& l : L) l = static_cast<int8_t>(2 - l);
      scale = -scale;
      best_k = 3 - best_k;
    }
    uint16_t index[2];
    to_codewords<N>(g, xb, weight, L, [&](int k) { return delta_of(best_k, k); }, scale, index);
    b.qs[2 * ib] = static_cast<uint8_t>(index[0] & 255);
    b.qs[2 * ib + 1] = static_cast<uint8_t>(index[1] & 255);
    b.qh[ib] = static_cast<uint8_t>((index[0] >> 8) | ((index[1] >> 8) << 4));
    scales[ib] = scale;
    shifts[ib] = best_k;
    max_scale = larger(max_scale, scale);
  }
  if (!max_scale) return;
  // 3-bit group scales against max_scale / 15, then the super-scale refitted by least squares
  // over all values with the stored levels, group scales and deltas.
  uint16_t sc[4] = {};
  float d = max_scale / 15;
  const float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int ib = 0; ib < QK / N; ++ib) {
    const int l = larger(0, smaller(7, round_nearest(0.5f * (id * scales[ib] - 1))));
    sc[ib / 4] = static_cast<uint16_t>(sc[ib / 4] | (l << 3 * (ib % 4)));
    b.qh[ib] = static_cast<uint8_t>(b.qh[ib] | kMasks[shifts[ib]]);
    const float* xb = x + N * ib;
    const float* weight = weight_all + N * ib;
    for (int k = 0; k < 2; ++k) {
      const float* xx = delta_of(shifts[ib], k);
      const int8_t* pg = g.point(b.qs[2 * ib + k] + ((b.qh[ib] << (8 - 4 * k)) & 0x700));
      for (int j = 0; j < 8; ++j) {
        const float w = weight[8 * k + j];
        const float q = xx[(pg[j] - 1) / 2] * (2 * l + 1);
        sumqx += w * q * xb[8 * k + j];
        sumq2 += w * q * q;
      }
    }
  }
  if (sumq2 > 0) d = sumqx / sumq2;
  const uint16_t s = half_from_float(d * 1.1125f);
  sc[0] = static_cast<uint16_t>(sc[0] | ((s & 0x000f) << 12));
  sc[1] = static_cast<uint16_t>(sc[1] | ((s & 0x00f0) << 8));
  sc[2] = static_cast<uint16_t>(sc[2] | ((s & 0x0f00) << 4));
  sc[3] = static_cast<uint16_t>(sc[3] | (s & 0xf000));
  std::memcpy(b.scales, sc, sizeof sc);
}

}  // namespace

void quantize_iq1_s(const float* x, void* dst, int64_t n, const float* qw) {
  assert(qw && "IQ1_S needs importance weights");
  auto* out = static_cast<uint8_t*>(dst);
  BlockIQ1_S b;
  for (int64_t i = 0; i < n / QK; ++i, x += QK, qw += QK, out += sizeof b) {
    iq1_s_block(x, qw, b);
    std::memcpy(out, &b, sizeof b);
  }
}

void quantize_iq1_m(const float* x, void* dst, int64_t n, const float* qw) {
  auto* out = static_cast<uint8_t*>(dst);
  BlockIQ1_M b;
  for (int64_t i = 0; i < n / QK; ++i, x += QK, out += sizeof b) {
    iq1_m_block(x, qw ? qw + QK * i : nullptr, b);
    std::memcpy(out, &b, sizeof b);
  }
}

}  // namespace mpq::detail::ggml
