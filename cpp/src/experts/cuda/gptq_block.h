#pragma once
// Internal: GPTQ's inner block loop as one CUDA kernel, instead of a handful of tiny ATen launches
// per column (launch-bound: ~0.3 s per Qwen3-4B layer). Plain pointers and a stream, no torch
// headers, so nvcc compiles only this small file; errors come back as a code, so that no C++
// exception is thrown from code nvcc compiled.
#include <cstdint>

namespace mpq::detail::cuda {

// Integer groups fitted inside the kernel (GptqGroups::IntegerFit: the plain min/max range of
// quant/quantizer.cpp's params_from_range, fp16 scale), so that a block is one launch. group == 0:
// the grid comes from the scale/offset arrays instead.
struct GroupFit {
  int64_t group = 0;     // columns per group; groups start at block columns that are multiples
  int64_t first = 0;     // index of the block's first group in a row
  int64_t groups = 0;    // groups per row (the row stride of scales and zeros)
  int bits = 0;
  bool symmetric = false;
  float* scales = nullptr;  // [rows, groups] float32, written
  float* zeros = nullptr;   // [rows, groups] float32, written
};

// The same contract as gptq.cpp's block_cpu: row-major operands, element (r, j) at [r * bw + j].
//   w [rows, bw]        the block's weights; columns >= a are updated in place
//   scale, offset       [rows, bw] the grid of each weight: scale * level(q) + offset (unused,
//                       may be null, with fit.group > 0)
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
               int32_t qmax, int32_t zero_code, bool iq4, const GroupFit& fit, void* stream);
// cudaGetErrorString of such a code.
const char* error_string(int code);

}  // namespace mpq::detail::cuda
