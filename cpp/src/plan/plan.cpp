#include <mpq/plan.h>

#include <cstddef>
#include <set>
#include <stdexcept>
#include <string_view>

#include "plan/plan_internal.h"

namespace mpq {

using detail::ggml::Type;
namespace ggml = detail::ggml;

namespace detail::plan {

std::optional<Type> type_from_name(std::string_view name) {
  // Every type mpq can write; ggml_types.h owns their names, so compare against info().name.
  static constexpr Type kAll[] = {Type::F32,  Type::F16,  Type::BF16,   Type::Q4_0,  Type::Q4_1,
                                  Type::Q5_0, Type::Q5_1, Type::Q8_0,   Type::Q2_K,  Type::Q3_K,
                                  Type::Q4_K, Type::Q5_K, Type::Q6_K,   Type::IQ4_NL, Type::IQ4_XS};
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
  if (it == index_.end()) throw std::out_of_range("plan has no tensor '" + tensor + "'");
  return entries_[it->second].second;
}

bool Plan::contains(const std::string& tensor) const { return index_.count(tensor) != 0; }

// ---------------------------------------------------------------------------------------------
// JSON writing

namespace {

void write_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {  // JSON forbids raw control characters inside strings
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;  // other bytes (UTF-8 included) pass through unchanged
    }
  }
  out += '"';
}

}  // namespace

std::string Plan::to_json() const {
  std::string out = "{\n  \"version\": 1,\n  \"name\": ";
  write_string(out, name);
  out += ",\n  \"base\": ";
  write_string(out, base);
  out += ",\n  \"tensors\": {";
  for (size_t i = 0; i < entries_.size(); ++i) {
    out += i == 0 ? "\n    " : ",\n    ";
    write_string(out, entries_[i].first);
    out += ": {\"format\": ";
    write_string(out, entries_[i].second.format);
    out += ", \"expert\": ";
    write_string(out, entries_[i].second.expert);
    out += '}';
  }
  out += entries_.empty() ? "}\n}\n" : "\n  }\n}\n";
  return out;
}

// ---------------------------------------------------------------------------------------------
// JSON reading: a schema-directed reader for exactly the document to_json writes. It has no
// recursion (the nesting is fixed), so hostile input cannot exhaust the stack, and every read is
// bounds-checked against the input.

namespace {

class Reader {
 public:
  explicit Reader(std::string_view text) : s_(text) {}

  [[noreturn]] void fail(const std::string& what) const { fail_at(pos_, what); }
  [[noreturn]] void fail_at(size_t pos, const std::string& what) const {
    throw std::invalid_argument("plan JSON: at byte " + std::to_string(pos) + ": " + what);
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  // Skips whitespace, then consumes `c` if it is next.
  bool accept(char c) {
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!accept(c)) fail(std::string("expected '") + c + "'" + found());
  }
  void expect_end() {
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected data after the plan object");
  }
  size_t pos() const { return pos_; }

