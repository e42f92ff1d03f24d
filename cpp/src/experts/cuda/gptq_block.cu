#include "experts/cuda/gptq_block.h"

#include <stdexcept>
#include <string>

namespace mpq::detail::cuda {
namespace {

struct Levels {
  float v[16];
};

__global__ void gptq_block_kernel(float* __restrict__ w, const float* __restrict__ scale,
                                  const float* __restrict__ offset, float* __restrict__ err,
                                  int32_t* __restrict__ codes, const float* __restrict__ hinv,
                                  int64_t rows, int64_t bw, int64_t a, int64_t b, int32_t qmin,
                                  int32_t qmax, int32_t zero_code, bool use_levels, Levels levels) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  for (int64_t i = a; i < b; ++i) {
    const int64_t k = i * rows + r;
    const float x = w[k], s = scale[k], o = offset[k];
    int32_t q = zero_code;
    float level;
    if (!use_levels) {
      if (s != 0.0f) q = static_cast<int32_t>(fminf(fmaxf(rintf(__fdiv_rn(x - o, s)), qmin), qmax));
      level = static_cast<float>(q);
    } else {
      if (s != 0.0f) {
        const float t = __fdiv_rn(x - o, s);
        float best = fabsf(t - levels.v[0]);
        q = qmin;
        for (int32_t c = 1; c <= qmax - qmin; ++c) {
          const float d = fabsf(t - levels.v[c]);
          if (d < best) best = d, q = qmin + c;
        }
      }
      level = levels.v[q - qmin];
    }
    // Unfused, as the CPU grid_value: the value must be what the stored bytes decode to.
    const float value = __fadd_rn(__fmul_rn(s, level), o);
    const float e = __fdiv_rn(x - value, hinv[i * bw + i]);
    codes[k] = q;
    err[k] = e;
    const float* hi = hinv + i * bw;
    for (int64_t j = i + 1; j < bw; ++j) w[j * rows + r] -= e * hi[j];
  }
}

}  // namespace

void gptq_block(float* w, const float* scale, const float* offset, float* err, int32_t* codes,
                const float* hinv, int64_t rows, int64_t bw, int64_t a, int64_t b, int32_t qmin,
                int32_t qmax, int32_t zero_code, const float* levels, cudaStream_t stream) {
  Levels lv{};
  const bool use_levels = levels != nullptr;
  if (use_levels) {
    for (int32_t c = 0; c <= qmax - qmin && c < 16; ++c) lv.v[c] = levels[c];
  }
  constexpr int kThreads = 128;
  const int64_t blocks = (rows + kThreads - 1) / kThreads;
  gptq_block_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      w, scale, offset, err, codes, hinv, rows, bw, a, b, qmin, qmax, zero_code, use_levels, lv);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("mpq GPTQ CUDA kernel: ") + cudaGetErrorString(status));
  }
}

}  // namespace mpq::detail::cuda
