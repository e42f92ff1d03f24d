// llama.cpp's built-in quantization mixes (the ftype argument of llama-quantize), re-derived from
// the per-tensor rules of llama.cpp's src/llama-quant.cpp so that mpq can show, tensor by tensor,
// what a stock Q4_K_M etc. file of a model contains and size it without running llama-quantize.
//
// Scope: the ftypes whose types mpq can write (every K, legacy, IQ1-IQ4 mix; no TQ/MXFP4/Q2_K_S),
// default options (with or without an imatrix, no --pure, no overrides except the +L8 variants),
// and the llama/qwen2/qwen3 archs, so Falcon- and GLM-specific rules are left out. Rules for
// 8-expert models are kept because they key on hparams only.
#include <mpq/plan.h>

#include <algorithm>
#include <cctype>
#include <numeric>
#include <stdexcept>
#include <string_view>
#include <unordered_set>

#include "plan/plan_internal.h"

namespace mpq {

using detail::ggml::Type;
namespace ggml = detail::ggml;

namespace detail::plan {

bool name_allows_quantization(std::string_view name) {
  if (!name.ends_with("weight")) return false;
  // Tensors llama-quantize always copies: norms, MoE routers, tiny or positional tables of
  // other architectures. Substring tests, as llama-quantize does them.
  static constexpr std::string_view kNever[] = {
      "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
      "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
      "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight",
      "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight",
      "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight",
      "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
      "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight",
      ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
      ".patch_merger", "a.rvq.codebook", "mm.a.code_embd"};
  for (std::string_view s : kNever) {
    if (name.find(s) != std::string_view::npos) return false;
  }
  // Exact names: BERT-style position embeddings and token types.
  return name != "position_embd.weight" && name != "token_types.weight";
}

}  // namespace detail::plan

namespace {

enum class Ftype {
  kF32, kF16, kBF16, kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ8_0, kQ2_K, kQ3_K_S, kQ3_K_M, kQ3_K_L,
  kQ4_K_S, kQ4_K_M, kQ5_K_S, kQ5_K_M, kQ6_K, kIQ4_NL, kIQ4_XS,
  kIQ1_S, kIQ1_M, kIQ2_XXS, kIQ2_XS, kIQ2_S, kIQ2_M, kIQ3_XXS, kIQ3_XS, kIQ3_S, kIQ3_M,
};

struct FtypeInfo {
  const char* name;
  Ftype ftype;
  Type base;          // the type every quantizable tensor starts from before the rules
  bool k_mix;         // has a +L8 variant
  uint32_t llama_id;  // llama.h's llama_ftype, written as general.file_type
};

// In llama-quantize's listing order (QUANT_OPTIONS in tools/quantize/quantize.cpp). IQ2_S's
// default type is IQ2_XS and IQ2_M's IQ2_S: the names are the file's size class, not its type.
constexpr FtypeInfo kFtypes[] = {
    {"Q4_0", Ftype::kQ4_0, Type::Q4_0, false, 2},
    {"Q4_1", Ftype::kQ4_1, Type::Q4_1, false, 3},
    {"Q5_0", Ftype::kQ5_0, Type::Q5_0, false, 8},
    {"Q5_1", Ftype::kQ5_1, Type::Q5_1, false, 9},
    {"IQ2_XXS", Ftype::kIQ2_XXS, Type::IQ2_XXS, false, 19},
    {"IQ2_XS", Ftype::kIQ2_XS, Type::IQ2_XS, false, 20},
    {"IQ2_S", Ftype::kIQ2_S, Type::IQ2_XS, false, 28},
    {"IQ2_M", Ftype::kIQ2_M, Type::IQ2_S, false, 29},
    {"IQ1_S", Ftype::kIQ1_S, Type::IQ1_S, false, 24},
    {"IQ1_M", Ftype::kIQ1_M, Type::IQ1_M, false, 31},
    {"Q2_K", Ftype::kQ2_K, Type::Q2_K, true, 10},
    {"IQ3_XXS", Ftype::kIQ3_XXS, Type::IQ3_XXS, false, 23},
    {"IQ3_S", Ftype::kIQ3_S, Type::IQ3_S, false, 26},
    {"IQ3_M", Ftype::kIQ3_M, Type::IQ3_S, false, 27},
    {"IQ3_XS", Ftype::kIQ3_XS, Type::IQ3_S, false, 22},
    {"Q3_K_S", Ftype::kQ3_K_S, Type::Q3_K, true, 11},
    {"Q3_K_M", Ftype::kQ3_K_M, Type::Q3_K, true, 12},
    {"Q3_K_L", Ftype::kQ3_K_L, Type::Q3_K, true, 13},
    {"IQ4_NL", Ftype::kIQ4_NL, Type::IQ4_NL, false, 25},
    {"IQ4_XS", Ftype::kIQ4_XS, Type::IQ4_XS, false, 30},
    {"Q4_K_S", Ftype::kQ4_K_S, Type::Q4_K, true, 14},
    {"Q4_K_M", Ftype::kQ4_K_M, Type::Q4_K, true, 15},
    {"Q5_K_S", Ftype::kQ5_K_S, Type::Q5_K, true, 16},
    {"Q5_K_M", Ftype::kQ5_K_M, Type::Q5_K, true, 17},
    {"Q6_K", Ftype::kQ6_K, Type::Q6_K, true, 18},
    {"Q8_0", Ftype::kQ8_0, Type::Q8_0, false, 7},
    {"F16", Ftype::kF16, Type::F16, false, 1},
    {"BF16", Ftype::kBF16, Type::BF16, false, 32},
    {"F32", Ftype::kF32, Type::F32, false, 0},
};

// The 1- and 2-bit file types, which llama-quant.cpp handles in a branch of their own.
bool is_low_iq(Ftype f) {
  switch (f) {
    case Ftype::kIQ1_S: case Ftype::kIQ1_M: case Ftype::kIQ2_XXS: case Ftype::kIQ2_XS:
    case Ftype::kIQ2_S: case Ftype::kIQ2_M: return true;
    default: return false;
  }
}

// The types llama-quantize refuses to write without an imatrix (tensor_requires_imatrix; its
// Q2_K case concerns Q2_K_S files only, which mpq has no mix for). ggml itself refuses only
// IQ2_XXS, IQ2_XS and IQ1_S; llama-quantize adds the others because they come out poor.
bool llama_requires_imatrix(Type t) {
  switch (t) {
    case Type::IQ3_XXS: case Type::IQ2_XXS: case Type::IQ2_XS: case Type::IQ2_S:
    case Type::IQ1_M: case Type::IQ1_S: return true;
    default: return false;
  }
}

// llama-quantize's shorthand names.
constexpr std::pair<std::string_view, std::string_view> kAliases[] = {
    {"Q3_K", "Q3_K_M"}, {"Q4_K", "Q4_K_M"}, {"Q5_K", "Q5_K_M"}};

constexpr std::string_view kL8Suffix = "+L8";

// Broad tensor roles, tested in llama-quant.cpp's order (the first match wins).
enum class Role {
  kOutput, kTokenEmbd, kAttnQkv, kAttnKvB, kAttnV, kAttnK, kAttnQ, kAttnOutput,
  kFfnUp, kFfnGate, kFfnDown, kOther,
};

Role role_of(std::string_view name) {
  if (name == "output.weight") return Role::kOutput;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return Role::kTokenEmbd;
  auto has = [&](std::string_view s) { return name.find(s) != std::string_view::npos; };
  if (has("attn_qkv.weight")) return Role::kAttnQkv;
  if (has("attn_kv_b.weight")) return Role::kAttnKvB;
  if (has("attn_v.weight")) return Role::kAttnV;
  if (has("attn_k.weight")) return Role::kAttnK;
  if (has("attn_q.weight")) return Role::kAttnQ;
  if (has("attn_output.weight")) return Role::kAttnOutput;
  if (has("ffn_up")) return Role::kFfnUp;
  if (has("ffn_gate")) return Role::kFfnGate;
  if (has("ffn_down")) return Role::kFfnDown;
  return Role::kOther;
}

// Fused QKV and MLA's kv_b carry the values too, so they share attn_v's rules and counter.
bool is_value_like(Role r) {
  return r == Role::kAttnV || r == Role::kAttnQkv || r == Role::kAttnKvB;
}

// The layer a "blk.N." name belongs to, -1 for tensors outside the blocks (the loader's sort key).
int64_t block_of(std::string_view name) {
  if (!name.starts_with("blk.")) return -1;
  size_t i = 4;
  int64_t v = 0;
  const size_t digits_start = i;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && v < 1'000'000) {
    v = v * 10 + (name[i++] - '0');
  }
  return i == digits_start ? -1 : v;
}

// The layers llama.cpp spends extra bits on: the first and last eighth, and every third in between.
bool more_bits(int64_t i, int64_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

// Mixing state, one pass over the tensors in the loader's order (block index, then name): the
// attn_v and ffn_* rules key on how many such tensors came before, not on the name.
struct Mix {
  const ModelSpec& model;
  Ftype ftype;
  Type base;
  bool l8;            // token_embd and output forced to q8_0
  bool imatrix;       // an importance matrix is given (several rules depend on it)
  bool tied;          // no output.weight: token_embd doubles as the output matrix
  bool is_70b;        // llama.cpp's LLM_TYPE_70B, which widens attn_v
  int64_t n_gqa;      // query heads per kv head (integer division, 0 without kv heads)
  int64_t n_value = 0, i_value = 0, i_ffn_down = 0, i_ffn_gate = 0, i_ffn_up = 0;

  // ffn rules use the running counter as the layer, except in MoE models where the expert
  // tensors are not one per layer and the layer comes from the name.
  int64_t layer(int64_t counter, const std::string& name) const {
    if (model.n_expert <= 1) return counter;
    const int64_t l = block_of(name);
    if (l < 0 || l >= model.n_layer) {
      throw std::invalid_argument("cannot tell the layer of tensor '" + name + "'");
    }
    return l;
  }

  Type rules(const std::string& name, Role role, int64_t row_length);
  Type choose(const TensorSpec& t);
};

// llama.cpp's per-tensor mix rules for a quantizable tensor under a block-type ftype
// (llama_tensor_get_type_impl, branch for branch).
Type Mix::rules(const std::string& name, Role role, int64_t row_length) {
  const int64_t n = model.n_layer;
  const Ftype f = ftype;
  Type t = base;
  if (role == Role::kOutput || (tied && role == Role::kTokenEmbd)) {
    // The logits matrix is the most sensitive: q6_k unless the ftype is already q8_0 (q5_k for
    // the 1-/2-bit and IQ3_XXS files, where q6_k would be a large share of the file); q8_0 when
    // the row does not split into the ftype's blocks.
    if (row_length % ggml::info(base).block_size != 0) return Type::Q8_0;
    if (is_low_iq(f) || f == Ftype::kIQ3_XXS) return Type::Q5_K;
    return t == Type::Q8_0 ? t : Type::Q6_K;
  }
  if (role == Role::kTokenEmbd) {  // untied: a lookup table, cheap to read, so a little wider
    switch (f) {
      case Ftype::kIQ2_XXS: case Ftype::kIQ2_XS: case Ftype::kIQ1_S: case Ftype::kIQ1_M:
        return Type::Q2_K;
      case Ftype::kIQ2_S: case Ftype::kIQ2_M: case Ftype::kIQ3_XXS: return Type::IQ3_S;
      default: return t;
    }
  }
  const bool iq2s_or_m = f == Ftype::kIQ2_S || f == Ftype::kIQ2_M;
  if (is_low_iq(f)) {
    // llama-quant.cpp's 1-/2-bit branch: no 70B or 8-expert attn_v rule, no ffn_gate/up counters,
    // and ffn_down by the running counter even in MoE models.
    if (is_value_like(role)) {
      ++i_value;
      if (n_gqa >= 4 || model.n_expert >= 4) return Type::Q4_K;
      return iq2s_or_m ? Type::IQ3_S : Type::Q2_K;
    }
    if (model.n_expert == 8 && role == Role::kAttnK) return Type::Q4_K;
    if (role == Role::kFfnDown) {
      if (i_ffn_down++ < n / 8) t = iq2s_or_m ? Type::IQ3_S : Type::Q2_K;
      return t;
    }
    if (role == Role::kAttnOutput) {
      if (model.n_expert == 8) return Type::Q5_K;
      if (f == Ftype::kIQ1_S || f == Ftype::kIQ1_M) return Type::IQ2_XXS;
      if (iq2s_or_m) return Type::IQ3_S;
    }
    return t;
  }
  if (is_value_like(role)) {
    const int64_t i = i_value++;
    switch (f) {
      case Ftype::kQ2_K: t = n_gqa >= 4 ? Type::Q4_K : Type::Q3_K; break;
      // With an imatrix IQ3_XXS itself holds up on attn_v; without one IQ3_XXS is not allowed.
      case Ftype::kIQ3_XXS:
        t = n_gqa >= 4 ? Type::Q4_K : imatrix ? Type::IQ3_XXS : Type::IQ3_S;
        break;
      case Ftype::kIQ3_XS:
      case Ftype::kIQ3_S: if (n_gqa >= 4) t = Type::Q4_K; break;
      case Ftype::kIQ3_M: t = Type::Q4_K; break;
      case Ftype::kQ3_K_M: t = i < 2 ? Type::Q5_K : Type::Q4_K; break;
      case Ftype::kQ3_K_L: t = Type::Q5_K; break;
      case Ftype::kIQ4_NL:
      case Ftype::kIQ4_XS: if (n_gqa >= 4) t = Type::Q5_K; break;
      case Ftype::kQ4_K_M:
      case Ftype::kQ5_K_M: if (more_bits(i, n_value)) t = Type::Q6_K; break;
      case Ftype::kQ4_K_S: if (i < 4) t = Type::Q5_K; break;
      default: break;
    }
    // 70B: attn_v is 8x smaller than attn_q (GQA), so widening it costs little.
    if (is_70b && (t == Type::Q3_K || t == Type::Q4_K)) t = Type::Q5_K;
    if (model.n_expert == 8) t = Type::Q8_0;
    return t;
  }
  switch (role) {
    case Role::kAttnK:
      if (model.n_expert == 8) t = Type::Q8_0;
      else if (f == Ftype::kIQ3_XS) t = Type::IQ3_XXS;
      else if (f == Ftype::kIQ3_XXS) t = Type::IQ2_S;
      break;
    case Role::kAttnQ:
      if (f == Ftype::kIQ3_XS) t = Type::IQ3_XXS;
      else if (f == Ftype::kIQ3_XXS) t = Type::IQ2_S;
      break;
    case Role::kFfnDown: {
      const int64_t i = layer(i_ffn_down++, name);
      switch (f) {
        case Ftype::kQ2_K: t = Type::Q3_K; break;
        case Ftype::kIQ3_XXS:  // with an imatrix ffn_down stays IQ3_XXS
          if (!imatrix) t = i < n / 8 ? Type::Q4_K : Type::Q3_K;
          break;
        case Ftype::kQ3_K_M: t = i < n / 16 ? Type::Q5_K : Type::Q4_K; break;
        case Ftype::kIQ3_M:
          if (i < n / 8 || (model.n_expert == 8 && more_bits(i, n))) t = Type::Q4_K;
          break;
        case Ftype::kQ3_K_L: t = Type::Q5_K; break;
        case Ftype::kQ4_K_M:
        case Ftype::kQ5_K_M: if (more_bits(i, n)) t = Type::Q6_K; break;
        case Ftype::kIQ4_NL:
        case Ftype::kIQ4_XS:  // the imatrix protects the first layers well enough on its own
          if (!imatrix && i < n / 8) t = Type::Q5_K;
          break;
        case Ftype::kQ4_K_S: if (i < n / 8) t = Type::Q5_K; break;
        // Only with an imatrix: without one llama.cpp keeps the files it always made, and
        // Q4_1/Q5_1 do worse than Q4_0/Q5_0 on ffn_down without importance weights.
        case Ftype::kQ4_0: if (imatrix && i < n / 8) t = Type::Q4_1; break;
        case Ftype::kQ5_0: if (imatrix && i < n / 8) t = Type::Q5_1; break;
        default: break;
      }
      break;
    }
    case Role::kAttnOutput:
      if (model.n_expert == 8) {
        switch (f) {
          case Ftype::kQ2_K: case Ftype::kIQ3_XS: case Ftype::kIQ3_XXS: case Ftype::kQ3_K_S:
          case Ftype::kQ3_K_M: case Ftype::kIQ4_NL: case Ftype::kQ4_K_S: case Ftype::kQ4_K_M:
          case Ftype::kIQ3_S: case Ftype::kIQ3_M: case Ftype::kIQ4_XS: t = Type::Q5_K; break;
          default: break;
        }
      } else if (f == Ftype::kQ2_K) {
        t = Type::Q3_K;
      } else if (f == Ftype::kIQ3_XXS) {
        t = Type::IQ3_S;
      } else if (f == Ftype::kQ3_K_M || f == Ftype::kIQ3_M) {
        t = Type::Q4_K;
      } else if (f == Ftype::kQ3_K_L) {
        t = Type::Q5_K;
      }
      break;
    // IQ3_XS drops the middle layers' ffn_gate/ffn_up to IQ3_XXS; the counters (and the MoE
    // layer check) run for every ftype.
    case Role::kFfnGate:
    case Role::kFfnUp: {
      int64_t& counter = role == Role::kFfnGate ? i_ffn_gate : i_ffn_up;
      const int64_t i = layer(counter++, name);
      if (f == Ftype::kIQ3_XS && i >= n / 8 && i < 7 * n / 8) t = Type::IQ3_XXS;
      break;
    }
    default: break;
  }
  return t;
}

// A type whose block does not divide the row length is replaced by a 32-block type of about the
// same size, and by f16 when even 32 does not divide it.
Type fit_row(Type t, int64_t row_length) {
  if (row_length % ggml::info(t).block_size == 0) return t;
  Type r = t;
  switch (t) {
    case Type::IQ1_S: case Type::IQ1_M: case Type::IQ2_XXS: case Type::IQ2_XS: case Type::IQ2_S:
    case Type::IQ3_XXS: case Type::IQ3_S:
    case Type::IQ4_XS: r = Type::IQ4_NL; break;
    case Type::Q2_K:
    case Type::Q3_K: r = Type::Q4_0; break;
    case Type::Q4_K: r = Type::Q5_0; break;
    case Type::Q5_K: r = Type::Q5_1; break;
    case Type::Q6_K: r = Type::Q8_0; break;
    default: break;  // already a 32-block type
  }
  return row_length % ggml::info(r).block_size == 0 ? r : Type::F16;
}

Type Mix::choose(const TensorSpec& t) {
  const Role role = role_of(t.name);
  const int64_t row_length = t.shape[0];
  if (l8 && (role == Role::kTokenEmbd || role == Role::kOutput)) {
    // llama-quantize applies --token-embedding-type / --output-tensor-type as given, with no
    // row-length fallback; q8_0 on such a row would fail there, so refuse here.
    if (row_length % ggml::info(Type::Q8_0).block_size != 0) {
      throw std::invalid_argument("tensor '" + t.name + "': row length " +
                                  std::to_string(row_length) + " does not fit q8_0 blocks");
    }
    return Type::Q8_0;
  }
  if (!ggml::is_quantized(base)) return base;  // F16/BF16/F32: every quantizable tensor
  return fit_row(rules(t.name, role, row_length), row_length);
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string known_names() {
  std::string out;
  for (const std::string& n : llama_cpp_mix_names()) out += (out.empty() ? "" : ", ") + n;
  return out;
}

void check_model(const ModelSpec& m) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("llama_cpp_mix: " + what); };
  if (m.arch != "llama" && m.arch != "qwen2" && m.arch != "qwen3") {
    bad("unsupported arch '" + m.arch + "' (supported: llama, qwen2, qwen3)");
  }
  if (m.n_layer <= 0 || m.n_head <= 0 || m.n_head_kv <= 0 || m.n_expert < 0) {
    bad("n_layer, n_head and n_head_kv must be positive and n_expert non-negative");
  }
  std::unordered_set<std::string> names;
  for (const TensorSpec& t : m.tensors) {
    if (t.name.empty() || !names.insert(t.name).second) {
      bad("empty or repeated tensor name '" + t.name + "'");
    }
    if (t.shape.empty() || t.shape.size() > 4) bad("tensor '" + t.name + "' must have 1 to 4 dims");
    for (int64_t d : t.shape) {
      if (d <= 0) bad("tensor '" + t.name + "' has a non-positive dimension");
    }
  }
  if (m.tied_output == (names.count("output.weight") != 0)) {
    bad(m.tied_output ? "tied_output is set but the model has output.weight"
                      : "tied_output is not set but the model has no output.weight");
  }
}

}  // namespace

