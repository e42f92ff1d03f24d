#pragma once
// A Plan says which storage format every tensor of a model gets. It can be written as JSON, sized
// against a model's shapes, turned into llama-quantize `--tensor-type` arguments, and built from
// llama.cpp's own quantization mixes (Q4_K_M, ...) so mpq's plans can be compared with them.
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mpq {

struct TensorSpec {
  std::string name;            // GGUF name: "blk.0.attn_q.weight", "token_embd.weight", ...
  std::vector<int64_t> shape;  // GGUF order: innermost (row length) first
  // Type of the tensor in the unquantized input file. llama-quantize leaves the tensors it does not
  // quantize (norms, 1-D tensors, ...) in this type, so a mix needs it to report them.
  std::string source_format = "f32";
};

struct ModelSpec {
  std::string arch;       // "llama", "qwen2", "qwen3"
  int64_t n_layer = 0;    // transformer blocks (the range of llama.cpp's ffn_* layer counters)
  int64_t n_head = 0;     // query heads; n_head / n_head_kv (integer) is llama.cpp's n_gqa
  int64_t n_head_kv = 0;  // key/value heads
  int64_t n_expert = 0;   // MoE experts (0 or 1: dense); 8 switches on llama.cpp's Mixtral rules
  // True when the model has no output.weight and reuses token_embd for the logits. Must agree with
  // the tensor list (llama-quantize decides by the absence of output.weight); mixes check it.
  bool tied_output = false;
  std::vector<TensorSpec> tensors;
};

struct TensorChoice {
  std::string format;             // lowercase ggml type name: "q4_k", "q6_k", "q8_0", "f16", ...
  std::string expert = "kquant";  // which mpq quantizer produces the format's data
  bool operator==(const TensorChoice&) const = default;
};

// Tensor name -> TensorChoice, kept in insertion order (model order reads best in files and diffs).
class Plan {
 public:
  std::string name;  // e.g. "Q4_K_M", or a name an optimizer gives its result
  // The type llama-quantize's ftype argument gives by default ("q4_k" for Q4_K_M). Only
  // tensor_type_lines() uses it; empty when unknown.
  std::string base;

  // Adds the tensor, or replaces its choice in place (its position is kept).
  void set(const std::string& tensor, TensorChoice choice);
  // Throws mpq::KeyError (a std::out_of_range; Python KeyError) naming the tensor when it is not
  // in the plan.
  const TensorChoice& get(const std::string& tensor) const;
  bool contains(const std::string& tensor) const;
  size_t size() const { return entries_.size(); }
  const std::vector<std::pair<std::string, TensorChoice>>& tensors() const { return entries_; }

  // {"version": 1, "name": ..., "base": ...,
  //  "tensors": {"<tensor>": {"format": ..., "expert": ...}, ...}}
  std::string to_json() const;
  // Reads what to_json writes (any whitespace, key order free) with the library's JSON reader.
  // Throws std::invalid_argument (Python ValueError) naming the byte offset and the problem for
  // malformed JSON, unknown keys, duplicates, strings that are not UTF-8 or a wrong version.
  static Plan from_json(const std::string& json);

  // One `PATTERN=TYPE` per line for every tensor whose format differs from `base` (tensors that
  // llama-quantize never quantizes by name, e.g. norms, are left out; a 1-D tensor with another
  // name, e.g. rope_freqs.weight=f32, still gets a line, which llama-quantize ignores). PATTERN is an anchored,
  // escaped regex ("^blk\.0\.attn_v\.weight$") because llama-quantize applies --tensor-type
  // patterns with std::regex_search, first match wins: a bare name would also hit blk.10.* etc.
  // The lines reproduce the plan exactly only with `llama-quantize --pure ... <ftype of base>`
  // (without --pure the ftype's own mix rules move the remaining tensors) and only when `base` is
  // a block type (llama-quantize ignores --tensor-type for F16/BF16/F32). Each line can be passed
  // as one --tensor-type argument (quote it in a shell) or the whole text as --tensor-type-file.
  // Throws std::invalid_argument when `base` is empty.
  std::string tensor_type_lines() const;

  // Bytes of the tensor data of `model` under this plan: per tensor rows * ggml row size, no GGUF
  // alignment padding (the same sum llama-quantize reports as "quant size"). Every tensor of the
  // model must be in the plan with a ggml type whose block divides its row length, otherwise
  // std::invalid_argument naming the tensor.
  int64_t bytes(const ModelSpec& model) const;
  // 8 * bytes / all weights of the model (every tensor counted, as llama-quantize's BPW).
  double bits_per_weight(const ModelSpec& model) const;

 private:
  std::vector<std::pair<std::string, TensorChoice>> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// The tensor types llama-quantize (default options: no --pure, no overrides) picks for `model`
// under `ftype`, tensor by tensor, including its row-length fallbacks and the tensors it leaves in
// their source type. `imatrix` says whether an importance matrix is given (`--imatrix`): several
// rules depend on it (Q4_0/Q5_0 raise the first eighth of ffn_down to Q4_1/Q5_1 only with one,
// IQ4_NL/IQ4_XS raise it to Q5_K only without, IQ3_XXS keeps attn_v and ffn_down at IQ3_XXS only
// with one). ftype (case-insensitive): F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M
// Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ3_XXS IQ3_XS
// IQ3_S IQ3_M IQ4_NL IQ4_XS, llama-quantize's aliases Q3_K / Q4_K / Q5_K (= the _M mixes), and
// "<K mix>+L8" for each K mix (Q2_K+L8 ... Q6_K+L8): the K mix with token_embd and output.weight
// at q8_0, as `--token-embedding-type q8_0 --output-tensor-type q8_0` gives and as public "*_K_L"
// GGUF releases do. Plan::name is the canonical name, Plan::base the ftype's default type (IQ2_S's
// is iq2_xs, IQ2_M's iq2_s, IQ3_XS's and IQ3_M's iq3_s). Every tensor gets expert "kquant".
// Throws std::invalid_argument for an unknown ftype (listing the known ones), an arch other than
// llama/qwen2/qwen3, an inconsistent model (duplicate names, bad shapes, tied_output that
// disagrees with the presence of output.weight), or, without `imatrix`, a tensor that gets a type
// llama-quantize refuses to write without one (IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ3_XXS; token_embd
// and output exempt), naming the tensor and the type.
Plan llama_cpp_mix(const std::string& ftype, const ModelSpec& model, bool imatrix = false);

// llama.h's llama_ftype number (general.file_type) of a mix name llama_cpp_mix accepts (+L8
// variants share their mix's number). Throws std::invalid_argument for an unknown name.
uint32_t llama_cpp_file_type(const std::string& ftype);

// The canonical names llama_cpp_mix accepts, in llama-quantize's order, the +L8 variants last.
std::vector<std::string> llama_cpp_mix_names();

}  // namespace mpq
