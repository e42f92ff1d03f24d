#pragma once
// mpq's one JSON reader and writer, for its own documents (plans, candidate tables, search
// checkpoints). The reader builds a tree, bounds-checks every read, limits nesting and the memory
// the tree may take (MemoryBudget: a multiple of the text's size), rejects duplicate keys and
// strings that are not UTF-8, so a corrupt or hostile file is a ValueError that names the file
// and the byte offset, never a crash. Numbers keep their
// text so that int64 values (byte counts) round-trip exactly; doubles are written in the shortest
// form that reads back bit-identical. JSON has no NaN: writers put null there.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mpq::detail::json {

struct Value {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  std::string text;  // a string's value, or a number's literal
  std::vector<Value> items;
  std::vector<std::pair<std::string, Value>> members;  // in document order, keys unique
  size_t offset = 0;                                    // byte offset, for messages

  bool is_null() const { return kind == Kind::kNull; }
};

// Parses a whole document. Throws ValueError "<what>: at byte N: <problem>".
Value parse(std::string_view text, const std::string& what);

// Typed access. Each throws ValueError naming `what`, the offset and the key or type expected.
const Value& member(const Value& object, std::string_view key, const std::string& what);
const Value* find_member(const Value& object, std::string_view key);  // nullptr when absent
const std::vector<Value>& as_array(const Value& v, const std::string& what);
const std::vector<std::pair<std::string, Value>>& as_object(const Value& v, const std::string& what);
const std::string& as_string(const Value& v, const std::string& what);
int64_t as_int(const Value& v, const std::string& what);
// An integer in [lo, hi] (a count, an index, a size); ValueError naming the range otherwise.
int64_t as_int(const Value& v, int64_t lo, int64_t hi, const std::string& what);
double as_double(const Value& v, const std::string& what);  // null reads as NaN
// Rejects members other than `allowed` (a misspelt key would otherwise be silently ignored).
void check_keys(const Value& object, const std::vector<std::string_view>& allowed,
                const std::string& what);

// Writers append to `out`.
void write_string(std::string& out, std::string_view s);
void write_double(std::string& out, double v);  // null for NaN/Inf
void write_int(std::string& out, int64_t v);

}  // namespace mpq::detail::json
