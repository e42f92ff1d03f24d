#include "ggml/ggml_types.h"

#include "ggml/ggml_blocks.h"

namespace mpq::detail::ggml {

namespace {

constexpr TypeInfo kUnknown{"unknown", 0, 0};
constexpr TypeInfo kF32{"f32", 1, 4};
constexpr TypeInfo kF16{"f16", 1, 2};
constexpr TypeInfo kBF16{"bf16", 1, 2};
constexpr TypeInfo kQ4_0{"q4_0", kBlock32, sizeof(BlockQ4_0)};
constexpr TypeInfo kQ4_1{"q4_1", kBlock32, sizeof(BlockQ4_1)};
constexpr TypeInfo kQ5_0{"q5_0", kBlock32, sizeof(BlockQ5_0)};
constexpr TypeInfo kQ5_1{"q5_1", kBlock32, sizeof(BlockQ5_1)};
constexpr TypeInfo kQ8_0{"q8_0", kBlock32, sizeof(BlockQ8_0)};
constexpr TypeInfo kQ2_K{"q2_k", kSuperBlock, sizeof(BlockQ2_K)};
constexpr TypeInfo kQ3_K{"q3_k", kSuperBlock, sizeof(BlockQ3_K)};
constexpr TypeInfo kQ4_K{"q4_k", kSuperBlock, sizeof(BlockQ4_K)};
constexpr TypeInfo kQ5_K{"q5_k", kSuperBlock, sizeof(BlockQ5_K)};
constexpr TypeInfo kQ6_K{"q6_k", kSuperBlock, sizeof(BlockQ6_K)};
constexpr TypeInfo kIQ4_NL{"iq4_nl", kBlock32, sizeof(BlockIQ4_NL)};
constexpr TypeInfo kIQ4_XS{"iq4_xs", kSuperBlock, sizeof(BlockIQ4_XS)};
constexpr TypeInfo kIQ2_XXS{"iq2_xxs", kSuperBlock, sizeof(BlockIQ2_XXS)};
constexpr TypeInfo kIQ2_XS{"iq2_xs", kSuperBlock, sizeof(BlockIQ2_XS)};
constexpr TypeInfo kIQ2_S{"iq2_s", kSuperBlock, sizeof(BlockIQ2_S)};
constexpr TypeInfo kIQ3_XXS{"iq3_xxs", kSuperBlock, sizeof(BlockIQ3_XXS)};
constexpr TypeInfo kIQ3_S{"iq3_s", kSuperBlock, sizeof(BlockIQ3_S)};
constexpr TypeInfo kIQ1_S{"iq1_s", kSuperBlock, sizeof(BlockIQ1_S)};
constexpr TypeInfo kIQ1_M{"iq1_m", kSuperBlock, sizeof(BlockIQ1_M)};

}  // namespace

const TypeInfo& info(Type type) {
  switch (type) {
    case Type::F32: return kF32;
    case Type::F16: return kF16;
    case Type::BF16: return kBF16;
    case Type::Q4_0: return kQ4_0;
    case Type::Q4_1: return kQ4_1;
    case Type::Q5_0: return kQ5_0;
    case Type::Q5_1: return kQ5_1;
    case Type::Q8_0: return kQ8_0;
    case Type::Q2_K: return kQ2_K;
    case Type::Q3_K: return kQ3_K;
    case Type::Q4_K: return kQ4_K;
    case Type::Q5_K: return kQ5_K;
    case Type::Q6_K: return kQ6_K;
    case Type::IQ4_NL: return kIQ4_NL;
    case Type::IQ4_XS: return kIQ4_XS;
    case Type::IQ2_XXS: return kIQ2_XXS;
    case Type::IQ2_XS: return kIQ2_XS;
    case Type::IQ2_S: return kIQ2_S;
    case Type::IQ3_XXS: return kIQ3_XXS;
    case Type::IQ3_S: return kIQ3_S;
    case Type::IQ1_S: return kIQ1_S;
    case Type::IQ1_M: return kIQ1_M;
  }
  return kUnknown;
}

bool is_supported(Type type) { return info(type).block_size != 0; }

bool is_quantized(Type type) { return is_supported(type) && info(type).block_size > 1; }

bool requires_importance(Type type) {
  return type == Type::IQ2_XXS || type == Type::IQ2_XS || type == Type::IQ1_S;
}

bool is_codebook(Type type) {
  switch (type) {
    case Type::IQ2_XXS:
    case Type::IQ2_XS:
    case Type::IQ2_S:
    case Type::IQ3_XXS:
    case Type::IQ3_S:
    case Type::IQ1_S:
    case Type::IQ1_M: return true;
    default: return false;
  }
}

size_t row_size(Type type, int64_t n_per_row) {
  const TypeInfo& t = info(type);
  if (t.block_size == 0) return 0;
  return static_cast<size_t>(t.type_size) * static_cast<size_t>(n_per_row / t.block_size);
}

}  // namespace mpq::detail::ggml
