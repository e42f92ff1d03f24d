// GPTQ's block loop on CUDA. Within a block every row is independent (row r's rounding errors
// only update row r). Blocks of up to 128 columns: eight lanes per row, four rows per warp, lane l
// holding columns l, l + 8, ... of its row in registers, and the block of H⁻¹'s factor copied once
// into shared memory for the thread block's 32 rows. For each column the row's eight lanes compute
// the same code and error from the broadcast weight, and each updates the later columns it owns.
//
// Each column waits on the one before, so a block takes (columns) × (that chain's latency) as long
// as the SMs have rows enough to interleave. Hence: H⁻¹ in shared memory (read from global memory,
// row i is first needed at column i, and every column waited on a cache miss), eight lanes rather
// than a warp per row (four rows per warp instruction), loops with constant bounds (so that the
// row stays in registers), and reciprocals rather than divisions on the chain. Measured on an
// H200 (a Qwen3-4B attn_q, 4096 rows, blocks of 128 columns), per block: a warp per row from
// global memory 115 µs; eight lanes from global memory 187 µs; from shared memory 86 µs; with the
// reciprocals 88 µs (no gain by themselves); with constant loop bounds 77 µs.
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

// ggml::nearest_code: a first guess from t = (v - offset) · (1 / scale), then the neighbour whose
// decoded value is nearest v (compared in double). Also returns that decoded value. inv_scale is
// 1 / scale, computed by the caller off the column's dependency chain.
__device__ __forceinline__ int32_t nearest_code(const Grid& g, float scale, float inv_scale,
                                                float offset, float v, float& value) {
  if (scale == 0.0f) {
    value = offset;
    return g.zero_code;
  }
  const float t = __fmul_rn(__fsub_rn(v, offset), inv_scale);
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
  const float v_c = decode(g, scale, offset, c), v_below = decode(g, scale, offset, below),
              v_above = decode(g, scale, offset, above);
  const double e_c = fabs(x - static_cast<double>(v_c));
  const double e_below = fabs(x - static_cast<double>(v_below));
  const double e_above = fabs(x - static_cast<double>(v_above));
  int32_t best = e_below < e_c ? below : c;
  value = e_below < e_c ? v_below : v_c;
  const double best_err = e_below < e_c ? e_below : e_c;
  if (e_above < best_err) {
    best = above;
    value = v_above;
  }
  return best;
}

// Fits the integer group of columns [c, end) of the row to its current weights (every lane gets
// the same scale and offset), as params_from_range does: a range that contains 0, an fp16 scale
// of at least 2^-24, and an asymmetric zero point rounded half to even.
// lo and hi: this lane's share of the group's range (min and max of its columns in the group and
// 0). c: the group's first column in the block.
template <int kLanes>
__device__ __forceinline__ void fit_group(float lo, float hi, int sub, int c, const GroupFit& fit,
                                          int64_t row, bool live, float& s, float& o) {
#pragma unroll
  for (int d = kLanes / 2; d > 0; d >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(kFullMask, lo, d, kLanes));
    hi = fmaxf(hi, __shfl_xor_sync(kFullMask, hi, d, kLanes));
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
  if (live && sub == 0) {
    const int64_t k = row * fit.groups + fit.first + c / static_cast<int>(fit.group);
    fit.scales[k] = s;
    fit.zeros[k] = z;
  }
}

// Threads per thread block: eight warps, so that a block's copy of H⁻¹ serves 32 rows (with
// kLanes = 8).
constexpr int kThreads = 256;

// kLanes lanes per row; kChunks * kLanes >= bw: the registers a lane needs for its share of the
// row. kShared: the block of H⁻¹'s factor is first copied to shared memory (bw * bw floats).
template <int kLanes, int kChunks, bool kShared>
__global__ void __launch_bounds__(kThreads)
    gptq_block_kernel(float* __restrict__ w, const float* __restrict__ scale,
                      const float* __restrict__ offset, float* __restrict__ err,
                      int32_t* __restrict__ codes, const float* __restrict__ hinv, int64_t rows,
                      int bw, int a, int b, Grid g, GroupFit fit) {
  constexpr int kRowsPerBlock = kThreads / kLanes;
  extern __shared__ float shared_hinv[];
  if constexpr (kShared) {
    for (int k = threadIdx.x; k < bw * bw; k += kThreads) shared_hinv[k] = __ldg(hinv + k);
    __syncthreads();
  }
  auto h = [&](int k) { return kShared ? shared_hinv[k] : __ldg(hinv + k); };
  const int sub = threadIdx.x % kLanes;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  if (first + (threadIdx.x / 32) * (32 / kLanes) >= rows) return;  // a warp with no live row
  // Every lane of a warp takes part in the shuffles, so a warp's rows past the end run on zeros
  // and store nothing.
  const int64_t row = first + threadIdx.x / kLanes;
  const bool live = row < rows;
  const int64_t base = live ? row * bw : 0;
  float x[kChunks], e_own[kChunks];
  int32_t q_own[kChunks];
  float s_fit = 0.0f, o_fit = 0.0f;  // the current group's grid, when fitted here
  // Groups start at a (a multiple of the group size); -1: none fitted here.
  const int group = static_cast<int>(fit.group);
  int next_group = group > 0 ? a : -1;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int j = k * kLanes + sub;
    x[k] = live && j < bw ? w[base + j] : 0.0f;
    e_own[k] = 0.0f;
    q_own[k] = 0;
  }
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    // Not unrolled: the unrolled column loop (128 copies of the body) overflowed the instruction
    // cache and ran at half the speed.