  std::string read_string() {
    skip_ws();
    if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string" + found());
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail_at(pos_ - 1, "control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': append_utf8(out, read_code_point()); break;
        default: fail_at(pos_ - 1, std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  // A non-negative integer without fraction or exponent (all the schema has).
  int64_t read_count() {
    skip_ws();
    const size_t start = pos_;
    int64_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      if (v > 1'000'000'000) fail_at(start, "number too large");
      v = v * 10 + (s_[pos_++] - '0');
    }
    if (pos_ == start) fail("expected a non-negative integer" + found());
    if (pos_ < s_.size() && (s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E')) {
      fail("expected an integer");
    }
    return v;
  }

 private:
  std::string found() const {
    if (pos_ >= s_.size()) return ", found the end of the input";
    return std::string(", found '") + s_[pos_] + "'";
  }

  unsigned read_hex4() {
    if (s_.size() - pos_ < 4) fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<unsigned>(h - 'A' + 10);
      else fail_at(pos_ - 1, "invalid hex digit in \\u escape");
    }
    return v;
  }

  // After "\u": one code point, joining a UTF-16 surrogate pair; lone surrogates are rejected.
  unsigned read_code_point() {
    const size_t start = pos_ - 2;
    const unsigned hi = read_hex4();
    if (hi >= 0xDC00 && hi <= 0xDFFF) fail_at(start, "lone low surrogate");
    if (hi < 0xD800 || hi > 0xDBFF) return hi;
    if (s_.size() - pos_ < 2 || s_[pos_] != '\\' || s_[pos_ + 1] != 'u') {
      fail_at(start, "high surrogate without a low surrogate");
    }
    pos_ += 2;
    const unsigned lo = read_hex4();
    if (lo < 0xDC00 || lo > 0xDFFF) fail_at(start, "high surrogate without a low surrogate");
    return 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
};

// Calls on_member(key, key_pos) for each member of the object that starts next; the callback reads
// the value. Rejects duplicate keys, since a silently dropped duplicate would hide an error.
template <typename F>
void read_object(Reader& r, F&& on_member) {
  r.expect('{');
  if (r.accept('}')) return;
  std::set<std::string> seen;
  do {
    r.skip_ws();
    const size_t key_pos = r.pos();
    std::string key = r.read_string();
    if (!seen.insert(key).second) r.fail_at(key_pos, "duplicate key \"" + key + "\"");
    r.expect(':');
    on_member(key, key_pos);
  } while (r.accept(','));
  r.expect('}');
}

TensorChoice read_choice(Reader& r, const std::string& tensor, size_t tensor_pos) {
  TensorChoice choice;
  bool has_format = false;
  read_object(r, [&](const std::string& key, size_t key_pos) {
    if (key == "format") {
      choice.format = r.read_string();
      has_format = true;
    } else if (key == "expert") {
      choice.expert = r.read_string();
    } else {
      r.fail_at(key_pos, "unknown key \"" + key + "\" in tensor \"" + tensor + "\"");
    }
  });
  if (!has_format || choice.format.empty()) {
    r.fail_at(tensor_pos, "tensor \"" + tensor + "\" has no format");
  }
  return choice;
}

}  // namespace

Plan Plan::from_json(const std::string& json) {
  Reader r(json);
  Plan plan;
  bool has_version = false;
  bool has_tensors = false;
  read_object(r, [&](const std::string& key, size_t key_pos) {
    if (key == "version") {
      const size_t at = r.pos();
      if (r.read_count() != 1) r.fail_at(at, "unsupported plan version (this reader knows 1)");
      has_version = true;
    } else if (key == "name") {
      plan.name = r.read_string();
    } else if (key == "base") {
      plan.base = r.read_string();
    } else if (key == "tensors") {
      has_tensors = true;
      read_object(r, [&](const std::string& tensor, size_t tensor_pos) {
        if (tensor.empty()) r.fail_at(tensor_pos, "empty tensor name");
        plan.set(tensor, read_choice(r, tensor, tensor_pos));
      });
    } else {
      r.fail_at(key_pos, "unknown key \"" + key + "\"");
    }
  });
  r.expect_end();
  if (!has_version) r.fail_at(0, "missing \"version\"");
  if (!has_tensors) r.fail_at(0, "missing \"tensors\"");
  return plan;
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
  int64_t total = 0;
  for (const TensorSpec& t : model.tensors) {
    auto it = index_.find(t.name);
    if (it == index_.end()) throw std::invalid_argument("plan has no tensor '" + t.name + "'");
    const std::string& format = entries_[it->second].second.format;
    const auto type = detail::plan::type_from_name(format);
    if (!type) {
      throw std::invalid_argument("tensor '" + t.name + "': '" + format + "' is not a ggml type");
    }
    if (t.shape.empty()) throw std::invalid_argument("tensor '" + t.name + "' has no shape");
    int64_t rows = 1;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (t.shape[d] <= 0) throw std::invalid_argument("tensor '" + t.name + "' has a bad shape");
      if (d > 0) rows *= t.shape[d];
    }
    const int64_t block = ggml::info(*type).block_size;
    if (t.shape[0] % block != 0) {
      throw std::invalid_argument("tensor '" + t.name + "': row length " +
                                  std::to_string(t.shape[0]) + " is not a multiple of the " +
                                  format + " block (" + std::to_string(block) + ")");
    }
    total += rows * static_cast<int64_t>(ggml::row_size(*type, t.shape[0]));
  }
  return total;
}

double Plan::bits_per_weight(const ModelSpec& model) const {
  int64_t weights = 0;
  for (const TensorSpec& t : model.tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    weights += n;
  }
  const int64_t b = bytes(model);  // validates the shapes first
  if (weights == 0) throw std::invalid_argument("bits_per_weight: the model has no weights");
  return 8.0 * static_cast<double>(b) / static_cast<double>(weights);
}

}  // namespace mpq
