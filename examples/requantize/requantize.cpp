// mpq-requantize: llama-quantize's job done by libmpq alone (no Python). Reads an F32/F16/BF16
// GGUF, quantizes every tensor to the type a plan gives it (a plan JSON file written by
// mpq.Plan.to_json(), or one of llama.cpp's mixes by name: Q4_K_M, Q6_K...), optionally weighted
// by an importance matrix (llama-imatrix's GGUF or legacy .dat), and writes the new GGUF. With an
// imatrix the mixes follow llama-quantize's imatrix-dependent rules and the file records the
// imatrix in llama-quantize's quantize.imatrix.* keys; without one the IQ1/IQ2/IQ3_XXS/IQ3_XS
// mixes are refused, as llama-quantize refuses them.
//
//   mpq-requantize IN.gguf OUT.gguf (PLAN.json | FTYPE) [IMATRIX]
#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include <mpq/mpq.h>

namespace {

// llama_ftype value for general.file_type: a llama.cpp mix's own number (several IQ mixes share a
// base type: IQ3_XS, IQ3_S and IQ3_M are all iq3_s), otherwise the ftype whose default type is the
// plan's base.
uint32_t file_type_of(const mpq::Plan& plan) {
  try {
    return mpq::llama_cpp_file_type(plan.name);
  } catch (const std::invalid_argument&) {
    // not a mix name: a plan mpq made
  }
  static const std::pair<const char*, uint32_t> types[] = {
      {"f32", 0},      {"f16", 1},      {"q4_0", 2},     {"q4_1", 3},     {"q8_0", 7},
      {"q5_0", 8},     {"q5_1", 9},     {"q2_k", 10},    {"q3_k", 12},    {"q4_k", 15},
      {"q5_k", 17},    {"q6_k", 18},    {"iq2_xxs", 19}, {"iq2_xs", 20},  {"iq3_xxs", 23},
      {"iq1_s", 24},   {"iq4_nl", 25},  {"iq3_s", 26},   {"iq2_s", 29},   {"iq4_xs", 30},
      {"iq1_m", 31},   {"bf16", 32}};
  for (const auto& [name, id] : types) {
    if (plan.base == name) return id;
  }
  return 1;
}

// The types llama-quantize will not write for a tensor the imatrix has no entry for (its
// tensor_requires_imatrix; token_embd and output are exempt).
bool needs_importance(const std::string& format, const std::string& tensor) {
  if (tensor == "token_embd.weight" || tensor == "per_layer_token_embd.weight" ||
      tensor == "output.weight") {
    return false;
  }
  for (const char* f : {"iq3_xxs", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_m", "iq1_s"}) {
    if (format == f) return true;
  }
  return false;
}

// llama-quantize's record of the imatrix in the file it writes (tools/quantize/quantize.cpp):
// the path as given and the first dataset, each cut to 127 bytes (its fixed-size override
// buffer), the entry count, and the chunk count when the file has one. Integers as u32, as its
// integer overrides are written.
std::vector<std::pair<std::string, mpq::gguf::Value>> imatrix_keys(const std::string& path,
                                                                   const mpq::Imatrix& m) {
  std::vector<std::pair<std::string, mpq::gguf::Value>> keys;
  keys.emplace_back("quantize.imatrix.file", mpq::gguf::Value{path.substr(0, 127)});
  if (!m.datasets.empty()) {
    keys.emplace_back("quantize.imatrix.dataset",
                      mpq::gguf::Value{m.datasets.front().substr(0, 127)});
  }
  keys.emplace_back("quantize.imatrix.entries_count",
                    mpq::gguf::Value{static_cast<uint32_t>(m.entries.size())});
  if (m.chunk_count > 0) {
    keys.emplace_back("quantize.imatrix.chunks_count",
                      mpq::gguf::Value{static_cast<uint32_t>(m.chunk_count)});
  }
  return keys;
}

// The model description llama.cpp's mix rules need, from the GGUF's own metadata.
mpq::ModelSpec model_spec(const mpq::gguf::Reader& in) {
  mpq::ModelSpec spec;
  spec.arch = in.get("general.architecture").as_string();
  spec.n_layer = in.get(spec.arch + ".block_count").as_int();
  spec.n_head = in.get(spec.arch + ".attention.head_count").as_int();
  const auto* kv = in.find(spec.arch + ".attention.head_count_kv");
  spec.n_head_kv = kv ? kv->as_int() : spec.n_head;
  bool has_output = false;
  for (const auto& t : in.tensors()) {
    const auto fmt = mpq::find_format([&] {
      for (const std::string& name : mpq::list_formats()) {
        if (mpq::find_format(name).ggml_type == static_cast<int32_t>(t.type)) return name;
      }
      return std::string("f32");
    }());
    spec.tensors.push_back({t.name, t.shape, fmt.name});
    has_output |= t.name == "output.weight";
  }
  spec.tied_output = !has_output;
  return spec;
}

mpq::Plan load_plan(const std::string& arg, const mpq::ModelSpec& spec, bool imatrix) {
  if (arg.size() > 5 && arg.ends_with(".json")) {
    std::ifstream f(arg);
    MPQ_CHECK_IO(f.good(), "cannot open plan ", arg);
    std::stringstream ss;
    ss << f.rdbuf();
    return mpq::Plan::from_json(ss.str());
  }
  return mpq::llama_cpp_mix(arg, spec, imatrix);
}

at::Tensor as_float(const mpq::gguf::TensorInfo& t, const std::vector<uint8_t>& raw) {
  std::vector<int64_t> shape(t.shape.rbegin(), t.shape.rend());
  at::Tensor bytes = at::from_blob(const_cast<uint8_t*>(raw.data()), {static_cast<int64_t>(raw.size())}, at::kByte);
  const at::ScalarType st = t.type == 0 ? at::kFloat : t.type == 1 ? at::kHalf : at::kBFloat16;
  MPQ_CHECK_VALUE(t.type == 0 || t.type == 1 || t.type == 30, "tensor ", t.name,
                  " is already quantized (type ", t.type, "); requantize from F32/F16/BF16");
  return bytes.view(st).reshape(shape).to(at::kFloat);
}

int run(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::fprintf(stderr, "usage: %s IN.gguf OUT.gguf (PLAN.json | FTYPE) [IMATRIX]\n", argv[0]);
    return 2;
  }
  const mpq::gguf::Reader in(argv[1]);
  const mpq::ModelSpec spec = model_spec(in);
  mpq::Imatrix imatrix;
  if (argc == 5) imatrix = mpq::Imatrix::load(argv[4]);
  const mpq::Plan plan = load_plan(argv[3], spec, argc == 5);

  // Keys of the input file that this run replaces, as llama-quantize's overrides do.
  std::vector<std::pair<std::string, mpq::gguf::Value>> replaced = {
      {"general.file_type", mpq::gguf::Value{file_type_of(plan)}},
      {"general.quantization_version", mpq::gguf::Value{uint32_t{2}}}};
  if (argc == 5) {
    for (auto& kv : imatrix_keys(argv[4], imatrix)) replaced.push_back(std::move(kv));
  }
  mpq::gguf::Writer out(argv[2], in.alignment());
  for (const auto& [key, value] : in.metadata()) {
    const bool is_replaced = std::any_of(replaced.begin(), replaced.end(),
                                         [&](const auto& kv) { return kv.first == key; });
    if (is_replaced || key == "general.alignment") continue;
    out.set(key, value);
  }
  for (const auto& [key, value] : replaced) out.set(key, value);
  for (const auto& t : in.tensors()) {
    MPQ_CHECK_VALUE(plan.contains(t.name), "the plan has no entry for tensor ", t.name);
    out.add_tensor(t.name, t.shape, static_cast<uint32_t>(mpq::find_format(plan.get(t.name).format).ggml_type));
  }
  int64_t done = 0;
  for (const auto& t : in.tensors()) {
    const mpq::Format format = mpq::find_format(plan.get(t.name).format);
    const std::vector<uint8_t> raw = in.read(t.name);
    at::Tensor data;
    if (format.ggml_type == static_cast<int32_t>(t.type)) {
      data = at::from_blob(const_cast<uint8_t*>(raw.data()), {static_cast<int64_t>(raw.size())}, at::kByte).clone();
    } else {
      const at::Tensor w = as_float(t, raw).reshape({-1, t.shape[0]});
      std::optional<at::Tensor> importance;
      if (imatrix.entries.count(t.name)) {
        importance = at::tensor(imatrix.importance(t.name), at::kFloat);
      }
      MPQ_CHECK_VALUE(importance || !needs_importance(format.name, t.name), "tensor ", t.name,
                      ": ", format.name,
                      " needs importance weights and the imatrix has no entry for it",
                      argc == 5 ? "" : " (no imatrix given)");
      data = format.ggml_type == 0 ? w.contiguous() : mpq::quantize_ggml(w, format, importance, t.name);
    }
    out.write_tensor(t.name, data.data_ptr(), data.nbytes());
    std::fprintf(stderr, "\r[%4lld/%4zu] %-40s %s", static_cast<long long>(++done), in.tensors().size(),
                 t.name.c_str(), format.name.c_str());
  }
  out.finish();
  std::fprintf(stderr, "\nwrote %s: %s, %.4f bits per weight\n", argv[2], plan.name.c_str(), plan.bits_per_weight(spec));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "mpq-requantize: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpq-requantize: %s\n", e.what());
  }
  return 1;
}
