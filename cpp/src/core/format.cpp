#include <mpq/format.h>

#include <charconv>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mpq/error.h>

#include "core/registry.h"
#include "ggml/ggml_types.h"

namespace mpq {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Parses "int<bits>[_g<group>][_sym]"; nullopt if the name is not of that form.
std::optional<Format> parse_integer_name(std::string_view name) {
  auto take_number = [&](std::string_view& s, int64_t& out) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    if (ec != std::errc() || end == s.data()) return false;
    s.remove_prefix(end - s.data());
    return true;
  };
  std::string_view s = name;
  if (!s.starts_with("int")) return std::nullopt;
  s.remove_prefix(3);
  Format f;
  f.name = std::string(name);
  int64_t bits = 0;
  if (!take_number(s, bits)) return std::nullopt;
  f.bits = static_cast<int>(bits);
  if (s.starts_with("_g")) {
    s.remove_prefix(2);
    if (!take_number(s, f.group_size) || f.group_size <= 0) return std::nullopt;
  }
  if (s == "_sym") {
    f.symmetric = true;
    s = {};
  }
  if (!s.empty() || bits < 2 || bits > 8) return std::nullopt;
  return f;
}

// The llama.cpp types mpq quantizes and exports, with their nominal bits.
constexpr std::pair<detail::ggml::Type, int> kGgmlTypes[] = {
    {detail::ggml::Type::F32, 32},   {detail::ggml::Type::F16, 16},  {detail::ggml::Type::BF16, 16},
    {detail::ggml::Type::Q8_0, 8},   {detail::ggml::Type::Q4_0, 4},  {detail::ggml::Type::Q4_1, 4},
    {detail::ggml::Type::Q5_0, 5},   {detail::ggml::Type::Q5_1, 5},  {detail::ggml::Type::Q2_K, 2},
    {detail::ggml::Type::Q3_K, 3},   {detail::ggml::Type::Q4_K, 4},  {detail::ggml::Type::Q5_K, 5},
    {detail::ggml::Type::Q6_K, 6},   {detail::ggml::Type::IQ4_NL, 4}, {detail::ggml::Type::IQ4_XS, 4},
    {detail::ggml::Type::IQ3_S, 3},  {detail::ggml::Type::IQ3_XXS, 3}, {detail::ggml::Type::IQ2_S, 2},
    {detail::ggml::Type::IQ2_XS, 2}, {detail::ggml::Type::IQ2_XXS, 2}, {detail::ggml::Type::IQ1_M, 1},
    {detail::ggml::Type::IQ1_S, 1},
};

// The formats every program has: llama.cpp's types and the common integer formats (any other
// canonical integer name is valid too, without being listed).
detail::Registry<Format>& registry() {
  static detail::Registry<Format> r;
  // Filled once, thread-safely (a static's initialisation), before any caller sees it.
  static const bool filled = [] {
    for (const auto& [type, bits] : kGgmlTypes) {
      const auto& info = detail::ggml::info(type);
      r.insert(info.name, Format{info.name, FormatFamily::kGgml, bits, info.block_size, false,
                                 static_cast<int32_t>(type)});
    }
    for (int bits : {2, 3, 4, 5, 6, 8}) {
      for (int64_t group : {0, 32, 64, 128}) {
        for (bool sym : {false, true}) {
          Format f{integer_format_name(bits, group, sym), FormatFamily::kInteger, bits, group, sym};
          r.insert(f.name, f);
        }
      }
    }
    return true;
  }();
  (void)filled;
  return r;
}

bool same_traits(const Format& a, const Format& b) {
  return a.family == b.family && a.bits == b.bits && a.group_size == b.group_size &&
         a.symmetric == b.symmetric && a.ggml_type == b.ggml_type;
}

}  // namespace

int64_t Format::groups_per_row(int64_t row_length) const {
  return group_size == 0 ? 1 : ceil_div(row_length, group_size);
}

int64_t Format::bytes(int64_t rows, int64_t cols) const {
  const int64_t groups = groups_per_row(cols);
  if (family == FormatFamily::kGgml) {
    return rows * groups * detail::ggml::info(static_cast<detail::ggml::Type>(ggml_type)).type_size;
  }
  int64_t per_row = ceil_div(cols * bits, 8) + 2 * groups;
  if (!symmetric) per_row += ceil_div(groups * bits, 8);
  return rows * per_row;
}

double Format::bits_per_weight(int64_t row_length) const {
  return 8.0 * static_cast<double>(bytes(1, row_length)) / static_cast<double>(row_length);
}

bool Format::requires_importance() const {
  return family == FormatFamily::kGgml &&
         detail::ggml::requires_importance(static_cast<detail::ggml::Type>(ggml_type));
}

void Format::validate() const {
  MPQ_CHECK_VALUE(!name.empty(), "format: the name must not be empty");
  if (family == FormatFamily::kGgml) {
    MPQ_CHECK_VALUE(ggml_type >= 0 && detail::ggml::is_supported(static_cast<detail::ggml::Type>(ggml_type)),
                    "format ", name, ": ggml type ", ggml_type, " is not one mpq implements");
    return;
  }
  MPQ_CHECK_VALUE(bits >= 2 && bits <= 8, "format ", name, ": bits must be in 2..8, got ", bits);
  MPQ_CHECK_VALUE(group_size >= 0, "format ", name, ": group_size must be >= 0 (0 = whole row), got ",
                  group_size);
}

std::string Format::to_string() const {
  if (family == FormatFamily::kGgml) {
    return fmt::format("Format(name='{}', ggml_type={}, block_size={}, bits_per_weight={})", name,
                       ggml_type, group_size, bits_per_weight(group_size));
  }
  return fmt::format("Format(name='{}', bits={}, group_size={}, symmetric={})", name, bits,
                     group_size, symmetric ? "True" : "False");
}

std::string integer_format_name(int bits, int64_t group_size, bool symmetric) {
  std::string name = fmt::format("int{}", bits);
  if (group_size > 0) name += fmt::format("_g{}", group_size);
  if (symmetric) name += "_sym";
  return name;
}

Format find_format(std::string_view name) {
  if (auto known = registry().find(name)) return *known;
  if (auto parsed = parse_integer_name(name)) {
    // Accept only the canonical spelling, so one format never has two names.
    if (integer_format_name(parsed->bits, parsed->group_size, parsed->symmetric) == name) {
      return *parsed;
    }
  }
  std::vector<std::string> others;
  for (const std::string& n : list_formats()) {
    if (!parse_integer_name(n)) others.push_back(n);
  }
  MPQ_CHECK_VALUE(false, "unknown quantization format '", name,
                  "'; integer formats are named int<bits>[_g<group>][_sym] with bits 2..8 (e.g. "
                  "int4_g128, int8_sym)",
                  others.empty() ? "" : fmt::format("; other formats: {}", fmt::join(others, ", ")));
  return {};  // unreachable
}

void register_format(const Format& format) {
  format.validate();
  if (auto parsed = parse_integer_name(format.name)) {
    MPQ_CHECK_VALUE(same_traits(*parsed, format), "register_format: the name '", format.name,
                    "' is an integer format name that means ", parsed->to_string(),
                    ", not ", format.to_string());
  }
  const Format there = registry().insert(format.name, format);
  MPQ_CHECK_VALUE(same_traits(there, format), "register_format: '", format.name,
                  "' is already registered as ", there.to_string());
}

std::vector<std::string> list_formats() { return registry().names(); }

}  // namespace mpq