std::vector<std::string> llama_cpp_mix_names() {
  std::vector<std::string> out;
  for (const FtypeInfo& f : kFtypes) out.emplace_back(f.name);
  for (const FtypeInfo& f : kFtypes) {
    if (f.k_mix) out.push_back(std::string(f.name) + std::string(kL8Suffix));
  }
  return out;
}

namespace {

// Resolves a mix name: case-insensitive like llama-quantize, aliases, then the +L8 suffix.
const FtypeInfo& find_ftype(const std::string& ftype_name, bool* l8_out) {
  std::string key = upper(ftype_name);
  const bool l8 = key.ends_with(kL8Suffix);
  if (l8) key.resize(key.size() - kL8Suffix.size());
  for (const auto& [alias, target] : kAliases) {
    if (key == alias) key = target;
  }
  for (const FtypeInfo& f : kFtypes) {
    if (key == f.name && (!l8 || f.k_mix)) {
      if (l8_out != nullptr) *l8_out = l8;
      return f;
    }
  }
  throw std::invalid_argument("unknown llama.cpp mix '" + ftype_name +
                              "'; known: " + known_names());
}

}  // namespace

uint32_t llama_cpp_file_type(const std::string& ftype) {
  return find_ftype(ftype, nullptr).llama_id;
}

