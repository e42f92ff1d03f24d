#pragma once
// Internal, header-only (so each use inlines with its constant group size and level count): the
// scale searches ggml's quantizers share. Each mirrors one ggml routine's float operations in the
// same order, since any reordering changes the last bit of a sum and then, sometimes, a level.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace mpq::detail::ggml {

// Groups whose largest |x| is below this are stored as all-zero.
inline constexpr float kGroupEps = 1e-15f;

// The value of largest magnitude in x[0..n), with its sign (the first one on ties); its magnitude
// goes to *amax when asked for.
inline float signed_absmax(const float* x, int n, float* amax = nullptr) {
  float a = 0.0f, max = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > a) {
      a = ax;
      max = x[i];
    }
  }
  if (amax) *amax = a;
  return max;
}

// Round to nearest, ties to even, for |v| < 2^22: adding 1.5 * 2^23 makes the FPU round v to an
// integer in the low mantissa bits. Out of that range it wraps exactly as ggml's nearest_int.
inline int round_nearest(float v) {
  const auto bits = std::bit_cast<int32_t>(v + 12582912.f);
  return (bits & 0x007FFFFF) - 0x00400000;
}

// ggml's MAX/MIN macros. Not std::max/std::min: those return the first argument on ties, and the
// choice between +0 and -0 (or equal floats) must be the same as ggml's.
template <typename T>
constexpr T larger(T a, T b) { return a > b ? a : b; }
template <typename T>
constexpr T smaller(T a, T b) { return a < b ? a : b; }

// ggml make_qx_quants(..., rmse_type = 1, qw): symmetric levels l in [-NMAX, NMAX) for the N
// values of x, weights qw (x^2 when null). Tries 19 scales around NMAX / max|x| and keeps the one
// maximising (sum w x l)^2 / (sum w l^2). Writes l + NMAX to L, returns the least-squares scale.
//
// The 19 trial sums are independent of each other, so they are accumulated side by side (each in
// ggml's element order, so bit-identical) in a loop the compiler vectorises across trials; the
// sequential choice between them is then replayed exactly as ggml makes it.
template <int N, int NMAX>
float fit_symmetric(const float* x, const float* qw, int8_t* L) {
  float amax;
  const float max = signed_absmax(x, N, &amax);
  if (amax < kGroupEps) {
    std::memset(L, 0, N);
    return 0.f;
  }
  constexpr int kTrials = 20;  // 19 used; padded so the trial loop is whole vectors
  float iscale[kTrials];
  iscale[0] = -NMAX / max;
  for (int k = 1; k < kTrials; ++k) {
    const int is = k <= 9 ? k - 10 : k - 9;  // -9..-1, 1..9 (and an unused 10)
    iscale[k] = -(NMAX + 0.1f * is) / max;
  }
  float sumlx[kTrials] = {}, suml2[kTrials] = {};
  for (int i = 0; i < N; ++i) {
    const float w = qw ? qw[i] : x[i] * x[i];
    const float wx = w * x[i];
    for (int k = 0; k < kTrials; ++k) {
      const int l = larger(-NMAX, smaller(NMAX - 1, round_nearest(iscale[k] * x[i])));
      sumlx[k] += wx * l;
      suml2[k] += w * l * l;
    }
  }
  float scale = suml2[0] != 0 ? sumlx[0] / suml2[0] : 0.0f;
  float best = scale * sumlx[0];
  int chosen = 0;
  for (int k = 1; k < 19; ++k) {
    if (suml2[k] > 0 && sumlx[k] * sumlx[k] > best * suml2[k]) {
      scale = sumlx[k] / suml2[k];
      best = scale * sumlx[k];
      chosen = k;
    }
  }
  for (int i = 0; i < N; ++i) {
    const int l = round_nearest(iscale[chosen] * x[i]);
    L[i] = static_cast<int8_t>(NMAX + larger(-NMAX, smaller(NMAX - 1, l)));
  }
  return scale;
}

