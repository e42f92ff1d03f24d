#include "core/json.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <set>

#include <mpq/error.h>

#include "core/untrusted.h"

namespace mpq::detail::json {
namespace {

// Deep enough for every mpq document, shallow enough that recursion cannot exhaust the stack.
constexpr int kMaxDepth = 32;

class Parser {
 public:
  Parser(std::string_view s, const std::string& what)
      : s_(s), what_(what), budget_(s.size(), what) {}

  Value document() {
    Value v = value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected data after the document");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const { fail_at(pos_, problem); }
  [[noreturn]] void fail_at(size_t at, const std::string& problem) const {
    MPQ_CHECK_VALUE(false, what_, ": at byte ", at, ": ", problem);
    __builtin_unreachable();  // the check above always throws
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool accept(char c) {
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!accept(c)) fail(std::string("expected '") + c + "'");
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  Value value(int depth) {
    if (depth > kMaxDepth) fail("nested deeper than " + std::to_string(kMaxDepth));
    skip_ws();
    if (pos_ >= s_.size()) fail("unexpected end of the input");
    // The node, and room for it twice more: the vector it lands in may have grown to twice its
    // size, and growing copies it while the old buffer is still alive.
    budget_.charge(3 * sizeof(Value));
    Value v;
    v.offset = pos_;
    const char c = s_[pos_];
    if (c == '{') {
      v.kind = Value::Kind::kObject;
      ++pos_;
      std::set<std::string> seen;
      if (accept('}')) return v;
      do {
        skip_ws();
        const size_t key_at = pos_;
        std::string key = string();
        budget_.charge(sizeof(std::string) + 32 + 2 * key.size());  // in `seen` and `members`
        if (!seen.insert(key).second) fail_at(key_at, "duplicate key \"" + key + "\"");
        expect(':');
        v.members.emplace_back(std::move(key), value(depth + 1));
      } while (accept(','));
      expect('}');
    } else if (c == '[') {
      v.kind = Value::Kind::kArray;
      ++pos_;
      if (accept(']')) return v;
      do {
        v.items.push_back(value(depth + 1));
      } while (accept(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Value::Kind::kString;
      v.text = string();
      budget_.charge(v.text.size());
    } else if (literal("null")) {
      v.kind = Value::Kind::kNull;
    } else if (literal("true") || literal("false")) {
      v.kind = Value::Kind::kBool;
      v.boolean = s_[v.offset] == 't';
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Value::Kind::kNumber;
      const size_t start = pos_;
      while (pos_ < s_.size() && std::string_view("+-.eE0123456789").find(s_[pos_]) !=
                                     std::string_view::npos) {
        ++pos_;
      }
      v.text = std::string(s_.substr(start, pos_ - start));
      budget_.charge(v.text.size());
    } else {
      fail("unexpected character '" + character_at(pos_) + "'");
    }
    return v;
  }

  // The (whole, possibly multi-byte) character at `at`, escaped where it is not valid UTF-8.
  std::string character_at(size_t at) const {
    size_t n = 1;
    while (n < 4 && at + n < s_.size() && (static_cast<unsigned char>(s_[at + n]) & 0xC0) == 0x80) ++n;
    std::string_view c = s_.substr(at, n);
    return is_valid_utf8(c) ? std::string(c) : escape_utf8(c.substr(0, 1));
  }

  // A string's value; JSON text is UTF-8, so a string that is not is an error here, not later.
  std::string string() {
    if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string");
    const size_t start = pos_++;
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') {
        // (the check alone would build its message's context for every string)
        if (!is_valid_utf8(out)) check_utf8(out, "string", what_ + ": at byte " + std::to_string(start));
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail_at(pos_ - 1, "control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      switch (const char e = s_[pos_++]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': append_utf8(out, code_point()); break;
        default: fail_at(pos_ - 1, std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  unsigned hex4() {
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
  unsigned code_point() {
    const size_t start = pos_ - 2;
    const unsigned hi = hex4();
    if (hi >= 0xDC00 && hi <= 0xDFFF) fail_at(start, "lone low surrogate");
    if (hi < 0xD800 || hi > 0xDBFF) return hi;
    if (s_.size() - pos_ < 2 || s_[pos_] != '\\' || s_[pos_ + 1] != 'u') {
      fail_at(start, "high surrogate without a low surrogate");
    }
    pos_ += 2;
    const unsigned lo = hex4();
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
  const std::string& what_;
  MemoryBudget budget_;
  size_t pos_ = 0;
};

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::kNull: return "null";
    case Value::Kind::kBool: return "a boolean";
    case Value::Kind::kNumber: return "a number";
    case Value::Kind::kString: return "a string";
    case Value::Kind::kArray: return "an array";
    case Value::Kind::kObject: return "an object";
  }
  return "?";
}

void expect_kind(const Value& v, Value::Kind k, const std::string& what) {
  MPQ_CHECK_VALUE(v.kind == k, what, ": at byte ", v.offset, ": expected ", kind_name(k),
                  ", found ", kind_name(v.kind));
}

}  // namespace

Value parse(std::string_view text, const std::string& what) {
  return Parser(text, what).document();
}

const Value* find_member(const Value& object, std::string_view key) {
  for (const auto& [k, v] : object.members) {
    if (k == key) return &v;
  }
  return nullptr;
}

const Value& member(const Value& object, std::string_view key, const std::string& what) {
  expect_kind(object, Value::Kind::kObject, what);
  const Value* v = find_member(object, key);
  MPQ_CHECK_VALUE(v != nullptr, what, ": the object at byte ", object.offset, " has no \"", key,
                  "\"");
  return *v;
}

const std::vector<Value>& as_array(const Value& v, const std::string& what) {
  expect_kind(v, Value::Kind::kArray, what);
  return v.items;
}

const std::vector<std::pair<std::string, Value>>& as_object(const Value& v,
                                                            const std::string& what) {
  expect_kind(v, Value::Kind::kObject, what);
  return v.members;
}

const std::string& as_string(const Value& v, const std::string& what) {
  expect_kind(v, Value::Kind::kString, what);
  return v.text;
}

int64_t as_int(const Value& v, const std::string& what) {
  expect_kind(v, Value::Kind::kNumber, what);
  int64_t out = 0;
  const char* end = v.text.data() + v.text.size();
  const auto [p, ec] = std::from_chars(v.text.data(), end, out);
  MPQ_CHECK_VALUE(ec == std::errc() && p == end, what, ": at byte ", v.offset,
                  ": expected an integer that fits in 64 bits, found ", v.text);
  return out;
}

int64_t as_int(const Value& v, int64_t lo, int64_t hi, const std::string& what) {
  const int64_t out = as_int(v, what);
  MPQ_CHECK_VALUE(out >= lo && out <= hi, what, ": at byte ", v.offset, ": ", out,
                  " is outside [", lo, ", ", hi, "]");
  return out;
}

double as_double(const Value& v, const std::string& what) {
  if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  expect_kind(v, Value::Kind::kNumber, what);
  double out = 0;
  const char* end = v.text.data() + v.text.size();
  const auto [p, ec] = std::from_chars(v.text.data(), end, out);
  MPQ_CHECK_VALUE(ec == std::errc() && p == end && std::isfinite(out), what, ": at byte ",
                  v.offset, ": expected a finite number, found ", v.text);
  return out;
}

void check_keys(const Value& object, const std::vector<std::string_view>& allowed,
                const std::string& what) {
  expect_kind(object, Value::Kind::kObject, what);
  for (const auto& [k, v] : object.members) {
    bool known = false;
    for (std::string_view a : allowed) known = known || k == a;
    MPQ_CHECK_VALUE(known, what, ": at byte ", v.offset, ": unknown key \"", k, "\"");
  }
}

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
      out += c;
    }
  }
  out += '"';
}

void write_double(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[32];
  const auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), v);  // shortest exact round trip
  out.append(buf, p);
}

void write_int(std::string& out, int64_t v) { out += std::to_string(v); }

}  // namespace mpq::detail::json