Plan llama_cpp_mix(const std::string& ftype_name, const ModelSpec& model, bool imatrix) {
  bool l8 = false;
  const FtypeInfo* info = &find_ftype(ftype_name, &l8);
  check_model(model);

  const bool tied = model.tied_output;
  const bool is_70b = (model.arch == "llama" && model.n_expert != 8 && model.n_layer == 80 &&
                       model.n_head != model.n_head_kv) ||
                      (model.arch == "qwen2" && model.n_layer == 80);
  Mix mix{model, info->ftype, info->base, l8, imatrix, tied, is_70b,
          model.n_head / model.n_head_kv};
  for (const TensorSpec& t : model.tensors) {
    if (is_value_like(role_of(t.name))) ++mix.n_value;
  }

  // Visit in the loader's order (the counters depend on it), record in the model's order.
  std::vector<size_t> order(model.tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const TensorSpec& x = model.tensors[a];
    const TensorSpec& y = model.tensors[b];
    const int64_t bx = block_of(x.name), by = block_of(y.name);
    return bx != by ? bx < by : x.name < y.name;
  });
  std::vector<std::string> formats(model.tensors.size());
  for (size_t idx : order) {
    const TensorSpec& t = model.tensors[idx];
    // At least two dimensions larger than 1 (ggml_n_dims) and an eligible name; everything else
    // keeps the input file's type.
    size_t dims = t.shape.size();
    while (dims > 1 && t.shape[dims - 1] == 1) --dims;
    const bool quantizable = dims >= 2 && detail::plan::name_allows_quantization(t.name);
    if (!quantizable) {
      formats[idx] = t.source_format;
      continue;
    }
    const Type type = mix.choose(t);
    // llama-quantize stops here without an imatrix (token_embd and output are exempt: they are
    // never run through a matrix product that llama-imatrix could observe).
    const Role role = role_of(t.name);
    if (!imatrix && llama_requires_imatrix(type) && role != Role::kOutput &&
        role != Role::kTokenEmbd) {
      throw std::invalid_argument(
          "llama_cpp_mix " + std::string(info->name) + ": tensor '" + t.name + "' gets " +
          ggml::info(type).name +
          ", which llama-quantize refuses to write without an importance matrix; build the "
          "mix with imatrix=True and quantize with one");
    }
    formats[idx] = ggml::info(type).name;
  }

  Plan plan;
  plan.name = std::string(info->name) + (l8 ? std::string(kL8Suffix) : "");
  plan.base = ggml::info(info->base).name;
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    plan.set(model.tensors[i].name, TensorChoice{formats[i]});
  }
  return plan;
}

}  // namespace mpq
