// GPTQ's block loop on CUDA: one warp per weight row. Within a block every row is independent
// (row r's rounding errors only update row r), so a warp holds its row's block in registers, lane
// l owning columns l, l + 32, ...; for each column every lane computes the same code and error
// from the broadcast weight, and updates the later columns it owns. The block of H⁻¹'s factor is
// shared by all rows and served from cache.
//
// Rounding is the CPU path's, operation for operation (gptq.cpp's block_cpu and ggml's
// nearest_code): explicit _rn intrinsics keep nvcc from fusing multiply-adds, so a code decodes
// to exactly what the stored bytes will.
#include "experts/cuda/gptq_block.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace mpq::detail::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpsPerBlock = 4;

// ggml's IQ4_NL levels, and twice the midpoints between neighbours (exact in float).
__constant__ float kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};
__constant__ float kIq4Midpoints2[15] = {-231, -187, -148, -114, -84, -57, -32, -9,
                                         14,   38,   63,   91,   122, 158, 202};

struct Grid {
  int32_t qmin, qmax, zero_code;
  bool iq4;
};

__device__ __forceinline__ float level(const Grid& g, int32_t q) {
  return g.iq4 ? kIq4Levels[q] : static_cast<float>(q);
}

__device__ __forceinline__ float decode(const Grid& g, float scale, float offset, int32_t q) {
  return __fadd_rn(__fmul_rn(scale, level(g, q)), offset);
}

// ggml::nearest_code: a first guess from t = (v - offset) / scale, then the neighbour whose
// decoded value is nearest v (compared in double).
__device__ __forceinline__ int32_t nearest_code(const Grid& g, float scale, float offset, float v) {
  if (scale == 0.0f) return g.zero_code;
  const float t = __fdiv_rn(__fsub_rn(v, offset), scale);
  int32_t c;
  if (g.iq4) {
    c = 0;
#pragma unroll
    for (int k = 0; k < 15; ++k) c += kIq4Midpoints2[k] < __fmul_rn(2.0f, t);
  } else {
    const float lo = static_cast<float>(g.qmin), hi = static_cast<float>(g.qmax);
    const float ct = t > lo ? (t < hi ? t : hi) : lo;
    c = g.qmin + static_cast<int32_t>(__fadd_rn(__fsub_rn(ct, lo), 0.5f));
  }
  const double x = v;
  const int32_t below = c > g.qmin ? c - 1 : c, above = c < g.qmax ? c + 1 : c;
  const double e_c = fabs(x - static_cast<double>(decode(g, scale, offset, c)));
  const double e_below = fabs(x - static_cast<double>(decode(g, scale, offset, below)));
  const double e_above = fabs(x - static_cast<double>(decode(g, scale, offset, above)));
  int32_t best = e_below < e_c ? below : c;
  const double best_err = e_below < e_c ? e_below : e_c;
  return e_above < best_err ? above : best;
}

// Fits the integer group of columns [c, end) of the row to its current weights (every lane gets
// the same scale and offset), as params_from_range does: a range that contains 0, an fp16 scale
// of at least 2^-24, and an asymmetric zero point rounded half to even.
template <int kChunks>
__device__ __forceinline__ void fit_group(const float (&x)[kChunks], int lane, int c, int end,
                                          const GroupFit& fit, int64_t row, float& s, float& o) {
  float lo = 0.0f, hi = 0.0f;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int j = k * 32 + lane;
    if (j >= c && j < end) {
      lo = fminf(lo, x[k]);
      hi = fmaxf(hi, x[k]);
    }
  }
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(kFullMask, lo, d));
    hi = fmaxf(hi, __shfl_xor_sync(kFullMask, hi, d));
  }
  const float maxq = static_cast<float>((1 << fit.bits) - 1);
  float z;
  if (fit.symmetric) {
    s = __fdiv_rn(fmaxf(fabsf(lo), fabsf(hi)), __fdiv_rn(maxq, 2.0f));
  } else {
    s = __fdiv_rn(__fsub_rn(hi, lo), maxq);
  }
  s = __half2float(__float2half_rn(s));
  if (s < 5.960464477539063e-08f) s = 5.960464477539063e-08f;  // kMinScale: fp16's smallest
  if (fit.symmetric) {
    z = static_cast<float>(1 << (fit.bits - 1));
  } else {
    z = fminf(fmaxf(rintf(__fdiv_rn(-lo, s)), 0.0f), maxq);
  }
  o = -__fmul_rn(s, z);
  if (lane == 0) {
    const int64_t k = row * fit.groups + fit.first + c / fit.group;
    fit.scales[k] = s;
    fit.zeros[k] = z;
  }
}

