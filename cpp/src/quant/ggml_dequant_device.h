#pragma once
// Internal: a device-generic reader of the ggml block formats, written only with ATen tensor ops
// (no kernels of its own), so it runs wherever the blocks are: CPU, CUDA, MPS. Vectorised over
// all blocks at once. Bit-identical with the CPU row kernels of cpp/src/ggml (and so with ggml)
// for every finite block: each float product / sum is one float32 ATen op, in the row kernels'
// order, so no fused multiply-add can change a rounding. (NaN payloads are whatever the device's
// arithmetic makes of them.)
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace mpq::detail {

namespace ggml {
enum class Type : int32_t;  // ggml/ggml_types.h
}

// blocks: uint8 [rows, row_bytes] of `type` on any device; returns float32 [rows, n_per_row],
// contiguous, on the blocks' device. Checks its arguments (MPQ_CHECK_*).
at::Tensor dequantize_ggml_device(const at::Tensor& blocks, ggml::Type type, int64_t n_per_row);

}  // namespace mpq::detail
