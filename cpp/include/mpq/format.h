#pragma once
// The registry of quantization formats and their traits. Each format has a unique name
// ("int4_g32", "int8_sym", later "q4_k"...) that plans, reports and files refer to.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mpq {

enum class FormatFamily {
  kInteger,  // b-bit integer codes, one fp16 scale (+ a b-bit zero point) per group of weights
  kGgml,     // a llama.cpp tensor type (q4_k, q8_0, f16...), stored as ggml blocks
};

struct Format {
  std::string name;
  FormatFamily family = FormatFamily::kInteger;
  int bits = 4;            // integer formats: 2..8; ggml formats: nominal bits (1 for iq1_s/m)
  int64_t group_size = 0;  // weights sharing one scale along a row; 0 = the whole row
  bool symmetric = false;  // symmetric: no zero point, codes centred on 2^(bits-1)
  int32_t ggml_type = -1;  // kGgml: the ggml type id (GGUF tensor type); -1 otherwise

  // Groups (ggml: blocks) in a row of `row_length` weights (the last group may be shorter).
  int64_t groups_per_row(int64_t row_length) const;
  // Bytes of the stored form of a rows x cols weight. Integer formats: bit-packed codes per row,
  // an fp16 scale per group and, when asymmetric, bit-packed b-bit zero points per row.
  // ggml formats: the blocks, exactly as in a GGUF file.
  int64_t bytes(int64_t rows, int64_t cols) const;
  // bytes(rows, cols) * 8 / (rows * cols): independent of rows.
  double bits_per_weight(int64_t row_length) const;
  // ggml formats whose quantizer cannot run without importance weights (IQ2_XXS, IQ2_XS, IQ1_S:
  // llama.cpp refuses them without an imatrix).
  bool requires_importance() const;

  void validate() const;
  std::string to_string() const;
};

// The canonical name of an integer format: "int<bits>[_g<group>][_sym]".
std::string integer_format_name(int bits, int64_t group_size, bool symmetric);

// Looks a format up by name. Integer names of the canonical form are valid without registration.
// Throws ValueError naming the unknown format and listing the known ones.
Format find_format(std::string_view name);

// Adds a format; its name must be unused (or registered with identical traits).
void register_format(const Format& format);

// Names of the registered formats, sorted.
std::vector<std::string> list_formats();

}  // namespace mpq