#pragma unroll 1
    for (int t = 0; t < kLanes; ++t) {
      const int i = k * kLanes + t;
      if (i < a || i >= b) continue;  // the same for every lane
      const float v = __shfl_sync(kFullMask, x[k], t, kLanes);  // the row's column i
      if (i == next_group) {  // the first column of an integer group: fit it
        const int end = min(i + group, b);
        float lo = 0.0f, hi = 0.0f;
#pragma unroll
        for (int k2 = 0; k2 < kChunks; ++k2) {  // constant bounds: unrolled, x stays in registers
          const int j = k2 * kLanes + sub;
          if (k2 >= k && j >= i && j < end) {
            lo = fminf(lo, x[k2]);
            hi = fmaxf(hi, x[k2]);
          }
        }
        fit_group<kLanes>(lo, hi, sub, i, fit, row, live, s_fit, o_fit);
        next_group += group;
      }
      float s = s_fit, o = o_fit;
      if (fit.group == 0) {
        s = live ? scale[base + i] : 1.0f;
        o = live ? offset[base + i] : 0.0f;
      }
      // Reciprocals rather than divisions on the chain from one column to the next (the CPU loop
      // computes the same products).
      const float inv_s = __frcp_rn(s), inv_d = __frcp_rn(h(i * bw + i));
      float value;
      const int32_t q = nearest_code(g, s, inv_s, o, v, value);
      const float e = __fmul_rn(__fsub_rn(v, value), inv_d);
      if (sub == t) {
        q_own[k] = q;
        e_own[k] = e;
      }
#pragma unroll
      for (int k2 = 0; k2 < kChunks; ++k2) {  // constant bounds, as above
        const int j = k2 * kLanes + sub;
        if (k2 >= k && j > i && j < bw) x[k2] = __fsub_rn(x[k2], __fmul_rn(e, h(i * bw + j)));
      }
    }
  }
  if (!live) return;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int j = k * kLanes + sub;
    if (j >= a && j < bw) {
      w[base + j] = x[k];
      if (j < b) {
        err[base + j] = e_own[k];
        codes[base + j] = q_own[k];
      }
    }
  }
}

template <int kLanes, int kChunks, bool kShared>
int launch(float* w, const float* scale, const float* offset, float* err, int32_t* codes,
           const float* hinv, int64_t rows, int bw, int a, int b, const Grid& g,
           const GroupFit& fit, cudaStream_t s) {
  constexpr int kRowsPerBlock = kThreads / kLanes;
  const dim3 grid(static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock));
  const int smem = kShared ? bw * bw * static_cast<int>(sizeof(float)) : 0;
  auto* kernel = gptq_block_kernel<kLanes, kChunks, kShared>;
  if (kShared) {  // more than the default 48 KiB of dynamic shared memory
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    // A GPU this build has no code for fails here, before the launch would say so.
    if (e == cudaErrorInvalidDeviceFunction) return cudaErrorNoKernelImageForDevice;
    if (e != cudaSuccess) return static_cast<int>(e);
  }
  kernel<<<grid, kThreads, smem, s>>>(w, scale, offset, err, codes, hinv, rows, bw, a, b, g, fit);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int gptq_block(float* w, const float* scale, const float* offset, float* err, int32_t* codes,
               const float* hinv, int64_t rows, int64_t bw, int64_t a, int64_t b, int32_t qmin,
               int32_t qmax, int32_t zero_code, bool iq4, const GroupFit& fit, void* stream) {
  if (bw > kMaxBlock || bw < 1 || a < 0 || a > b || b > bw) return cudaErrorInvalidValue;
  if (fit.group > 0 && (a % fit.group != 0 || fit.bits < 1 || fit.bits > 8)) return cudaErrorInvalidValue;
  if (rows == 0 || a == b) return 0;
  const Grid g{qmin, qmax, zero_code, iq4};
  auto s = static_cast<cudaStream_t>(stream);
  const int n = static_cast<int>(bw), ia = static_cast<int>(a), ib = static_cast<int>(b);
  if (bw <= 32) return launch<8, 4, true>(w, scale, offset, err, codes, hinv, rows, n, ia, ib, g, fit, s);
  if (bw <= 64) return launch<8, 8, true>(w, scale, offset, err, codes, hinv, rows, n, ia, ib, g, fit, s);
  if (bw <= 128) return launch<8, 16, true>(w, scale, offset, err, codes, hinv, rows, n, ia, ib, g, fit, s);
  // A block of 256 columns would need 256 KiB of shared memory: H⁻¹ from global memory, where a
  // warp per row hides its latency better (measured on blocks of 128: 115 µs against 187 µs per
  // block of a Qwen3-4B attn_q).
  return launch<32, 8, false>(w, scale, offset, err, codes, hinv, rows, n, ia, ib, g, fit, s);
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace mpq::detail::cuda