// kChunks * 32 >= bw: the registers a lane needs for its share of the row.
template <int kChunks>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gptq_block_kernel(float* __restrict__ w, const float* __restrict__ scale,
                      const float* __restrict__ offset, float* __restrict__ err,
                      int32_t* __restrict__ codes, const float* __restrict__ hinv, int64_t rows,
                      int bw, int a, int b, Grid g, GroupFit fit) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= rows) return;  // the whole warp: a warp is one row
  const int64_t base = row * bw;
  float x[kChunks], e_own[kChunks];
  int32_t q_own[kChunks];
  float s_fit = 0.0f, o_fit = 0.0f;  // the current group's grid, when fitted here
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int j = k * 32 + lane;
    x[k] = j < bw ? w[base + j] : 0.0f;
    e_own[k] = 0.0f;
    q_own[k] = 0;
  }
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    for (int t = 0; t < 32; ++t) {
      const int i = k * 32 + t;
      if (i >= b) break;
      const float v = __shfl_sync(kFullMask, x[k], t);  // every lane: column i's weight
      if (i < a) continue;
      if (fit.group > 0 && i % fit.group == 0) {
        fit_group<kChunks>(x, lane, i, min(i + static_cast<int>(fit.group), b), fit, row, s_fit, o_fit);
      }
      const float s = fit.group > 0 ? s_fit : scale[base + i];
      const float o = fit.group > 0 ? o_fit : offset[base + i];
      const int32_t q = nearest_code(g, s, o, v);
      const float e = __fdiv_rn(__fsub_rn(v, decode(g, s, o, q)), __ldg(hinv + i * bw + i));
      if (lane == t) {
        q_own[k] = q;
        e_own[k] = e;
      }
      const float* hi = hinv + i * bw;
#pragma unroll
      for (int k2 = k; k2 < kChunks; ++k2) {
        const int j = k2 * 32 + lane;
        if (j > i && j < bw) x[k2] = __fsub_rn(x[k2], __fmul_rn(e, __ldg(hi + j)));
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int j = k * 32 + lane;
    if (j >= a && j < bw) {
      w[base + j] = x[k];
      if (j < b) {
        err[base + j] = e_own[k];
        codes[base + j] = q_own[k];
      }
    }
  }
}

}  // namespace

int gptq_block(float* w, const float* scale, const float* offset, float* err, int32_t* codes,
               const float* hinv, int64_t rows, int64_t bw, int64_t a, int64_t b, int32_t qmin,
               int32_t qmax, int32_t zero_code, bool iq4, const GroupFit& fit, void* stream) {
  if (bw > kMaxBlock || bw < 1 || a < 0 || a > b || b > bw) return cudaErrorInvalidValue;
  if (fit.group > 0 && (a % fit.group != 0 || fit.bits < 1 || fit.bits > 8)) return cudaErrorInvalidValue;
  if (rows == 0 || a == b) return 0;
  const Grid g{qmin, qmax, zero_code, iq4};
  const dim3 grid(static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock));
  const dim3 block(kWarpsPerBlock * 32);
  auto s = static_cast<cudaStream_t>(stream);
  const int n = static_cast<int>(bw), ia = static_cast<int>(a), ib = static_cast<int>(b);
  if (bw <= 32) {
    gptq_block_kernel<1><<<grid, block, 0, s>>>(w, scale, offset, err, codes, hinv, rows, n, ia, ib, g, fit);
  } else if (bw <= 64) {
    gptq_block_kernel<2><<<grid, block, 0, s>>>(w, scale, offset, err, codes, hinv, rows, n, ia, ib, g, fit);
  } else if (bw <= 128) {
    gptq_block_kernel<4><<<grid, block, 0, s>>>(w, scale, offset, err, codes, hinv, rows, n, ia, ib, g, fit);
  } else {
    gptq_block_kernel<8><<<grid, block, 0, s>>>(w, scale, offset, err, codes, hinv, rows, n, ia, ib, g, fit);
  }
  return static_cast<int>(cudaGetLastError());
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace mpq::detail::cuda
