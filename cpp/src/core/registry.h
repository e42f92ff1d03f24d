#pragma once
// A name -> value map that any thread may read and extend at run time: the one mechanism behind
// the format registry (find_format, register_format) and the expert registry (make_expert,
// register_expert). Values are returned by copy, so no caller holds a reference past the lock.
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mpq::detail {

template <typename T>
class Registry {
 public:
  std::optional<T> find(std::string_view name) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(name);
    return it == entries_.end() ? std::nullopt : std::optional<T>(it->second);
  }

  // Adds `value` unless the name is taken; returns what the name maps to afterwards, so a caller
  // can tell a repeated registration of the same thing from a clash.
  T insert(const std::string& name, T value) {
    std::lock_guard lock(mutex_);
    return entries_.emplace(name, std::move(value)).first->second;
  }

  void set(const std::string& name, T value) {
    std::lock_guard lock(mutex_);
    entries_[name] = std::move(value);
  }

  // Sorted.
  std::vector<std::string> names() const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& [name, value] : entries_) out.push_back(name);
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, T, std::less<>> entries_;
};

}  // namespace mpq::detail
