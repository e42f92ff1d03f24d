#pragma once
// llama.cpp's block formats (Q8_0, Q4_0/1, Q5_0/1, Q2_K..Q6_K, IQ4_NL, IQ4_XS, and the codebook
// formats IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) quantized byte for byte as ggml does, with importance weights (an imatrix: ggml's *_impl routines) or without
// (the *_ref routines). CPU kernels, threaded over rows; dequantization also runs on the blocks'
// device (ATen ops, bit-identical with the CPU kernels).
#include <optional>
#include <string_view>

#include <ATen/core/Tensor.h>

#include <mpq/format.h>

namespace mpq {

// Quantizes a floating weight [rows, n_per_row] (any device; computed on the CPU) into ggml
// blocks: uint8 [rows, row_bytes] on the CPU. `importance`: float [n_per_row], finite and >= 0
// (llama-quantize passes the imatrix's Σx²/count); required by iq2_xxs, iq2_xs and iq1_s, as
// in ggml (ValueError without). n_per_row must be a multiple of the format's block size (see
// ggml_fallback). `name` names the tensor in error messages.
at::Tensor quantize_ggml(const at::Tensor& weight, const Format& format,
                         const std::optional<at::Tensor>& importance = std::nullopt,
                         std::string_view name = "weight");

// Dequantizes blocks [rows, row_bytes] of `format` to float32 [rows, n_per_row] on the blocks'
// device: the CPU row kernels for CPU blocks, ATen tensor ops elsewhere (CUDA, MPS, ...), which
// give bit-identical results.
at::Tensor dequantize_ggml(const at::Tensor& blocks, const Format& format, int64_t n_per_row);

// The format llama-quantize uses instead of `format` for rows of n_per_row weights: the format
// itself if its block divides the row; Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0, Q2_K/Q3_K->Q4_0,
// IQ4_XS and the IQ1-IQ3 types->IQ4_NL otherwise; F16 if that does not divide the row either.
Format ggml_fallback(const Format& format, int64_t n_per_row);

}  // namespace mpq
