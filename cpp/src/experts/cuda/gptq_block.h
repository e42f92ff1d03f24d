#pragma once
// Internal: GPTQ's inner block loop as one CUDA kernel (a thread per weight row), instead of a
// handful of tiny ATen launches per column. Plain pointers and a stream: no torch headers here,
// so nvcc compiles only this small file.
#include <cstdint>

#include <cuda_runtime_api.h>

namespace mpq::detail::cuda {

// Column-major operands (element (r, j) at [j * rows + r]) so that a warp's rows are contiguous:
//   w [bw, rows]      the block's weights, updated in place for columns >= a
//   scale, offset     [bw, rows] the grid of each weight: scale * level(q) + offset
//   err [bw, rows]    (w - value) / hinv[i, i] for the quantized columns
//   codes [bw, rows]  the chosen codes
//   hinv [bw, bw]     row-major block of the upper Cholesky factor of H⁻¹
// levels: nullptr (linear codes qmin..qmax) or qmax - qmin + 1 levels (at most 16), in order.
void gptq_block(float* w, const float* scale, const float* offset, float* err, int32_t* codes,
                const float* hinv, int64_t rows, int64_t bw, int64_t a, int64_t b, int32_t qmin,
                int32_t qmax, int32_t zero_code, const float* levels, cudaStream_t stream);

}  // namespace mpq::detail::cuda
