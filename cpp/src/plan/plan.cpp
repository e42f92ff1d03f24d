#include <mpq/plan.h>

#include <cstddef>
#include <stdexcept>
#include <string_view>

#include <mpq/error.h>

#include "core/json.h"
#include "core/untrusted.h"
#include "plan/plan_internal.h"

namespace mpq {

using detail::ggml::Type;
namespace ggml = detail::ggml;

namespace detail::plan {

std::optional<Type> type_from_name(std::string_view name) {
  // Every type mpq can write; ggml_types.h owns their names, so compare against info().name.
  static constexpr Type kAll[] = {Type::F32,  Type::F16,  Type::BF16,   Type::Q4_0,  Type::Q4_1,
                                  Type::Q5_0, Type::Q5_1, Type::Q8_0,   Type::Q2_K,  Type::Q3_K,
                                  Type::Q4_K, Type::Q5_K, Type::Q6_K,   Type::IQ4_NL, Type::IQ4_XS,
                                  Type::IQ2_XXS, Type::IQ2_XS, Type::IQ2_S, Type::IQ3_XXS, Type::IQ3_S,
                                  Type::IQ1_S, Type::IQ1_M};
  for (Type t : kAll) {
    if (name == ggml::info(t).name) return t;
  }
  return std::nullopt;
}

}  // namespace detail::plan

// ---------------------------------------------------------------------------------------------
// The map

void Plan::set(const std::string& tensor, TensorChoice choice) {
  if (auto it = index_.find(tensor); it != index_.end()) {
    entries_[it->second].second = std::move(choice);
    return;
  }
  index_.emplace(tensor, entries_.size());
  entries_.emplace_back(tensor, std::move(choice));
}

const TensorChoice& Plan::get(const std::string& tensor) const {
  auto it = index_.find(tensor);
  if (it == index_.end()) throw KeyError("plan has no tensor '" + detail::escape_utf8(tensor) + "'");
  return entries_[it->second].second;
}

bool Plan::contains(const std::string& tensor) const { return index_.count(tensor) != 0; }

// ---------------------------------------------------------------------------------------------
// JSON, through the library's one JSON reader and writer (core/json)

namespace {

namespace json = detail::json;

// plan.h promises std::invalid_argument for bad input: the checks inside are the library's own
// (ValueError), converted once here, at the boundary.
template <typename F>
auto as_invalid_argument(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::ValueError& e) {
    throw std::invalid_argument(e.what_without_backtrace());
  }
}

}  // namespace

std::string Plan::to_json() const {
  std::string out = "{\n  \"version\": 1,\n  \"name\": ";
  json::write_string(out, name);
  out += ",\n  \"base\": ";
  json::write_string(out, base);
  out += ",\n  \"tensors\": {";
  for (size_t i = 0; i < entries_.size(); ++i) {
    out += i == 0 ? "\n    " : ",\n    ";
    json::write_string(out, entries_[i].first);
    out += ": {\"format\": ";
    json::write_string(out, entries_[i].second.format);
    out += ", \"expert\": ";
    json::write_string(out, entries_[i].second.expert);
    out += '}';
  }
  out += entries_.empty() ? "}\n}\n" : "\n  }\n}\n";
  return out;
}

Plan Plan::from_json(const std::string& text) {
  return as_invalid_argument([&] {
    const std::string what = "plan JSON";
    const json::Value doc = json::parse(text, what);
    json::check_keys(doc, {"version", "name", "base", "tensors"}, what);
    const json::Value& version = json::member(doc, "version", what);
    MPQ_CHECK_VALUE(json::as_int(version, what) == 1, what, ": at byte ", version.offset,
                    ": unsupported plan version (this reader knows 1)");
    Plan plan;
    if (const json::Value* v = json::find_member(doc, "name")) plan.name = json::as_string(*v, what);
    if (const json::Value* v = json::find_member(doc, "base")) plan.base = json::as_string(*v, what);
    const json::Value& tensors = json::member(doc, "tensors", what);
    for (const auto& [tensor, choice] : json::as_object(tensors, what)) {
      const std::string where = what + ": tensor \"" + tensor + "\"";
      MPQ_CHECK_VALUE(!tensor.empty(), what, ": at byte ", choice.offset, ": empty tensor name");
      json::check_keys(choice, {"format", "expert"}, where);
      TensorChoice c;
      c.format = json::as_string(json::member(choice, "format", where), where);
      MPQ_CHECK_VALUE(!c.format.empty(), where, ": at byte ", choice.offset, ": empty format");
      if (const json::Value* e = json::find_member(choice, "expert")) c.expert = json::as_string(*e, where);
      plan.set(tensor, std::move(c));
    }
    return plan;
  });
}

// ---------------------------------------------------------------------------------------------
// llama-quantize arguments

std::string Plan::tensor_type_lines() const {
  if (base.empty()) throw std::invalid_argument("tensor_type_lines: the plan has no base type");
  std::string out;
  for (const auto& [tensor, choice] : entries_) {
    if (choice.format == base || !detail::plan::name_allows_quantization(tensor)) continue;
    // llama-quantize lowercases the pattern and splits a --tensor-type-file at whitespace and an
    // argument at the first '=': names that would not survive that cannot be expressed.
    for (char c : tensor) {
      if ((c >= 'A' && c <= 'Z') || c == '=' || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        throw std::invalid_argument("tensor_type_lines: tensor name '" + tensor +
                                    "' cannot be matched by a --tensor-type pattern");
      }
    }
    out += '^';
    for (char c : tensor) {
      if (std::string_view(".^$|()[]{}*+?\\/").find(c) != std::string_view::npos) out += '\\';
      out += c;
    }
    out += "$=" + choice.format + "\n";
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Size

int64_t Plan::bytes(const ModelSpec& model) const {
  return as_invalid_argument([&] {
    int64_t total = 0;
    for (const TensorSpec& t : model.tensors) {
      const std::string what = "tensor '" + t.name + "'";
      auto it = index_.find(t.name);
      MPQ_CHECK_VALUE(it != index_.end(), "plan has no ", what);
      const std::string& format = entries_[it->second].second.format;
      const auto type = detail::plan::type_from_name(format);
      MPQ_CHECK_VALUE(type.has_value(), what, ": '", format, "' is not a ggml type");
      MPQ_CHECK_VALUE(!t.shape.empty(), what, " has no shape");
      uint64_t rows = 1;
      for (size_t d = 0; d < t.shape.size(); ++d) {
        MPQ_CHECK_VALUE(t.shape[d] > 0, what, " has a bad shape (dimension ", t.shape[d], ")");
        if (d > 0) rows = detail::checked_mul(rows, t.shape[d], what + ": row count");
      }
      const int64_t block = ggml::info(*type).block_size;
      MPQ_CHECK_VALUE(t.shape[0] % block == 0, what, ": row length ", t.shape[0],
                      " is not a multiple of the ", format, " block (", block, ")");
      const uint64_t b = detail::checked_mul(rows, ggml::row_size(*type, t.shape[0]), what + ": bytes");
      total = detail::checked_add(total, detail::checked_range<int64_t>(b, 0, INT64_MAX, what + ": bytes"),
                                  "the plan's bytes");
    }
    return total;
  });
}

double Plan::bits_per_weight(const ModelSpec& model) const {
  const int64_t b = bytes(model);  // validates the shapes (their products fit in int64)
  int64_t weights = 0;
  for (const TensorSpec& t : model.tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    weights += n;
  }
  if (weights == 0) throw std::invalid_argument("bits_per_weight: the model has no weights");
  return 8.0 * static_cast<double>(b) / static_cast<double>(weights);
}

}  // namespace mpq
