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
  float max = 0, amax = 0;
  for (int i = 0; i < N; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
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
  float max = 0, amax = 0;
  for (int i = 0; i < N; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
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
// are): affine levels l in [0, NMAX] with x ~ scale * l - neg_min, neg_min >= 0. Starts from the
// min/max grid, then for nstep + 1 grid scales (rmin + rdelta * is + NMAX) / (max - min) fits
// scale and min by weighted least squares and keeps the fit with the lowest weighted error
// (|err| when UseMad, err^2 otherwise). Note ggml measures each later grid from the min of the
// best fit so far, so the trials depend on each other.
template <int N, int NMAX, bool UseMad>
float fit_affine(const float* x, const float* w, uint8_t* L, float* neg_min, float rmin,
                 float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < N; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    std::memset(L, 0, N);
    *neg_min = -min;
    return 0.f;
  }
  float iscale = NMAX / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < N; ++i) {
    const int l = round_nearest(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(larger(0, smaller(NMAX, l)));
    float diff = scale * L[i] + min - x[i];
    diff = UseMad ? std::fabs(diff) : diff * diff;
    best_error += w[i] * diff;
  }
  uint8_t Laux[N];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + NMAX) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < N; ++i) {
      const int l = larger(0, smaller(NMAX, round_nearest(iscale * (x[i] - min))));
      Laux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float error = 0;
      for (int i = 0; i < N; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = UseMad ? std::fabs(diff) : diff * diff;
        error += w[i] * diff;
      }
      if (error < best_error) {
        std::memcpy(L, Laux, N);
        best_error = error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *neg_min = -min;
  return scale;
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
