#pragma once
// Random candidate tables and a brute-force reference for the search tests. The reference
// enumerates every tensor-level genome and checks availability and coupling itself, using only
// the table's cell accessors, so it shares no code with the search it checks.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <type_traits>

#include <c10/util/Exception.h>

#include <mpq/candidates.h>

namespace mpq_test {

struct TableSpec {
  int tensors = 6;
  int options = 4;
  int64_t max_bytes = 100;      // cell bytes drawn from [1, max_bytes]
  double unavailable = 0.0;     // chance that a cell is unavailable (one always stays)
  bool groups = false;          // couple tensors 1-2 ("g12") and 4-5 ("g45")
  int64_t fixed_bytes = 0;
  int64_t fixed_weights = 0;
};

// Bytes and proxy are independent draws (so options are not ordered by quality): the hardest case
// for the knapsack and the repair.
inline mpq::CandidateTable random_table(const TableSpec& spec, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::string> options;
  for (int o = 0; o < spec.options; ++o) options.push_back("opt" + std::to_string(o));
  mpq::CandidateTable table(options);
  std::uniform_int_distribution<int64_t> bytes(1, spec.max_bytes);
  std::uniform_real_distribution<double> proxy(0.0, 10.0), coin(0.0, 1.0);
  for (int t = 0; t < spec.tensors; ++t) {
    std::string group;
    if (spec.groups && (t == 1 || t == 2)) group = "g12";
    if (spec.groups && (t == 4 || t == 5)) group = "g45";
    table.add_tensor("t" + std::to_string(t), 1000 + 10 * t, group);
    const int keep = static_cast<int>(rng() % spec.options);  // coupled tensors may differ here
    for (int o = 0; o < spec.options; ++o) {
      const int64_t b = bytes(rng);
      const double p = proxy(rng);
      if (o != keep && !spec.groups && coin(rng) < spec.unavailable) continue;
      table.set(t, o, b, p, std::numeric_limits<double>::quiet_NaN());
    }
  }
  table.set_fixed(spec.fixed_bytes, spec.fixed_weights);
  return table;
}

// Calls f(genome) for every genome that respects availability and coupling.
inline void for_each_genome(const mpq::CandidateTable& table,
                            const std::function<void(const mpq::Genome&)>& f) {
  const int n = table.num_tensors(), k = table.num_options();
  mpq::Genome g(n, 0);
  while (true) {
    bool ok = true;
    std::map<std::string, int> group;
    for (int t = 0; t < n && ok; ++t) {
      ok = table.available(t, g[t]);
      const std::string& name = table.tensor_group(t);
      if (ok && !name.empty()) ok = group.emplace(name, g[t]).first->second == g[t];
    }
    if (ok) f(g);
    int t = 0;
    while (t < n && ++g[t] == k) g[t++] = 0;
    if (t == n) return;
  }
}

inline int64_t ref_bytes(const mpq::CandidateTable& table, const mpq::Genome& g) {
  int64_t b = table.fixed_bytes();
  for (int t = 0; t < table.num_tensors(); ++t) b += table.cell_bytes(t, g[t]);
  return b;
}

inline double ref_proxy(const mpq::CandidateTable& table, const mpq::Genome& g) {
  double p = 0;
  for (int t = 0; t < table.num_tensors(); ++t) p += table.cell_proxy(t, g[t]);
  return p;
}

// The least `cost` over genomes of at most max_bytes; nullopt when none fits.
inline std::optional<double> brute_force(const mpq::CandidateTable& table, int64_t max_bytes,
                                         const std::function<double(const mpq::Genome&)>& cost) {
  std::optional<double> best;
  for_each_genome(table, [&](const mpq::Genome& g) {
    if (ref_bytes(table, g) > max_bytes) return;
    const double c = cost(g);
    if (!best || c < *best) best = c;
  });
  return best;
}

// The message of the exception `f` throws (as type E); fails the test when it throws none or
// another type.
template <typename E, typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    if constexpr (std::is_base_of_v<c10::Error, E>) return e.what_without_backtrace();
    else return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception";
  return "";
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace mpq_test