// ggml make_q3_quants(..., do_rmse = true): symmetric levels in [-NMAX, NMAX) from the scale
// NMAX / max|x|, then up to 5 passes of coordinate descent on the x^2-weighted error, moving one
// level at a time when that improves (sum w x l)^2 / (sum w l^2). Writes l + NMAX, returns scale.
template <int N, int NMAX>
float fit_symmetric_descent(const float* x, int8_t* L) {
  float amax;
  const float max = signed_absmax(x, N, &amax);
  if (amax < kGroupEps) {
    std::memset(L, 0, N);
    return 0.f;
  }
  const float iscale = -NMAX / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < N; ++i) {
    const int l = larger(-NMAX, smaller(NMAX - 1, round_nearest(iscale * x[i])));
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int n_changed = 0;
    for (int i = 0; i < N; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * L[i] * L[i];
        int new_l = round_nearest(x[i] * sl2 / slx);
        new_l = larger(-NMAX, smaller(NMAX - 1, new_l));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < N; ++i) L[i] = static_cast<int8_t>(L[i] + NMAX);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// ggml make_qkx2_quants / make_qkx3_quants (identical when weights are given, as they always
// are), run for G groups at once. For each group: affine levels l in [0, NMAX] with
// x ~ scale * l - neg_min, neg_min >= 0. Starts from the min/max grid, then for nstep + 1 grid
// scales (rmin + rdelta * is + NMAX) / (max - min) fits scale and min by weighted least squares
// and keeps the fit with the lowest weighted error (|err| when UseMad, err^2 otherwise).
//
// ggml measures each later grid from the min of the best fit so far, so a group's trials depend
// on each other and their sums are serial chains of float adds. Groups are independent, though:
// x, w and L are stored transposed ([value][group]) and every step loops over the groups
// innermost, so the compiler runs G groups in vector lanes, each lane doing exactly ggml's scalar
// operations in ggml's order (its branches become per-lane selects). Bit-identical, several
// times faster. Rather than copying levels on every improvement, each lane remembers the grid
// (iscale, min) of its best trial and the levels are recomputed from it once at the end (the
// same float operations, so the same levels). Groups with max == min come out as ggml's early
// return: L = 0, scale 0.
//
// "#pragma GCC unroll 1" keeps the compiler from fully unrolling the short lane loops before
// vectorising them, which leaves it a scalar, latency-bound mess (measured 3x slower).
template <int N, int G, int NMAX, bool UseMad>
void fit_affine(const float (&x)[N][G], const float (&w)[N][G], int32_t (&L)[N][G],
                float (&scale)[G], float (&neg_min)[G], float rmin, float rdelta, int nstep) {
  float min[G], max[G], sum_w[G], sum_x[G], iscale[G], best_error[G];
  float best_iscale[G], best_grid_min[G], start_min[G];
#pragma GCC unroll 1
  for (int g = 0; g < G; ++g) {
    min[g] = max[g] = x[0][g];
    sum_w[g] = w[0][g];
    sum_x[g] = sum_w[g] * x[0][g];
  }
  for (int i = 1; i < N; ++i) {
#pragma GCC unroll 1
    for (int g = 0; g < G; ++g) {
      const float xi = x[i][g];
      min[g] = xi < min[g] ? xi : min[g];
      max[g] = xi > max[g] ? xi : max[g];
      sum_w[g] += w[i][g];
      sum_x[g] += w[i][g] * xi;
    }
  }
#pragma GCC unroll 1
  for (int g = 0; g < G; ++g) {
    min[g] = min[g] > 0 ? 0.f : min[g];
    start_min[g] = min[g];
    iscale[g] = NMAX / (max[g] - min[g]);
    scale[g] = 1 / iscale[g];
    best_error[g] = 0;
    best_iscale[g] = iscale[g];
    best_grid_min[g] = min[g];
  }
  for (int i = 0; i < N; ++i) {
#pragma GCC unroll 1
    for (int g = 0; g < G; ++g) {
      const int l = larger(0, smaller(NMAX, round_nearest(iscale[g] * (x[i][g] - min[g]))));
      float diff = scale[g] * l + min[g] - x[i][g];
      diff = UseMad ? std::fabs(diff) : diff * diff;
      best_error[g] += w[i][g] * diff;
    }
  }
  float Laux[N][G];  // a trial's levels, as floats
  for (int is = 0; is <= nstep; ++is) {
    const float grid = rmin + rdelta * is + NMAX;
    float sum_l[G] = {}, sum_l2[G] = {}, sum_xl[G] = {};
#pragma GCC unroll 1
    for (int g = 0; g < G; ++g) iscale[g] = grid / (max[g] - min[g]);
    for (int i = 0; i < N; ++i) {
#pragma GCC unroll 1
      for (int g = 0; g < G; ++g) {
        const int l = larger(0, smaller(NMAX, round_nearest(iscale[g] * (x[i][g] - min[g]))));
        const float fl = static_cast<float>(l);
        Laux[i][g] = fl;
        const float wl = w[i][g] * fl;
        sum_l[g] += wl;
        sum_l2[g] += wl * fl;
        sum_xl[g] += wl * x[i][g];
      }
    }
    float this_scale[G], this_min[G], error[G] = {};
    int32_t fitted[G];
#pragma GCC unroll 1
    for (int g = 0; g < G; ++g) {
      const float D = sum_w[g] * sum_l2[g] - sum_l[g] * sum_l[g];
      fitted[g] = D > 0;  // otherwise ggml skips the trial; here its lane's result is ignored
      const float s = (sum_w[g] * sum_xl[g] - sum_x[g] * sum_l[g]) / D;
      const float m = (sum_l2[g] * sum_x[g] - sum_l[g] * sum_xl[g]) / D;
      this_scale[g] = m > 0 ? sum_xl[g] / sum_l2[g] : s;
      this_min[g] = m > 0 ? 0.f : m;
    }
    for (int i = 0; i < N; ++i) {
#pragma GCC unroll 1
      for (int g = 0; g < G; ++g) {
        float diff = this_scale[g] * Laux[i][g] + this_min[g] - x[i][g];
        diff = UseMad ? std::fabs(diff) : diff * diff;
        error[g] += w[i][g] * diff;
      }
    }
#pragma GCC unroll 1
    for (int g = 0; g < G; ++g) {
      const bool take = fitted[g] && error[g] < best_error[g];
      best_error[g] = take ? error[g] : best_error[g];
      scale[g] = take ? this_scale[g] : scale[g];
      best_iscale[g] = take ? iscale[g] : best_iscale[g];
      best_grid_min[g] = take ? min[g] : best_grid_min[g];
      min[g] = take ? this_min[g] : min[g];
    }
  }
  for (int i = 0; i < N; ++i) {
#pragma GCC unroll 1
    for (int g = 0; g < G; ++g) {
      const bool flat = max[g] == start_min[g];
      const int l = round_nearest(best_iscale[g] * (x[i][g] - best_grid_min[g]));
      L[i][g] = flat ? 0 : larger(0, smaller(NMAX, l));
    }
  }
#pragma GCC unroll 1
  for (int g = 0; g < G; ++g) {
    const bool flat = max[g] == start_min[g];
    neg_min[g] = flat ? -start_min[g] : -min[g];
    scale[g] = flat ? 0.f : scale[g];
  }
}

// ggml make_qp_quants: levels in [0, NMAX] for the N non-negative values x (a super-block's
// scales or mins) with weights w: picks the best of 9 grid scales by weighted squared error, then
// up to 5 coordinate-descent passes on (sum w x l)^2 / (sum w l^2). Returns the scale.
// L is uint8_t like ggml's, including its wrap-around for (unexpected) negative levels.
template <int N, int NMAX>
float fit_positive(const float* x, uint8_t* L, const float* w) {
  float max = 0;
  for (int i = 0; i < N; ++i) max = larger(max, x[i]);
  if (max < kGroupEps) {
    std::memset(L, 0, N);
    return 0.f;
  }
  float iscale = NMAX / max;
  for (int i = 0; i < N; ++i) L[i] = static_cast<uint8_t>(round_nearest(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < N; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += w[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + NMAX) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < N; ++i) {
      const int l = smaller(NMAX, round_nearest(iscale_is * x[i]));
      const float diff = x[i] - scale_is * l;
      mse += w[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < N; ++i) {
    const int l = smaller(NMAX, round_nearest(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    sumlx += w[i] * x[i] * l;
    suml2 += w[i] * l * l;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int n_changed = 0;
    for (int i = 0; i < N; ++i) {
      float slx = sumlx - w[i] * x[i] * L[i];
      float sl2 = suml2 - w[i] * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        const int new_l = smaller(NMAX, round_nearest(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w[i] * x[i] * new_l;
          sl2 += w[i] * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

}  // namespace mpq::detail::ggml
