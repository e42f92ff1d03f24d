#pragma once
// Internal, header-only: the group search that ggml's IQ2 and IQ3 quantizers share
// (quantize_row_iq2_xxs/xs/s_impl, quantize_row_iq3_xxs/s_impl). A group of G magnitudes is split
// into sub-vectors of D values, each stored as one codeword of a Lattice times the group's scale.
// For each of 2T+1 trial scales the values are rounded to levels, off-grid level vectors replaced
// by their best neighbouring codeword, and the least-squares scale of the trial kept if it explains
// more of the weighted signal; the winner's off-grid sub-vectors are then rounded again with the
// final scale. Every float operation follows ggml's order, as the bytes depend on it.
#include <cfloat>
#include <cstdint>

#include "ggml/iq_grids.h"
#include "ggml/scale_search.h"

namespace mpq::detail::ggml {

// The first of the n distances d2[j] that is smallest (ggml's "if (d2 < best)" scan), or 0 when
// none is below FLT_MAX (where ggml aborts; finite inputs always have one).
inline int first_smallest(const float* d2, int n) {
  float best_d2 = FLT_MAX;
  int best = 0;
  for (int j = 0; j < n; ++j) {
    if (d2[j] < best_d2) {
      best_d2 = d2[j];
      best = j;
    }
  }
  return best;
}

// The codeword nearest (weighted) to the values among the neighbours of an off-grid key, each
// decoded as value(coordinate) (scale * coordinate for IQ2 / IQ3; IQ1 decodes differently); writes
// its levels to L. ggml's iq2/iq3/iq1 find_best_neighbour(2). Each neighbour's distance is the
// same chain of float operations as ggml's, run for all neighbours side by side.
template <int D, typename Value>
int best_neighbour(const Lattice& g, int key, const float* xval, const float* w, Value value, int8_t* L) {
  const uint16_t* nb = g.neighbours_of(key);
  const int n = nb[0];
  const int8_t* coords = g.neighbour_coords_of(key);
  float d2[kMaxNeighbours];
  if (n < 12) {  // short lists (most of IQ2_S's and IQ3's): vector lanes would mostly idle
    for (int j = 0; j < n; ++j) {
      const int8_t* pg = g.point(nb[1 + j]);
      float t[D];
      for (int i = 0; i < D; ++i) {
        const float diff = value(pg[i]) - xval[i];
        t[i] = w[i] * diff * diff;
      }
      float d = 0;
      for (int i = 0; i < D; ++i) d += t[i];
      d2[j] = d;
    }
  } else {
    for (int j = 0; j < n; ++j) d2[j] = 0;
    for (int i = 0; i < D; ++i) {
      const int8_t* c = coords + i * n;
      const float xi = xval[i], wi = w[i];
      for (int j = 0; j < n; ++j) {
        const float diff = value(c[j]) - xi;
        d2[j] += wi * diff * diff;
      }
    }
  }
  const int best = nb[1 + first_smallest(d2, n)];
  const int8_t* pg = g.point(best);
  for (int i = 0; i < D; ++i) L[i] = static_cast<int8_t>((pg[i] - 1) / 2);
  return best;
}

template <int D>
int best_neighbour(const Lattice& g, int key, const float* xval, const float* w, float scale, int8_t* L) {
  return best_neighbour<D>(g, key, xval, w, [scale](int8_t c) { return scale * c; }, L);
}

// |x| of the 8 values of each of the n8 sign groups into xval; the sign bits (bit i: value i < 0)
// are returned in signs. With `even`, a group with an odd number of negatives keeps the sign of
// its least important value (smallest w x^2) positive, so that 7 stored bits determine the 8th.
inline void split_signs(const float* x, const float* weight, int n8, bool even, float* xval, uint8_t* signs) {
  for (int k = 0; k < n8; ++k) {
    const float* xk = x + 8 * k;
    float* vk = xval + 8 * k;
    int nflip = 0;
    uint8_t s = 0;
    for (int i = 0; i < 8; ++i) {
      if (xk[i] >= 0) {
        vk[i] = xk[i];
      } else {
        vk[i] = -xk[i];
        ++nflip;
        s = static_cast<uint8_t>(s | (1 << i));
      }
    }
    if (even && nflip % 2) {
      const float* wk = weight + 8 * k;
      int imin = 0;
      float min = wk[0] * xk[0] * xk[0];
      for (int i = 1; i < 8; ++i) {
        const float ax = wk[i] * xk[i] * xk[i];
        if (ax < min) {
          min = ax;
          imin = i;
        }
      }
      vk[imin] = -vk[imin];
      s = static_cast<uint8_t>(s ^ (1 << imin));
    }
    signs[k] = even ? static_cast<uint8_t>(s & 127) : s;
  }
}

enum class Requant {
  kOffGrid,     // IQ2_XS, IQ2_S, IQ3_XXS: redo the sub-vectors the best trial had off the grid
  kAllIfOff,    // IQ3_S: redo all of them if any was off the grid
  kAll,         // IQ2_XXS: always redo all of them
};

struct GroupSearch {
  int trials;       // trial scales (2 KMAXQ - 1 + t step) / base, t = -trials..trials
  float step;
  bool start_on_grid;  // how "best trial's sub-vector on the grid" starts before any trial wins
  Requant requant;
};

// Searches one group. xval: magnitudes (one may be negative after the sign-parity fix), weight
// and waux = sqrt(weight); base: the trial scales' reference (the group max, or for IQ2_XXS
// KMAXQ times make_qp_quants' scale); scale: the starting scale. Writes the G / D codeword indices
// and returns the scale (negative in a case ggml says never happens; the caller flips the signs).
template <int G, int D, int KMAXQ>
float search_group(const Lattice& g, const GroupSearch& p, const float* xval, const float* weight,
                   const float* waux, float base, float scale, uint16_t* index) {
  constexpr int K = G / D;
  const int bits = g.level_bits;
  auto key_of = [bits](const int8_t* L) {
    int key = 0;
    for (int i = 0; i < D; ++i) key |= L[i] << bits * i;
    return key;
  };
  // Rounds sub-vector k at inverse scale id to levels in L; true when they form a codeword.
  auto round_levels = [&](int k, float id, int8_t* L) {
    for (int i = 0; i < D; ++i) {
      const int l = round_nearest(0.5f * (id * xval[D * k + i] - 1));
      L[i] = static_cast<int8_t>(larger(0, smaller(KMAXQ - 1, l)));
    }
    return g.map[key_of(L)] >= 0;
  };
  auto fit = [&](const int8_t* L, float& sumqx, float& sumq2) {
    sumqx = 0;
    sumq2 = 0;
    for (int i = 0; i < G; ++i) {
      const float w = weight[i];
      const float q = 2 * L[i] + 1;
      sumqx += w * xval[i] * q;
      sumq2 += w * q * q;
    }
  };

  int8_t L[G] = {}, Laux[G];
  bool on_grid[K], on_grid_aux[K];
  for (int k = 0; k < K; ++k) on_grid[k] = p.start_on_grid;
  float best = 0;
  for (int t = -p.trials; t <= p.trials; ++t) {
    const float id = (static_cast<float>(2 * KMAXQ - 1) + static_cast<float>(t) * p.step) / base;
    const float this_scale = 1 / id;
    for (int k = 0; k < K; ++k) {
      int8_t* Lk = Laux + D * k;
      on_grid_aux[k] = round_levels(k, id, Lk);
      if (!on_grid_aux[k]) best_neighbour<D>(g, key_of(Lk), xval + D * k, waux + D * k, this_scale, Lk);
    }
    float sumqx, sumq2;
    fit(Laux, sumqx, sumq2);
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      scale = sumqx / sumq2;
      best = scale * sumqx;
      for (int i = 0; i < G; ++i) L[i] = Laux[i];
      for (int k = 0; k < K; ++k) on_grid[k] = on_grid_aux[k];
    }
  }
  bool any_off = false;
  for (int k = 0; k < K; ++k) any_off |= !on_grid[k];
  if (scale > 0 && (p.requant == Requant::kAll || any_off)) {
    const float id = 1 / scale;
    for (int k = 0; k < K; ++k) {
      if (p.requant == Requant::kOffGrid && on_grid[k]) continue;
      int8_t* Lk = L + D * k;
      if (!round_levels(k, id, Lk)) best_neighbour<D>(g, key_of(Lk), xval + D * k, waux + D * k, scale, Lk);
    }
    float sumqx, sumq2;
    fit(L, sumqx, sumq2);
    if (sumq2 > 0) scale = sumqx / sumq2;
  }
  for (int k = 0; k < K; ++k) {
    const int key = key_of(L + D * k);
    // Always a codeword, except where ggml would abort ("point not on grid"); keep some codeword.
    const int32_t m = g.map[key];
    index[k] = static_cast<uint16_t>(m >= 0 ? m : g.neighbours_of(key)[1]);
  }
  return scale;
}

// sqrt-weighted importance: qw * sqrt(sigma2 + x^2), or `fallback(x)` without an imatrix.
template <typename Fallback>
inline void group_weights(const float* x, const float* qw, float sigma2, int n, float* weight,
                          Fallback fallback) {
  if (qw) {
    for (int i = 0; i < n; ++i) weight[i] = qw[i] * std::sqrt(sigma2 + x[i] * x[i]);
  } else {
    for (int i = 0; i < n; ++i) weight[i] = fallback(x[i]);
  }
}

// The 4-bit group scale code l, d * (2 l + 1) ~ scale (id = 1 / d), as all IQ2 / IQ3 types store it.
inline int group_scale_code(float id, float scale) {
  return larger(0, smaller(15, round_nearest(0.5f * (id * scale - 1))));
}

inline float sum_of_squares(const float* x, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

}  // namespace mpq::detail::ggml
