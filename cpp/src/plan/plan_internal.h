#pragma once
// Helpers shared by plan.cpp and llama_cpp_mixes.cpp.
#include <optional>
#include <string_view>

#include "ggml/ggml_types.h"

namespace mpq::detail::plan {

// The ggml type whose lowercase name (ggml::info(type).name) is `name`; nullopt when mpq does not
// know it.
std::optional<ggml::Type> type_from_name(std::string_view name);

// llama-quantize's name-only test of whether a tensor may be quantized at all: the name ends in
// "weight" and is none of the tensors it always copies (norms, position embeddings, ...). The
// shape test (at least 2 dimensions) comes on top in the mixes.
bool name_allows_quantization(std::string_view name);

}  // namespace mpq::detail::plan
