#pragma once
// The packed QuantizedTensor that every expert produces, quantize() for any registered format,
// and round-to-nearest (RTN) quantization to the integer group formats with an optional
// MSE-optimal clipping search.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <ATen/core/Tensor.h>

#include <mpq/format.h>

namespace mpq {

// A quantized 2-D weight [rows, cols].
// Integer formats: element (r, c) in group k = c / g dequantizes to
//   scales[r, k] * (code(r, c) - zero(r, k)),  zero = zeros[r, k] or 2^(bits-1) when symmetric.
// ggml formats: `codes` holds the rows' ggml blocks exactly as a GGUF file stores them; scales and
// zeros are undefined.
struct QuantizedTensor {
  std::string format;         // name in the format registry
  at::Tensor codes;           // uint8 [rows, ceil(cols * bits / 8)] little-endian bit stream per
                              // row (integer), or uint8 [rows, row_bytes] blocks (ggml)
  at::Tensor scales;          // float16 [rows, groups]; integer formats only
  at::Tensor zeros;           // uint8 [rows, groups]; asymmetric integer formats only
  int64_t rows = 0;
  int64_t cols = 0;
  at::ScalarType dtype = at::kFloat;  // dtype of the weight that was quantized

  // Bytes of the stored form (Format::bytes); the tensors above keep zero points unpacked.
  int64_t nbytes() const;
  // A copy with its tensors on `device`: dequantize() runs where the codes are, and the packed
  // bytes are cheaper to move than the float weights.
  QuantizedTensor to(const at::Device& device) const;
  // Throws ValueError if the fields are inconsistent with each other or with the format.
  void validate() const;
  std::string to_string() const;
};

struct RtnOptions {
  // Search a per-group clipping ratio p in {1, 1 - 1/grid, ..., 1 - max_shrink} that minimises
  // sum |w - deq(q(w))|^norm (GPTQ's quant.py search); off: the group's full range.
  bool mse_clip = false;
  int grid = 100;
  double max_shrink = 0.8;
  double norm = 2.4;

  void validate() const;
  std::string to_string() const;
};

// Quantizes a floating-point weight [rows, cols] to any registered format: integer formats by
// RTN (`options`), ggml formats as llama.cpp does, weighted by `importance` [cols] when given
// (integer formats: it weights the error of the clipping search; it has no effect without it).
QuantizedTensor quantize(const at::Tensor& weight, const Format& format,
                         const std::optional<at::Tensor>& importance = std::nullopt,
                         const RtnOptions& options = {}, std::string_view name = "weight");

// Quantizes a floating-point weight [rows, cols] (fp32/fp16/bf16/fp64, any device) to an integer
// format. `name` is the tensor's name in error messages. `importance` [cols] (finite, >= 0)
// weights each column's error in the options.mse_clip search.
QuantizedTensor quantize_rtn(const at::Tensor& weight, const Format& format,
                             const RtnOptions& options = {}, std::string_view name = "weight",
                             const std::optional<at::Tensor>& importance = std::nullopt);

// Dequantizes to `dtype` (default: the dtype of the original weight) on the codes' device (ggml
// formats: on the CPU).
at::Tensor dequantize(const QuantizedTensor& q, std::optional<at::ScalarType> dtype = std::nullopt);

// Packs uint8 codes [rows, n] with values < 2^bits into a little-endian bit stream per row:
// uint8 [rows, ceil(n * bits / 8)]. Code j occupies bits [j*bits, (j+1)*bits) of its row.
at::Tensor pack_codes(const at::Tensor& codes, int bits);
// The inverse of pack_codes for rows of n codes.
at::Tensor unpack_codes(const at::Tensor& packed, int bits, int64_t n);

}  // namespace mpq
