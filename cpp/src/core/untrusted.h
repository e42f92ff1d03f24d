#pragma once
// The one place where numbers and names read from files are checked before mpq trusts them:
// checked size arithmetic, range-checked integer conversions, a bound on what a file may make a
// reader allocate, and UTF-8 validation of names. Every failure is a ValueError whose message
// names `what` (the file, and the key or tensor) and the rule broken; messages are valid UTF-8.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <mpq/error.h>

namespace mpq::detail {

// a * b and a + b, or ValueError "<what>: <a> * <b> overflows".
uint64_t checked_mul(uint64_t a, uint64_t b, std::string_view what);
uint64_t checked_add(uint64_t a, uint64_t b, std::string_view what);
int64_t checked_add(int64_t a, int64_t b, std::string_view what);

// `value` as T when it lies in [lo, hi]; ValueError naming `what` and the range otherwise.
template <typename T, typename V>
T checked_range(V value, T lo, T hi, std::string_view what) {
  static_assert(std::is_integral_v<T> && std::is_integral_v<V>);
  MPQ_CHECK_VALUE(std::cmp_greater_equal(value, lo) && std::cmp_less_equal(value, hi), what, ": ",
                  value, " is outside [", lo, ", ", hi, "]");
  return static_cast<T>(value);
}

// A count of elements, each taking at least `min_bytes` in the file, must fit in the `remaining`
// bytes: checked before anything is allocated for them.
void check_count_fits(uint64_t count, uint64_t min_bytes, uint64_t remaining, std::string_view what);

// What a reader may allocate for one file: kFactor * its size + kMargin bytes. Readers charge
// what they keep (arrays, strings, tree nodes) and get a ValueError when a file asks for more,
// so a small hostile file cannot make a large allocation.
class MemoryBudget {
 public:
  static constexpr uint64_t kFactor = 8;
  static constexpr uint64_t kMargin = uint64_t{64} << 20;

  MemoryBudget(uint64_t file_size, std::string what);
  void charge(uint64_t bytes);
  uint64_t used() const { return used_; }

 private:
  uint64_t limit_, used_ = 0;
  std::string what_;
};

// UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view s);
// `s` with every byte that is not part of valid UTF-8 written as \xNN: always valid UTF-8, so a
// message that quotes a name from a file can always reach Python.
std::string escape_utf8(std::string_view s);
// ValueError "<what>: <kind> '<escaped>' is not valid UTF-8 (byte N)" unless `name` is valid.
void check_utf8(std::string_view name, std::string_view kind, std::string_view what);

}  // namespace mpq::detail
