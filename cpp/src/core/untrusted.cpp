#include "core/untrusted.h"

namespace mpq::detail {

uint64_t checked_mul(uint64_t a, uint64_t b, std::string_view what) {
  uint64_t out = 0;
  MPQ_CHECK_VALUE(!__builtin_mul_overflow(a, b, &out), what, ": ", a, " * ", b,
                  " overflows 64 bits");
  return out;
}

uint64_t checked_add(uint64_t a, uint64_t b, std::string_view what) {
  uint64_t out = 0;
  MPQ_CHECK_VALUE(!__builtin_add_overflow(a, b, &out), what, ": ", a, " + ", b,
                  " overflows 64 bits");
  return out;
}

int64_t checked_add(int64_t a, int64_t b, std::string_view what) {
  int64_t out = 0;
  MPQ_CHECK_VALUE(!__builtin_add_overflow(a, b, &out), what, ": ", a, " + ", b,
                  " overflows int64");
  return out;
}

void check_count_fits(uint64_t count, uint64_t min_bytes, uint64_t remaining, std::string_view what) {
  MPQ_ASSERT(min_bytes > 0, "check_count_fits needs a positive element size");
  MPQ_CHECK_VALUE(count <= remaining / min_bytes, what, ": a count of ", count, " (", min_bytes,
                  "+ bytes each) does not fit in the ", remaining, " bytes left");
}

MemoryBudget::MemoryBudget(uint64_t file_size, std::string what)
    : limit_(file_size > (std::numeric_limits<uint64_t>::max() - kMargin) / kFactor
                 ? std::numeric_limits<uint64_t>::max()
                 : file_size * kFactor + kMargin),
      what_(std::move(what)) {}

void MemoryBudget::charge(uint64_t bytes) {
  MPQ_CHECK_VALUE(bytes <= limit_ - used_, what_, ": would need more than ", limit_,
                  " bytes of memory (", kFactor, " x the file's size + ", kMargin >> 20,
                  " MiB): corrupt or hostile file");
  used_ += bytes;
}

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the byte there does not start one.
size_t utf8_sequence(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned c = b(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_sequence(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string escape_utf8(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_sequence(s, i);
    if (n == 0) {
      const auto c = static_cast<unsigned char>(s[i++]);
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

void check_utf8(std::string_view name, std::string_view kind, std::string_view what) {
  size_t i = 0;
  while (i < name.size()) {
    const size_t n = utf8_sequence(name, i);
    if (n == 0) break;
    i += n;
  }
  MPQ_CHECK_VALUE(i == name.size(), what, ": ", kind, " '", escape_utf8(name),
                  "' is not valid UTF-8 (byte ", i, ")");
}

}  // namespace mpq::detail
