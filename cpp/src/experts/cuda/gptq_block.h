#pragma once
// Internal: GPTQ's inner block loop as one CUDA kernel, instead of a handful of tiny ATen launches
// per column (launch-bound: ~0.3 s per Qwen3-4B layer). Plain pointers and a stream, no torch
// headers, so nvcc compiles only this small file; errors come back as a code, so that no C++
// exception is thrown from code nvcc compiled.
#include <cstdint>

namespace mpq::detail::cuda {

// The same contract as gptq.cpp's block_cpu: row-major operands, element (r, j) at [r * bw + j].
//   w [rows, bw]        the block's weights; columns >= a are updated in place
//   scale, offset       [rows, bw] the grid of each weight: scale * level(q) + offset
//   err, codes          [rows, bw] written for columns [a, b)
//   hinv [bw, bw]       the block of the upper Cholesky factor of H⁻¹
// iq4: level(q) is ggml's IQ4_NL table (codes 0..15); else level(q) = q, q in [qmin, qmax].
// `stream` is a cudaStream_t. Returns 0, or the cudaError_t of the launch: kNoKernelImage when
// the build has no code for this GPU's architecture.
// bw must be at most kMaxBlock.
inline constexpr int64_t kMaxBlock = 256;
inline constexpr int kNoKernelImage = 209;  // cudaErrorNoKernelImageForDevice
int gptq_block(float* w, const float* scale, const float* offset, float* err, int32_t* codes,
               const float* hinv, int64_t rows, int64_t bw, int64_t a, int64_t b, int32_t qmin,
               int32_t qmax, int32_t zero_code, bool iq4, void* stream);
// cudaGetErrorString of such a code.
const char* error_string(int code);

}  // namespace mpq::detail::cuda
