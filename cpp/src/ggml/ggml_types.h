#pragma once
// The llama.cpp (ggml) tensor types mpq can write and read: their on-disk type ids (as stored in
// GGUF files), names, and block geometry. Torch-free; the row kernels are in ggml_quants.h.
#include <cstddef>
#include <cstdint>

namespace mpq::detail::ggml {

// Values are ggml's `enum ggml_type` ids; they are written into GGUF files, so never renumber.
enum class Type : int32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  IQ1_M = 29,
  BF16 = 30,
};

struct TypeInfo {
  const char* name;    // lowercase: "f16", "q4_0", "q4_k", "iq4_xs", ...
  int32_t block_size;  // values per block (1 for the plain float types)
  int32_t type_size;   // bytes per block
};

// True for the ids listed in Type. info() of any other value returns {"unknown", 0, 0}.
bool is_supported(Type type);
const TypeInfo& info(Type type);
// True for the block formats (everything but F32, F16, BF16).
bool is_quantized(Type type);
// True for the types ggml refuses to quantize without importance weights (an imatrix):
// IQ2_XXS, IQ2_XS, IQ1_S (ggml_quantize_requires_imatrix).
bool requires_importance(Type type);
// True for the codebook types IQ1_*..IQ3_*: their codes are grid indices, not per-weight levels.
bool is_codebook(Type type);
// Bytes of one row of n_per_row values; n_per_row must be a multiple of the block size.
size_t row_size(Type type, int64_t n_per_row);

}  // namespace mpq::detail::ggml
